"""Everything MLflow: runs, params, metrics, figures, tables, datasets, models, registry.

The only module that imports mlflow. Stages get a tracker and call its small interface; the
CLI opens it with `open_run`.

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 sentiment train --preset quick
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import mlflow
import pandas as pd
import yaml

from sentiment import config as config_mod
from sentiment.errors import Interrupted, TrainingError, UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "imdb-sentiment"
PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_ARTIFACT = "hf_model"  # the folder inside a logged model that holds weights + tokenizer
MLFLOW_URI_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")
_SERVING_ENTRY = '''"""Models-from-code entry point of a sentiment model (written by sentiment.tracking)."""
import mlflow

from sentiment.tracking import SentimentPyfunc

mlflow.models.set_model(SentimentPyfunc())
'''


# ----------------------------------------------------------------------------- connection


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when an HTTP tracking server does not answer its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise UserError(
        f"tracking server {uri} is not reachable ({reason}); start it (mlflow server --port ...) or unset "
        f"MLFLOW_TRACKING_URI to use the local {DEFAULT_TRACKING_URI}"
    )


def _quiet() -> None:
    """Keep the console for our own output: no per-file progress bars or schema hints."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
    warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    logging.getLogger("mlflow.models").setLevel(logging.WARNING)
    # "Experiment with name ... does not exist. Creating a new experiment." carries no action.
    logging.getLogger("mlflow.tracking.fluent").setLevel(logging.WARNING)


