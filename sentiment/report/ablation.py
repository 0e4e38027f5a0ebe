"""The sections of an ablation parent: the summary table (mean +- std over seeds, delta with its 95%
interval, McNemar with Holm), accuracies published elsewhere beside ours with a verdict per row, the
comparison figure, a learning curve when the variants differ only in training reviews, and every child."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sentiment import evaluate, plots
from sentiment.errors import UserError
from sentiment.report.document import Code, Image, Section
from sentiment.report.numbers import _num, _pct, _pm, _points
from sentiment.stats import SEEDS, verdict, wilson_interval
from sentiment.tracking import counts as counts_mod
from sentiment.tracking import keys

CURVE_OPTION = "train_size"  # a grid whose variants change only this draws a learning curve
# A classical baseline's settings worth a reader's eye (the rest are scikit-learn defaults, in its params).
BASELINE_SETTINGS = (
    "ngram_range",
    "sublinear_tf",
    "min_df",
    "max_df",
    "C",
    "solver",
    "max_iter",
    "name",
    "max_length",
    "pooling",
)


def _grid_of(parent, workdir: Path):
    """The grid file the parent logged, loaded (None when it cannot be read any more)."""
    from sentiment import ablate, tracking

    name = Path(parent.tags.get(keys.GRID_FILE, "")).name
    path = tracking.download_artifact(parent.run_id, f"grid/{name}", workdir / parent.run_id / "grid") if name else None
    if path is None:
        return None, ""
    text = path.read_text()
    try:
        return ablate.load_grid(path), text
    except UserError:  # written for an older version of the options: show it, skip what needs it
        return None, text


def ablation_sections(parent, extra: list, workdir: Path) -> tuple[list[Section], bool]:
    """The sections of one ablation parent, and whether it drew a learning curve."""
    from sentiment import ablate, tracking

    children = tracking.load_run_table(parent.run_id, "ablation/children.parquet")
    grid, grid_text = _grid_of(parent, workdir)
    runs = {run_id: tracking.get_run(run_id) for run_id in children["run_id"]}
    tables = {
        run_id: tracking.load_run_table(run_id, "predictions/test.parquet", columns=["id", "label", "prediction"])
        for run_id, run in runs.items()
        if "test/accuracy" in run.metrics
    }
    # a parent summarised before the seed-level interval existed gets it from the same tables
    summary = ablate.with_seed_columns(
        tracking.load_run_table(parent.run_id, "ablation/summary.parquet"), children, tables
    )
    name = parent.tags.get(keys.GRID, "?")
    section = Section(f"Ablation `{name}`")
    planned = parent.params.get("ablation.children", "?")
    section.blocks.append(
        f"{grid.description + '. ' if grid and grid.description else ''}Parent run `{parent.run_id}` (experiment "
        f"`{tracking.experiment_name(parent.experiment_id)}`): {len(children)} of {planned} children finished, seeds "
        f"{parent.params.get('ablation.seeds', '?')}. {_test_set_sentence(tables)}"
    )
    baseline = children[children["variant"] == "baseline"]
    if len(baseline):
        section.blocks.append(_recipe_table(runs[baseline["run_id"].iloc[0]], "baseline recipe"))
    val_reviews = {
        row["variant"]: tracking.dataset_rows(row["run_id"]).get("validation") for row in children.to_dict("records")
    }
    section.blocks.append(_summary_table(summary, grid, val_reviews))
    verdicts = _verdicts(summary, grid, tables)
    if verdicts:
        section.blocks.append(_verdict_rules(grid))
        section.blocks.append("\n".join(f"- {line}" for line in verdicts))
    if tables:
        figure = tracking.download_artifact(
            parent.run_id, "figures/ablation_test_accuracy.png", workdir / parent.run_id
        )
        if figure is not None:
            section.blocks.append(
                Image(figure, f"{name}_test_accuracy.png", f"Test accuracy per variant (parent run {parent.run_id})")
            )
    elif grid is not None:  # a validation-only grid (e.g. a search): its figure is validation accuracy
        path = workdir / f"{name}_val_accuracy.png"
        _validation_figure(summary, grid).savefig(path, dpi=110)
        section.blocks.append(Image(path, path.name, f"Validation accuracy per variant (parent run {parent.run_id})"))
    drew_curve = False
    if grid is not None and _is_learning_curve(grid):
        section.blocks += _learning_curve(grid, children, runs, tables, extra, workdir)
        drew_curve = True
    section.blocks.append(_children_table(children, runs))
    if grid_text:
        section.blocks.append(Code(grid_text.rstrip(), "yaml"))
    return [section], drew_curve


def _validation_figure(summary: pd.DataFrame, grid):
    """Best validation accuracy per variant, a panel per group, the reference hatched."""
    table = summary.set_index("variant")
    panels = []
    for group, description, reference in grid.groups:
        names = [reference] + [v.name for v in grid.variants if v.group == group and v.name != reference]
        bars = []
        for variant in names:
            mean, std = _num(table.loc[variant, "val_accuracy_mean"]), _num(table.loc[variant, "val_accuracy_std"])
            spread = std if math.isfinite(std) else 0.0
            note = f"{100 * mean:.1f}%" if math.isfinite(mean) else ""
            bars.append(
                {
                    "label": variant,
                    "value": mean,
                    "low": spread,
                    "high": spread,
                    "reference": variant == reference,
                    "note": note,
                }
            )
        panels.append({"title": f"{group}: {description}" if description else group, "bars": bars})
    title = f"Grid {grid.name}: best validation accuracy per variant (no test split touched)"
    return plots.ablation_bars(
        panels, ylabel="validation accuracy", title=title, baseline=_num(table.loc["baseline", "val_accuracy_mean"])
    )


def _test_set_sentence(tables: dict) -> str:
    if not tables:
        return "No child was tested (validation-only grid): its numbers are validation accuracies."
    id_sets = {tuple(t["id"]) for t in tables.values()}
    size = len(next(iter(tables.values())))
    if len(id_sets) == 1:
        return (
            f"All {len(tables)} tested children were tested on the same {size:,} reviews (checked: identical ids), "
            "so every comparison is paired."
        )
    return (
        f"The children were tested on {len(id_sets)} different sets of reviews; comparisons pair runs of the same "
        "seed only."
    )


def _review_counts(run) -> str:
    """Training / validation / test reviews: the run's counts (params), else its logged datasets."""
    from sentiment import tracking

    names = (counts_mod.TRAIN_REVIEWS, counts_mod.VAL_REVIEWS, counts_mod.TEST_REVIEWS)
    counts = [counts_mod.count(run.params, run.metrics, name) for name in names]
    if None in counts:
        rows = tracking.dataset_rows(run.run_id)
        counts = [rows.get(context) for context in ("training", "validation", "testing")]
    return " / ".join("?" if n is None else f"{n:,}" for n in counts)


