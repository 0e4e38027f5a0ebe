"""The ablation summary's statistics without a tracking server: per-variant rows built from
predictions tables, the seed-level interval beside the bootstrap's, and the labels of p."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentiment.ablate.grid import Grid, Variant
from sentiment.ablate.summary import Summary, _variant_row, comparison_figure, format_summary, with_seed_columns
from sentiment.stats import BOOTSTRAP, SEEDS, holm, seed_interval

REVIEWS = 2000


def _grid(seeds: tuple[int, ...]) -> Grid:
    baseline = Variant("baseline", "baseline", "the base recipe", {}, {}, "baseline", published=0.9157)
    freeze = Variant(
        "freeze_2", "freezing", "", {"freeze_layers": 2}, {"freeze_layers": 2}, "baseline", published=0.8923
    )
    return Grid(
        "t",
        Path("t.yaml"),
        "",
        "",
        "seed",
        seeds,
        (baseline, freeze),
        (("freezing", "", "baseline"),),
        "",
        "a paper",
        "one seed",
    )


def _table(right: int) -> pd.DataFrame:
    """REVIEWS positive reviews, the first ``right`` of them predicted right."""
    return pd.DataFrame({"id": np.arange(REVIEWS), "label": 1, "prediction": (np.arange(REVIEWS) < right).astype(int)})


def _summary(seed_deltas: dict[int, int]) -> tuple[Summary, dict]:
    """A summary of baseline and freeze_2 where freeze_2 gets ``seed_deltas[seed]`` more reviews right."""
    grid = _grid(tuple(seed_deltas))
    tables, children = {}, []
    for seed, extra in seed_deltas.items():
        for name, right in (("baseline", 1600), ("freeze_2", 1600 + extra)):
            tables[(name, seed)] = _table(right)
            children.append(
                {
                    "variant": name,
                    "group": name if name == "baseline" else "freezing",
                    "seed": seed,
                    "run_id": f"{name}-{seed}",
                    "val_accuracy": 0.8,
                    "val_f1_macro": 0.8,
                    "test_accuracy": right / REVIEWS,
                    "test_accuracy_low": right / REVIEWS - 0.01,
                    "test_accuracy_high": right / REVIEWS + 0.01,
                    "test_f1_macro": 0.5,
                    "trainable_parameters": 10.0,
                    "train_seconds": 60.0,
                }
            )
    per_child = pd.DataFrame(children)
    table = pd.DataFrame([_variant_row(grid, variant, per_child, tables) for variant in grid.variants])
    table["p_value_holm"] = holm(table["p_value"].tolist())
    return Summary(grid, "parent", table, per_child), {f"{k[0]}-{k[1]}": t for k, t in tables.items()}


def test_three_seeds_log_the_student_t_interval_and_rest_verdicts_on_the_wider():
    summary, _ = _summary({42: -20, 43: 10, 44: 40})  # -1, +0.5, +2 points
    row = summary.table.set_index("variant").loc["freeze_2"]
    low, high = seed_interval([-0.01, 0.005, 0.02])
    assert (row["seed_ci_low"], row["seed_ci_high"]) == pytest.approx((low, high))
    assert row["paired_seeds"] == 3
    assert (
        high - low > row["delta_test_accuracy_high"] - row["delta_test_accuracy_low"]
    )  # 3 seeds: the bootstrap is the narrower
    assert row["verdict_interval"] == SEEDS and (row["verdict_low"], row["verdict_high"]) == pytest.approx((low, high))
    baseline = summary.table.set_index("variant").loc["baseline"]
    assert math.isnan(baseline["seed_ci_low"]) and baseline["verdict_interval"] == ""


def test_one_seed_has_no_seed_interval_and_rests_on_the_bootstrap():
    summary, _ = _summary({42: -40})
    row = summary.table.set_index("variant").loc["freeze_2"]
    assert math.isnan(row["seed_ci_low"]) and math.isnan(row["seed_ci_high"]) and row["paired_seeds"] == 1
    assert row["verdict_interval"] == BOOTSTRAP
    assert (row["verdict_low"], row["verdict_high"]) == (
        row["delta_test_accuracy_low"],
        row["delta_test_accuracy_high"],
    )


def test_an_older_summary_gets_the_same_seed_columns_from_the_predictions_tables():
    summary, by_run = _summary({42: -20, 43: 10, 44: 40})
    new = ["seed_ci_low", "seed_ci_high", "verdict_low", "verdict_high", "verdict_interval"]
    filled = with_seed_columns(summary.table.drop(columns=new), summary.children, by_run)
    pd.testing.assert_frame_equal(filled[new], summary.table[new])
    assert with_seed_columns(summary.table, summary.children, {}) is summary.table  # a newer summary is left alone


def test_figure_and_terminal_table_say_p_is_holm_adjusted():
    summary, _ = _summary({42: -20, 43: 10, 44: 40})
    figure = comparison_figure(summary)
    assert "McNemar p (Holm-adjusted, review-level)" in " ".join(figure._suptitle.get_text().split())
    notes = [text.get_text() for ax in figure.axes for text in ax.texts]
    holm_p = summary.table.set_index("variant").loc["freeze_2", "p_value_holm"]
    assert any(f"Holm p={holm_p:.2g}" in note for note in notes), notes
    text = format_summary(summary)
    assert "p (Holm)" in text and "[95% t, seeds]" in text
    row = summary.table.set_index("variant").loc["freeze_2"]
    assert f"[{row['seed_ci_low']:+.4f}, {row['seed_ci_high']:+.4f}]" in text