def _check_credentials(uri: str) -> None:
    """One authenticated call up front, so wrong credentials fail in one line before any work."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        mlflow.MlflowClient().search_experiments(max_results=1)
    except mlflow.exceptions.MlflowException as exc:
        text = str(exc)
        if any(code in text for code in ("401", "403", "UNAUTHENTICATED", "PERMISSION_DENIED", "Unauthorized")):
            raise UserError(
                f"tracking server {uri} rejected the credentials; set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) to a valid account"
            ) from None
        raise


def connect() -> str:
    """Point MLflow at the tracking URI (checked) and the experiment; returns the URI."""
    uri = tracking_uri()
    check_server(uri)
    # Fail over to the journal in seconds, not after MLflow's default two minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    _quiet()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _check_credentials(uri)
    if os.environ.get("MLFLOW_RUN_ID"):  # `mlflow run` made the run: its experiment is set
        return uri
    if os.environ.get("MLFLOW_EXPERIMENT_NAME") or not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    return uri


def resolve_model_source(name: str, workdir: Path | None = None) -> str:
    """A Hub id / folder / alias passes through; an MLflow model URI becomes its local weights
    folder (under ``workdir``, else a new temporary folder). Needs no run: torchrun ranks other
    than 0 call it too."""
    if not name.startswith(MLFLOW_URI_SCHEMES):
        return name
    return str(_download_package(name, workdir or Path(tempfile.mkdtemp(prefix="sentiment-"))))


def load_pyfunc(uri: str):
    """`mlflow.pyfunc.load_model`, with a one-line error for a URI that does not exist."""
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise UserError(f"cannot load model {uri!r} ({one_line(exc)[:200]}); check the URI in the MLflow UI") from None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


def fail_run(run_id: str, message: str, status: str = "FAILED") -> None:
    """Mark a run (e.g. the one `mlflow run` created) as ended with the reason as a tag."""
    with contextlib.suppress(Exception):
        client = mlflow.MlflowClient()
        client.set_tag(run_id, "sentiment.error", message[:5000])
        client.set_terminated(run_id, status=status)


@contextlib.contextmanager
def open_run(
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    system_metrics: bool = False,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
    journal_root: Path | None = None,
) -> Iterator["MlflowTracker"]:
    """Start (or, under `mlflow run`, reuse) a run; end it FINISHED, FAILED or KILLED.

    A failure tags the run with ``sentiment.error`` (one line) before re-raising, so no run is
    left RUNNING whatever happens inside.
    """
    connect()
    if resume_run_id:
        outer = os.environ.get("MLFLOW_RUN_ID")
        if outer and outer != resume_run_id:
            raise UserError(f"resuming run {resume_run_id} under `mlflow run`: pass --run-id {resume_run_id} to mlflow run too")
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
    tracker = MlflowTracker(run.info.run_id, journal)
    try:
        yield tracker
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = getattr(exc, "signum", 2)
        hint = f"sentiment train --resume {tracker.run_id}"
        if hasattr(exc, "resume_hint"):
            exc.resume_hint = hint
        tracker.set_tags({"sentiment.resume": hint})
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
            mlflow.set_tag("sentiment.error", error)
    mlflow.end_run(status=status)


# ----------------------------------------------------------------------------- outages


def reachable(timeout_s: float = 2.0) -> bool:
    """Does the tracking server answer its health check now? (Always true for a local store.)"""
    try:
        check_server(tracking_uri(), timeout_s)
        return True
    except UserError:
        return False


def _apply(client, run_id: str, op: dict) -> None:
    """Send one journaled operation to the server, addressed by run id (no active run needed)."""
    from mlflow.entities import Metric, Param, RunTag

    kind = op["op"]
    if kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, v, ts, step, model_id=mid) for k, v, ts, step, mid in op["points"]], synchronous=True)
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()], synchronous=True)
    elif kind == "params":
        client.log_batch(run_id, params=[Param(k, v) for k, v in op["params"].items()], synchronous=True)
    elif kind == "artifact":
        client.log_artifact(run_id, op["local"], op["artifact_path"])
    elif kind == "artifacts":
        client.log_artifacts(run_id, op["local"], op["artifact_path"])
    elif kind == "table":
        mlflow.log_table(pd.read_parquet(op["local"]), op["artifact_file"], run_id=run_id)
    else:
        raise ValueError(f"unknown journal operation {kind!r}")


class Outbox:
    """Sends a run's tracking operations; while the server is unreachable, journals them on disk
    (``folder/journal.jsonl`` plus copies of files) and replays them in order once it answers
    again, or later with `sentiment sync RUN_DIR`. Training never waits for the server."""

    retry_every_s = 10.0

    def __init__(self, run_id: str, folder: Path) -> None:
        self.run_id = run_id
        self.folder = folder
        self.client = mlflow.MlflowClient()
        self.pending: list[dict] = []
        self.seq = 0
        self.next_try = 0.0

    @property
    def offline(self) -> bool:
        return bool(self.pending)

    def send(self, op: dict) -> None:
        if self.pending:
            self._journal(op)
            self.replay()
            return
        try:
            _apply(self.client, self.run_id, op)
        except Exception:
            if reachable():
                raise
            self._journal(op)
            logging.getLogger("mlflow.system_metrics").setLevel(logging.CRITICAL)
            click_echo(
                f"warning: tracking server {tracking_uri()} is unreachable; training goes on and "
                f"journals to {self.folder} until it answers again"
            )

    def _journal(self, op: dict) -> None:
        op = {**op, "seq": self.seq}
        self.seq += 1
        if "local" in op:  # keep files alive: temp folders and checkpoints change
            dest = self.folder / "files" / f"{op['seq']:06d}" / Path(op["local"]).name  # the name is the artifact's
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if Path(op["local"]).is_dir() else shutil.copy2)(op["local"], dest)
            op["local"] = str(dest)
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "journal.jsonl", "a") as handle:
            handle.write(json.dumps(op) + "\n")
        self.pending.append(op)

    def replay(self, force: bool = False) -> bool:
        """Send what the journal holds, in order; True when nothing is left."""
        if not self.pending:
            return True
        if not force and time.monotonic() < self.next_try:
            return False
        self.next_try = time.monotonic() + self.retry_every_s
        if not reachable():
            return False
        sent = 0
        while self.pending:
            try:
                _apply(self.client, self.run_id, self.pending[0])
            except Exception:
                if reachable():
                    raise
                return False
            (self.folder / "acked").write_text(str(self.pending.pop(0)["seq"]))
            sent += 1
        click_echo(f"tracking server is back: replayed {sent} journaled operations")
        return True

    def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until the journal is replayed; the run can only end on the server."""
        deadline = time.monotonic() + timeout_s
        while not self.replay(force=True):
            if time.monotonic() > deadline:
                raise TrainingError(
                    f"tracking server {tracking_uri()} still unreachable after {timeout_s:.0f} s; everything is "
                    f"journaled in {self.folder}: run `sentiment sync {self.folder.parent}` when it is back, "
                    f"then `sentiment train --resume {self.run_id}` to finish"
                )
            time.sleep(2.0)


