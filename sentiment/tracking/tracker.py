"""The `Tracker` protocol every stage logs through (a `MetricLogger`, what the training loop needs, and a
`Publisher` of artifacts and models), and `NullTracker` for ranks other than 0.

Stages (train, evaluate, analyze, ablate) depend on this interface, never on MLflow: the CLI
hands them an `MlflowTracker` (`tracking.open_run`), torchrun ranks other than 0 a
`NullTracker`, unit tests an `InMemoryTracker`.

    python -c "from sentiment.tracking import NullTracker; NullTracker().log_metrics({'a': 1.0}, step=0)"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class LoggedModelRef:
    """A logged model: its LoggedModel id (``m-...``) and a URI that loads it."""

    model_id: str
    model_uri: str


CHECKPOINT_PREFIX = "checkpoint-epoch-"  # LoggedModel names of --log-checkpoints all


def epochs_to_prune(keep: int, scores: dict[int, float]) -> list[int]:
    """The epochs outside the ``keep`` best by score (ties: the earlier epoch stays), sorted."""
    ranked = sorted(scores, key=lambda epoch: (-scores[epoch], epoch))
    return sorted(ranked[keep:]) if keep > 0 else []


@runtime_checkable
class MetricLogger(Protocol):
    """What a training loop logs through: params, metrics at a step, tags (the four calls of
    torchtune's metric logger, plus flush and close). `train/loop.py` needs nothing more."""

    run_id: str

    def log_params(self, params: dict[str, Any]) -> None:
        """Params, each once per run (values are logged as text)."""

    def log_metrics(self, metrics: dict[str, float], step: int, model_id: str | None = None) -> None:
        """Metric points at ``step``; with ``model_id`` they also rank that LoggedModel."""

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tags (values are logged as text)."""

    def flush(self) -> None:
        """Send what is buffered now (metrics are batched); never waits for a lost server."""

    def close(self, wait_s: float | None = None) -> None:
        """Send everything; a tracker that lost its server waits for it (bounded by ``wait_s``)."""


@runtime_checkable
class Publisher(Protocol):
    """What a stage publishes besides numbers: its config, figures, tables, texts, datasets and models.
    Artifact paths are relative to the run (``figures/training_curves.png``); tables become an MLflow
    table (``name.json``) and a Parquet copy (``name.parquet``)."""

    def log_config(self, config) -> None:
        """The whole config: flattened as params (those the run lacks) and as ``config.yaml``."""

    def log_figure(self, figure, path: str) -> None:
        """A matplotlib Figure as a PNG artifact."""

    def log_table(self, frame, name: str) -> None:
        """A pandas DataFrame as ``name.json`` (MLflow table) and ``name.parquet``."""

    def log_text(self, text: str, path: str) -> None:
        """A text artifact (Markdown, HTML, YAML)."""

    def log_dict(self, data: dict, path: str) -> None:
        """A JSON (or, for ``.yaml``, YAML) artifact."""

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        """A local file, or a folder with its contents, under ``artifact_path``."""

    def log_splits(self, splits, only: str | None = None) -> None:
        """Each split of a ``data.Splits`` as a dataset input (contexts training/validation/testing)."""

    def link_model(self, model_id: str) -> None:
        """Record a LoggedModel as an input of this run (the model it evaluates or analyses)."""

    def log_model(self, folder: Path, name: str, step: int) -> LoggedModelRef:
        """A packaged model folder as a servable model (an MLflow 3 LoggedModel)."""

    def log_model_file(self, model_id: str, local_path: Path) -> None:
        """Add a file to a logged model's artifacts (e.g. its model card)."""

    def prune_checkpoints(self, keep: int, scores: dict[int, float]) -> list[int]:
        """Keep the weights of the ``keep`` epoch checkpoints (LoggedModels ``checkpoint-epoch-N``)
        with the highest ``scores[N]``; tag the others and delete their artifacts. Returns the
        pruned epochs."""

    def delete_artifacts(self, path: str) -> None:
        """Delete a folder of this run's artifacts (e.g. the resumable state in ``checkpoints``)."""


@runtime_checkable
class Tracker(MetricLogger, Publisher, Protocol):
    """What a stage may record about its run: a `MetricLogger` and a `Publisher` on one run. Every
    metric call passes ``step``."""


class NullTracker:
    """The tracker of torchrun ranks other than 0: only rank 0 talks to the tracking server.

    Every method of `Tracker` is here and does nothing; a name that is not part of the
    interface is an AttributeError, as on any tracker.
    """

    def __init__(self, run_id: str = "") -> None:
        self.run_id = run_id

    def log_config(self, config) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int, model_id: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_figure(self, figure, path: str) -> None:
        pass

    def log_table(self, frame, name: str) -> None:
        pass

    def log_text(self, text: str, path: str) -> None:
        pass

    def log_dict(self, data: dict, path: str) -> None:
        pass

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_splits(self, splits, only: str | None = None) -> None:
        pass

    def link_model(self, model_id: str) -> None:
        pass

    def log_model(self, folder: Path, name: str, step: int) -> LoggedModelRef:
        raise RuntimeError("ranks other than 0 log no models; only rank 0 has a tracking run")

    def log_model_file(self, model_id: str, local_path: Path) -> None:
        raise RuntimeError("ranks other than 0 log no models; only rank 0 has a tracking run")

    def prune_checkpoints(self, keep: int, scores: dict[int, float]) -> list[int]:
        return []

    def delete_artifacts(self, path: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self, wait_s: float | None = None) -> None:
        pass
