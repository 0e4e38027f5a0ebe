"""Longer outages of the tracking server, with real trainings against a real server that is
stopped and started again on the same store: a minute away in the middle of an epoch, and a
restart while the run logs its model. Either way the run ends FINISHED, every metric step is
on the server exactly once, and the model is registered exactly once.

    pytest tests/test_long_outage.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import TINY_TRAIN, free_port, start_server, wait_healthy, write_reviews

pytestmark = [pytest.mark.slow, pytest.mark.long_outage]

OUTAGE_S = 65  # at least a minute away


class Server:
    """A tracking server (SQLite, proxied artifacts) that a test stops and starts again on the same store."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_server(self.root, self.port)
        wait_healthy(self.uri, self.proc, timeout_s=180)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_training(server: Server, env: dict, cwd: Path, args: list[str]) -> subprocess.Popen:
    env = {**env, "MLFLOW_TRACKING_URI": server.uri, "SENTIMENT_SERVER_WAIT_S": "600"}
    return subprocess.Popen(
        [sys.executable, "-m", "sentiment", "train", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(found, train: subprocess.Popen, what: str, timeout_s: float = 300, every_s: float = 0.1):
    """Poll ``found()`` until it returns something; fail if the training ends first."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        with_value = found()
        if with_value:
            return with_value
        assert train.poll() is None, f"training ended before {what}: {train.stderr.read()[-3000:]}"
        time.sleep(every_s)
    raise AssertionError(f"training never reached {what}")


def first_run(client: MlflowClient, experiment: str):
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return runs[0] if runs else None


def check_run_once_each(client: MlflowClient, run_id: str, steps: int, epochs: int, name: str) -> None:
    """FINISHED; every training step 1..steps and every epoch once; test metrics once; one
    registered version of ``name``, this run's, and it is the champion."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", run.data.tags.get("sentiment.error")
    for key in ("train/loss", "train/lr"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(1, steps + 1)), key
    for key in ("train/accuracy", "val/accuracy", "val/loss"):  # per epoch
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(1, epochs + 1)), key
    for key in ("test/accuracy", "test/loss", "val/best_accuracy"):
        assert len(client.get_metric_history(run_id, key)) == 1, key
    versions = client.search_model_versions(f"name = '{name}'")
    assert [(v.version, v.run_id) for v in versions] == [("1", run_id)]
    assert run.data.tags["sentiment.registered_version"] == "1"
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    paths = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert "figures/training_curves.png" in paths


def test_server_away_a_minute_from_the_middle_of_an_epoch(tiny_model, tmp_path, tracking_env):
    """The server stops right after the first logged step and comes back more than a minute
    later; training goes on meanwhile (points stamped during the outage prove it), the journal
    is replayed, and model logging and registration happen once the server is back."""
    reviews = write_reviews(tmp_path / "reviews.csv", n=2000)  # 1,280 training reviews: 160 steps an epoch
    server = Server(tmp_path / "server")
    server.start()
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    args = [
        "--data",
        str(reviews),
        "--model",
        tiny_model,
        *TINY_TRAIN,
        "--epochs",
        "2",
        "--log-every-steps",
        "1",
        "--register-as",
        "away",
    ]
    train = start_training(server, tracking_env, tmp_path, args)
    client = MlflowClient(server.uri, registry_uri=server.uri)
    try:
        run = wait_until(
            lambda: (r := first_run(client, experiment)) and "train/loss" in r.data.metrics and r,
            train,
            "its first step",
        )
        server.stop()
        down_ms = int(time.time() * 1000)
        time.sleep(OUTAGE_S)
        assert train.poll() is None, "training stopped with the server"
        up_ms = int(time.time() * 1000)
        server.start()
        _, err = train.communicate(timeout=600)
        assert train.returncode == 0, err[-3000:]
        assert err.count("is unreachable") == 1 and "replayed" in err, err[-3000:]
        check_run_once_each(client, run.info.run_id, steps=2 * 160, epochs=2, name="away")
        # training went on mid-epoch while the server was away: points stamped then are on the server now
        during = [
            m.step for m in client.get_metric_history(run.info.run_id, "train/loss") if down_ms < m.timestamp < up_ms
        ]
        assert any(step % 160 for step in during), during
    finally:
        train.kill()
        server.stop()


def test_server_restarts_while_the_model_is_logged(tiny_model, reviews_csv, tmp_path, tracking_env):
    """The server stops the moment the run creates its LoggedModel (before the model's files
    are uploaded) and is away for 20 s, longer than MLflow's own request retries: model logging
    waits and finishes, and the model is registered once."""
    server = Server(tmp_path / "server")
    server.start()
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    args = [
        "--data",
        str(reviews_csv),
        "--model",
        tiny_model,
        *TINY_TRAIN,
        "--epochs",
        "2",
        "--log-every-steps",
        "1",
        "--register-as",
        "restarted",
    ]
    train = start_training(server, tracking_env, tmp_path, args)
    client = MlflowClient(server.uri, registry_uri=server.uri)

    def model_being_logged():
        found = client.get_experiment_by_name(experiment)
        models = client.search_logged_models([found.experiment_id], filter_string="name = 'model'") if found else []
        return models[0] if models else None

    try:
        run = wait_until(lambda: first_run(client, experiment), train, "its start")
        pending = wait_until(model_being_logged, train, "model logging", every_s=0.05)
        server.stop()
        time.sleep(20)
        assert train.poll() is None, f"training ended with the server away: {train.stderr.read()[-3000:]}"
        server.start()
        _, err = train.communicate(timeout=600)
        assert train.returncode == 0, err[-3000:]
        check_run_once_each(client, run.info.run_id, steps=2 * 20, epochs=2, name="restarted")
        version = client.get_model_version("restarted", "1")
        served = client.get_logged_model(version.model_id or version.source.split("/")[-1])
        assert str(served.status) in ("READY", "LoggedModelStatus.READY") and served.name == "model"
        assert served.model_id == pending.model_id or str(client.get_logged_model(pending.model_id).status).endswith(
            "FAILED"
        )
    finally:
        train.kill()
        server.stop()