def data_name(source: str) -> str:
    """A data source as a reader elsewhere can use it: a local file by its name, not this machine's path."""
    return Path(source).name if "/" in source or "\\" in source else source


def _recipe_table(run, what: str = "recipe") -> pd.DataFrame:
    p = run.params
    rows = [
        ("model", p.get("model.name", "?")),
        ("data", data_name(p.get("data.source", "?"))),
        ("reviews train / validation / test", _review_counts(run)),
    ]
    steps: dict[str, list[str]] = {}
    for key, value in sorted(p.items()):  # baseline.<step>.<setting>: a classical baseline's pipeline
        step, _, setting = key.removeprefix("baseline.").partition(".")
        if key.startswith("baseline.") and setting in BASELINE_SETTINGS:
            steps.setdefault(step, []).append(f"{setting}={value}")
    if steps:  # the settings that make the recipe, not every scikit-learn default
        rows += [(step, ", ".join(settings)) for step, settings in steps.items()]
        return pd.DataFrame(rows, columns=[f"{what} (run `{run.run_id}`)", "value"])
    rows += [
        ("max length, truncation", f"{p.get('data.max_length', '?')} tokens, {p.get('data.truncation', '?')}"),
        (
            "epochs, batch, lr, layer decay",
            f"{p.get('train.epochs', '?')}, {p.get('train.batch_size', '?')}, {p.get('train.lr', '?')}, "
            f"{p.get('train.layer_decay', '?')}",
        ),
        (
            "precision, device",
            f"{run.tags.get(keys.PRECISION, '?')} on {run.tags.get(keys.DEVICE, '?')}"
            + (f" (native bf16: {run.tags[keys.CPU_NATIVE_BF16]})" if keys.CPU_NATIVE_BF16 in run.tags else ""),
        ),
    ]
    return pd.DataFrame(rows, columns=[f"{what} (run `{run.run_id}`)", "value"])


