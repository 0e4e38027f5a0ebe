"""The ablation summary: read every child back from the tracking server, compare each variant
with its reference on the same test reviews, and log the table, metrics and figure on the parent.

    sentiment ablate --grid experiments/quick.yaml
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentiment import plots, tracking
from sentiment.ablate.grid import BASELINE, Grid, Variant
from sentiment.stats import Paired, compare, holm, seed_interval, wider_interval
from sentiment.tracking import counts, keys


@dataclass
class Summary:
    grid: Grid
    parent_run_id: str
    table: pd.DataFrame
    children: pd.DataFrame
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # (variant, seed, error)
    ran: int = 0
    skipped: int = 0


def finished_children(runs) -> dict[tuple[str, int], Any]:
    """(variant, seed) -> the latest FINISHED child run."""
    out = {}
    for run in runs:
        variant, seed = run.tags.get(keys.VARIANT), run.tags.get(keys.SEED, "")
        if run.status == "FINISHED" and variant and seed.isdigit():
            out[(variant, int(seed))] = run
    return out


def summarise(grid: Grid, parent_run_id: str) -> Summary:
    """Read every child back from the tracking server and compare each variant with its reference."""
    runs = tracking.child_runs(parent_run_id)
    finished = finished_children(runs)
    tables = {  # without the review texts: 25,000 IMDB reviews are ~30 MB per child
        key: tracking.load_run_table(run.run_id, "predictions/test.parquet", columns=["id", "label", "prediction"])
        for key, run in finished.items()
        if "test/accuracy" in run.metrics
    }
    failed = []
    last = {(r.tags.get(keys.VARIANT), r.tags.get(keys.SEED)): r for r in runs}
    for child in grid.children():
        if child.key not in finished:
            run = last.get((child.variant.name, str(child.seed)))
            failed.append(
                (
                    child.variant.name,
                    child.seed,
                    run.tags.get(keys.ERROR, run.status) if run else "never started",
                )
            )
    per_child = _children_frame(grid, finished)
    rows = [_variant_row(grid, variant, per_child, tables) for variant in grid.variants]
    table = pd.DataFrame(rows)
    table["p_value_holm"] = holm(table["p_value"].tolist())
    return Summary(grid, parent_run_id, table, per_child, failed)


def _children_frame(grid: Grid, finished: dict) -> pd.DataFrame:
    rows = []
    for child in grid.children():
        run = finished.get(child.key)
        if run is None:
            continue
        m = run.metrics
        rows.append(
            {
                "variant": child.variant.name,
                "group": child.variant.group,
                "seed": child.seed,
                "run_id": run.run_id,
                "val_accuracy": m.get("val/best_accuracy", np.nan),
                "val_f1_macro": m.get("val/best_f1_macro", np.nan),
                "test_accuracy": m.get("test/accuracy", np.nan),
                "test_accuracy_low": m.get("test/accuracy_ci_low", np.nan),
                "test_accuracy_high": m.get("test/accuracy_ci_high", np.nan),
                "test_f1_macro": m.get("test/f1_macro", np.nan),
                "trainable_parameters": counts.count(run.params, m, counts.TRAINABLE_PARAMETERS) or np.nan,
                "train_seconds": sum(tracking.metric_values(run.run_id, "train/epoch_seconds")),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "variant",
            "group",
            "seed",
            "run_id",
            "val_accuracy",
            "val_f1_macro",
            "test_accuracy",
            "test_accuracy_low",
            "test_accuracy_high",
            "test_f1_macro",
            "trainable_parameters",
            "train_seconds",
        ],
    )


def _variant_row(grid: Grid, variant: Variant, per_child: pd.DataFrame, tables: dict) -> dict[str, Any]:
    mine = per_child[per_child["variant"] == variant.name]
    row: dict[str, Any] = {
        "group": variant.group,
        "variant": variant.name,
        "changed": variant.changed,
        "description": variant.description,
        "reference": "" if variant.name == variant.reference else variant.reference,
        "seeds": len(mine),
        "seeds_planned": len(grid.seeds),
        "trainable_parameters": float(mine["trainable_parameters"].mean()) if len(mine) else np.nan,
    }
    for column in ("val_accuracy", "val_f1_macro", "test_accuracy", "test_f1_macro", "train_seconds"):
        row[f"{column}_mean"] = float(mine[column].mean()) if len(mine) else np.nan
        row[f"{column}_std"] = float(mine[column].std(ddof=1)) if len(mine) > 1 else np.nan
    pairs = _pairs(variant.name, variant.reference, grid.seeds, tables)
    stats = compare(pairs, seed=grid.seeds[0]) if pairs else {}
    for key in (
        "delta_test_accuracy",
        "delta_test_accuracy_low",
        "delta_test_accuracy_high",
        "delta_test_f1_macro",
        "delta_test_f1_macro_low",
        "delta_test_f1_macro_high",
        "p_value",
    ):
        row[key] = stats.get(key, np.nan)
    row["paired_seeds"] = len(pairs)
    row["mcnemar_variant_only"] = stats.get("mcnemar_variant_only", np.nan)
    row["mcnemar_reference_only"] = stats.get("mcnemar_reference_only", np.nan)
    row.update(
        seed_columns(row["delta_test_accuracy_low"], row["delta_test_accuracy_high"], [p.accuracy_delta for p in pairs])
    )
    return row


def _pairs(name: str, reference: str, seeds, tables: dict) -> list[Paired]:
    """One Paired per seed where both the variant and its reference have a predictions table."""
    if not reference or name == reference:
        return []
    return [
        Paired.join(tables[(name, seed)], tables[(reference, seed)])
        for seed in seeds
        if (name, seed) in tables and (reference, seed) in tables
    ]


def seed_columns(bootstrap_low: float, bootstrap_high: float, seed_deltas: list[float]) -> dict[str, Any]:
    """A summary row's seed-level columns: the Student-t interval over the per-seed paired accuracy
    deltas (NaN with one seed), and the interval verdicts rest on, the wider of it and the
    bootstrap's (``verdict_interval``: ``seeds`` or ``bootstrap``; "" when nothing was paired)."""
    seed_low, seed_high = seed_interval(seed_deltas)
    low, high, which = wider_interval((bootstrap_low, bootstrap_high), (seed_low, seed_high))
    return {
        "seed_ci_low": seed_low,
        "seed_ci_high": seed_high,
        "verdict_low": low,
        "verdict_high": high,
        "verdict_interval": which if math.isfinite(low) else "",
    }


