"""The evidence store: the runs every published document cites, kept in the repository.

`experiments/evidence/` is an MLflow file store (plain text: one folder per run with its params,
metrics, tags and dataset inputs) holding copies of runs from a tracking server **with their run
ids unchanged**, plus the few small artifacts a report reads (predictions tables keyed by review
id, summaries, the grid, the run's main figures). No model weights, no checkpoints, no review
text. Artifacts are addressed as ``mlflow-artifacts:/<experiment>/<run>/artifacts/...``, which an
``mlflow server --artifacts-destination experiments/evidence`` serves from the same folders, so
the store opens in the MLflow UI from any clone, and `sentiment report` reads it without a server.

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 sentiment evidence add RUN_ID   # copy a run (and its children)
    sentiment evidence ui                                                      # browse the store in the MLflow UI
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from sentiment.errors import UserError
from sentiment.tracking import keys
from sentiment.tracking.connection import one_line, tracking_uri

STORE = Path("experiments") / "evidence"
ARTIFACT_SCHEME = "mlflow-artifacts:/"
PARENT_TAG = "mlflow.parentRunId"
RUN_FOLDERS = ("metrics", "params", "tags", "artifacts")
KIND_TAG = "mlflow.experimentKind"
BATCH = 1000
# What a report reads, and nothing else. Patterns match artifact paths (fnmatch, `*` spans `/`).
KEEP = (
    "config.yaml",  # the run's whole config: the recipe tables of a report
    "predictions/*.parquet",  # review id, label, prediction, probability, logits (text dropped)
    "metrics/*.json",  # per-split metric dicts and confusion counts
    "ablation/*.parquet",  # an ablation parent's summary and children tables
    "grid/*",  # the grid file an ablation ran
    "tune/*.parquet",  # a search's trials
    "tune/*.yaml",  # its space and base config
    "tables/layerwise_lr.parquet",
    "tables/combination_weights.parquet",  # a combined model's weightings tried on validation
    "failures/stats.json",
    "failures/error_rates.parquet",
    "eda/exploration.json",
    "eda/summary.parquet",
    "benchmark.json",  # a benchmark command's measurements (benchmarks/record.py)
)
# Figures only where a report embeds them: a top-level run's, never an ablation child's.
KEEP_TOP_LEVEL = (
    "figures/test_confusion_matrix.png",
    "figures/calibration_test.png",
    "figures/training_curves.png",
    "figures/ablation_test_accuracy.png",
    "figures/tune/*.png",
)
TEXT_COLUMNS = ("text", "review")  # review text never enters the store
# A predictions table keeps what no other column can give back (confidence, loss and the
# uncalibrated probability follow from logit, label and the logged temperature), floats as float32:
# about 10 bytes a review with zstd instead of about 60.
PREDICTION_COLUMNS = ("id", "label", "prediction", "probability", "logit", "n_tokens", "truncated")
MAX_ARTIFACT_BYTES = 5_000_000  # a guard on what is written: anything larger is not a summary


@dataclass(frozen=True)
class Published:
    """One run written to the store."""

    run_id: str
    parent_id: str | None
    files: int
    bytes: int


def _allow_file_store() -> None:
    # MLflow 3 keeps the file store in maintenance mode behind this switch; the store is text
    # on purpose (reviewable diffs, no binary database in git).
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"


def _file_store(root: Path):
    from mlflow.store.tracking.file_store import FileStore

    _allow_file_store()
    return FileStore(str(root.resolve()), artifact_root_uri=ARTIFACT_SCHEME)


def use_store(root: Path = STORE) -> str:
    """Point MLflow at the evidence store to read it (no experiment is set, nothing is written)."""
    if not (root / "0" / "meta.yaml").exists():
        raise UserError(
            f"{root} is not an evidence store (no 0/meta.yaml); run from the repository root or pass --store"
        )
    _restore_empty_folders(root)
    _allow_file_store()
    uri = str(root.resolve())
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    return uri


def _restore_empty_folders(root: Path) -> None:
    """Git keeps no empty folders, and the file store needs every run's four (and .trash)."""
    (root / ".trash").mkdir(exist_ok=True)
    for meta in root.glob("*/*/meta.yaml"):
        for folder in RUN_FOLDERS:
            (meta.parent / folder).mkdir(exist_ok=True)