def click_echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync_journal(run_dir: Path) -> int:
    """Replay a journal left by a run that could not reach its server; returns operations sent."""
    journal = run_dir / "journal" / "journal.jsonl"
    if not journal.is_file():
        raise UserError(f"{str(run_dir)!r} has no journal/journal.jsonl to sync")
    connect()
    acked_file = run_dir / "journal" / "acked"
    acked = int(acked_file.read_text()) if acked_file.is_file() else -1
    ops = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    ops = [op for op in ops if op["seq"] > acked]
    run_id = run_dir.name
    client = mlflow.MlflowClient()
    last = {key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1) for key in mlflow.get_run(run_id).data.metrics}
    for op in ops:
        if op["op"] == "metrics":  # a point sent before a crash but never acknowledged: skip it
            op = {**op, "points": [p for p in op["points"] if p[3] > last.get(p[0], -1)]}
            if not op["points"]:
                continue
        _apply(client, run_id, op)
        acked_file.write_text(str(op["seq"]))
    return len(ops)


# ----------------------------------------------------------------------------- the tracker


def _log_input(dataset, context: str, attempts: int = 5) -> None:
    """`mlflow.log_input`, safe when sibling runs log the same dataset at the same moment: the
    server's SQL store looks a dataset up and inserts it in two steps, so the loser of that race
    gets a UNIQUE-constraint error; by the next try the row exists and is reused."""
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as error:
            race = "UNIQUE constraint" in str(error) or "IntegrityError" in str(error)
            if not race or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@dataclass(frozen=True)
class LoggedModelRef:
    model_id: str
    model_uri: str


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    champion: bool
    uri: str


@dataclass
class LoadedPackage:
    model: Any
    tokenizer: Any
    config: config_mod.Config
    model_id: str | None