def _val_cell(row: dict, reviews: int | None) -> str:
    """Mean +- std over seeds; with one seed, its Wilson interval over the validation reviews."""
    mean, std = _num(row["val_accuracy_mean"]), _num(row["val_accuracy_std"])
    if row["seeds"] == 1 and reviews and math.isfinite(mean):
        low, high = wilson_interval(mean, reviews)
        return f"{_pct(mean)} [{100 * low:.1f}, {100 * high:.1f}] of {reviews:,}"
    return _pm(mean, std)


BOOTSTRAP_HEADER = "Δ test accuracy, points [95% bootstrap CI, seeds × reviews]"
SEEDS_HEADER = "[95% Student-t CI over seeds]"
P_HEADER = "McNemar p (Holm, review-level)"


def _published_header(grid) -> str:
    """The published column's header names the published setup: never compared silently."""
    return f"published ({grid.published_setup})" if grid.published_setup else "published (setup not stated)"


def _summary_table(summary: pd.DataFrame, grid, val_reviews: dict | None = None) -> pd.DataFrame:
    """One row per variant: validation and test accuracy, the delta with both intervals (the
    bootstrap's and the Student-t over seeds), Holm-adjusted McNemar p, and published numbers."""
    published = {v.name: v.published for v in grid.variants} if grid is not None else {}
    tested = summary["test_accuracy_mean"].notna().any()
    rows = []
    for row in summary.to_dict("records"):
        reference = row["reference"] or ""
        delta = (
            "reference"
            if not reference
            else (
                "n/a"
                if not math.isfinite(_num(row["delta_test_accuracy"]))
                else f"{_points(row['delta_test_accuracy'])} [{_points(row['delta_test_accuracy_low'])}, "
                f"{_points(row['delta_test_accuracy_high'])}]" + ("" if reference == "baseline" else f" vs {reference}")
            )
        )
        out = {
            "variant": row["variant"],
            "changed": row["changed"],
            "seeds": f"{row['seeds']}/{row['seeds_planned']}",
            "val accuracy": _val_cell(row, (val_reviews or {}).get(row["variant"])),
        }
        if tested:
            out["test accuracy"] = _pm(row["test_accuracy_mean"], row["test_accuracy_std"])
            out[BOOTSTRAP_HEADER] = delta
            out[SEEDS_HEADER] = _seeds_cell(row) if reference else ""
            p = _num(row["p_value_holm"])
            out[P_HEADER] = "" if not math.isfinite(p) else f"{p:.2g}"
        out["train min"] = (
            f"{row['train_seconds_mean'] / 60:.1f}" if math.isfinite(_num(row["train_seconds_mean"])) else "n/a"
        )
        if any(v is not None for v in published.values()):
            mine, theirs = published.get(row["variant"]), published.get(reference)
            out[_published_header(grid)] = _pct(mine) if mine is not None else ""
            out["published Δ vs reference, points"] = (
                _points(mine - theirs) if mine is not None and theirs is not None else ""
            )
        rows.append(out)
    return pd.DataFrame(rows)