def local_artifact(run_id: str, path: str) -> Path | None:
    """Where a store run's artifact lies on disk (None when the run is not a store run)."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://", "sqlite:", "postgresql", "mysql")):
        return None
    artifact_uri = mlflow.MlflowClient().get_run(run_id).info.artifact_uri or ""
    if not artifact_uri.startswith(ARTIFACT_SCHEME):
        return None
    return Path(uri.removeprefix("file://")) / artifact_uri.removeprefix(ARTIFACT_SCHEME) / path


# ----------------------------------------------------------------------------- copying runs in


def with_children(client, run_ids: list[str]) -> list:
    """The runs, each followed by its children (oldest first) and, for a combined model, its
    member runs (a report reads their minutes), without repeats."""
    out, seen = [], set()
    run_ids = list(run_ids)
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            raise UserError(
                f"run {run_id!r} does not exist on {tracking_uri()}; check the id and MLFLOW_TRACKING_URI"
            ) from None
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=10000,
        )
        run_ids += [m for m in run.data.tags.get(keys.COMBINED_MEMBERS, "").split(",") if m and m not in run_ids]
        for item in (run, *children):
            if item.info.run_id not in seen:
                seen.add(item.info.run_id)
                out.append(item)
    return out


def publish(run_ids: list[str], root: Path = STORE) -> list[Published]:
    """Copy runs (and their children) from the current tracking server into the store.

    A run already in the store is replaced whole, so publishing again picks up a resumed grid.

    Raises:
        UserError: a run that does not exist, or one still RUNNING (its numbers would change).
    """
    client = mlflow.MlflowClient()
    runs = with_children(client, run_ids)
    running = [r.info.run_id for r in runs if r.info.status in ("RUNNING", "SCHEDULED")]
    if running:
        raise UserError(f"run(s) {', '.join(running)} are still running; publish them when they have ended")
    store = _file_store(root)
    _portable_default_experiment(store, root)
    return [_copy_run(client, store, root, run) for run in runs]


def _portable_default_experiment(store, root: Path) -> None:
    """MLflow's Default experiment (0) with store-relative artifacts; created in a folder that exists."""
    meta = root / "0" / "meta.yaml"
    if not meta.exists():  # the folder existed (e.g. with its README) so the store made no Default
        store._create_experiment_with_id("Default", "0", f"{ARTIFACT_SCHEME}0", None)
    _artifacts_in_store(root, "0")


def _artifacts_in_store(root: Path, experiment_id: str) -> None:
    """Point an experiment's artifact location at the store (``mlflow-artifacts:/<id>``), whoever made it."""
    meta = root / experiment_id / "meta.yaml"
    lines = meta.read_text().splitlines()
    meta.write_text(
        "\n".join(
            f"artifact_location: {ARTIFACT_SCHEME}{experiment_id}" if line.startswith("artifact_location:") else line
            for line in lines
        )
        + "\n"
    )


def _experiment_id(client, store, source_id: str) -> str:
    """The store's experiment of the same name; created (keeping the source id when free) if absent."""
    source = client.get_experiment(source_id)
    found = store.get_experiment_by_name(source.name)
    if found is not None:
        return found.experiment_id
    taken = store._has_experiment(source_id)
    new_id = store.create_experiment(source.name) if taken else source_id
    if not taken:
        store._create_experiment_with_id(source.name, source_id, f"{ARTIFACT_SCHEME}{source_id}", None)
    else:  # a random id was drawn: point its artifacts at the store too
        _artifacts_in_store(Path(store.root_directory), new_id)
    from mlflow.entities import ExperimentTag

    tags = {**source.tags, KIND_TAG: source.tags.get(KIND_TAG, "custom_model_development")}
    for key, value in sorted(tags.items()):  # the UI opens a training experiment in its model-training view
        store.set_experiment_tag(new_id, ExperimentTag(key, value))
    return new_id


def _copy_run(client, store, root: Path, run) -> Published:
    from mlflow.entities import RunInfo
    from mlflow.store.tracking.file_store import _make_persisted_run_info_dict
    from mlflow.utils.file_utils import write_yaml

    info = run.info
    experiment_id = _experiment_id(client, store, info.experiment_id)
    run_dir = Path(store.root_directory) / experiment_id / info.run_id
    shutil.rmtree(run_dir, ignore_errors=True)
    for folder in RUN_FOLDERS:
        (run_dir / folder).mkdir(parents=True, exist_ok=True)
    copied = RunInfo(
        run_id=info.run_id,
        run_name=info.run_name,
        experiment_id=experiment_id,
        artifact_uri=f"{ARTIFACT_SCHEME}{experiment_id}/{info.run_id}/artifacts",
        user_id=info.user_id,
        status="RUNNING",
        start_time=info.start_time,
        end_time=None,
        lifecycle_stage="active",
    )
    meta = _make_persisted_run_info_dict(copied)
    meta["deleted_time"] = None
    write_yaml(str(run_dir), "meta.yaml", meta)
    _copy_data(client, store, run)
    store.update_run_info(info.run_id, info.status, info.end_time, info.run_name)
    files, size = _copy_artifacts(client, run, run_dir / "artifacts", top_level=PARENT_TAG not in run.data.tags)
    return Published(info.run_id, run.data.tags.get(PARENT_TAG), files, size)


