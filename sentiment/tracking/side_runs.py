"""Writes to runs other than the one a stage logs to: a side run (a champion scored for a promotion),
failing or ending a run, metrics, tags and files on a finished run, an ablation's child runs and the MLflow
project runs it submits."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import mlflow

from sentiment.tracking import keys
from sentiment.tracking.connection import one_line
from sentiment.tracking.queries import get_run
from sentiment.tracking.runs import MlflowTracker


@contextlib.contextmanager
def side_run(experiment_id: str, run_name: str, tags: dict[str, str]) -> Iterator[MlflowTracker]:
    """A second run beside the active one (a champion's evaluation during a registration),
    created and ended through the client, so the active run stays the active run."""
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    tracker = MlflowTracker(run.info.run_id)
    try:
        yield tracker
    except BaseException as exc:
        with contextlib.suppress(Exception):
            tracker.close(wait_s=30)
        fail_run(run.info.run_id, one_line(exc))
        raise
    tracker.close()
    client.set_terminated(run.info.run_id, status="FINISHED")


def fail_run(run_id: str, message: str, status: str = "FAILED") -> None:
    """Mark a run (e.g. the one `mlflow run` created) as ended with the reason as a tag."""
    with contextlib.suppress(Exception):
        client = mlflow.MlflowClient()
        client.set_tag(run_id, keys.ERROR, message[:5000])
        client.set_terminated(run_id, status=status)


def log_to_run(run_id: str, metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> None:
    """Metrics (step 0) and tags on any run, active or finished, through the client."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    mlflow.MlflowClient().log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
        tags=[RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()],
    )


def log_files_to_run(run_id: str, files: list[tuple[str, Path]]) -> None:
    """Attach local files to an existing (possibly finished) run: (artifact folder, file) pairs."""
    client = mlflow.MlflowClient()
    for folder, path in files:
        client.log_artifact(run_id, str(path), folder or None)


def create_child_run(parent_run_id: str, run_name: str, tags: dict[str, str]) -> str:
    """A run nested under the parent, for a subprocess to reuse through ``MLFLOW_RUN_ID``."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = get_run(parent_run_id)
    run = mlflow.MlflowClient().create_run(
        parent.experiment_id, tags={**tags, MLFLOW_PARENT_RUN_ID: parent_run_id}, run_name=run_name
    )
    return run.info.run_id


def end_run_if_open(run_id: str, message: str) -> None:
    """Mark a run FAILED with ``message`` unless it already ended (e.g. its process was killed)."""
    if get_run(run_id).status in ("RUNNING", "SCHEDULED"):
        fail_run(run_id, message)


def delete_tag(run_id: str, key: str) -> None:
    """Remove a tag if the run has it (e.g. a stale ``sentiment.error`` after a resume)."""
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        mlflow.MlflowClient().delete_tag(run_id, key)


_SUBMIT_LOCK = threading.Lock()


def submit_project_run(
    project_dir: Path,
    parameters: dict[str, str],
    backend: str,
    backend_config: str | None,
    parent_run_id: str,
    run_name: str,
    tags: dict[str, str],
):
    """Run the project's ``train`` entry point on an MLflow Projects backend, as a child run.

    Returns the SubmittedRun (``run_id``, ``wait()``); the caller waits. ``local`` runs in this
    environment (env manager ``local``); other backends (``databricks``, ``kubernetes``) use
    their own config file and environment.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = get_run(parent_run_id)
    # The local backend starts `mlflow run --experiment-id ...` with a copy of os.environ, and that
    # refuses an MLFLOW_EXPERIMENT_NAME next to it: hide it while submitting (a lock, as children
    # are submitted from worker threads and os.environ is shared).
    with _SUBMIT_LOCK:
        name = os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
        try:
            submitted = mlflow.projects.run(
                str(project_dir),
                entry_point="train",
                parameters=parameters,
                backend=backend,
                backend_config=backend_config or None,
                experiment_id=parent.experiment_id,
                run_name=run_name,
                env_manager="local" if backend == "local" else None,
                synchronous=False,
            )
        finally:
            if name is not None:
                os.environ["MLFLOW_EXPERIMENT_NAME"] = name
    client = mlflow.MlflowClient()
    for key, value in {**tags, MLFLOW_PARENT_RUN_ID: parent_run_id}.items():
        client.set_tag(submitted.run_id, key, value)
    return submitted