def _seeds_cell(row: dict) -> str:
    low, high = _num(row.get("seed_ci_low")), _num(row.get("seed_ci_high"))
    if math.isfinite(low) and math.isfinite(high):
        return f"[{_points(low)}, {_points(high)}] over {row['paired_seeds']} seeds"
    return f"n/a ({row['paired_seeds']} seed)" if row["paired_seeds"] == 1 else "n/a"


def _verdict_rules(grid) -> str:
    """The paragraph before the verdicts: where the published numbers come from, how they were
    measured, and the rules the verdict words follow (stats.verdict)."""
    setup = (
        f"measured as {grid.published_setup}" if grid.published_setup else "measured in a setup the grid does not state"
    )
    return (
        f"Published numbers: {grid.published_source}, {setup}; they are set beside ours, not taken as measured the "
        "same way. Each verdict judges the published change (variant minus its reference, as published) by the wider "
        "of our two 95% intervals of the same change: the two-level bootstrap over seeds and test reviews, and the "
        "Student-t interval over the per-seed paired deltas (none with one seed: the bootstrap alone). Confirmed: the "
        "interval excludes 0 in the published direction; not confirmed: it includes 0 and the published change; "
        "contradicted: it excludes 0 in the opposite direction, or includes 0 but excludes the published change. "
        "McNemar's p (Holm-adjusted) is review-level evidence only (these trained models differ on these reviews, not "
        "that another seed would): no verdict uses it."
    )


def _verdicts(summary: pd.DataFrame, grid, tables: dict) -> list[str]:
    """One generated sentence per variant whose reference has a published number too: the
    published change judged by stats.verdict on the wider of our two intervals."""
    if grid is None or not tables:
        return []
    setup = grid.published_setup or "setup not stated"
    lines = []
    for row in summary.to_dict("records"):
        variant, reference = grid.variant(row["variant"]), row["reference"]
        theirs = grid.variant(reference).published if reference else None
        if variant.published is None or theirs is None:
            continue
        claimed = variant.published - theirs
        head = f"`{variant.name}` ({variant.changed}): published {_points(claimed)} points vs `{reference}` ({setup})"
        low, high = _num(row.get("verdict_low")), _num(row.get("verdict_high"))
        if not (math.isfinite(low) and math.isfinite(high)):
            lines.append(f"{head}; not measured here (no finished pair).")
            continue
        judged = verdict(claimed, low, high)
        lines.append(
            f"{head}; here {_points(row['delta_test_accuracy'])} points, {_interval_words(row)}: {judged.word}, "
            f"{judged.reason}."
        )
    return lines


def _interval_words(row: dict) -> str:
    """Which interval a verdict rests on, and the other one."""
    boot = f"[{_points(row['delta_test_accuracy_low'])}, {_points(row['delta_test_accuracy_high'])}]"
    seeds = f"[{_points(_num(row.get('seed_ci_low')))}, {_points(_num(row.get('seed_ci_high')))}]"
    n = row["paired_seeds"]
    if row.get("verdict_interval") == SEEDS:
        return f"95% Student-t interval over {n} seeds {seeds} (wider than the bootstrap's {boot})"
    if math.isfinite(_num(row.get("seed_ci_low"))):
        return (
            f"95% bootstrap interval over seeds and reviews {boot} (wider than the Student-t interval over {n} "
            f"seeds, {seeds})"
        )
    return (
        f"95% bootstrap interval over the test reviews {boot} ({n} seed: no seed-level interval, the verdict rests "
        "on the bootstrap alone)"
    )


def _is_learning_curve(grid) -> bool:
    others = [v for v in grid.variants if v.name != "baseline"]
    return bool(others) and all(set(v.options) == {CURVE_OPTION} for v in others)