class MlflowTracker:
    """Logs to one MLflow run; every stage talks to MLflow only through this."""

    metrics_every_s = 1.0  # batch metric points: at most about one request a second

    def __init__(self, run_id: str, journal_dir: Path | None = None) -> None:
        self.run_id = run_id
        self._tmp = Path(tempfile.mkdtemp(prefix="sentiment-"))
        self._logged_up_to: dict[str, int] = {}  # after a resume: last step already on the server
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

    def _online(self) -> None:
        """Calls that cannot be journaled (model logging, registry) first wait for the server."""
        self.flush()
        if self.outbox.offline:
            self.outbox.drain(float(os.environ.get("SENTIMENT_SERVER_WAIT_S", "600")))

    def close(self, wait_s: float | None = None) -> None:
        """Flush everything; if the server was lost, wait for it and replay the journal."""
        self.flush()
        if self.outbox.offline:
            self.outbox.drain(float(os.environ.get("SENTIMENT_SERVER_WAIT_S", "600")) if wait_s is None else wait_s)

    def skip_logged_steps(self) -> None:
        """After a resume, drop metric points the run already holds (same key, step not later)."""
        client = mlflow.MlflowClient()
        for key in mlflow.get_run(self.run_id).data.metrics:
            history = client.get_metric_history(self.run_id, key)
            self._logged_up_to[key] = max(m.step for m in history)

    def load_config(self) -> config_mod.Config:
        """The config this run logged (config.yaml)."""
        try:
            return config_mod.from_yaml(mlflow.artifacts.load_text(f"runs:/{self.run_id}/config.yaml"))
        except Exception as exc:
            raise UserError(f"run {self.run_id} has no readable config.yaml ({one_line(exc)[:150]}); it was not started by sentiment train") from None

    def upload_checkpoint(self, path: Path) -> None:
        """A training state file or the best-model folder, under the run's ``checkpoints/``."""
        if path.is_dir():
            self.outbox.send({"op": "artifacts", "local": str(path), "artifact_path": f"checkpoints/{path.name}"})
        else:
            self.outbox.send({"op": "artifact", "local": str(path), "artifact_path": "checkpoints"})

    def download_checkpoints(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            mlflow.artifacts.download_artifacts(run_id=self.run_id, artifact_path="checkpoints", dst_path=str(folder.parent / "_download"))
            shutil.copytree(folder.parent / "_download" / "checkpoints", folder, dirs_exist_ok=True)
            shutil.rmtree(folder.parent / "_download", ignore_errors=True)

    # -- params, tags, metrics ---------------------------------------------------------
    def log_config(self, config: config_mod.Config) -> None:
        flat = config_mod.to_flat_dict(config)
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
        local.write_text(yaml.safe_dump(data, sort_keys=False) if path.endswith((".yaml", ".yml")) else json.dumps(data, indent=2))
        self._upload(local, path)

    def log_text(self, text: str, path: str) -> None:
        local = self._local(path)
        local.write_text(text)
        self._upload(local, path)

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        self.outbox.send({"op": "artifact", "local": str(local_path), "artifact_path": artifact_path})

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
            dataset = mlflow.data.from_pandas(frame, source=_dataset_source(splits.source), targets="label", name=f"{Path(splits.source).name}-{split}")
            _log_input(dataset, context)

    # -- models ------------------------------------------------------------------------
    def log_model(self, folder: Path, name: str, step: int) -> LoggedModelRef:
        """Log a packaged model folder as a servable pyfunc model (an MLflow 3 LoggedModel)."""
        self._online()
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        entry = self._tmp / "sentiment_pyfunc.py"
        entry.write_text(_SERVING_ENTRY)
        signature = ModelSignature(
            inputs=Schema([ColSpec("string")]),
            outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
        )
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={MODEL_ARTIFACT: str(folder)},
            code_paths=[str(PACKAGE_DIR)],
            signature=signature,
            input_example=["A moving, beautifully acted film.", "Two hours I will never get back."],
            pip_requirements=_pip_requirements(),
            step=step,
        )
        return LoggedModelRef(model_id=info.model_id, model_uri=info.model_uri)

    def register(self, model_uri: str, name: str, score: float) -> Registration:
        """Register a version with alias `candidate`; make it `champion` if it beats the current one.

        ``score`` (test accuracy) is kept as the version tag ``test_accuracy`` for later
        comparisons. Safe against concurrent registrations of the same name: creation is retried,
        and the champion alias is compared, set, then verified until no better version holds it.
        """
        self._online()
        client = mlflow.MlflowClient()
        version = _retry(lambda: mlflow.register_model(model_uri, name).version)
        client.set_model_version_tag(name, version, "test_accuracy", f"{score:.6f}")
        client.set_model_version_tag(name, version, "run_id", self.run_id)
        client.set_registered_model_alias(name, "candidate", version)
        champion = _promote(client, name, str(version), score)
        self.set_tags({"sentiment.registered_model": name, "sentiment.registered_version": version})
        return Registration(name=name, version=str(version), champion=champion, uri=f"models:/{name}/{version}")

    def resolve_model_source(self, name: str) -> str:
        return resolve_model_source(name, self._tmp)

    def load_model_package(self, uri: str) -> LoadedPackage:
        """Model, tokenizer and config from an MLflow model URI, a packaged folder, or a Hub id."""
        from sentiment import model as model_mod

        model_id = None
        if uri.startswith(MLFLOW_URI_SCHEMES):
            folder = _download_package(uri, self._tmp)
            model_id = _model_id_of(uri)
        else:
            folder = Path(uri)
        config_file = folder / "sentiment_config.yaml"
        if config_file.is_file():
            config = config_mod.from_yaml(config_file.read_text())
            model = model_mod.load_trained(folder)
            tokenizer = model_mod.load_tokenizer(str(folder))
        else:  # a plain Hub id or folder: its own classification head, default data settings
            config = replace(config_mod.Config(), model=replace(config_mod.ModelConfig(), name=uri))
            model = model_mod.load_trained(model_mod.resolve_source(uri))
            tokenizer = model_mod.load_tokenizer(uri)
        if model_id:
            with contextlib.suppress(Exception):
                from mlflow.entities import LoggedModelInput

                mlflow.log_inputs(models=[LoggedModelInput(model_id)])
        return LoadedPackage(model=model, tokenizer=tokenizer, config=config, model_id=model_id)

    # -- what other runs logged (analyze reuses an evaluate run's predictions) ----------
    def run_tags(self, run_id: str) -> dict[str, str]:
        """Tags of another run; a run that does not exist is a user error."""
        try:
            return dict(mlflow.get_run(run_id).data.tags)
        except Exception as exc:
            raise UserError(f"run {run_id!r} does not exist or cannot be read ({one_line(exc)[:150]}); pass the id of an evaluate or train run") from None

    def load_run_config(self, run_id: str) -> config_mod.Config | None:
        """The config another run logged (``config.yaml``), or None when it has none."""
        with contextlib.suppress(Exception):
            return config_mod.from_yaml(mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml"))
        return None

    def load_table(self, run_id: str, path: str) -> pd.DataFrame:
        """A Parquet table another run logged, e.g. ``predictions/test.parquet``."""
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tempfile.mkdtemp(dir=self._tmp))
            return pd.read_parquet(local)
        except Exception:
            found: list[str] = []
            with contextlib.suppress(Exception):
                found = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id, str(Path(path).parent)) if a.path.endswith(".parquet")]
            raise UserError(f"run {run_id} has no {path} (it has: {', '.join(found) or 'none'}); pass an evaluate or train run that logged predictions") from None

    def model_run_id(self, uri: str, model_id: str | None) -> str | None:
        """The run that logged a model: a LoggedModel's source run, or the run of a runs:/ URI."""
        if uri.startswith("runs:/"):
            return uri[len("runs:/") :].split("/")[0]
        if model_id:
            with contextlib.suppress(Exception):
                return mlflow.get_logged_model(model_id).source_run_id
        return None


