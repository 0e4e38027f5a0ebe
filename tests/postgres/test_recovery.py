"""Recovery on the PostgreSQL-backed server: the tracking server restarts mid-run while
PostgreSQL stays up, and a training killed with `kill -9` resumes; every metric step lands once.

    pytest -m postgres tests/postgres/test_recovery.py
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow import MlflowClient

from tests.conftest import TINY_TRAIN, free_port, run_cli, stop_server, wait_healthy
from tests.postgres.conftest import start_pg_server
from tests.test_fault_tolerance import KEYS, TRAIN, histories, start_training, wait_for_checkpoint

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_server_restart_mid_run_keeps_every_step_once(
    pg_tracking_env, pg_server, postgres, tiny_model, reviews_csv, tmp_path
):
    """A second tracking server on the session's database and artifact store (as a team runs
    several behind a load balancer): stopped right after the first logged step, started again
    4 s later. The run ends FINISHED, with every step once, as the session's server reads it."""
    root, port = pg_server.root, free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_pg_server(root, port, pg_server.database_uri)
    wait_healthy(uri, server, timeout_s=180)
    experiment = pg_tracking_env["MLFLOW_EXPERIMENT_NAME"]
    env = {**pg_tracking_env, "MLFLOW_TRACKING_URI": uri, "SENTIMENT_SERVER_WAIT_S": "300"}
    args = ["--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--log-every-steps", "1"]
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
            runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
            if runs and "train/loss" in runs[0].data.metrics:
                run_id = runs[0].info.run_id
            time.sleep(0.2)
        assert run_id, "training never logged a step"
        stop_server(server)
        time.sleep(4)
        assert train.poll() is None, "training stopped with the server"
        assert postgres.proc.poll() is None  # only the tracking server went away
        server = start_pg_server(root, port, pg_server.database_uri)
        wait_healthy(uri, server, timeout_s=180)
        _, err = train.communicate(timeout=600)
        assert train.returncode == 0, err[-3000:]
    finally:
        train.kill()
        stop_server(server)
    client = MlflowClient()  # the session's server: the same database
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert err.count("is unreachable") == 1 and "replayed" in err
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert steps == list(range(1, 4 * 20 + 1))  # 154 train reviews / batch 8 = 20 steps an epoch, each once
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/accuracy")) == [1, 2, 3, 4]
    assert len(client.get_metric_history(run_id, "test/accuracy")) == 1
    assert "figures/training_curves.png" in {a.path for a in client.list_artifacts(run_id, "figures")}


def test_kill_9_then_resume_matches_an_uninterrupted_run(pg_tracking_env, tiny_model, reviews_csv, tmp_path):
    """As tests/test_fault_tolerance.py, on PostgreSQL: the resumed run skips the steps the
    store already holds (read back from PostgreSQL) and ends bit-identical to a run never killed."""
    args = ["--data", str(reviews_csv), "--model", tiny_model, *TRAIN, "--epochs", "2"]
    reference = run_cli(["train", *args], pg_tracking_env, cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]
    reference_id = mlflow.search_runs(
        experiment_names=[pg_tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list"
    )[0].info.run_id

    crash_dir = tmp_path / "crash"
    crash_dir.mkdir()
    proc = start_training(args, pg_tracking_env, crash_dir)
    state = wait_for_checkpoint(crash_dir, proc, timeout_s=600)  # generous: CPU starved under load
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = state.parent.name
    assert mlflow.get_run(run_id).info.status == "RUNNING"  # kill -9: nobody could end it

    resumed = run_cli(["train", "--resume", run_id], pg_tracking_env, cwd=crash_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED" and int(run.data.tags["sentiment.resumed_from_step"]) > 0
    got, expected = histories(run_id, KEYS), histories(reference_id, KEYS)
    for key in KEYS:
        steps = [s for s, _ in got[key]]
        assert steps == sorted(set(steps)), f"{key} has a step twice"
        assert got[key] == expected[key], key  # bit-identical on CPU


def test_a_lost_registration_reply_leaves_exactly_one_version_on_postgresql(pg_server, monkeypatch, tmp_path):
    from tests.tracking.test_registration import register_through_a_lost_reply

    register_through_a_lost_reply(pg_server.uri, monkeypatch, tmp_path, "lost-reply-pg")
