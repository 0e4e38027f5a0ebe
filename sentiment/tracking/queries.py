"""Reading what runs logged: run records, children of an ablation parent, metric histories, and
the one reader of logged configs and tables (evaluate, analyze, ablate and report use it).

    python -c "from sentiment import tracking; tracking.connect(); print(tracking.get_run('RUN_ID').status)"
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd

from sentiment import config as config_mod
from sentiment.errors import UserError
from sentiment.tracking.connection import one_line, tracking_uri
from sentiment.tracking.evidence import local_artifact


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
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        status=run.info.status,
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
        experiment_id=run.info.experiment_id,
        params=dict(run.data.params),
        start_ms=run.info.start_time,
        end_ms=run.info.end_time,
    )


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
        [parent.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=10000,
    )
    return [_record(run) for run in runs]


def run_tags(run_id: str) -> dict[str, str]:
    """Tags of another run; a run that does not exist is a user error."""
    try:
        return dict(mlflow.get_run(run_id).data.tags)
    except Exception as exc:
        raise UserError(
            f"run {run_id!r} does not exist or cannot be read ({one_line(exc)[:150]}); pass the id of an evaluate or "
            "train run"
        ) from None


def dataset_rows(run_id: str) -> dict[str, int]:
    """Rows of each dataset input the run logged, by context (training, validation, testing)."""
    out: dict[str, int] = {}
    for item in mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        with contextlib.suppress(ValueError, TypeError, KeyError):
            out[context] = int(json.loads(item.dataset.profile)["num_rows"])
    return out


def dataset_digests(run_id: str) -> dict[str, str]:
    """The digest of each dataset input the run logged, by context (training, validation, testing)."""
    out: dict[str, str] = {}
    for item in mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        out[context] = item.dataset.digest
    return out


def run_model_uri(run_id: str, name: str = "model") -> str | None:
    """The URI (``models:/m-...``) of the newest ready LoggedModel called ``name`` a run logged."""
    from mlflow.entities import LoggedModelStatus

    experiment_id = mlflow.get_run(run_id).info.experiment_id
    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        output_format="list",
    )
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    return f"models:/{ready[0].model_id}" if ready else None


def experiment_name(experiment_id: str) -> str:
    return mlflow.MlflowClient().get_experiment(experiment_id).name


def metric_values(run_id: str, key: str) -> list[float]:
    """Every logged value of one metric, in step order."""
    history = mlflow.MlflowClient().get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def last_logged_steps(run_id: str) -> dict[str, int]:
    """Per metric key, the last step the run holds (what a resumed run must not log again)."""
    client = mlflow.MlflowClient()
    keys = mlflow.get_run(run_id).data.metrics
    return {key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1) for key in keys}


# ----------------------------------------------------------------------------- logged configs and tables


def read_run_config(run_id: str, required: bool = False) -> config_mod.Config | None:
    """The config a run logged (``config.yaml``); None when it has none, unless ``required``."""
    try:
        local = local_artifact(run_id, "config.yaml")  # a run of the evidence store: read from disk
        return config_mod.from_yaml(
            local.read_text() if local else mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
        )
    except Exception as exc:
        if required:
            raise UserError(
                f"run {run_id} has no readable config.yaml ({one_line(exc)[:150]}); it was not started by sentiment "
                "train"
            ) from None
        return None


def load_run_text(run_id: str, path: str, hint: str = "") -> str:
    """A text artifact of a run (e.g. the search space a tune parent logged).

    Raises:
        UserError: the run has no such artifact (then ``hint``).
    """
    try:
        local = local_artifact(run_id, path)  # a run of the evidence store: read from disk
        return local.read_text() if local else mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except Exception as exc:
        advice = f"; {hint}" if hint else ""
        raise UserError(f"run {run_id} has no readable {path} ({one_line(exc)[:150]}){advice}") from None


def load_run_table(run_id: str, path: str, columns: list[str] | None = None, hint: str = "") -> pd.DataFrame:
    """A Parquet table a run logged (e.g. ``predictions/test.parquet``), optionally some columns.

    Raises:
        UserError: the run has no such table (the message lists the tables beside it, then ``hint``).
    """
    stored = local_artifact(run_id, path)  # a run of the evidence store: read from disk
    if stored is not None and stored.exists():
        return pd.read_parquet(stored, columns=columns)
    target = tempfile.mkdtemp(prefix="sentiment-table-")
    try:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=target)
        except Exception:
            found: list[str] = []
            with contextlib.suppress(Exception):
                beside = mlflow.MlflowClient().list_artifacts(run_id, str(Path(path).parent))
                found = [a.path for a in beside if a.path.endswith(".parquet")]
            advice = f"; {hint}" if hint else ""
            raise UserError(f"run {run_id} has no {path} (it has: {', '.join(found) or 'none'}){advice}") from None
        return pd.read_parquet(local, columns=columns)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def download_artifact(run_id: str, path: str, dst: Path) -> Path | None:
    """Download one artifact of a run into ``dst``; None when the run has no such artifact."""
    dst.mkdir(parents=True, exist_ok=True)
    stored = local_artifact(run_id, path)  # a run of the evidence store: read from disk
    if stored is not None:
        return stored if stored.exists() else None
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))
    except (mlflow.exceptions.MlflowException, OSError):
        return None


def download_checkpoints(run_id: str, folder: Path) -> None:
    """Copy the run's uploaded ``checkpoints/`` (training state, best model) into ``folder``, if any."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="checkpoints", dst_path=str(folder.parent / "_download")
        )
        shutil.copytree(folder.parent / "_download" / "checkpoints", folder, dirs_exist_ok=True)
        shutil.rmtree(folder.parent / "_download", ignore_errors=True)
