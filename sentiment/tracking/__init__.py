"""Everything MLflow, behind a small interface: the only package that imports mlflow, and it
imports no stage module (train, evaluate, analyze, ablate, ...).

- keys.py        the tag keys (`sentiment.*`), one constant each: `keys.KIND`, `keys.ERROR`, ...
- counts.py      the counts a training run logs once as params (reviews per split, model parameters)
- tracker.py     the `Tracker` protocol (`MetricLogger` + `Publisher`); `NullTracker` (ranks other than 0)
- memory.py      `InMemoryTracker`, for unit tests of the stages without a server
- connection.py  tracking URI, health and credential checks
- runs.py        `open_run` and `MlflowTracker` (the protocol on an MLflow run)
- side_runs.py   writes to other runs: side runs, failing or ending a run, child and project runs
- outbox.py      the outage journal (`Outbox`) and `sentiment sync`
- registry.py    registration and promotion (aliases, races), downloading logged models
- serving.py     the served pyfunc (and a baseline's scikit-learn flavour), how it is logged, its extra
                 metrics for mlflow.models.evaluate
- evidence.py    the evidence store in the repository (runs copied with their ids, read without a server)
- queries.py     reading runs: records, children, metric histories, logged configs and tables

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 sentiment train --preset quick
"""

from sentiment.tracking import keys
from sentiment.tracking.connection import (
    DEFAULT_EXPERIMENT,
    DEFAULT_TRACKING_URI,
    check_server,
    connect,
    one_line,
    reachable,
    tracking_uri,
    where_to_look,
)
from sentiment.tracking.evidence import Published, use_store
from sentiment.tracking.evidence import open_ui_database as open_evidence_ui_database
from sentiment.tracking.evidence import publish as publish_evidence
from sentiment.tracking.evidence import run_ids as evidence_run_ids
from sentiment.tracking.evidence import run_sizes as evidence_run_sizes
from sentiment.tracking.memory import InMemoryTracker
from sentiment.tracking.outbox import Outbox, sync_journal
from sentiment.tracking.queries import (
    RunRecord,
    check_same_experiment,
    child_runs,
    dataset_digests,
    dataset_rows,
    download_artifact,
    download_checkpoints,
    experiment_name,
    get_run,
    last_logged_steps,
    load_run_table,
    load_run_text,
    metric_values,
    read_run_config,
    run_model_uri,
    run_tags,
)
from sentiment.tracking.registry import (
    Registration,
    VersionInfo,
    champion_version,
    fetch_model,
    is_model_uri,
    load_pyfunc,
    model_run_id,
    register_version,
    resolve_model_source,
    set_champion,
    set_version_description,
    set_version_tags,
    settle_pause,
    version_info,
)
from sentiment.tracking.runs import MlflowTracker, dataset_facts, open_run
from sentiment.tracking.serving import (
    BASELINE_FILE,
    COMBINED_FILE,
    MODEL_ARTIFACT,
    SKLEARN_PIPELINE,
    SentimentPyfunc,
)
from sentiment.tracking.side_runs import (
    create_child_run,
    delete_tag,
    end_run_if_open,
    fail_run,
    log_files_to_run,
    log_to_run,
    side_run,
    submit_project_run,
)
from sentiment.tracking.tracker import LoggedModelRef, MetricLogger, NullTracker, Publisher, Tracker

__all__ = [
    "BASELINE_FILE",
    "COMBINED_FILE",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "MODEL_ARTIFACT",
    "SKLEARN_PIPELINE",
    "InMemoryTracker",
    "LoggedModelRef",
    "MetricLogger",
    "MlflowTracker",
    "NullTracker",
    "Publisher",
    "Outbox",
    "Registration",
    "RunRecord",
    "SentimentPyfunc",
    "Tracker",
    "check_same_experiment",
    "check_server",
    "child_runs",
    "connect",
    "create_child_run",
    "dataset_digests",
    "dataset_rows",
    "delete_tag",
    "download_artifact",
    "download_checkpoints",
    "end_run_if_open",
    "experiment_name",
    "fail_run",
    "fetch_model",
    "keys",
    "get_run",
    "run_model_uri",
    "is_model_uri",
    "last_logged_steps",
    "load_pyfunc",
    "load_run_table",
    "load_run_text",
    "log_files_to_run",
    "metric_values",
    "model_run_id",
    "one_line",
    "open_run",
    "reachable",
    "read_run_config",
    "register_version",
    "resolve_model_source",
    "run_tags",
    "submit_project_run",
    "sync_journal",
    "tracking_uri",
    "VersionInfo",
    "champion_version",
    "set_champion",
    "set_version_description",
    "set_version_tags",
    "settle_pause",
    "version_info",
    "log_to_run",
    "side_run",
    "dataset_facts",
    "Published",
    "evidence_run_ids",
    "evidence_run_sizes",
    "open_evidence_ui_database",
    "publish_evidence",
    "use_store",
    "where_to_look",
]
