"""A tracker that keeps everything in memory: unit tests of the stages without a server.

    python -c "from sentiment.tracking import InMemoryTracker; t = InMemoryTracker(); \
t.log_metrics({'val/accuracy': 0.9}, step=1); print(t.metrics)"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentiment import config as config_mod
from sentiment.tracking.tracker import CHECKPOINT_PREFIX, LoggedModelRef


class InMemoryTracker:
    """Implements `Tracker` by recording each call: ``params``, ``tags`` (values as text, like
    MLflow's), ``metrics`` (key -> [(step, value, model_id)] in logging order), ``artifacts``
    (path -> the Figure, text, dict, DataFrame or local path logged there), ``datasets``
    ((split, context, rows)), ``models`` ((name, step, folder)), ``model_files`` (model id -> file
    name -> text) and ``linked_models``."""

    def __init__(self, run_id: str = "in-memory") -> None:
        self.run_id = run_id
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, list[tuple[int, float, str | None]]] = {}
        self.artifacts: dict[str, Any] = {}
        self.datasets: list[tuple[str, str, int]] = []
        self.models: list[tuple[str, int, Path]] = []
        self.linked_models: list[str] = []
        self.model_files: dict[str, dict[str, str]] = {}  # model id -> file name -> text
        self.pruned_epochs: list[int] = []
        self.deleted_artifacts: list[str] = []
        self.closed = False

    def metric(self, key: str) -> list[float]:
        """Every value of one metric, in step order."""
        return [value for _, value, _ in sorted(self.metrics[key], key=lambda point: point[0])]

    def log_config(self, config) -> None:
        flat = config_mod.to_flat_dict(config)
        self.log_params({k: v for k, v in flat.items() if k not in self.params})
        self.log_text(config_mod.to_yaml(config), "config.yaml")

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update({k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int, model_id: str | None = None) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append((int(step), float(value), model_id))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_figure(self, figure, path: str) -> None:
        self.artifacts[path] = figure

    def log_table(self, frame, name: str) -> None:
        self.artifacts[f"{name}.json"] = frame
        self.artifacts[f"{name}.parquet"] = frame

    def log_text(self, text: str, path: str) -> None:
        self.artifacts[path] = text

    def log_dict(self, data: dict, path: str) -> None:
        self.artifacts[path] = data

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        local = Path(local_path)
        if local.is_dir():  # as MLflow: a folder's contents go under artifact_path
            self.artifacts[artifact_path or ""] = local
        else:
            self.artifacts[f"{artifact_path}/{local.name}" if artifact_path else local.name] = local

    def log_splits(self, splits, only: str | None = None) -> None:
        contexts = {"train": "training", "val": "validation", "test": "testing"}
        for split, context in contexts.items():
            if only in (None, split):
                self.datasets.append((split, context, len(getattr(splits, split))))

    def link_model(self, model_id: str) -> None:
        self.linked_models.append(model_id)

    def log_model(self, folder: Path, name: str, step: int) -> LoggedModelRef:
        self.models.append((name, step, Path(folder)))
        model_id = f"m-{len(self.models)}"
        return LoggedModelRef(model_id=model_id, model_uri=f"models:/{model_id}")

    def log_model_file(self, model_id: str, local_path: Path) -> None:
        self.model_files.setdefault(model_id, {})[Path(local_path).name] = Path(local_path).read_text()

    def prune_checkpoints(self, keep: int, scores: dict[int, float]) -> list[int]:
        from sentiment.tracking.tracker import epochs_to_prune

        logged = {step for name, step, _ in self.models if name.startswith(CHECKPOINT_PREFIX)}
        pruned = epochs_to_prune(keep, {e: v for e, v in scores.items() if e in logged})
        self.pruned_epochs += pruned
        return pruned

    def delete_artifacts(self, path: str) -> None:
        self.deleted_artifacts.append(path)
        for key in [k for k in self.artifacts if k == path or k.startswith(path.rstrip("/") + "/")]:
            del self.artifacts[key]

    def flush(self) -> None:
        pass

    def close(self, wait_s: float | None = None) -> None:
        self.closed = True
