"""Running a search: `plan_tune` checks everything before the parent run exists; `run_tune`
creates (or resumes) the parent's study and runs trials in this process and in worker processes
(`--max-parallel`), which share the study's storage, until the budget is reached, waits for
trials still running elsewhere (`--join` on other machines), then writes the summary;
`join_study` is such a worker.

    sentiment tune --space experiments/search/cpu.yaml --trials 30 --max-parallel 2
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sentiment import tracking
from sentiment.config import to_yaml
from sentiment.errors import Interrupted, UserError
from sentiment.preflight import check_configs
from sentiment.promote import RegisterRequest
from sentiment.tracking import keys
from sentiment.tune import study as study_mod
from sentiment.tune.space import Space, load_space
from sentiment.tune.trial import Report, TrialContext, make_objective

SPACE_ARTIFACT = "tune/space.yaml"
WORKER_VARIABLE = "SENTIMENT_TUNE_WORKER"  # a worker's index, set for the processes --max-parallel starts
POLL_S = 5.0  # how often the parent's process looks at trials running elsewhere


@dataclass(frozen=True)
class TunePlan:
    """What `plan_tune` checked before any run exists."""

    space: Space
    trials: int  # the study's budget of trials (see study.counted)
    storage: Any  # the opened optuna RDBStorage
    storage_url: str
    mode: str  # new, resume or join
    parent_run_id: str | None = None
    attempt: int = 1  # 1 for a new search; +1 at each --resume
    max_parallel: int = 1
    output_dir: Path = Path(".sentiment/tune")
    register: RegisterRequest | None = None


def plan_tune(
    space_file: str | None,
    trials: int | None = None,
    direction: str | None = None,
    max_parallel: int = 1,
    resume: str | None = None,
    join: str | None = None,
    storage: str | None = None,
    data: str | None = None,
    register: RegisterRequest | None = None,
    output_dir: Path = Path(".sentiment/tune"),
) -> TunePlan:
    """The space read and validated (line-numbered errors), the tracking server, the preflight
    checks of the trials' model and data, and the study's storage: all before a run exists.

    Raises:
        UserError: the first problem, in one line.
    """
    if max_parallel < 1:
        raise UserError(f"--max-parallel must be >= 1, got {max_parallel}")
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}")
    if resume and join:
        raise UserError(
            "--resume continues a search whose processes are gone, --join adds a worker to a running one: pass one of "
            "them"
        )
    if not (resume or join):
        if not space_file:
            raise UserError("--space is required: a search space file such as experiments/search/cpu.yaml")
        space = load_space(space_file, data)
        if direction:
            space = replace(space, direction=direction)
        tracking.connect()
        check_trial_inputs(space)
        url = storage or study_mod.default_storage(output_dir)
        opened = study_mod.open_storage(url)
        total = trials or space.trials
        if len(space.enqueue) > total:
            raise UserError(f"the space enqueues {len(space.enqueue)} trials but --trials is {total}")
        return TunePlan(space, total, opened, url, "new", None, 1, max_parallel, output_dir, register)
    return _plan_existing(
        resume or join,
        "resume" if resume else "join",
        space_file,
        trials,
        storage,
        data,
        max_parallel,
        register,
        output_dir,
    )


def _plan_existing(
    parent_id: str,
    mode: str,
    space_file: str | None,
    trials: int | None,
    storage: str | None,
    data: str | None,
    max_parallel: int,
    register: RegisterRequest | None,
    output_dir: Path,
) -> TunePlan:
    """--resume / --join: the parent's own space, data, budget and storage, checked."""
    tracking.connect()
    tracking.check_same_experiment(parent_id)
    run = tracking.get_run(parent_id)
    if run.tags.get(keys.KIND) != "tune":
        raise UserError(f"run {parent_id} is not a tune parent (tag {keys.KIND} is {run.tags.get(keys.KIND)!r})")
    before = run.tags.get(keys.TUNE_DATA, "")
    if data is not None and data != before:
        raise UserError(
            f"run {parent_id} searched on data {before or 'of its space file'!r}; "
            f"{'pass --data ' + before if before else 'drop --data'}"
        )
    text = tracking.load_run_text(parent_id, SPACE_ARTIFACT, hint="it was not started by sentiment tune")
    space = load_space(run.tags.get(keys.TUNE_SPACE_FILE, "space.yaml"), before or None, text=text)
    if space_file and Path(space_file).read_text() != text:
        raise UserError(
            f"{space_file} is not the space run {parent_id} searched (its copy is the run's {SPACE_ARTIFACT}); drop "
            "--space to use it"
        )
    url = storage or run.tags.get(keys.TUNE_STORAGE, "")
    if not storage and (not url or url != study_mod.redact(url)):  # the tag hides a password: the URL must come again
        raise UserError(
            f"run {parent_id}'s study storage needs its password: pass --storage URL (or set "
            f"{study_mod.STORAGE_VARIABLE})"
        )
    check_trial_inputs(space)
    opened = study_mod.open_storage(url)
    study_mod.load_study(opened, study_mod.study_name(parent_id), space, 0)  # the study is there
    total = trials or int(run.tags.get(keys.TUNE_TRIALS, space.trials))
    attempt = int(run.tags.get(keys.TUNE_ATTEMPT, "1")) + (mode == "resume")
    return TunePlan(space, total, opened, url, mode, parent_id, attempt, max_parallel, output_dir, register)


