"""Crashes, signals and bad numerics, with real processes against the real server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.conftest import TINY_TRAIN, run_cli

TRAIN = [*TINY_TRAIN, "--log-every-steps", "1", "--checkpoint-every-steps", "4"]


def start_training(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sentiment", "train", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(cwd: Path, proc: subprocess.Popen, timeout_s: float = 120) -> Path:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        states = list((cwd / ".sentiment" / "runs").glob("*/state.pt"))
        if states:
            return states[0]
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


def histories(run_id: str, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient()
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in keys}


KEYS = [
    "train/loss",
    "train/lr",
    "train/accuracy",
    "val/accuracy",
    "val/f1_macro",
    "val/loss",
    "test/accuracy",
    "test/loss",
]


def test_kill_9_then_resume_matches_an_uninterrupted_run(tracking_env, tiny_model, reviews_csv, tmp_path):
    args = ["--data", str(reviews_csv), "--model", tiny_model, *TRAIN]
    reference = run_cli(["train", *args], tracking_env, cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]
    reference_id = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")[
        0
    ].info.run_id

    crash_dir = tmp_path / "crash"
    crash_dir.mkdir()
    proc = start_training(args, tracking_env, crash_dir)
    state = wait_for_checkpoint(crash_dir, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = state.parent.name
    assert mlflow.get_run(run_id).info.status == "RUNNING"  # kill -9: nobody could end it

    resumed = run_cli(["train", "--resume", run_id], tracking_env, cwd=crash_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED" and run_id in resumed.stdout
    assert int(run.data.tags["sentiment.resumed_from_step"]) > 0
    got, expected = histories(run_id, KEYS), histories(reference_id, KEYS)
    for key in KEYS:
        steps = [s for s, _ in got[key]]
        assert steps == sorted(set(steps)), f"{key} has a step twice"
        assert got[key] == expected[key], key  # bit-identical on CPU


# a second resume; test_kill_9_then_resume_matches_an_uninterrupted_run crosses resume in make test
@pytest.mark.extended
def test_resume_downloads_the_state_when_the_local_copy_is_gone(tracking_env, tiny_model, reviews_csv, tmp_path):
    proc = start_training(["--data", str(reviews_csv), "--model", tiny_model, *TRAIN], tracking_env, tmp_path)
    state = wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    run_id = state.parent.name
    assert f"resume with: sentiment train --resume {run_id}" in err and "Traceback" not in err
    run = mlflow.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["sentiment.resume"] == f"sentiment train --resume {run_id}"

    assert {a.path for a in MlflowClient().list_artifacts(run_id, "checkpoints")} >= {"checkpoints/state.pt"}
    elsewhere = tmp_path / "other-machine"
    elsewhere.mkdir()
    resumed = run_cli(["train", "--resume", run_id], tracking_env, cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    steps = [s for s, _ in histories(run_id, ["train/loss"])["train/loss"]]
    assert steps == list(range(1, steps[-1] + 1))  # every step exactly once


@pytest.mark.extended  # two resumes; test_kill_9_then_resume_matches_an_uninterrupted_run crosses resume in make test
def test_state_kept_local_resumes_here_and_says_why_elsewhere(tracking_env, tiny_model, reviews_csv, tmp_path):
    proc = start_training(
        ["--data", str(reviews_csv), "--model", tiny_model, *TRAIN, "--upload-state", "false"], tracking_env, tmp_path
    )
    state = wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    run_id = state.parent.name
    client = MlflowClient()
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == []  # nothing uploaded

    elsewhere = tmp_path / "other-machine"
    elsewhere.mkdir()
    refused = run_cli(["train", "--resume", run_id], tracking_env, cwd=elsewhere)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"run {run_id} kept its training state on local disk (upload_state false)" in refused.stderr
    assert mlflow.get_run(run_id).info.status != "RUNNING"

    resumed = run_cli(["train", "--resume", run_id], tracking_env, cwd=tmp_path)  # the machine that has it
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == []
    steps = [s for s, _ in histories(run_id, ["train/loss"])["train/loss"]]
    assert steps == list(range(1, steps[-1] + 1))


def test_resume_errors_are_one_line(tracking_env, tmp_path):
    result = run_cli(["train", "--resume", "0123456789abcdef0123456789abcdef"], tracking_env, cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(["train", "--resume", "abc", "--epochs", "2"], tracking_env, cwd=tmp_path)
    assert result.returncode == 2 and "drop the other training options" in result.stderr


def test_non_finite_loss_fails_the_run_with_its_step(tracking_env, tiny_model, reviews_csv, tmp_path):
    args = ["--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--lr", "1e30", "--max-grad-norm", "1e30"]
    result = run_cli(["train", *args], tracking_env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "non-finite" in result.stderr or "loss became" in result.stderr
    assert "Traceback" not in result.stderr
    run = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")[0]
    assert run.info.status == "FAILED"
    assert int(run.data.tags["sentiment.failed_step"]) >= 1 and run.data.tags["sentiment.failure"] == "non-finite"


# two trainings compared step by step; test_kill_9_then_resume_matches_an_uninterrupted_run trains through the same loop
# in make test
@pytest.mark.extended
def test_micro_batches_train_like_whole_batches(tracking_env, tiny_model, reviews_csv, tmp_path):
    common = [
        "--data",
        str(reviews_csv),
        "--model",
        tiny_model,
        *TINY_TRAIN,
        "--epochs",
        "1",
        "--dropout",
        "0",
        "--run-test",
        "false",
    ]
    ids = []
    for micro in ("0", "3"):
        result = run_cli(["train", *common, "--micro-batch-size", micro], tracking_env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        ids.append(result.stdout.split("run id:")[1].split()[0])
    whole, micro = (histories(i, ["train/loss", "val/loss"]) for i in ids)
    for key in ("train/loss", "val/loss"):
        assert [s for s, _ in whole[key]] == [s for s, _ in micro[key]]
        assert [v for _, v in micro[key]] == pytest.approx(
            [v for _, v in whole[key]], rel=5e-3
        )  # summation order differs