def _champion(client, name: str) -> tuple[str, float] | None:
    try:
        current = client.get_model_version_by_alias(name, "champion")
    except mlflow.exceptions.MlflowException:
        return None
    return str(current.version), float(current.tags.get("test_accuracy", "-1"))


def _promote(client, name: str, version: str, score: float, rounds: int = 6) -> bool:
    """Compare, set, verify: a concurrent registration may overwrite the alias with a worse
    version after our check; the verification round then sets it back."""
    for _ in range(rounds):
        current = _champion(client, name)
        if current is not None and current[0] == version:
            return True
        if current is not None and current[1] >= score:
            return False
        client.set_registered_model_alias(name, "champion", version)
        time.sleep(random.uniform(0.2, 0.6))  # let a racing writer land before verifying
    current = _champion(client, name)
    return current is not None and current[0] == version


def _retry(call, attempts: int = 5):
    """Retry a registry write that lost a race (e.g. two processes creating the same name)."""
    for attempt in range(attempts):
        try:
            return call()
        except mlflow.exceptions.MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))


def _dataset_source(source: str) -> str:
    if source == "imdb":
        return "https://huggingface.co/datasets/stanfordnlp/imdb"
    if source == "sample":
        return str(PACKAGE_DIR / "data" / "sample_reviews.jsonl")
    return str(Path(source).resolve())


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    names = ("torch", "transformers", "mlflow", "pandas", "numpy", "scikit-learn", "pyyaml", "tqdm", "click", "matplotlib", "safetensors")
    out = []
    for name in names:
        with contextlib.suppress(Exception):
            out.append(f"{name}=={version(name).split('+')[0]}")
    return out


