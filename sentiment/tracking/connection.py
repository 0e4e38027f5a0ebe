"""Where tracking goes and whether it is there: the tracking URI, health and credential checks.

MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -c "from sentiment.tracking import connect; print(connect())"
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
import urllib.request
import warnings

import mlflow

from sentiment.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "imdb-sentiment"


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


def where_to_look(run_id: str) -> str:
    """The run's page in the MLflow UI, or the command that serves a local store's UI."""
    uri = tracking_uri()
    try:
        experiment_id = mlflow.get_run(run_id).info.experiment_id
    except mlflow.exceptions.MlflowException:
        experiment_id = None
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if experiment_id else uri
    return f"mlflow ui --backend-store-uri {uri} (experiment {experiment_id})"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


def reachable(timeout_s: float = 2.0) -> bool:
    """Does the tracking server answer its health check now? (Always true for a local store.)"""
    try:
        check_server(tracking_uri(), timeout_s)
        return True
    except UserError:
        return False


@contextlib.contextmanager
def no_retries(timeout_s: float | None = None):
    """MLflow's HTTP retries off (and, with ``timeout_s``, a short timeout) for the requests made
    inside: MLflow reads both settings per request. For a write that must not be repeated blindly
    (a registration) or a request to a server known to be away."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    if timeout_s is not None:
        settings["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(timeout_s))
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
