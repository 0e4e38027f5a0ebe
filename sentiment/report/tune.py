"""The section of a tune parent: what was searched and spent, the best trial against the
baseline on validation and test, every trial, Optuna's figures and the space as it ran."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sentiment.report.document import Code, Image, Section
from sentiment.report.numbers import _num, _pct
from sentiment.tracking import keys


def _interval(m: dict, key: str, low: str, high: str) -> str:
    if key not in m:
        return "n/a"
    bounds = f" [{_pct(m[low])}, {_pct(m[high])}]" if low in m and high in m else ""
    return f"{_pct(m[key])}{bounds}"


# long function: a tune parent's sections in reading order, each from the same trials table and metrics
def tune_sections(parent, workdir: Path) -> list[Section]:
    """A tune parent: what was searched and spent, the best trial against the baseline (the
    space's first enqueued trial) on the same validation and test reviews, the trials, Optuna's
    figures and the space as it ran."""
    from sentiment import tracking

    m, p, tags = parent.metrics, parent.params, parent.tags
    trials = tracking.load_run_table(parent.run_id, "tune/trials.parquet")
    searched = [name for name in p.get("tune.searched", "").split(",") if name]
    objective = p.get("tune.objective", "val/best_accuracy")
    section = Section(f"Search `{tags.get(keys.TUNE_SPACE, '?')}`")
    counts = {state: int((trials["state"] == state).sum()) for state in ("complete", "pruned", "failed")}
    section.blocks.append(
        f"Parent run `{parent.run_id}` (experiment `{tracking.experiment_name(parent.experiment_id)}`): {len(trials)} "
        f"trials of {tags.get(keys.TUNE_TRIALS, '?')} ({counts['complete']} complete, {counts['pruned']} "
        f"pruned, {counts['failed']} failed), sampler {p.get('tune.sampler', '?')}, pruner "
        f"{p.get('tune.pruner', '?')}, objective `{objective}` on validation reviews only. The trials spent "
        f"{m.get('tune/cpu_minutes', float('nan')):.1f} CPU minutes ({m.get('tune/trial_minutes', float('nan')):.1f} "
        f"wall-clock); pruning saved about {m.get('tune/cpu_minutes_saved_by_pruning', float('nan')):.1f} CPU minutes "
        f"({m.get('tune/minutes_saved_by_pruning', float('nan')):.1f} wall-clock) against running every pruned trial "
        "to its end."
    )
    rows = trials.set_index("trial")
    sides = [("best", int(m["tune/best_trial"]), "tune/best_value", "test")] if "tune/best_trial" in m else []
    if "tune/baseline_trial" in m and int(m["tune/baseline_trial"]) != int(m.get("tune/best_trial", -1)):
        sides.append(("baseline", int(m["tune/baseline_trial"]), "tune/baseline_value", "test_baseline"))
    if sides:
        table = []
        for name, number, value, split in sides:
            row = rows.loc[number] if number in rows.index else {}
            validation = (
                _interval(m, value, f"{value}_ci_low", f"{value}_ci_high")
                if "accuracy" in objective
                else f"{m.get(value, float('nan')):.4f}"
            )
            table.append(
                {
                    "trial": f"{name} (trial {number}, run `{row.get('run_id', '?')}`)",
                    **{option: _show(row.get(option)) for option in searched},
                    f"{objective} [95% CI]": validation,
                    "test accuracy [95% CI]": _interval(
                        m, f"{split}/accuracy", f"{split}/accuracy_ci_low", f"{split}/accuracy_ci_high"
                    ),
                }
            )
        section.blocks.append(pd.DataFrame(table))
        reviews = f" over {int(m['tune/val_reviews']):,} validation reviews" if "tune/val_reviews" in m else ""
        section.blocks.append(
            f"Validation intervals: Wilson{reviews}; test intervals: bootstrap over {int(m.get('test/examples', 0)):,} "
            "test reviews. Verdict: "
            f"{tags.get(keys.TUNE_BASELINE, 'no baseline trial (the space enqueues none)')}."
        )
    trained = trials[
        "epochs_trained" if "epochs_trained" in trials else "epochs"
    ]  # (tables of older versions: "epochs")
    shown = trials[["trial", "state", "value", *[c for c in searched if c in trials], "cpu_s", "run_id"]].copy()
    shown["value"] = shown["value"].map(lambda v: f"{v:.4f}" if math.isfinite(_num(v)) else "n/a")
    shown["epochs trained"] = [f"{int(a)}/{int(b)}" for a, b in zip(trained, trials["epochs_planned"], strict=True)]
    shown["CPU min"] = shown.pop("cpu_s").map(lambda v: f"{_num(v) / 60:.1f}")
    for option in searched:
        if option in shown:
            shown[option] = shown[option].map(_show)
    shown["run_id"] = shown.pop("run_id").map(lambda r: f"`{r}`")
    section.blocks.append(
        f"Every trial (`tune/trials` of the parent; value = `{objective}`, the last reported one for a pruned trial):"
    )
    section.blocks.append(shown.rename(columns={"value": objective}))
    for name, caption in (
        ("optimization_history", "Optimisation history"),
        ("intermediate_values", "Validation after each epoch (pruning)"),
        ("param_importances", "Parameter importances (fANOVA)"),
        ("parallel_coordinate", "Parallel coordinates"),
    ):
        path = tracking.download_artifact(parent.run_id, f"figures/tune/{name}.png", workdir / parent.run_id)
        if path is not None:
            section.blocks.append(
                Image(path, f"{parent.run_id[:8]}_{name}.png", f"{caption} (parent run {parent.run_id})")
            )
    section.blocks.append(Code(tracking.load_run_text(parent.run_id, "tune/space.yaml").rstrip(), "yaml"))
    return [section]


def _show(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
