"""Building a results document from runs: ablation parents (summary, published numbers with a
verdict per row, figures, learning curve, children, grid), tune parents (best trial against the
baseline on validation and test, trials, Optuna's figures, the space) and training/evaluate runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sentiment import evaluate
from sentiment.errors import UserError
from sentiment.report.ablation import CURVE_OPTION, _recipe_table, ablation_sections, data_name
from sentiment.report.document import Document, Image, Section
from sentiment.report.numbers import _pct
from sentiment.report.tune import tune_sections
from sentiment.tracking import keys

# ----------------------------------------------------------------------------- building


def build(run_ids: list[str], with_runs: list[str], workdir: Path, title: str = "", source: str = "") -> Document:
    """Read every run (and what it logged) and lay out the document.

    Args:
        run_ids: ablation parents and training/evaluate runs, in the order to show them.
        with_runs: training runs to add to a learning-curve grid's points, scored on its test reviews.
        workdir: where downloaded figures are kept until rendering.
        source: who rendered it from where (the document's first sentence); the tracking server by default.
    Raises:
        UserError: an unknown run, a run of another kind, or ``with_runs`` without a learning curve.
    """
    from sentiment import tracking

    runs = [tracking.get_run(run_id) for run_id in run_ids]  # all exist before any work
    extra = [tracking.get_run(run_id) for run_id in with_runs]
    sections: list[Section] = []
    curves = 0
    for run in runs:
        kind = run.tags.get(keys.KIND)
        if kind == "ablation":
            grid_sections, drew_curve = ablation_sections(run, extra, workdir)
            sections += grid_sections
            curves += drew_curve
        elif kind == "tune":
            sections += tune_sections(run, workdir)
        elif kind in ("train", "evaluate"):
            sections += run_sections(run, workdir)
        else:
            raise UserError(
                f"run {run.run_id} is neither an ablation or tune parent nor a train/evaluate run (tag {keys.KIND} "
                f"is {kind!r}); pass the parent run of `sentiment ablate` or `sentiment tune`, or a run of `sentiment "
                "train` / `evaluate`"
            )
    if extra and not curves:
        raise UserError(
            "--with-run adds points to a learning curve, and none of the runs is a grid that varies only "
            f"{CURVE_OPTION}"
        )
    names = ", ".join(f"`{r.run_id}`" for r in runs)
    source = source or "Rendered by `sentiment report` from the tracking server's records of"
    intro = Section(
        "",
        [
            f"{source} run(s) {names}; every number below is read from those runs (their metrics, summary tables and "
            "predictions tables), none is typed in."
        ],
    )
    return Document(title or "Results", [intro, *sections])


_SCORE_ROWS = (
    ("f1_macro", "macro F1"),
    ("roc_auc", "ROC AUC"),
    ("average_precision", "average precision"),
    ("ece", "expected calibration error"),
    ("ece_calibrated", "expected calibration error, temperature applied"),
    ("brier", "Brier score"),
    ("brier_calibrated", "Brier score, temperature applied"),
    ("loss", "cross-entropy loss"),
)


# long function: a run's sections in reading order (metrics, confusion matrix, figures), appended in turn
def run_sections(run, workdir: Path) -> list[Section]:
    """A training or evaluate run: metrics with intervals, confusion matrix, figures."""
    from sentiment import tracking

    m, p = run.metrics, run.params
    kind = run.tags.get(keys.KIND)
    split = run.tags.get(keys.SPLIT, "test")
    section = Section(f"{'Training' if kind == 'train' else 'Evaluation'} run `{run.name}`")
    train_seconds = sum(tracking.metric_values(run.run_id, "train/epoch_seconds")) if kind == "train" else 0.0
    timing = f"The run took {run.minutes:.1f} minutes, start to end" if run.minutes else "The run has not ended"
    if train_seconds:
        timing += f" ({train_seconds / 60:.1f} of them training"
        timing += f", {m['test/seconds'] / 60:.1f} testing)" if "test/seconds" in m else ")"
    section.blocks.append(
        f"Run `{run.run_id}` (experiment `{tracking.experiment_name(run.experiment_id)}`), model "
        f"`{p.get('model.name', '?')}` on `{data_name(p.get('data.source', '?'))}`. {timing}."
    )
    if kind == "train":
        section.blocks.append(_recipe_table(run))
    table = (
        tracking.load_run_table(run.run_id, f"predictions/{split}.parquet", columns=["id", "label", "prediction"])
        if f"{split}/accuracy" in m
        else None
    )
    rows = []
    if table is not None:
        rows.append((f"{split} reviews", f"{len(table):,}"))
        rows.append(
            (
                f"{split} accuracy [95% bootstrap CI]",
                f"{_pct(m[f'{split}/accuracy'])} [{_pct(m.get(f'{split}/accuracy_ci_low'))}, "
                f"{_pct(m.get(f'{split}/accuracy_ci_high'))}]",
            )
        )
        for key, label in _SCORE_ROWS:
            if f"{split}/{key}" in m:
                rows.append((f"{split} {label}", f"{m[f'{split}/{key}']:.4f}"))
    for key, label in (("val/best_accuracy", "best validation accuracy"), ("train/best_epoch", "best epoch")):
        if key in m:
            rows.append((label, _pct(m[key]) if "accuracy" in key else f"{int(m[key])}"))
    if "calibration/temperature" in m:
        rows.append(
            ("temperature the model applies (fitted on the validation split)", f"{m['calibration/temperature']:.4f}")
        )
    if rows:
        section.blocks.append(pd.DataFrame(rows, columns=["metric", "value"]))
    if table is not None:
        counts = evaluate.confusion(table)
        section.blocks.append(
            f"Confusion matrix, counted from the run's `predictions/{split}.parquet` (rows: true class, columns: "
            "predicted):"
        )
        section.blocks.append(
            pd.DataFrame(
                [["negative", *counts[0]], ["positive", *counts[1]]],
                columns=["true \\ predicted", "negative", "positive"],
            )
        )
    figures = (
        (f"figures/{split}_confusion_matrix.png", "Confusion matrix"),
        (f"figures/calibration_{split}.png", "Calibration before and after temperature scaling"),
        ("figures/training_curves.png", "Training curves"),
    )
    for artifact, caption in figures:
        path = tracking.download_artifact(run.run_id, artifact, workdir / run.run_id)
        if path is not None:
            section.blocks.append(
                Image(path, f"{run.run_id[:8]}_{Path(artifact).name}", f"{caption} (run {run.run_id})")
            )
    return [section]
