"""A search shared by two machines through a PostgreSQL Optuna storage (`--storage`, `--join`),
on the PostgreSQL-backed tracking server: one study, distinct trials under one parent, and a
worker killed mid-trial whose trial the other machine fails (no heartbeat) and runs again.

    pytest -m postgres tests/postgres/test_tune_storage.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import write_reviews
from tests.tune.test_tune import children_of, parent_of, runs_of, write_space

pytestmark = pytest.mark.postgres
TRIALS = 6


def wait_for(condition, timeout_s: float, what: str, procs=()):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for proc in procs:
            assert proc.poll() is None, (
                f"a tune process exited ({proc.returncode}) before {what}: {proc.stdout.read()[-3000:]}"
            )
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout_s:.0f} s")


def test_two_machines_share_a_postgresql_study_and_a_killed_worker_is_rerun(
    pg_tracking_env, postgres, tiny_model, tmp_path
):
    storage = postgres.create_database("optuna_shared")
    reviews = write_reviews(tmp_path / "reviews.csv", n=800, seed=5)  # trials long enough for a second machine to join
    space = write_space(
        tmp_path,
        tiny_model,
        reviews,
        {"lr": {"log_uniform": [1e-3, 1e-2]}},
        trials=TRIALS,
        pruner={"name": "none"},
        fixed={"epochs": 3},
    )
    env = {**pg_tracking_env, "SENTIMENT_TUNE_HEARTBEAT_S": "2"}  # a silent worker is dead after 12 s
    experiment = pg_tracking_env["MLFLOW_EXPERIMENT_NAME"]
    machines = {name: tmp_path / name for name in ("machine-a", "machine-b")}  # no local files in common
    for folder in machines.values():
        folder.mkdir()

    def start(args, folder, extra_env=None):
        return subprocess.Popen(
            [sys.executable, "-m", "sentiment", "tune", *args],
            cwd=folder,
            env={**env, **(extra_env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    a = start(["--space", str(space), "--storage", storage], machines["machine-a"])
    try:
        parent = wait_for(lambda: runs_of(experiment, "tags.`sentiment.kind` = 'tune'"), 180, "tune parent run", [a])[0]
        # machine B knows only the parent run id and the storage URL (from its environment)
        b = start(["--join", parent.info.run_id], machines["machine-b"], {"SENTIMENT_TUNE_STORAGE": storage})

        def b_trial_running():
            return [
                c
                for c in children_of(experiment, parent.info.run_id)
                if c.data.tags.get("sentiment.tune_worker", "0") != "0" and c.info.status == "RUNNING"
            ]

        killed = wait_for(b_trial_running, 180, "trial running on machine B", [a, b])[0]
        os.kill(b.pid, signal.SIGKILL)
        b.wait(30)
        out, _ = a.communicate(timeout=600)
    finally:
        for proc in (a, locals().get("b")):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert a.returncode == 0, out[-3000:]

    parent = parent_of(experiment)
    children = children_of(experiment, parent.info.run_id)
    complete = [c for c in children if c.data.tags["sentiment.trial_state"] == "complete"]
    assert len(complete) == TRIALS and all(c.info.status == "FINISHED" for c in complete)
    assert len({c.data.tags["sentiment.trial"] for c in children}) == len(children)  # distinct trials, one parent
    assert {c.data.tags["sentiment.tune_study"] for c in children} == {parent.data.tags["sentiment.tune.study"]}
    # B's trial: failed for its silence by machine A, its child run ended KILLED, its parameters run again
    killed = next(c for c in children if c.info.run_id == killed.info.run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["sentiment.trial_state"] == "failed"
    assert parent.data.metrics["tune/trials_complete"] == TRIALS
    # the study lives in PostgreSQL: the trials asked for, complete, and B's trial failed, its
    # parameters run again by a complete trial that names it
    import optuna

    study = optuna.load_study(study_name=parent.data.tags["sentiment.tune.study"], storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == TRIALS and states.count("FAIL") == 1 and len(states) == TRIALS + 1
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.number == int(killed.data.tags["sentiment.trial"])
    rerun = [t for t in study.trials if t.user_attrs.get("retry_of") == failed.number]
    assert len(rerun) == 1 and rerun[0].state.name == "COMPLETE" and rerun[0].params == failed.params