def _download_package(uri: str, tmp: Path) -> Path:
    """Download a logged sentiment model and return the folder with weights and tokenizer."""
    target = Path(tempfile.mkdtemp(dir=tmp))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    except Exception as exc:
        raise UserError(f"model {uri!r} does not exist or cannot be downloaded ({one_line(exc)[:200]}); check the URI with the MLflow UI") from None
    folder = local / "artifacts" / MODEL_ARTIFACT
    if not folder.is_dir():
        raise UserError(f"model {uri!r} is not a sentiment model (no artifacts/{MODEL_ARTIFACT} folder)")
    return folder


def _model_id_of(uri: str) -> str | None:
    """The LoggedModel id behind a models:/ URI (``models:/m-...``, a version or an alias)."""
    rest = uri[len("models:/") :] if uri.startswith("models:/") else ""
    if rest.startswith("m-"):
        return rest.split("/")[0]
    if not rest:
        return None
    client = mlflow.MlflowClient()
    with contextlib.suppress(mlflow.exceptions.MlflowException, ValueError):
        if "@" in rest:
            name, alias = rest.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = rest.split("/", 1)
            version = client.get_model_version(name, number)
        # Some stores return no model_id on versions; the source is then models:/m-...
        from_source = version.source.startswith("models:/m-")
        return version.model_id or (_model_id_of(version.source) if from_source else None)
    return None


# ----------------------------------------------------------------------------- serving


# MLflow suggests type hints on predict; our explicit signature already validates inputs.
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")


class SentimentPyfunc(mlflow.pyfunc.PythonModel):
    """The served model: texts in, a label (`negative`/`positive`) and its probability out.

    Loads on CPU unless ``SENTIMENT_DEVICE=cuda``; rejects non-string or empty texts with a
    clear error; truncates over-long texts to the training max length.
    """

    def load_context(self, context) -> None:
        import torch

        from sentiment import model as model_mod

        folder = Path(context.artifacts[MODEL_ARTIFACT])
        self.config = config_mod.from_yaml((folder / "sentiment_config.yaml").read_text())
        device = os.environ.get("SENTIMENT_DEVICE", "cpu")
        self.model = model_mod.load_trained(folder).to(torch.device(device)).eval()
        self.tokenizer = model_mod.load_tokenizer(str(folder))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # (the logged signature validates inputs; this hint only tells MLflow not to infer one)
        from sentiment import evaluate

        texts = _texts_of(model_input)
        probability, _ = evaluate.predict_probabilities(
            self.model, self.tokenizer, texts, self.config.data.max_length, self.config.data.truncation
        )
        positive = probability >= 0.5
        return pd.DataFrame(
            {
                "label": ["positive" if p else "negative" for p in positive],
                "score": [float(p if pos else 1 - p) for p, pos in zip(probability, positive)],
            }
        )


def _texts_of(model_input) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        values = model_input[column].tolist()
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        values = list(model_input)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"input {i} is {type(value).__name__}, not a string: send a list of review texts")
        if not value.strip():
            raise ValueError(f"input {i} is an empty text: send non-empty review texts")
    return values


# ----------------------------------------------------------------------------- ablation runs


@dataclass(frozen=True)
class RunRecord:
    """What an ablation reads back about one run."""

    run_id: str
    name: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    tags: dict[str, str]
    metrics: dict[str, float]
    experiment_id: str
    params: dict[str, str] = field(default_factory=dict)
    start_ms: int | None = None  # when the run started and ended (epoch milliseconds)
    end_ms: int | None = None

    @property
    def minutes(self) -> float | None:
        """Wall-clock minutes from the run's start to its end (None while it runs)."""
        return (self.end_ms - self.start_ms) / 60_000 if self.start_ms and self.end_ms else None


def _record(run) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id, name=run.info.run_name or "", status=run.info.status,
        tags=dict(run.data.tags), metrics=dict(run.data.metrics), experiment_id=run.info.experiment_id,
        params=dict(run.data.params), start_ms=run.info.start_time, end_ms=run.info.end_time,
    )  # fmt: skip


def dataset_rows(run_id: str) -> dict[str, int]:
    """Rows of each dataset input the run logged, by context (training, validation, testing)."""
    out: dict[str, int] = {}
    for item in mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        with contextlib.suppress(ValueError, TypeError, KeyError):
            out[context] = int(json.loads(item.dataset.profile)["num_rows"])
    return out