def _learning_curve(grid, children: pd.DataFrame, runs: dict, tables: dict, extra: list, workdir: Path) -> list:
    from sentiment import tracking

    if not tables:
        return ["No child was tested, so there is no learning curve."]
    ids = next(iter(tables.values()))["id"]
    points = []
    for row in children.to_dict("records"):
        run = runs[row["run_id"]]
        if row["run_id"] in tables:
            points.append(_curve_point(row["variant"], run, tables[row["run_id"]], ids))
    for run in extra:
        table = tracking.load_run_table(run.run_id, "predictions/test.parquet", columns=["id", "label", "prediction"])
        points.append(_curve_point(run.name or run.run_id, run, table, ids))
    points.sort(key=lambda p: p["reviews"])
    title = f"Learning curve of grid {grid.name}: test accuracy on the same {len(ids):,} test reviews"
    figure = plots.learning_curve(points, title)
    path = workdir / f"{grid.name}_learning_curve.png"
    figure.savefig(path, dpi=110)
    frame = pd.DataFrame(
        [
            {
                "run": f"{p['label']} (`{p['run_id']}`)",
                "training reviews": f"{p['reviews']:,}",
                "run minutes": f"{p['minutes']:.1f}",
                "test accuracy [95% CI]": f"{_pct(p['accuracy'])} [{_pct(p['low'])}, {_pct(p['high'])}]",
            }
            for p in points
        ]
    )
    return [
        f"Learning curve: every point is scored on the same {len(ids):,} test reviews (the grid's sample; a run tested "
        "on the whole test split is scored on those reviews of its predictions table). Minutes are each run's "
        "wall-clock time, start to end (loading, tokenizing, training, validating, testing, logging).",
        frame,
        Image(path, path.name, title),
    ]


def _curve_point(label: str, run, table: pd.DataFrame, ids: pd.Series) -> dict:
    shared = table.set_index("id").reindex(ids)
    if shared["label"].isna().any():
        raise UserError(
            f"run {run.run_id} was not tested on the learning curve's test reviews "
            f"({int(shared['label'].isna().sum())} missing); add runs tested on the same data source"
        )
    correct = (shared["label"].to_numpy() == shared["prediction"].to_numpy()).astype(float)
    m = run.metrics
    if len(table) == len(ids) and "test/accuracy_ci_low" in m:  # its own test reviews: the interval it logged
        low, high = m["test/accuracy_ci_low"], m["test/accuracy_ci_high"]
    else:  # a run tested on more reviews, scored on the curve's: an interval over these reviews
        low, high = evaluate.bootstrap_accuracy_ci(correct, seed=0)
    reviews = counts_mod.count(run.params, run.metrics, counts_mod.TRAIN_REVIEWS) or _num(
        run.params.get("data.train_size")
    )
    return {
        "label": label,
        "run_id": run.run_id,
        "reviews": int(reviews),
        "minutes": run.minutes or float("nan"),
        "accuracy": float(correct.mean()),
        "low": low,
        "high": high,
    }


def _children_table(children: pd.DataFrame, runs: dict) -> pd.DataFrame:
    rows = []
    for row in children.to_dict("records"):
        run = runs[row["run_id"]]
        test = _num(row["test_accuracy"])
        rows.append(
            {
                "variant": row["variant"],
                "seed": row["seed"],
                "run id": f"`{row['run_id']}`",
                "val accuracy": _pct(_num(row["val_accuracy"])),
                "test accuracy [95% CI]": "n/a"
                if not math.isfinite(test)
                else f"{_pct(test)} [{_pct(row['test_accuracy_low'])}, {_pct(row['test_accuracy_high'])}]",
                "run minutes": f"{run.minutes:.1f}" if run.minutes else "n/a",
            }
        )
    return pd.DataFrame(rows)


# The score rows of a train or evaluate run's table: metric key (after "<split>/") and label.