def _copy_data(client, store, run) -> None:
    from mlflow.entities import Metric, Param, RunTag

    run_id = run.info.run_id
    params = [Param(k, v) for k, v in sorted(run.data.params.items())]
    tags = [RunTag(k, v) for k, v in sorted(run.data.tags.items()) if k != "mlflow.loggedModels"]
    metrics = []
    for key in sorted(run.data.metrics):
        history = client.get_metric_history(run_id, key)
        metrics += [
            Metric(m.key, m.value, m.timestamp, m.step) for m in sorted(history, key=lambda m: (m.step, m.timestamp))
        ]
    store.log_batch(run_id, metrics=[], params=params, tags=tags)
    for start in range(0, len(metrics), BATCH):  # MLflow takes at most 1,000 metrics a batch
        store.log_batch(run_id, metrics=metrics[start : start + BATCH], params=[], tags=[])
    if run.inputs and run.inputs.dataset_inputs:
        store.log_inputs(run_id, datasets=list(run.inputs.dataset_inputs))


def kept(path: str, top_level: bool) -> bool:
    """Whether an artifact path belongs in the store."""
    patterns = KEEP + (KEEP_TOP_LEVEL if top_level else ())
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def _artifact_paths(client, run_id: str, path: str = "") -> list:
    out = []
    for item in client.list_artifacts(run_id, path or None):
        out += _artifact_paths(client, run_id, item.path) if item.is_dir else [item]
    return out


def _copy_artifacts(client, run, dst: Path, top_level: bool) -> tuple[int, int]:
    files = size = 0
    wanted = [a for a in _artifact_paths(client, run.info.run_id) if kept(a.path, top_level)]
    with tempfile.TemporaryDirectory(prefix="sentiment-evidence-") as tmp:
        for item in wanted:
            local = Path(
                mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=item.path, dst_path=tmp)
            )
            target = dst / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.suffix == ".parquet":
                _without_text(local, target, predictions=item.path.startswith("predictions/"))
            else:
                shutil.copyfile(local, target)
            if target.stat().st_size > MAX_ARTIFACT_BYTES:
                target.unlink()
                raise UserError(
                    f"{item.path} of run {run.info.run_id} is over {MAX_ARTIFACT_BYTES / 1e6:.0f} MB even without "
                    "text; it is not a summary a report reads: leave it out of the store"
                )
            files, size = files + 1, size + target.stat().st_size
    return files, size


def _without_text(source: Path, target: Path, predictions: bool) -> None:
    """A table without review text (nor any other long free-text column); a predictions table
    keeps only `PREDICTION_COLUMNS`, its floats as float32."""
    frame = pd.read_parquet(source)
    drop = [c for c in frame.columns if c in TEXT_COLUMNS or (predictions and c not in PREDICTION_COLUMNS)]
    for column in frame.columns.difference(drop):
        if frame[column].dtype == object and len(frame) and frame[column].astype(str).str.len().max() > 200:
            drop.append(column)
    frame = frame.drop(columns=drop)
    if predictions:
        floats = frame.select_dtypes("float64").columns
        frame[floats] = frame[floats].astype("float32")
    frame.to_parquet(target, index=False, compression="zstd")


# ----------------------------------------------------------------------------- what is in it


def run_ids(root: Path = STORE) -> set[str]:
    """Every run id the store holds."""
    return {meta.parent.name for meta in root.glob("*/*/meta.yaml")}


def run_sizes(root: Path = STORE) -> dict[str, int]:
    """Bytes on disk per stored run (its metadata, metric histories and artifacts)."""
    out = {}
    for meta in root.glob("*/*/meta.yaml"):
        folder = meta.parent
        out[folder.name] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return out


def open_ui_database(root: Path, database: Path) -> str:
    """The store migrated (ids kept) into a fresh SQLite database for `mlflow server`; its URI."""
    from mlflow.store.fs2db import migrate

    _restore_empty_folders(root)
    _allow_file_store()
    database.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        database.unlink()
    uri = f"sqlite:///{database.resolve()}"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its summary table is not ours to print
            migrate(root.resolve(), uri, progress=False)
    except Exception as exc:
        raise UserError(f"could not open the evidence store {root} ({one_line(exc)[:200]})") from None
    return uri