def experiment_name(experiment_id: str) -> str:
    return mlflow.MlflowClient().get_experiment(experiment_id).name


def download_artifact(run_id: str, path: str, dst: Path) -> Path | None:
    """Download one artifact of a run into ``dst``; None when the run has no such artifact."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))
    except (mlflow.exceptions.MlflowException, OSError):
        return None


def log_files_to_run(run_id: str, files: list[tuple[str, Path]]) -> None:
    """Attach local files to an existing (possibly finished) run: (artifact folder, file) pairs."""
    client = mlflow.MlflowClient()
    for folder, path in files:
        client.log_artifact(run_id, str(path), folder or None)


def get_run(run_id: str) -> RunRecord:
    """A run by id; a UserError when it does not exist."""
    try:
        return _record(mlflow.MlflowClient().get_run(run_id))
    except mlflow.exceptions.MlflowException:
        raise UserError(f"run {run_id!r} does not exist on {tracking_uri()}; check the run id") from None


def check_same_experiment(run_id: str) -> None:
    """Re-opening a run needs the active experiment to be the run's (MLflow refuses otherwise)."""
    run = get_run(run_id)
    active = mlflow.tracking.fluent._get_experiment_id()
    if active and active != run.experiment_id:
        name = mlflow.MlflowClient().get_experiment(run.experiment_id).name
        raise UserError(f"run {run_id} is in experiment {name!r}; set MLFLOW_EXPERIMENT_NAME={name} to resume it")


def child_runs(parent_run_id: str) -> list[RunRecord]:
    """Every run tagged as a child of ``parent_run_id`` (oldest first)."""
    parent = get_run(parent_run_id)
    runs = mlflow.MlflowClient().search_runs(
        [parent.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"], max_results=10000,
    )  # fmt: skip
    return [_record(run) for run in runs]


def create_child_run(parent_run_id: str, run_name: str, tags: dict[str, str]) -> str:
    """A run nested under the parent, for a subprocess to reuse through ``MLFLOW_RUN_ID``."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = get_run(parent_run_id)
    run = mlflow.MlflowClient().create_run(parent.experiment_id, tags={**tags, MLFLOW_PARENT_RUN_ID: parent_run_id}, run_name=run_name)
    return run.info.run_id


def end_run_if_open(run_id: str, message: str) -> None:
    """Mark a run FAILED with ``message`` unless it already ended (e.g. its process was killed)."""
    if get_run(run_id).status in ("RUNNING", "SCHEDULED"):
        fail_run(run_id, message)


def delete_tag(run_id: str, key: str) -> None:
    """Remove a tag if the run has it (e.g. a stale ``sentiment.error`` after a resume)."""
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        mlflow.MlflowClient().delete_tag(run_id, key)


def load_run_table(run_id: str, path: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet table another run logged (e.g. ``predictions/test.parquet``), optionally some columns."""
    target = tempfile.mkdtemp(prefix="sentiment-table-")
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=target)
        return pd.read_parquet(local, columns=columns)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def metric_values(run_id: str, key: str) -> list[float]:
    """Every logged value of one metric, in step order."""
    history = mlflow.MlflowClient().get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


_SUBMIT_LOCK = threading.Lock()


def submit_project_run(
    project_dir: Path, parameters: dict[str, str], backend: str, backend_config: str | None,
    parent_run_id: str, run_name: str, tags: dict[str, str],
):  # fmt: skip
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
                str(project_dir), entry_point="train", parameters=parameters, backend=backend,
                backend_config=backend_config or None, experiment_id=parent.experiment_id, run_name=run_name,
                env_manager="local" if backend == "local" else None, synchronous=False,
            )  # fmt: skip
        finally:
            if name is not None:
                os.environ["MLFLOW_EXPERIMENT_NAME"] = name
    client = mlflow.MlflowClient()
    for key, value in {**tags, MLFLOW_PARENT_RUN_ID: parent_run_id}.items():
        client.set_tag(submitted.run_id, key, value)
    return submitted
