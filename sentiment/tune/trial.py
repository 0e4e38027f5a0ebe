"""One trial of a search: a child run of the tune parent that is an ordinary `sentiment train` run
(`run_train` itself: the same metrics, tables and logged model, validation only), reporting each
epoch's validation score to Optuna's pruner, and tagged with its number and how it ended
(``sentiment.trial``, ``sentiment.trial_state`` = complete, pruned or failed).

A pruned trial stops after the epoch the pruner judged; its run keeps every epoch it trained and
ends FINISHED (it did what the search asked of it), with ``sentiment.trial_state`` pruned and
``sentiment.pruned_epoch``; it logs no model.

    sentiment tune --space experiments/search/cpu.yaml --trials 30
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from sentiment import tracking
from sentiment.tracking import keys
from sentiment.train import History, TrainRequest, run_train
from sentiment.tune.space import Space
from sentiment.tune.study import MODEL_ATTR, RUN_ATTR

Report = Callable[[str], None]


class Pruned(Exception):
    """Raised from the epoch hook when the pruner stops a trial (caught around `run_train`)."""


@dataclass
class Reporter:
    """A trial's `Hooks.after_epoch`: report the epoch's value (step = epoch), stop the training
    when the pruner says so. The last epoch is never pruned: the trial has trained by then, and
    its value counts as a complete one."""

    trial: optuna.Trial
    field: str  # the EpochResult field reported, e.g. val_accuracy
    epochs: int
    results: list = field(default_factory=list)

    def __call__(self, result) -> None:
        self.results.append(result)
        self.trial.report(float(getattr(result, self.field)), step=result.epoch)
        if result.epoch < self.epochs and self.trial.should_prune():
            raise Pruned(f"pruned after epoch {result.epoch} of {self.epochs}")


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one process shares."""

    space: Space
    parent_run_id: str
    workdir: Path  # a trial trains in workdir/<its run id>, removed afterwards (the run holds the model)
    should_stop: Callable[[], int] = lambda: 0
    report: Report = lambda line: None
    worker: int = 0  # which process of the search runs the trial (0: the parent's own)


def make_objective(ctx: TrialContext) -> Callable[[optuna.Trial], float]:
    """The objective Optuna calls: sample (or take the enqueued) values, train, return the score."""

    def objective(trial: optuna.Trial) -> float:
        values = {d.option: d.suggest(trial) for d in ctx.space.dimensions}
        return run_trial(trial, values, ctx)

    return objective


def run_trial(trial: optuna.Trial, values: dict, ctx: TrialContext) -> float:
    """Train the trial's config in a child run of the parent; return the objective's value.

    Raises:
        optuna.TrialPruned: the pruner stopped it (its run ends FINISHED, tagged pruned).
        Exception: training failed (its run ends FAILED with ``sentiment.error``, tagged failed).
    """
    space = ctx.space
    config = space.config(values)
    reporter = Reporter(trial, space.reported, config.train.epochs)
    started = (time.perf_counter(), time.process_time())
    tags = {
        keys.TRIAL: str(trial.number),
        keys.TRIAL_STATE: "running",
        keys.TRIAL_STUDY: trial.study.study_name,
        keys.TRIAL_WORKER: str(ctx.worker),
    }
    run_id, state, outcome = None, "failed", None
    try:
        with tracking.open_run(
            run_name=f"{space.name}-trial-{trial.number}",
            tags=tags,
            system_metrics=True,
            parent_run_id=ctx.parent_run_id,
            resume_command=f"sentiment tune --resume {ctx.parent_run_id}",
        ) as tracker:
            run_id = tracker.run_id
            trial.set_user_attr(RUN_ATTR, run_id)
            outcome, state = _train(config, tracker, ctx, reporter)
            tracker.set_tags(_end_tags(state, reporter))
    except BaseException as exc:  # the run has ended FAILED (or KILLED on a signal)
        if run_id:
            tracking.log_to_run(run_id, tags={keys.TRIAL_STATE: "failed"})
        _record(trial, reporter, started, config.train.epochs)
        ctx.report(trial_line(trial.number, run_id, "failed", values, f"failed: {tracking.one_line(exc)[:300]}"))
        raise
    _record(trial, reporter, started, config.train.epochs)
    if state == "pruned":
        last = reporter.results[-1]
        how = (
            f"pruned after epoch {last.epoch} of {config.train.epochs} ({space.objective.replace('best_', '')} "
            f"{getattr(last, space.reported):.4f})"
        )
        ctx.report(trial_line(trial.number, run_id, state, values, how))
        raise optuna.TrialPruned(how)
    trial.set_user_attr(MODEL_ATTR, outcome.model_uri)
    value = objective_value(space.objective, outcome.history)
    ctx.report(trial_line(trial.number, run_id, state, values, f"complete, {space.objective} {value:.4f}"))
    return value


def _train(config, tracker, ctx: TrialContext, reporter: Reporter):
    workdir = ctx.workdir / tracker.run_id
    try:
        request = TrainRequest(workdir, should_stop=ctx.should_stop, after_epoch=reporter)
        return run_train(config, tracker, request), "complete"
    except Pruned:
        return None, "pruned"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _end_tags(state: str, reporter: Reporter) -> dict:
    tags = {keys.TRIAL_STATE: state, keys.TRIAL_EPOCHS: len(reporter.results)}
    if state == "pruned":
        tags[keys.PRUNED_EPOCH] = reporter.results[-1].epoch
    return tags


def _record(trial: optuna.Trial, reporter: Reporter, started: tuple[float, float], epochs: int) -> None:
    """What the parent's summary needs of a trial, as its user attributes: wall and CPU seconds
    (this process's CPU time: all its threads), epochs trained of planned, mean epoch seconds."""
    seconds = [r.seconds for r in reporter.results]
    trial.set_user_attr("wall_s", time.perf_counter() - started[0])
    trial.set_user_attr("cpu_s", time.process_time() - started[1])
    trial.set_user_attr("epochs", len(seconds))
    trial.set_user_attr("epochs_planned", epochs)
    trial.set_user_attr("epoch_s", sum(seconds) / len(seconds) if seconds else 0.0)


def objective_value(objective: str, history: History) -> float:
    """The objective from a trial's History: ``val/best_*`` at the best epoch (by validation
    accuracy, the epoch whose model is logged), ``val/accuracy``, ``val/f1_macro`` and
    ``val/loss`` at the last epoch (the values the run's metrics end with)."""
    best = next(e for e in history.epochs if e.epoch == history.best_epoch)
    last = history.epochs[-1]
    values = {
        "val/best_accuracy": history.best_val_accuracy,
        "val/best_f1_macro": best.val_f1_macro,
        "val/accuracy": last.val_accuracy,
        "val/f1_macro": last.val_f1_macro,
        "val/loss": last.val_loss,
    }
    value = float(values[objective])
    return value if math.isfinite(value) else float("nan")


def show(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_line(number: int, run_id: str | None, state: str, values: dict, how: str) -> str:
    """``trial 3 (run 8f2c...): complete, val/best_accuracy 0.8512; lr=0.00012 batch_size=16``"""
    params = " ".join(f"{k}={show(v)}" for k, v in values.items())
    return f"trial {number} (run {run_id or 'not created'}): {how}; {params}"
