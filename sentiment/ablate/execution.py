"""Running an ablation: one child run per variant and seed under an open parent run, in this
process, as parallel subprocesses, or on an MLflow Projects backend; then the summary.

    sentiment ablate --grid experiments/quick.yaml --max-parallel 2
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from sentiment import tracking
from sentiment.ablate.grid import Child, Grid
from sentiment.ablate.summary import Summary, finished_children, log_summary, summarise
from sentiment.errors import UserError
from sentiment.tracking import keys

PROJECT_DIR = Path(__file__).resolve().parents[2]  # where MLproject lives in a checkout


@dataclass(frozen=True)
class Execution:
    """How children run: in this process one after another, as subprocesses, or on a backend."""

    max_parallel: int = 1
    backend: str | None = None
    backend_config: str | None = None
    workdir: Path = Path(".sentiment/ablations")

    def __post_init__(self) -> None:
        if self.max_parallel < 1:
            raise UserError(f"--max-parallel must be >= 1, got {self.max_parallel}")
        if self.backend_config and not self.backend:
            raise UserError("--backend-config needs --backend (e.g. --backend kubernetes)")
        if self.backend_config and not Path(self.backend_config).is_file():
            raise UserError(f"--backend-config {self.backend_config!r} is not a file")
        if self.backend and not (PROJECT_DIR / "MLproject").is_file():
            raise UserError(
                f"--backend runs the MLflow project, but {PROJECT_DIR} has no MLproject; run from a checkout of the "
                "project"
            )


@dataclass(frozen=True)
class ChildOutcome:
    child: Child
    run_id: str | None
    status: str  # FINISHED or FAILED
    error: str | None = None


Report = Callable[[str], None]


def run_ablation(
    grid: Grid, parent, execution: Execution = Execution(), resume: bool = False, report: Report = lambda line: None
) -> Summary:
    """The ablate stage: every child of the grid under the open parent run, then the summary.

    Args:
        grid: a loaded grid.
        parent: the tracker of the open parent run.
        execution: in process (max_parallel 1), subprocesses, or an MLflow Projects backend.
        resume: the parent existed already: skip children that FINISHED under it.
        report: receives one line per child as it ends.
    Returns:
        The summary, also logged on the parent (table, CSV, metrics, figure, grid file).
    """
    attempt = _start_parent(grid, parent, resume)
    children = grid.children()
    earlier = tracking.child_runs(parent.run_id) if resume else []
    for run in earlier:
        if run.status in ("RUNNING", "SCHEDULED"):  # left over from a crashed attempt
            tracking.fail_run(run.run_id, "did not finish; re-run when the ablation was resumed", "KILLED")
    done = finished_children(earlier)
    todo = [c for c in children if c.key not in done]
    report(
        f"parent run {parent.run_id}: {len(children)} children ({len(grid.variants)} variants x {len(grid.seeds)} "
        f"seeds), {len(todo)} to run"
    )
    outcomes = _run_children(todo, grid, parent.run_id, execution, report)
    summary = summarise(grid, parent.run_id)
    summary.ran, summary.skipped = len(outcomes), len(children) - len(todo)
    log_summary(summary, parent, attempt)
    return summary


def _start_parent(grid: Grid, parent, resume: bool) -> int:
    if resume:
        attempt = int(tracking.get_run(parent.run_id).tags.get(keys.ABLATION_ATTEMPT, "1")) + 1
        parent.log_text(grid.text, f"grid/resumed/{grid.path.name}")
        tracking.delete_tag(parent.run_id, keys.ERROR)  # the previous attempt's
    else:
        attempt = 1
        parent.log_params(
            {
                "ablation.grid": grid.name,
                "ablation.preset": grid.preset,
                "ablation.seeds": ",".join(map(str, grid.seeds)),
                "ablation.variants": len(grid.variants),
                "ablation.children": len(grid.variants) * len(grid.seeds),
            }
        )
        parent.log_text(grid.text, f"grid/{grid.path.name}")
    tags = {
        keys.KIND: "ablation",
        keys.GRID: grid.name,
        keys.GRID_FILE: str(grid.path),
        keys.ABLATION_ATTEMPT: attempt,
    }
    if grid.data:
        tags[keys.ABLATION_DATA] = grid.data
    parent.set_tags(tags)
    return attempt


def check_children(grid: Grid) -> None:
    """Before the parent run exists: every child checked as `sentiment train` checks its run
    (`preflight.check_configs`)."""
    from sentiment.preflight import check_configs

    check_configs(child.config for child in grid.children())


def check_resumable(parent_run_id: str, grid: Grid) -> None:
    """The run to resume must be an ablation parent of the same grid, in the active experiment."""
    tracking.connect()
    tracking.check_same_experiment(parent_run_id)
    run = tracking.get_run(parent_run_id)
    if run.tags.get(keys.KIND) != "ablation":
        raise UserError(
            f"run {parent_run_id} is not an ablation parent (tag {keys.KIND} is {run.tags.get(keys.KIND)!r})"
        )
    if run.tags.get(keys.GRID) != grid.name:
        raise UserError(
            f"run {parent_run_id} ran grid {run.tags.get(keys.GRID)!r}, not {grid.name!r}; pass --grid "
            f"{run.tags.get(keys.GRID_FILE, 'its grid file')}"
        )
    before = run.tags.get(keys.ABLATION_DATA, "")
    if before != grid.data:
        hint = f"pass --data {before}" if before else "drop --data"
        raise UserError(
            f"run {parent_run_id} ran its children on data {before or 'of the grid file'!r}, not "
            f"{grid.data or 'of the grid file'!r}; {hint} so every child sees the same reviews"
        )


def _run_children(
    todo: list[Child], grid: Grid, parent_run_id: str, execution: Execution, report: Report
) -> list[ChildOutcome]:
    workdir = execution.workdir / parent_run_id
    total = len(todo)
    outcomes: list[ChildOutcome] = []

    def done(outcome: ChildOutcome) -> None:
        outcomes.append(outcome)
        state = outcome.status if outcome.status == "FINISHED" else f"FAILED: {outcome.error}"
        report(f"[{len(outcomes)}/{total}] {outcome.child.run_name} ({outcome.run_id}): {state}")

    if execution.backend is None and execution.max_parallel == 1:
        for child in todo:
            done(_run_in_process(child, grid, parent_run_id, workdir))
        return outcomes
    slots: queue.Queue = queue.Queue()
    for slot in _device_slots(execution.max_parallel):
        slots.put(slot)

    def run_one(child: Child) -> ChildOutcome:
        gpu = slots.get()  # a worker holds its GPU for the whole child
        try:
            if execution.backend:
                return _run_on_backend(child, grid, parent_run_id, execution)
            return _run_subprocess(child, grid, parent_run_id, workdir, gpu)
        except Exception as exc:  # e.g. the tracking server refused to create the run
            return ChildOutcome(child, None, "FAILED", " ".join(str(exc).split())[:500] or type(exc).__name__)
        finally:
            slots.put(gpu)

    with ThreadPoolExecutor(max_workers=execution.max_parallel) as pool:
        for future in as_completed([pool.submit(run_one, child) for child in todo]):
            done(future.result())
    return outcomes


def _device_slots(n: int) -> list[str | None]:
    """One CUDA_VISIBLE_DEVICES value per worker, round-robin over the visible GPUs (None: no GPU)."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = (
        [d.strip() for d in visible.split(",") if d.strip()]
        if visible
        else [str(i) for i in range(torch.cuda.device_count())]
    )
    return [ids[i % len(ids)] if ids else None for i in range(n)]