def check_trial_inputs(space: Space) -> None:
    """The base recipe, then the base with each searched option at its extremes, checked as
    `sentiment train` checks its run (`preflight.check_configs`)."""
    check_configs([space.base_config(), *space.corner_configs()])


def sampler_offset(attempt: int, worker: int) -> int:
    """Each attempt and each worker process seeds its sampler differently, so none replays
    another's draws; the first process of a new search uses the space's seed as given."""
    return 1000 * (attempt - 1) + worker


def _worker_index() -> int:
    value = os.environ.get(WORKER_VARIABLE)
    return int(value) if value and value.isdigit() else random.randint(100, 999)  # a --join from elsewhere


def run_tune(plan: TunePlan, parent, should_stop=lambda: 0, report: Report = lambda line: None):
    """The tune stage in the open parent run: the study created or resumed, trials run here and
    in ``plan.max_parallel - 1`` worker processes until the budget is reached, then the summary.

    Returns:
        The summary (summary.TuneResult), also logged on the parent.
    """
    from sentiment.tune.summary import finish

    study = _start(plan, parent, report)
    workers = _spawn_workers(plan, parent.run_id)
    try:
        ran = _work(study, plan, parent.run_id, should_stop, report)
        ran += _settle(study, plan, parent.run_id, workers, should_stop, report)
    finally:
        _stop_workers(workers)
    return finish(study, plan, parent, ran, report)


def join_study(plan: TunePlan, should_stop=lambda: 0, report: Report = lambda line: None) -> int:
    """`--join`: run trials of the parent's study in this process (and ``plan.max_parallel - 1``
    more) until its budget is reached; each is a child of the parent. Returns the number of
    trials this process ran."""
    worker = _worker_index()
    study = study_mod.load_study(
        plan.storage, study_mod.study_name(plan.parent_run_id), plan.space, sampler_offset(plan.attempt, worker)
    )
    workers = _spawn_workers(plan, plan.parent_run_id, first=worker * 100 + 1)
    try:
        ran = _work(study, plan, plan.parent_run_id, should_stop, report, worker)
        for process, _ in workers:
            process.wait()
    finally:
        _stop_workers(workers)
    return ran


