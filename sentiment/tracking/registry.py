"""The model registry and logged models: registration with `candidate` / `champion` aliases
(safe against concurrent registrations), downloading a logged model's package, loading a pyfunc.

    sentiment train --preset quick --register-as imdb-sentiment
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow

from sentiment.errors import UserError
from sentiment.tracking import keys
from sentiment.tracking.connection import no_retries, one_line
from sentiment.tracking.serving import MODEL_ARTIFACT

MLFLOW_URI_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    champion: bool
    uri: str
    decision: object | None = None  # the promotion decision (sentiment.promote.Decision)


@dataclass(frozen=True)
class VersionInfo:
    """What promotion needs to know of a registered version."""

    name: str
    version: str
    run_id: str | None
    tags: dict

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def register_version(tracker, model_uri: str, name: str, score: float) -> str:
    """Register a model as a new version of ``name`` with alias `candidate`; returns the version.

    Exactly once: the version is created with a fresh token tag, and a creation whose reply was
    lost (the server committed it, the client never heard) is looked up by that token before it
    is tried again, so no retry registers a second version. ``score`` (the candidate's own test
    accuracy) is kept as the version tag ``test_accuracy`` for reference only: promotion compares
    models on the same reviews (sentiment.promote). ``tracker`` is the run's MlflowTracker:
    registration first waits for a lost server.
    """
    tracker.wait_online()
    client = mlflow.MlflowClient()
    _ensure_registered_model(client, name)
    version = create_version_once(client, name, model_uri, uuid.uuid4().hex)
    client.set_model_version_tag(name, version, "test_accuracy", f"{score:.6f}")
    client.set_model_version_tag(name, version, "run_id", tracker.run_id)
    # PostgreSQL reports two processes moving one alias at once as a unique violation: retry
    _retry(lambda: client.set_registered_model_alias(name, "candidate", version))
    tracker.set_tags({keys.REGISTERED_MODEL: name, keys.REGISTERED_VERSION: version})
    return version


def _ensure_registered_model(client, name: str) -> None:
    """Create the registered model unless it exists (a lost reply's retry finds it existing)."""
    for attempt in range(5):
        try:
            client.get_registered_model(name)
            return
        except mlflow.exceptions.MlflowException:
            pass
        try:
            client.create_registered_model(name)
            return
        except Exception:  # a concurrent creation, or a lost reply: look again
            if attempt == 4:
                raise
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))


def create_version_once(client, name: str, model_uri: str, token: str, attempts: int = 5) -> str:
    """Create one version of ``name`` from ``model_uri`` tagged with ``token``, whatever replies
    are lost: before each try, a version already holding the token is the answer. MLflow's own
    transport retries are off for the creating request (they would repeat it blindly)."""
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    for attempt in range(attempts):
        found = _versions_with_token(client, name, token)
        if found:
            return found[0]
        try:
            with no_retries():
                created = client.create_model_version(
                    name, model_uri, tags={keys.REGISTRATION_TOKEN: token}, model_id=model_id, await_creation_for=0
                )
            return str(created.version)
        except Exception:
            if attempt == attempts - 1:
                found = _versions_with_token(client, name, token)
                if found:
                    return found[0]
                raise
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))
    raise AssertionError("unreachable")


def _versions_with_token(client, name: str, token: str) -> list[str]:
    found = client.search_model_versions(f"name = '{name}' and tags.`{keys.REGISTRATION_TOKEN}` = '{token}'")
    return sorted((str(v.version) for v in found), key=int)


def version_info(name: str, version: str) -> VersionInfo:
    """A registered version's run and tags; a one-line error when it does not exist."""
    try:
        found = mlflow.MlflowClient().get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException:
        raise UserError(
            f"model {name!r} has no version {version!r}; see the versions in the MLflow UI's Models page"
        ) from None
    # The run that registered it (tag run_id) holds its test predictions: the training run
    # itself, or for a `sentiment tune` winner the tune parent; the model's own run otherwise.
    return VersionInfo(name, str(found.version), found.tags.get("run_id") or found.run_id, dict(found.tags))


def champion_version(name: str) -> str | None:
    """The version the `champion` alias points at, or None."""
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version)
    except mlflow.exceptions.MlflowException:
        return None


def set_champion(name: str, version: str) -> None:
    _retry(lambda: mlflow.MlflowClient().set_registered_model_alias(name, "champion", version))


def set_version_tags(name: str, version: str, tags: dict) -> None:
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def set_version_description(name: str, version: str, text: str) -> None:
    """The version page's description in the MLflow UI (e.g. its model card, Markdown)."""
    mlflow.MlflowClient().update_model_version(name, version, description=text)


def settle_pause() -> None:
    """Let a racing writer's alias change land before verifying ours."""
    time.sleep(random.uniform(0.2, 0.6))


def _retry(call, attempts: int = 5):
    """Retry a registry write that lost a race (e.g. two processes creating the same name)."""
    for attempt in range(attempts):
        try:
            return call()
        except mlflow.exceptions.MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))


# ----------------------------------------------------------------------------- logged models


def is_model_uri(name: str) -> bool:
    """Is ``name`` an MLflow model URI (runs:/, models:/, mlflow-artifacts:/) rather than a Hub id or folder?"""
    return name.startswith(MLFLOW_URI_SCHEMES)


def fetch_model(uri: str, tmp: Path | None = None) -> tuple[Path, str | None]:
    """Download a logged sentiment model: its package folder (weights, tokenizer,
    sentiment_config.yaml) under ``tmp`` (else a new temporary folder) and its LoggedModel id."""
    folder = _download_package(uri, tmp or Path(tempfile.mkdtemp(prefix="sentiment-")))
    return folder, _model_id_of(uri)


def resolve_model_source(name: str, workdir: Path | None = None) -> str:
    """A Hub id / folder / alias passes through; an MLflow model URI becomes its local weights
    folder (under ``workdir``, else a new temporary folder). Needs no run: torchrun ranks other
    than 0 call it too."""
    if not is_model_uri(name):
        return name
    return str(_download_package(name, workdir or Path(tempfile.mkdtemp(prefix="sentiment-"))))


def load_pyfunc(uri: str):
    """`mlflow.pyfunc.load_model`, with a one-line error for a URI that does not exist."""
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise UserError(f"cannot load model {uri!r} ({one_line(exc)[:200]}); check the URI in the MLflow UI") from None


def _download_package(uri: str, tmp: Path) -> Path:
    """Download a logged sentiment model and return the folder with weights and tokenizer."""
    target = Path(tempfile.mkdtemp(dir=tmp))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    except Exception as exc:
        raise UserError(
            f"model {uri!r} does not exist or cannot be downloaded ({one_line(exc)[:200]}); check the URI with the "
            "MLflow UI"
        ) from None
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


def model_run_id(uri: str, model_id: str | None) -> str | None:
    """The run that logged a model: a LoggedModel's source run, or the run of a runs:/ URI."""
    if uri.startswith("runs:/"):
        return uri[len("runs:/") :].split("/")[0]
    if model_id:
        with contextlib.suppress(Exception):
            return mlflow.get_logged_model(model_id).source_run_id
    return None
