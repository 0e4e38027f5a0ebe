"""Runs: opening (or, under `mlflow run`, reusing) the run a stage logs to, the MlflowTracker
that implements `Tracker` on it (writes to other runs: side_runs.py).

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 sentiment train --preset quick
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import mlflow
import pandas as pd
import yaml

from sentiment import config as config_mod
from sentiment.errors import Interrupted, UserError
from sentiment.tracking import keys
from sentiment.tracking.connection import connect, no_retries, one_line, reachable, tracking_uri
from sentiment.tracking.outbox import Outbox, click_echo
from sentiment.tracking.queries import last_logged_steps
from sentiment.tracking.serving import MODEL_CONFIG, PACKAGE_DIR, log_pyfunc_model
from sentiment.tracking.tracker import CHECKPOINT_PREFIX, LoggedModelRef, epochs_to_prune


@contextlib.contextmanager
def open_run(
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    system_metrics: bool = False,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
    journal_root: Path | None = None,
    skip_logged_steps: bool = False,
    resume_command: str = "sentiment train --resume {run_id}",
) -> Iterator["MlflowTracker"]:
    """Start (or, under `mlflow run`, reuse) a run; end it FINISHED, FAILED or KILLED.

    A failure tags the run with ``sentiment.error`` (one line) before re-raising, so no run is
    left RUNNING whatever happens inside. With ``resume_run_id`` the run is reopened; with
    ``skip_logged_steps`` as well, the tracker drops metric points the run already holds (same
    key, step not later): a resumed training replays the steps after its checkpoint, and some
    of them reached the server before it stopped. An interrupted run gets the tag
    ``sentiment.resume``: ``resume_command`` with its run id (a tune parent resumes differently).
    """
    connect()
    if resume_run_id:
        outer = os.environ.get("MLFLOW_RUN_ID")
        if outer and outer != resume_run_id:
            raise UserError(
                f"resuming run {resume_run_id} under `mlflow run`: pass --run-id {resume_run_id} to mlflow run too"
            )
        try:
            mlflow.get_run(resume_run_id)
        except mlflow.exceptions.MlflowException:
            raise UserError(f"run {resume_run_id!r} does not exist on {tracking_uri()}; check the run id") from None
    run = mlflow.start_run(
        run_id=resume_run_id,
        run_name=run_name if not resume_run_id else None,
        tags=tags,
        log_system_metrics=system_metrics or None,
        parent_run_id=parent_run_id,
        nested=parent_run_id is not None,
    )
    journal = journal_root / run.info.run_id / "journal" if journal_root else None
    logged = last_logged_steps(run.info.run_id) if resume_run_id and skip_logged_steps else None
    tracker = MlflowTracker(run.info.run_id, journal, logged_up_to=logged)
    try:
        yield tracker
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = getattr(exc, "signum", 2)
        hint = resume_command.format(run_id=tracker.run_id)
        if hasattr(exc, "resume_hint"):
            exc.resume_hint = hint
        tracker.set_tags({keys.RESUME: hint})
        _end(tracker, "KILLED", f"interrupted by signal {signum}")
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):
            tracker.set_tags(getattr(exc, "tags", {}))
        _end(tracker, "FAILED", one_line(exc))
        raise
    else:
        _end(tracker, "FINISHED", None)


def _end(tracker: "MlflowTracker", status: str, error: str | None) -> None:
    if status == "FINISHED":
        tracker.close()  # may wait for a lost server; raises if it never comes back
    else:
        with contextlib.suppress(Exception):
            tracker.close(wait_s=30)
    with contextlib.suppress(Exception):
        mlflow.flush_async_logging()
    if error:
        with contextlib.suppress(Exception):
            tracker.set_tags({keys.ERROR: error})  # (journaled if the server is away)
    if status == "FINISHED" or reachable():
        mlflow.end_run(status=status)
        return
    # The server is away: end the run here, journal its end, never leave it RUNNING for good.
    with no_retries(timeout_s=5), contextlib.suppress(Exception):
        mlflow.end_run(status=status)  # (ends it in this process; the server does not hear)
    tracker.outbox.journal({"op": "end", "status": status, "end_time": int(time.time() * 1000)})
    if "sentiment sync" not in (error or ""):
        click_echo(
            f"warning: tracking server {tracking_uri()} is unreachable: run {tracker.run_id} ended {status} here, and "
            f"its end is journaled in {tracker.outbox.folder}: run `sentiment sync {tracker.outbox.folder.parent}` "
            "when the server is back"
        )


class MlflowTracker:
    """The `Tracker` protocol on one MLflow run. Every operation goes through the run's Outbox
    (journaled while the server is away); metric points are batched and sent about once a second.
    Beyond the protocol: `wait_online`, which registration and model logging call first."""

    metrics_every_s = 1.0  # batch metric points: at most about one request a second
    model_log_attempts = 3  # a model whose logging a lost server interrupted is logged again

    def __init__(
        self, run_id: str, journal_dir: Path | None = None, logged_up_to: dict[str, int] | None = None
    ) -> None:
        self.run_id = run_id
        self._tmp = Path(tempfile.mkdtemp(prefix="sentiment-"))
        # A reopened run: per key, the last step already on the server (see open_run).
        self._logged_up_to: dict[str, int] = dict(logged_up_to or {})
        self.outbox = Outbox(run_id, journal_dir or Path(".sentiment/runs") / run_id / "journal")
        self._points: list[list] = []
        self._last_send = 0.0

    def flush(self) -> None:
        """Send buffered metrics (and try the journal, if the server was away)."""
        if self._points:
            points, self._points = self._points, []
            self.outbox.send({"op": "metrics", "points": points})
            self._last_send = time.monotonic()
        self.outbox.replay()

    def wait_online(self) -> None:
        """Calls that cannot be journaled (model logging, registry) first wait for the server:
        until it answers and the journal is replayed. It may have gone away with nothing
        journaled yet, so its health is checked, not only the journal."""
        self.flush()
        if self.outbox.offline:
            self.outbox.drain(float(os.environ.get("SENTIMENT_SERVER_WAIT_S", "600")))
        elif not reachable():
            click_echo(f"warning: tracking server {tracking_uri()} is unreachable; waiting for it before logging to it")
            self.outbox.drain(float(os.environ.get("SENTIMENT_SERVER_WAIT_S", "600")))

    def close(self, wait_s: float | None = None) -> None:
        """Flush everything; if the server was lost, wait for it and replay the journal."""
        self.flush()
        if self.outbox.offline:
            self.outbox.drain(float(os.environ.get("SENTIMENT_SERVER_WAIT_S", "600")) if wait_s is None else wait_s)

    # -- params, tags, metrics ---------------------------------------------------------
    def log_config(self, config: config_mod.Config) -> None:
        flat = {**config_mod.to_flat_dict(config), **MODEL_CONFIG}  # MLflow logs the model's config as params too
        existing = mlflow.get_run(self.run_id).data.params
        self.log_params({k: v for k, v in flat.items() if k not in existing})
        self.log_text(config_mod.to_yaml(config), "config.yaml")

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self.outbox.send({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_params(self, params: dict[str, Any]) -> None:
        self.outbox.send({"op": "params", "params": {k: str(v) for k, v in params.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int, model_id: str | None = None) -> None:
        """Log once, asynchronously; with ``model_id`` the values also rank that LoggedModel."""
        if self._logged_up_to:
            metrics = {k: v for k, v in metrics.items() if step > self._logged_up_to.get(k, -1)}
            if not metrics:
                return
        now_ms = int(time.time() * 1000)
        self._points += [[k, float(v), now_ms, int(step), model_id] for k, v in metrics.items()]
        if time.monotonic() - self._last_send >= self.metrics_every_s:
            self.flush()

    # -- artifacts ---------------------------------------------------------------------
    def _local(self, path: str) -> Path:
        """A fresh local file named like the artifact ``path`` (its folder becomes the artifact path)."""
        folder = Path(tempfile.mkdtemp(dir=self._tmp))
        return folder / Path(path).name

    def _upload(self, local: Path, path: str) -> None:
        parent = str(Path(path).parent)
        self.outbox.send({"op": "artifact", "local": str(local), "artifact_path": None if parent == "." else parent})

    def log_figure(self, figure, path: str) -> None:
        local = self._local(path)
        figure.savefig(local, dpi=110)
        self._upload(local, path)

    def log_dict(self, data: dict, path: str) -> None:
        local = self._local(path)
        local.write_text(
            yaml.safe_dump(data, sort_keys=False) if path.endswith((".yaml", ".yml")) else json.dumps(data, indent=2)
        )
        self._upload(local, path)

    def log_text(self, text: str, path: str) -> None:
        local = self._local(path)
        local.write_text(text)
        self._upload(local, path)

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        op = "artifacts" if Path(local_path).is_dir() else "artifact"  # a folder goes with its contents
        self.outbox.send({"op": op, "local": str(local_path), "artifact_path": artifact_path})

    def log_table(self, frame: pd.DataFrame, name: str) -> None:
        """As an MLflow table (``name.json``, shown in the UI) and a Parquet copy."""
        local = self._local(f"{name}.parquet")
        frame.to_parquet(local, index=False)
        self.outbox.send({"op": "table", "local": str(local), "artifact_file": f"{name}.json"})
        self._upload(local, f"{name}.parquet")

    def log_splits(self, splits, only: str | None = None) -> None:
        """One `mlflow.log_input` per split, with its digest, source and context."""
        contexts = {"train": "training", "val": "validation", "test": "testing"}
        for split, context in contexts.items():
            if only not in (None, split):
                continue
            frame = getattr(splits, split)[["id", "text", "label"]]
            dataset = mlflow.data.from_pandas(
                frame,
                source=_dataset_source(splits.source),
                targets="label",
                name=f"{Path(splits.source).name}-{split}",
            )
            _log_input(dataset, context)

    # -- models ------------------------------------------------------------------------
    def log_model(self, folder: Path, name: str, step: int) -> LoggedModelRef:
        """Log a packaged model folder as a servable pyfunc model (an MLflow 3 LoggedModel).

        If the server goes away while the model is being logged (a restart longer than MLflow's
        own request retries), wait for it and log the model again; the half-logged one, left
        PENDING, is marked FAILED."""
        for attempt in range(self.model_log_attempts):
            self.wait_online()
            if attempt:
                self._fail_pending_models(name)
            try:
                return log_pyfunc_model(folder, name, step, self._tmp)
            except Exception:
                if attempt == self.model_log_attempts - 1 or reachable():
                    raise
                click_echo(
                    f"warning: tracking server {tracking_uri()} went away while logging model {name!r}; logging it "
                    "again when it answers"
                )

    def _fail_pending_models(self, name: str) -> None:
        """Mark this run's models called ``name`` that a lost server left PENDING as FAILED."""
        from mlflow.entities import LoggedModelStatus

        with contextlib.suppress(mlflow.exceptions.MlflowException):
            experiment_id = mlflow.get_run(self.run_id).info.experiment_id
            found = mlflow.search_logged_models(
                experiment_ids=[experiment_id],
                filter_string=f"source_run_id = '{self.run_id}' AND name = '{name}'",
                output_format="list",
            )
            for model in found:
                if model.status == LoggedModelStatus.PENDING:
                    mlflow.MlflowClient().finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)

    def log_model_file(self, model_id: str, local_path: Path) -> None:
        """Add a file to a LoggedModel's artifacts (e.g. ``model_card.md``)."""
        self.wait_online()
        mlflow.MlflowClient().log_model_artifact(model_id, str(local_path))

    def prune_checkpoints(self, keep: int, scores: dict[int, float]) -> list[int]:
        """See `Tracker.prune_checkpoints`: the pruned LoggedModels keep their record and metrics,
        get the tag ``sentiment.retention`` and lose their artifacts (the weights)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        self.wait_online()
        run = mlflow.get_run(self.run_id)
        found = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{self.run_id}'",
            output_format="list",
        )
        models = {int(m.name[len(CHECKPOINT_PREFIX) :]): m for m in found if m.name.startswith(CHECKPOINT_PREFIX)}
        pruned = epochs_to_prune(keep, {epoch: score for epoch, score in scores.items() if epoch in models})
        client = mlflow.MlflowClient()
        for epoch in pruned:
            model = models[epoch]
            reason = (
                f"weights deleted: not among the {keep} best epochs by validation accuracy (--keep-checkpoints {keep})"
            )
            client.set_logged_model_tags(model.model_id, {keys.RETENTION: reason})
            get_artifact_repository(model.artifact_location).delete_artifacts()
        return pruned

    def delete_artifacts(self, path: str) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        self.wait_online()
        get_artifact_repository(mlflow.get_run(self.run_id).info.artifact_uri).delete_artifacts(path)

    def link_model(self, model_id: str) -> None:
        """Record a LoggedModel as an input of the run (the model it evaluates or analyses)."""
        with contextlib.suppress(Exception):
            from mlflow.entities import LoggedModelInput

            mlflow.MlflowClient().log_inputs(self.run_id, models=[LoggedModelInput(model_id)])


# How SQL stores word a unique-constraint violation (SQLite, PostgreSQL, MySQL), lower case.
_UNIQUE_VIOLATION = ("unique constraint", "integrityerror", "duplicate key", "duplicate entry")


def _log_input(dataset, context: str, attempts: int = 5) -> None:
    """`mlflow.log_input`, safe when sibling runs log the same dataset at the same moment: the
    server's SQL store looks a dataset up and inserts it in two steps, so the loser of that race
    gets a unique-constraint error (SQLite: "UNIQUE constraint failed", PostgreSQL: "duplicate
    key value violates unique constraint"); by the next try the row exists and is reused."""
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as error:
            race = any(sign in str(error).lower() for sign in _UNIQUE_VIOLATION)
            if not race or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def dataset_facts(splits) -> list[dict]:
    """Per split: rows, the digest `log_splits` records for it, and its source."""
    out = []
    for split in ("train", "val", "test"):
        frame = getattr(splits, split)[["id", "text", "label"]]
        dataset = mlflow.data.from_pandas(
            frame, source=_dataset_source(splits.source), targets="label", name=f"{Path(splits.source).name}-{split}"
        )
        out.append(
            {"split": split, "rows": len(frame), "digest": dataset.digest, "source": _dataset_source(splits.source)}
        )
    return out


def _dataset_source(source: str) -> str:
    if source == "imdb":
        return "https://huggingface.co/datasets/stanfordnlp/imdb"
    if source == "sample":
        return str(PACKAGE_DIR / "data" / "sample_reviews.jsonl")
    return str(Path(source).resolve())