def with_seed_columns(table: pd.DataFrame, children: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """A summary table logged before the seed-level columns existed, with them computed as
    ``summarise`` computes them, from the children (``ablation/children``) and their predictions
    tables (run id -> table); a summary that has them is returned unchanged."""
    if "seed_ci_low" in table.columns:
        return table
    by_key = {
        (r["variant"], int(r["seed"])): tables[r["run_id"]]
        for r in children.to_dict("records")
        if r["run_id"] in tables
    }
    seeds = sorted({int(seed) for seed in children["seed"]})
    rows = []
    for row in table.to_dict("records"):
        pairs = _pairs(row["variant"], row["reference"], seeds, by_key)
        rows.append(
            {
                **row,
                **seed_columns(
                    row["delta_test_accuracy_low"], row["delta_test_accuracy_high"], [p.accuracy_delta for p in pairs]
                ),
            }
        )
    return pd.DataFrame(
        rows, columns=[*table.columns, "seed_ci_low", "seed_ci_high", "verdict_low", "verdict_high", "verdict_interval"]
    )


def log_summary(summary: Summary, parent, attempt: int = 1) -> None:
    """Table (MLflow table + Parquet + CSV), per-variant metrics and the comparison figure."""
    table = summary.table.assign(attempt=attempt)  # the MLflow table appends on resume: one block per attempt
    parent.log_table(table, "ablation/summary")
    parent.log_table(summary.children, "ablation/children")
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "summary.csv"
        summary.table.to_csv(csv, index=False)
        parent.log_artifact(csv, "ablation")
    metrics: dict[str, float] = {
        "ablation/children_finished": float(len(summary.children)),
        "ablation/children_failed": float(len(summary.failed)),
    }
    for row in summary.table.to_dict("records"):
        for key in (
            "test_accuracy_mean",
            "test_accuracy_std",
            "val_accuracy_mean",
            "val_f1_macro_mean",
            "test_f1_macro_mean",
            "delta_test_accuracy",
            "delta_test_accuracy_low",
            "delta_test_accuracy_high",
            "seed_ci_low",
            "seed_ci_high",
            "p_value",
            "p_value_holm",
            "trainable_parameters",
        ):
            value = row.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                metrics[f"ablation/{row['variant']}/{key}"] = float(value)
    parent.log_metrics(metrics, step=attempt)
    parent.log_figure(comparison_figure(summary), "figures/ablation_test_accuracy.png")


def comparison_figure(summary: Summary):
    """One panel per group: test accuracy per variant, the group's reference hatched, the baseline dashed."""
    table = summary.table.set_index("variant")
    several = len(summary.grid.seeds) > 1
    panels = []
    for group, description, reference in summary.grid.groups:
        names = [reference] + [v.name for v in summary.grid.variants if v.group == group and v.name != reference]
        bars = []
        for name in names:
            row = table.loc[name]
            low, high = _error(summary.children, name, row, several)
            note = ""
            if not math.isnan(row["delta_test_accuracy"]):  # a group's own reference: against its reference
                note = (
                    f"{row['delta_test_accuracy']:+.3f}"
                    + (f" vs {row['reference']}" if name == reference else "")
                    + f"\nHolm p={row['p_value_holm']:.2g}"
                )
            bars.append(
                {
                    "label": name,
                    "value": row["test_accuracy_mean"],
                    "low": low,
                    "high": high,
                    "reference": name == reference,
                    "note": note,
                }
            )
        panels.append({"title": f"{group}: {description}" if description else group, "bars": bars})
    spread = "±1 std over seeds" if several else "95% bootstrap CI over test reviews"
    title = (
        f"Ablation {summary.grid.name}: test accuracy, {len(summary.grid.seeds)} seed(s); error bars {spread}; "
        "above the bars: delta and McNemar p (Holm-adjusted, review-level) against the hatched reference"
    )
    return plots.ablation_bars(
        panels, ylabel="test accuracy", title=title, baseline=table.loc[BASELINE, "test_accuracy_mean"]
    )


def _error(children: pd.DataFrame, name: str, row, several: bool) -> tuple[float, float]:
    mean = row["test_accuracy_mean"]
    if math.isnan(mean):
        return 0.0, 0.0
    if several:
        std = row["test_accuracy_std"]
        return (0.0, 0.0) if math.isnan(std) else (std, std)
    mine = children[children["variant"] == name]
    return float(mean - mine["test_accuracy_low"].mean()), float(mine["test_accuracy_high"].mean() - mean)


def format_summary(summary: Summary) -> str:
    """The summary as text for the terminal."""
    lines = [
        f"{'variant':<22}{'changed':<34}{'seeds':>6}  {'val acc':>15}  {'test acc':>15}  {'macro F1':>15}  "
        f"{'delta acc [95% bootstrap]':>26}  {'[95% t, seeds]':>18}  {'p (Holm)':>9}"
    ]
    for row in summary.table.to_dict("records"):
        delta = (
            "reference"
            if not row["reference"]
            else (
                "n/a"
                if math.isnan(row["delta_test_accuracy"])
                else f"{row['delta_test_accuracy']:+.4f} [{row['delta_test_accuracy_low']:+.4f}, "
                f"{row['delta_test_accuracy_high']:+.4f}]"
            )
        )
        seeds = "" if math.isnan(row["seed_ci_low"]) else f"[{row['seed_ci_low']:+.4f}, {row['seed_ci_high']:+.4f}]"
        p = "" if math.isnan(row["p_value_holm"]) else f"{row['p_value_holm']:.3g}"
        lines.append(
            f"{row['variant']:<22}{row['changed'][:33]:<34}{row['seeds']:>3}/{row['seeds_planned']:<2}  "
            f"{_pm(row, 'val_accuracy'):>15}  {_pm(row, 'test_accuracy'):>15}  {_pm(row, 'test_f1_macro'):>15}  "
            f"{delta:>26}  {seeds:>18}  {p:>9}"
        )
    for variant, seed, error in summary.failed:
        lines.append(f"FAILED {variant} seed {seed}: {error}")
    return "\n".join(lines)


def _pm(row: dict, column: str) -> str:
    mean, std = row[f"{column}_mean"], row[f"{column}_std"]
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f}±{std:.4f}"
