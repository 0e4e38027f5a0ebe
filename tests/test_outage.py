"""The tracking server goes away mid-run and comes back: training goes on, the journal is
replayed, and the run holds every metric step exactly once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from tests.conftest import TINY_TRAIN, free_port, start_server, wait_healthy


# a server stopped and restarted mid-run; test_journaled_files_replay_under_their_own_names crosses the journal in make
# test
@pytest.mark.extended
def test_server_lost_mid_run_then_back(tiny_model, reviews_csv, tmp_path, tracking_env):
    root, port = tmp_path / "server", free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(root, port)
    wait_healthy(uri, server)
    env = {
        **tracking_env,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": "outage",
        "SENTIMENT_SERVER_WAIT_S": "300",
    }
    args = ["--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--epochs", "8", "--log-every-steps", "1"]
    train = subprocess.Popen(
        [sys.executable, "-m", "sentiment", "train", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = MlflowClient(uri)
    try:
        deadline = time.time() + 180
        run_id = None
        while time.time() < deadline and run_id is None:
            runs = client.search_runs([e.experiment_id for e in client.search_experiments() if e.name == "outage"])
            if runs and "train/loss" in runs[0].data.metrics:
                run_id = runs[0].info.run_id
            time.sleep(0.2)
        assert run_id, "training never logged a step"
        server.terminate()
        server.wait(timeout=30)
        time.sleep(4)
        assert train.poll() is None, "training stopped with the server"
        server = start_server(root, port)
        wait_healthy(uri, server)
        out, err = train.communicate(timeout=600)
        assert train.returncode == 0, err[-3000:]
    finally:
        train.kill()
        server.terminate()
        server.wait(timeout=30)
    server = start_server(root, port)
    try:
        wait_healthy(uri, server)
        client = MlflowClient(uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert err.count("is unreachable") == 1 and "replayed" in err
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert steps == list(range(1, 8 * 20 + 1))  # 154 train reviews / batch 8 = 20 steps an epoch, each once
        assert sorted(m.step for m in client.get_metric_history(run_id, "val/accuracy")) == list(range(1, 9))
        paths = {a.path for a in client.list_artifacts(run_id, "figures")}
        assert "figures/training_curves.png" in paths and "test/accuracy" in run.data.metrics
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_journaled_files_replay_under_their_own_names(tracking_env, tmp_path):
    """Files journaled while the server is away land at the artifact path they were logged to,
    whether replayed by the run itself or later by `sentiment sync`."""

    from sentiment.tracking import Outbox, sync_journal

    figure = tmp_path / "training_curves.png"
    figure.write_bytes(b"png")
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "a.json").write_text("{}")
    client = MlflowClient()
    experiment_id = client.create_experiment(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    for replay in ("outbox", "sync"):
        run_id = client.create_run(experiment_id).info.run_id
        run_dir = tmp_path / replay / run_id
        outbox = Outbox(run_id, run_dir / "journal")
        outbox._journal({"op": "artifact", "local": str(figure), "artifact_path": "figures"})
        outbox._journal({"op": "artifacts", "local": str(folder), "artifact_path": "tables"})
        if replay == "outbox":
            assert outbox.replay(force=True)
        else:
            assert sync_journal(run_dir) == 2
        assert [a.path for a in client.list_artifacts(run_id, "figures")] == ["figures/training_curves.png"]
        assert [a.path for a in client.list_artifacts(run_id, "tables")] == ["tables/a.json"]


# two minutes of a server away (MLflow's own retries included); the journal's replay is in make test above
@pytest.mark.extended
def test_a_run_that_fails_while_the_server_is_away_ends_failed_after_sync(
    tiny_model, reviews_csv, tmp_path, tracking_env
):
    """The server goes away mid-run and stays away when the model must be logged: the run fails
    with one error line (no traceback), its end is journaled, and `sentiment sync` makes it FAILED
    on the server, with the reason; nothing stays RUNNING."""
    root, port = tmp_path / "server", free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(root, port)
    wait_healthy(uri, server)
    env = {**tracking_env, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "away", "SENTIMENT_SERVER_WAIT_S": "3"}
    args = ["--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--epochs", "6", "--log-every-steps", "1"]
    train = subprocess.Popen(
        [sys.executable, "-m", "sentiment", "train", *args, "--output-dir", str(tmp_path / "runs")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = MlflowClient(uri)
    try:
        run_id = None
        deadline = time.time() + 180
        while time.time() < deadline and run_id is None:
            runs = client.search_runs([e.experiment_id for e in client.search_experiments() if e.name == "away"])
            if runs and "train/loss" in runs[0].data.metrics:
                run_id = runs[0].info.run_id
            time.sleep(0.2)
        assert run_id, "training never logged a step"
        server.terminate()
        server.wait(timeout=30)
        out, err = train.communicate(timeout=600)
    finally:
        train.kill()
        if server.poll() is None:
            server.terminate()
    assert train.returncode == 1, err[-3000:]
    assert "Traceback" not in err and err.count("error:") == 1, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: ") and "sentiment sync" in err
    server = start_server(root, port)
    try:
        wait_healthy(uri, server)
        client = MlflowClient(uri)
        assert client.get_run(run_id).info.status == "RUNNING"  # the server never heard the end
        synced = subprocess.run(
            [sys.executable, "-m", "sentiment", "sync", str(tmp_path / "runs" / run_id)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert synced.returncode == 0, synced.stderr[-2000:]
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and "unreachable" in run.data.tags["sentiment.error"]
        assert run.info.end_time is not None
    finally:
        server.terminate()
        server.wait(timeout=30)
