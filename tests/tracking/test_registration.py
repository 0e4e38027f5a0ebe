"""Registration exactly once: behind a proxy that lets the server commit the version-creating
request and drops its reply, one `sentiment train --register-as` leaves exactly one version, with
both aliases on it (SQLite here; the PostgreSQL tier runs the same story in tests/postgres)."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from tests.conftest import point_tracking_at, run_cli
from tests.faults import ReplyDropper

CREATE_VERSION = "/api/2.0/mlflow/model-versions/create"


def register_through_a_lost_reply(server: str, monkeypatch, tmp_path, name: str) -> None:
    """Train a TF-IDF model (seconds) and register it while the first creation's reply is lost."""
    with ReplyDropper(server, CREATE_VERSION) as proxy:
        env = point_tracking_at(proxy.url, monkeypatch, tmp_path)
        result = run_cli(["train", "--model", "tfidf-logreg", "--data", "sample", "--register-as", name], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert proxy.dropped == 1  # the fault happened: the server created a version the client never heard of
    mlflow.set_tracking_uri(server)
    mlflow.set_registry_uri(server)
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    assert [v.version for v in versions] == ["1"], [v.version for v in versions]
    assert set(client.get_model_version(name, "1").aliases) == {"candidate", "champion"}
    assert "Successfully registered" not in result.stderr + result.stdout  # one voice: ours


def test_a_lost_registration_reply_leaves_exactly_one_version(mlflow_server, monkeypatch, tmp_path):
    register_through_a_lost_reply(mlflow_server, monkeypatch, tmp_path, "lost-reply")