def _start(plan: TunePlan, parent, report: Report) -> optuna.Study:
    """A new study (the parent's tags, params and space), or the parent's study resumed."""
    space = plan.space
    tags = {keys.TUNE_ATTEMPT: plan.attempt, keys.TUNE_TRIALS: plan.trials}
    if plan.mode == "resume":
        study = study_mod.load_study(
            plan.storage, study_mod.study_name(parent.run_id), space, sampler_offset(plan.attempt, 0)
        )
        again = study_mod.recover(study, parent.run_id)
        tracking.delete_tag(parent.run_id, keys.ERROR)  # the previous attempt's
        parent.set_tags(tags)
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
        rerun = (
            f"; re-running the parameters of trial(s) {', '.join(map(str, again))}, left running by a killed process"
            if again
            else ""
        )
        report(f"resumed study {study.study_name}: {done} trials ended before, kept{rerun}")
        return study
    study = study_mod.create_study(plan.storage, parent.run_id, space, sampler_offset(1, 0))
    parent.set_tags(
        {
            **tags,
            keys.KIND: "tune",
            keys.TUNE_STUDY: study.study_name,
            keys.TUNE_STORAGE: study_mod.redact(plan.storage_url),
            keys.TUNE_SPACE: space.name,
            keys.TUNE_SPACE_FILE: str(space.path),
            keys.TUNE_DATA: space.data,
        }
    )
    parent.log_params(
        {
            "tune.space": space.name,
            "tune.objective": space.objective,
            "tune.direction": space.direction,
            "tune.trials": plan.trials,
            "tune.searched": ",".join(space.searched),
            "tune.sampler": space.sampler[0],
            "tune.pruner": space.pruner[0],
            "tune.sampler_seed": space.sampler[1].get("seed", 0),
            "tune.max_parallel": plan.max_parallel,
        }
    )
    parent.log_text(space.text, SPACE_ARTIFACT)
    parent.log_text(to_yaml(space.base_config()), "tune/base_config.yaml")
    return study


def _work(study: optuna.Study, plan: TunePlan, parent_run_id: str, should_stop, report: Report, worker: int = 0) -> int:
    """Trials in this process while the budget allows, checked before each one (trials running
    in other processes count), so processes sharing the study stop together."""
    ctx = TrialContext(plan.space, parent_run_id, plan.output_dir / parent_run_id, should_stop, report, worker)
    objective = make_objective(ctx)
    ran = 0
    while study_mod.remaining(study, plan.trials) > 0 and not should_stop():
        # catch: one failing trial (a diverging learning rate, a model that does not fit) must
        # not end the search; it is tagged failed and counted. A signal is not an Exception.
        study.optimize(objective, n_trials=1, catch=(Exception,))
        ran += 1
    if should_stop():
        raise Interrupted(should_stop())
    return ran


def _settle(study: optuna.Study, plan: TunePlan, parent_run_id: str, workers: list, should_stop, report: Report) -> int:
    """After this process's own trials: wait for the workers and for trials running on other
    machines; trials of a process that died (no heartbeat) are enqueued again and run here."""
    ran = 0
    while True:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        alive = [w for w in workers if w[0].poll() is None]
        if not running and not alive:
            if study_mod.remaining(study, plan.trials) == 0 or should_stop():
                break
            ran += _work(study, plan, parent_run_id, should_stop, report)
            continue
        if should_stop():
            raise Interrupted(should_stop())
        time.sleep(POLL_S)
        study_mod.fail_stale(study)
    for process, log in workers:
        if process.returncode:
            report(f"a worker process exited with code {process.returncode}; its log: {log}")
    return ran


def _spawn_workers(plan: TunePlan, parent_run_id: str, first: int = 1) -> list[tuple[subprocess.Popen, Path]]:
    """``max_parallel - 1`` processes of `sentiment tune --join PARENT` on this machine (worker
    indices from ``first``), sharing the storage (passed in the environment, password included)
    and the CPU cores; their trial lines go to this stdout, their progress to a log file each."""
    if plan.max_parallel > 1:
        import torch

        torch.set_num_threads(_threads(plan))  # this process is one of the workers that share the cores
    folder = plan.output_dir / parent_run_id
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, study_mod.STORAGE_VARIABLE: plan.storage_url, "OMP_NUM_THREADS": str(_threads(plan))}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "sentiment", "tune", "--join", parent_run_id, "--output-dir", str(plan.output_dir)]
    workers = []
    for index in range(first, first + plan.max_parallel - 1):
        log = folder / f"worker-{index}.log"
        with open(log, "w") as handle:  # (the child keeps its own copy of the descriptor)
            process = subprocess.Popen(cmd, env={**env, WORKER_VARIABLE: str(index)}, stderr=handle)
        workers.append((process, log))
    return workers


def _threads(plan: TunePlan) -> int:
    return max(1, (os.cpu_count() or 1) // plan.max_parallel)


def _stop_workers(workers: list) -> None:
    """On the way out (normally they have ended): a signal to any still running, then wait."""
    for process, _ in workers:
        if process.poll() is None:
            process.terminate()
    for process, _ in workers:
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
