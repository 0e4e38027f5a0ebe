"""The Optuna side of a search: the study's storage (a SQLite file by default, any SQLAlchemy
database URL to share it between processes and machines), the sampler and pruner a space asks
for, the trial budget every process checks before it starts a trial, and the recovery of trials
whose process died (failed, their parameters enqueued again, their MLflow runs ended KILLED).

    python -c "from sentiment.tune.study import redact; print(redact('postgresql://me:secret@db/optuna'))"
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from sentiment import tracking
from sentiment.errors import UserError
from sentiment.tracking import keys

RUN_ATTR = "mlflow_run_id"  # user attribute of a trial: its child run
MODEL_ATTR = "model_uri"  # user attribute of a complete trial: its logged model
RETRY_OF = "retry_of"  # user attribute of a re-enqueued trial: the number of the trial it replaces
STORAGE_VARIABLE = "SENTIMENT_TUNE_STORAGE"  # --storage's environment variable (keeps passwords out of argv)
# A running trial writes a heartbeat every HEARTBEAT_S seconds (SENTIMENT_TUNE_HEARTBEAT_S); one
# silent for six of them (2 minutes by default) is taken as dead (its process was killed) by the
# next process that starts a trial or waits for others: failed and enqueued again.
HEARTBEAT_VARIABLE = "SENTIMENT_TUNE_HEARTBEAT_S"
HEARTBEAT_S = 20
GRACE_HEARTBEATS = 6
STUDY_PREFIX = "tune-"


def study_name(parent_run_id: str) -> str:
    """One study per tune parent run."""
    return f"{STUDY_PREFIX}{parent_run_id}"


def default_storage(output_dir: Path) -> str:
    """A SQLite file under the output folder (``.sentiment/tune/optuna.db``): one machine."""
    path = (output_dir / "optuna.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def redact(url: str) -> str:
    """The storage URL without its password: what the parent run records."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(a storage URL that does not parse)"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's database, opened (and its tables created) before any run exists.

    Raises:
        UserError: the URL does not parse, its driver is missing, or the database does not answer.
    """
    heartbeat = _heartbeat_s()
    sqlite = url.startswith("sqlite")
    # SQLite: several processes share one file, so wait for its lock instead of failing at once.
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat,
                grace_period=GRACE_HEARTBEATS * heartbeat,
                heartbeat_stale_trial_callback=_on_stale,
            )
    except ModuleNotFoundError as exc:
        raise UserError(
            f"--storage {redact(url)}: its database driver is not installed ({exc.name}); e.g. pip install "
            "'psycopg[binary]' for postgresql://"
        ) from None
    except Exception as exc:
        raise UserError(f"--storage {redact(url)}: cannot open it ({tracking.one_line(exc)[:200]})") from None


def _heartbeat_s() -> int:
    value = os.environ.get(HEARTBEAT_VARIABLE, "").strip()
    if not value:
        return HEARTBEAT_S
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{HEARTBEAT_VARIABLE}={value!r}: give whole seconds, at least 1 (default {HEARTBEAT_S})")
    return int(value)


def build_sampler(space, offset: int) -> optuna.samplers.BaseSampler:
    """TPE (constant liar on: parallel trials do not all sample the same point) or random, seeded
    with the space's seed plus ``offset``: each process and each resumed attempt draws afresh."""
    name, settings = space.sampler
    settings = dict(settings)
    seed = int(settings.pop("seed", 0)) + offset
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    settings.setdefault("constant_liar", True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, **settings)


def build_pruner(space) -> optuna.pruners.BasePruner:
    """``median``, ``successive_halving``, ``threshold`` (deterministic: below ``lower`` or above
    ``upper``), or ``none``; steps are epochs."""
    name, settings = space.pruner
    pruners = {
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "none": optuna.pruners.NopPruner,
    }
    return pruners[name](**settings)


def create_study(storage, parent_run_id: str, space, offset: int = 0) -> optuna.Study:
    """A new study for a new parent run, its enqueued trials first."""
    study = optuna.create_study(
        study_name=study_name(parent_run_id),
        storage=storage,
        direction=space.direction,
        sampler=build_sampler(space, offset),
        pruner=build_pruner(space),
    )
    study.set_user_attr("mlflow_parent_run_id", parent_run_id)
    study.set_user_attr("objective", space.objective)
    for values in space.enqueue:
        study.enqueue_trial(values)
    return study


def load_study(storage, name: str, space, offset: int) -> optuna.Study:
    """The study of a parent run, to resume or join.

    Raises:
        UserError: the storage holds no such study (another --storage?).
    """
    try:
        return optuna.load_study(
            study_name=name, storage=storage, sampler=build_sampler(space, offset), pruner=build_pruner(space)
        )
    except KeyError:
        raise UserError(f"the storage has no study {name!r}; pass the --storage the search was started with") from None


def counted(study: optuna.Study) -> int:
    """Trials towards the budget: every trial started (running or ended), except failures whose
    parameters were enqueued again (their retry counts instead) and trials still waiting."""
    trials = study.get_trials(deepcopy=False)
    replaced = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in replaced)


def remaining(study: optuna.Study, trials: int) -> int:
    """Trials still to start for a budget of ``trials`` (checked by each process before each
    trial, so processes sharing the study stop together at the budget)."""
    return max(0, trials - counted(study))


def requeue(study: optuna.Study, trial: FrozenTrial, why: str) -> None:
    """A trial whose process died: enqueue its parameters again and end its child run KILLED
    (tag ``sentiment.trial_state`` failed). The trial itself must already be FAIL."""
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number}, skip_if_exists=False)
    run_id = trial.user_attrs.get(RUN_ATTR)
    if run_id:
        end_trial_run(run_id, f"{why}; its parameters were enqueued again")


def end_trial_run(run_id: str, why: str) -> None:
    """A child run whose process died: tagged failed, ended KILLED (if it had not ended)."""
    tracking.log_to_run(run_id, tags={keys.TRIAL_STATE: "failed"})
    if tracking.get_run(run_id).status in ("RUNNING", "SCHEDULED"):
        tracking.fail_run(run_id, why, "KILLED")


def _on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's heartbeat callback: a trial silent for its grace period was just failed by this process."""
    requeue(study, trial, f"trial {trial.number}'s process stopped sending heartbeats")


def recover(study: optuna.Study, parent_run_id: str) -> list[int]:
    """`--resume`: the search's processes are gone, so every RUNNING trial was left by a killed
    one: failed and enqueued again; every RUNNING child run of the parent ends KILLED. Returns the
    numbers of the trials re-enqueued."""
    again = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        requeue(study, trial, f"trial {trial.number}'s process was killed")
        again.append(trial.number)
    for run in tracking.child_runs(parent_run_id):
        if run.status in ("RUNNING", "SCHEDULED"):
            end_trial_run(run.run_id, "its process was killed before the trial ended")
    return again


def fail_stale(study: optuna.Study) -> None:
    """Fail (and re-enqueue) trials whose heartbeat stopped, e.g. while waiting for others."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class _NoTracebacks(logging.Filter):
    """Optuna logs a failed trial with its traceback; our own trial line already says what failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def configure_logging() -> None:
    """Optuna's INFO lines (every trial's result, which our trial lines print) only with -v."""
    from sentiment import logs

    level = logs.level()
    optuna.logging.set_verbosity(min(level, logging.WARNING))
    if level >= logging.WARNING:  # (a handler's filter sees the records of optuna's child loggers too)
        for handler in logging.getLogger("optuna").handlers:
            if not any(isinstance(f, _NoTracebacks) for f in handler.filters):
                handler.addFilter(_NoTracebacks())
