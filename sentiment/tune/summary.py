"""The end of a search, on the parent run: the trials table, the counts and minutes (spent, and
saved by pruning), Optuna's figures, the best trial's params and value, its model tested once on
the test split (the same predictions table and metrics as `sentiment evaluate`), the baseline
(the space's first enqueued trial, e.g. the preset's own recipe) compared with it on the same
validation and test reviews, and, with `--register-as`, its registration through the promotion
rule.

    sentiment tune --space experiments/search/cpu.yaml --register-as imdb-sentiment
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from sentiment import device as device_mod
from sentiment import evaluate, tracking
from sentiment import promote as promote_mod
from sentiment.errors import TrainingError
from sentiment.stats import Paired, compare, wilson_interval
from sentiment.tracking import keys
from sentiment.tune import study as study_mod
from sentiment.tune.trial import Report, show

STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}
FIGURES = ("optimization_history", "intermediate_values", "parallel_coordinate", "param_importances")


@dataclass(frozen=True)
class TuneResult:
    parent_run_id: str
    counts: dict[str, int]  # complete, pruned, failed (failures re-run after a kill included)
    ran: int  # trials the parent's own process ran in this attempt
    minutes: dict[str, float]  # tune/* minute metrics
    best: FrozenTrial | None = None
    best_run_id: str | None = None
    objective: str = "val/best_accuracy"
    test_metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)  # see versus_baseline
    baseline_note: str = ""
    registered: tracking.Registration | None = None


def finish(study: optuna.Study, plan, parent, ran: int, report: Report = lambda line: None) -> TuneResult:
    """Everything the parent holds at the end of an attempt (logged again, complete, by a resume).

    Raises:
        TrainingError: no trial completed (the parent ends FAILED; its table and counts are logged).
    """
    trials = study.get_trials(deepcopy=False)
    table = trials_table(trials, plan.space.searched)
    parent.log_table(table, "tune/trials")
    counts = {name: int((table["state"] == name).sum()) for name in ("complete", "pruned", "failed")}
    minutes = minutes_of(trials)
    parent.log_metrics({**{f"tune/trials_{k}": v for k, v in counts.items()}, **minutes}, step=plan.attempt)
    for name, figure in study_figures(study).items():
        parent.log_figure(figure, f"figures/tune/{name}.png")
        _close(figure)
    if not counts["complete"]:
        raise TrainingError(
            f"no trial of {len(trials)} completed ({counts['pruned']} pruned, {counts['failed']} failed); see the "
            f"trials' {keys.ERROR} tags, widen the space or relax the pruner, then add trials with --resume "
            f"{parent.run_id} --trials N"
        )
    best = study.best_trial
    best_run = best.user_attrs.get(study_mod.RUN_ATTR, "")
    _log_new_params(parent, {"best.trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})
    parent.log_metrics({"tune/best_value": best.value, "tune/best_trial": best.number}, step=plan.attempt)
    parent.set_tags(
        {
            keys.TUNE_BEST_TRIAL: best.number,
            keys.TUNE_BEST_RUN: best_run,
            keys.TUNE_OBJECTIVE: plan.space.objective,
        }
    )
    metrics, table, logged = test_best(best, parent)
    baseline, note = versus_baseline(trials, plan, best, table, parent)
    registered = None
    if plan.register is not None:
        registered = promote_mod.register(plan.register, parent, logged, table, metrics)
    return TuneResult(
        parent.run_id, counts, ran, minutes, best, best_run, plan.space.objective, metrics, baseline, note, registered
    )


def trials_table(trials: list[FrozenTrial], searched: list[str]) -> pd.DataFrame:
    """One row per trial: number, state, value, each searched option (``epochs`` too, when it is
    searched), its run, epochs trained of planned, wall and CPU seconds, and the trial it re-ran
    (-1: none)."""
    rows = []
    for t in trials:
        attrs = t.user_attrs
        rows.append(
            {
                "trial": t.number,
                "state": STATES.get(t.state, t.state.name.lower()),
                "value": t.value if t.state == TrialState.COMPLETE else _last_reported(t),
                **{name: t.params.get(name) for name in searched},
                "run_id": attrs.get(study_mod.RUN_ATTR, ""),
                "epochs_trained": attrs.get("epochs", 0),
                "epochs_planned": attrs.get("epochs_planned", 0),
                "wall_s": attrs.get("wall_s", float("nan")),
                "cpu_s": attrs.get("cpu_s", float("nan")),
                "retry_of": attrs.get(study_mod.RETRY_OF, -1),
                "started": str(t.datetime_start or ""),
            }
        )
    return pd.DataFrame(rows)


def _last_reported(trial: FrozenTrial) -> float:
    """A pruned trial's value: the last one it reported (NaN when none)."""
    return trial.intermediate_values[trial.last_step] if trial.last_step is not None else float("nan")