def _run_in_process(child: Child, grid: Grid, parent_run_id: str, workdir: Path) -> ChildOutcome:
    from sentiment.train import TrainRequest, run_train

    run_id = None
    try:
        with tracking.open_run(
            run_name=child.run_name, tags=child.tags(grid), system_metrics=True, parent_run_id=parent_run_id
        ) as tracker:
            run_id = tracker.run_id
            try:
                run_train(child.config, tracker, TrainRequest(workdir / run_id))
            finally:
                shutil.rmtree(workdir / run_id, ignore_errors=True)  # the run holds the model
    except Exception as exc:  # one child failing must not stop the others; open_run marked it FAILED
        return ChildOutcome(child, run_id, "FAILED", tracking.one_line(exc))
    return ChildOutcome(child, run_id, "FINISHED")


def _run_subprocess(child: Child, grid: Grid, parent_run_id: str, workdir: Path, gpu: str | None) -> ChildOutcome:
    """`python -m sentiment train` in a fresh process that reuses a pre-created child run."""
    run_id = tracking.create_child_run(parent_run_id, child.run_name, child.tags(grid))
    env = {**os.environ, "MLFLOW_RUN_ID": run_id}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    args = [a for name, value in child.cli_options(grid.preset).items() for a in (f"--{name.replace('_', '-')}", value)]
    cmd = [
        sys.executable,
        "-m",
        "sentiment",
        "train",
        *args,
        "--run-name",
        child.run_name,
        "--output-dir",
        str(workdir),
    ]
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        shutil.rmtree(workdir / run_id, ignore_errors=True)
    if result.returncode == 0:
        return ChildOutcome(child, run_id, "FINISHED")
    error = _error_line(result.stderr) or f"exited with {result.returncode}"
    tracking.end_run_if_open(run_id, error)  # a crash (e.g. out of memory) cannot mark its own run
    return ChildOutcome(child, run_id, "FAILED", error)


def _error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    return (errors[-1].removeprefix("error: ") if errors else (lines[-1] if lines else ""))[:500]


def _run_on_backend(child: Child, grid: Grid, parent_run_id: str, execution: Execution) -> ChildOutcome:
    """The project's `train` entry point on an MLflow Projects backend (local, databricks, kubernetes)."""
    try:
        submitted = tracking.submit_project_run(
            PROJECT_DIR,
            child.cli_options(grid.preset),
            execution.backend,
            execution.backend_config,
            parent_run_id,
            child.run_name,
            child.tags(grid),
        )
        ok = submitted.wait()
    except Exception as exc:
        return ChildOutcome(child, None, "FAILED", tracking.one_line(exc))
    if ok:
        return ChildOutcome(child, submitted.run_id, "FINISHED")
    error = tracking.get_run(submitted.run_id).tags.get(keys.ERROR, f"failed on backend {execution.backend}")
    tracking.end_run_if_open(submitted.run_id, error)
    return ChildOutcome(child, submitted.run_id, "FAILED", error)