def minutes_of(trials: list[FrozenTrial]) -> dict[str, float]:
    """Minutes spent (wall clock summed over trials, and their processes' CPU time) and an
    estimate of those pruning saved: for each pruned trial, the epochs it did not train times its
    mean epoch time (CPU: scaled by the trial's own CPU/wall ratio)."""
    spent_wall = spent_cpu = saved_wall = saved_cpu = 0.0
    for t in trials:
        wall, cpu = t.user_attrs.get("wall_s", 0.0), t.user_attrs.get("cpu_s", 0.0)
        spent_wall, spent_cpu = spent_wall + wall, spent_cpu + cpu
        if t.state == TrialState.PRUNED:
            skipped = max(0, t.user_attrs.get("epochs_planned", 0) - t.user_attrs.get("epochs", 0)) * t.user_attrs.get(
                "epoch_s", 0.0
            )
            saved_wall += skipped
            saved_cpu += skipped * (cpu / wall if wall else 1.0)
    return {
        "tune/trial_minutes": spent_wall / 60,
        "tune/cpu_minutes": spent_cpu / 60,
        "tune/minutes_saved_by_pruning": saved_wall / 60,
        "tune/cpu_minutes_saved_by_pruning": saved_cpu / 60,
    }


def study_figures(study: optuna.Study) -> dict:
    """Optuna's matplotlib figures that the study has data for (importances need two complete
    trials; intermediate values a reported epoch): history, intermediate values (pruning),
    parallel coordinates, parameter importances (fANOVA, seeded)."""
    import matplotlib
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as plot

    draws = {
        "optimization_history": plot.plot_optimization_history,
        "intermediate_values": plot.plot_intermediate_values,
        "parallel_coordinate": plot.plot_parallel_coordinate,
        "param_importances": lambda s: plot.plot_param_importances(s, evaluator=FanovaImportanceEvaluator(seed=0)),
    }
    figures = {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials": the figure is left out
    # rc_context: Optuna's plots switch pyplot to its own style; it ends with them
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks these plots experimental
        try:
            for name, draw in draws.items():
                try:
                    axes = draw(study)
                except Exception:  # not enough trials for this figure yet
                    continue
                figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
                if figure.axes and any(ax.has_data() for ax in figure.axes):
                    figure.set_size_inches(9, 5.5)
                    figure.tight_layout()
                    figures[name] = figure
                else:
                    _close(figure)
        finally:
            optuna.logging.set_verbosity(verbosity)
    return figures


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def _log_new_params(parent, params: dict) -> None:
    """Params are written once: a resume that finds a better trial keeps the first attempt's
    ``best.*`` params and records the new best in tags and metrics."""
    existing = tracking.get_run(parent.run_id).params
    parent.log_params({k: v for k, v in params.items() if k not in existing})


def baseline_trial(trials: list[FrozenTrial], enqueued: tuple[dict, ...]) -> FrozenTrial | None:
    """The space's first enqueued trial, the recipe the search has to beat: the first trial that
    ended (complete or pruned) with exactly those values (a re-run after a killed process counts)."""
    if not enqueued:
        return None
    wanted = enqueued[0]

    def same(value, target) -> bool:
        return math.isclose(value, target, rel_tol=1e-9) if isinstance(target, float) else value == target

    for t in sorted(trials, key=lambda t: t.number):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and all(
            k in t.params and same(t.params[k], v) for k, v in wanted.items()
        ):
            return t
    return None


def versus_baseline(
    trials: list[FrozenTrial], plan, best: FrozenTrial, best_table: pd.DataFrame, parent
) -> tuple[dict[str, float], str]:
    """The best trial against the baseline trial (see `baseline_trial`), on the parent: both
    objective values, with 95% Wilson intervals over the validation reviews when the objective is
    an accuracy (``tune/best_value_ci_*``, ``tune/baseline_value*``); then, when the baseline
    completed and is not the best, its model tested on the best's test reviews
    (``test_baseline/*``, ``predictions/test_baseline``) and the paired delta best - baseline with
    its bootstrap interval and McNemar's p (``test/delta_vs_baseline*``). Tested once: a resume
    reads the table back. Returns the metrics and a one-line note (also the tag
    ``sentiment.tune.baseline``)."""
    baseline = baseline_trial(trials, plan.space.enqueue)
    if baseline is None:
        return {}, ""
    state = STATES.get(baseline.state, "?")
    value = baseline.value if baseline.state == TrialState.COMPLETE else _last_reported(baseline)
    metrics = {"tune/baseline_trial": float(baseline.number), "tune/baseline_value": value}
    best_run = best.user_attrs.get(study_mod.RUN_ATTR, "")
    reviews = tracking.dataset_rows(best_run).get("validation") if best_run else None
    if reviews and "accuracy" in plan.space.objective:
        for name, v in (("best", best.value), ("baseline", value)):
            if math.isfinite(v):
                metrics[f"tune/{name}_value_ci_low"], metrics[f"tune/{name}_value_ci_high"] = wilson_interval(
                    v, reviews
                )
        metrics["tune/val_reviews"] = float(reviews)
    if baseline.number == best.number:
        note = f"the baseline (trial {baseline.number}) is the best trial: the search did not beat it on validation"
    elif baseline.state != TrialState.COMPLETE:
        note = f"the baseline (trial {baseline.number}) was {state} at {plan.space.objective} {value:.4f}: not tested"
    else:
        table = _tested_baseline(baseline, parent)
        paired = compare([Paired.join(best_table, table)])
        metrics.update(
            {
                "test/delta_vs_baseline": paired["delta_test_accuracy"],
                "test/delta_vs_baseline_low": paired["delta_test_accuracy_low"],
                "test/delta_vs_baseline_high": paired["delta_test_accuracy_high"],
                "test/delta_vs_baseline_p_value": paired["p_value"],
                "test/paired_reviews_vs_baseline": float(paired["paired_reviews"]),
            }
        )
        note = (
            f"best trial {best.number} vs baseline trial {baseline.number} on the same {paired['paired_reviews']:,} "
            f"test reviews: {100 * paired['delta_test_accuracy']:+.2f} points "
            f"[{100 * paired['delta_test_accuracy_low']:+.2f}, {100 * paired['delta_test_accuracy_high']:+.2f}], "
            f"McNemar p {paired['p_value']:.2g}"
        )
    parent.log_metrics(metrics, step=plan.attempt)
    parent.set_tags({keys.TUNE_BASELINE_TRIAL: baseline.number, keys.TUNE_BASELINE: note})
    return metrics, note


def _tested_baseline(baseline: FrozenTrial, parent) -> pd.DataFrame:
    """The baseline trial's model on the test split (as `test_best`), logged as ``test_baseline``."""
    model_uri = baseline.user_attrs[study_mod.MODEL_ATTR]
    if tracking.run_tags(parent.run_id).get(keys.TUNE_TESTED_BASELINE) == model_uri:
        return tracking.load_run_table(parent.run_id, "predictions/test_baseline.parquet")
    plan, table = _predict_test(model_uri)
    evaluate.log_evaluation(table, "test_baseline", parent, seed=plan.config.seed)
    parent.set_tags({keys.TUNE_TESTED_BASELINE: model_uri})
    return table


def _predict_test(model_uri: str) -> tuple[evaluate.EvaluatePlan, pd.DataFrame]:
    """A trial's model on the test split, planned and predicted as `sentiment evaluate` does (its
    own config's split, length and temperature)."""
    plan = evaluate.plan_evaluate(model_uri, None, "test")
    return plan, evaluate.predict_plan(plan, device_mod.pick_runtime(plan.config.train))


def test_best(best: FrozenTrial, parent) -> tuple[dict[str, float], pd.DataFrame, tracking.LoggedModelRef]:
    """The best trial's model on the test split, once: planned and predicted as `sentiment
    evaluate` does (its own config's split, length and temperature) and logged on the parent
    (``test/*`` metrics, also linked to the model; ``predictions/test``; the figures). A resume
    whose best trial was tested already reads that table back instead."""
    model_uri = best.user_attrs[study_mod.MODEL_ATTR]
    tags = tracking.run_tags(parent.run_id)
    if tags.get(keys.TUNE_TESTED_MODEL) == model_uri:
        table = tracking.load_run_table(parent.run_id, "predictions/test.parquet")
        metrics = tracking.get_run(parent.run_id).metrics
        return (
            {k: v for k, v in metrics.items() if k.startswith("test/")},
            table,
            tracking.LoggedModelRef(tags[keys.TUNE_TESTED_MODEL_ID], model_uri),
        )
    plan, table = _predict_test(model_uri)
    model_id = plan.loaded.model_id or ""
    if model_id:
        parent.link_model(model_id)
    parent.log_splits(plan.splits, only="test")
    metrics = evaluate.log_evaluation(table, "test", parent, model_id=model_id or None, seed=plan.config.seed)
    parent.set_tags(
        {
            keys.TUNE_TESTED_TRIAL: best.number,
            keys.TUNE_TESTED_MODEL: model_uri,
            keys.TUNE_TESTED_MODEL_ID: model_id,
        }
    )
    return metrics, table, tracking.LoggedModelRef(model_id, model_uri)


def report_lines(result: TuneResult, trials: int) -> list[str]:
    """What `sentiment tune` prints at the end."""
    c, m = result.counts, result.minutes
    lines = [
        f"trials:          {sum(c.values())} of {trials} ({c['complete']} complete, {c['pruned']} pruned, "
        f"{c['failed']} failed); {result.ran} run by this process"
    ]
    if result.best is not None:
        params = " ".join(f"{k}={show(v)}" for k, v in result.best.params.items())
        lines.append(
            f"best trial:      {result.best.number} (run {result.best_run_id}): {result.objective} "
            f"{result.best.value:.4f}; {params}"
        )
    t = result.test_metrics
    if "test/accuracy" in t:
        lines.append(
            f"test accuracy:   {t['test/accuracy']:.4f} (95% CI "
            f"{t['test/accuracy_ci_low']:.4f}-{t['test/accuracy_ci_high']:.4f}) "
            f"on {int(t.get('test/examples', 0)):,} reviews: the best trial's model, tested once"
        )
    if result.baseline_note:
        lines.append(f"baseline:        {result.baseline_note}")
    lines.append(
        f"CPU minutes:     {m['tune/cpu_minutes']:.1f} spent in trials; pruning saved about "
        f"{m['tune/cpu_minutes_saved_by_pruning']:.1f}"
    )
    if result.registered is not None:
        reg = result.registered
        lines.append(f"registered:      {reg.uri} (aliases: {'candidate, champion' if reg.champion else 'candidate'})")
        if reg.decision is not None:
            lines.append(reg.decision.line())
    lines.append(f"parent run:      {result.parent_run_id}")
    return lines
