"""torchrun with 2 CPU processes (gloo): one MLflow run, sharded evaluation gathered into one
table, and the same result as one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import TINY_TRAIN, run_cli

pytestmark = pytest.mark.timeout(900)


def torchrun(args: list[str], env: dict, cwd, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "sentiment",
        "train",
        *args,
    ]
    return subprocess.run(
        cmd, env={**env, "OMP_NUM_THREADS": "1"}, cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def no_dropout_model(tiny_model, tmp_path_factory):
    """The tiny model without dropout: ranks draw other dropout masks than one process would."""
    from transformers import AutoConfig, AutoTokenizer, BertModel

    config = AutoConfig.from_pretrained(tiny_model)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    folder = tmp_path_factory.mktemp("tiny-no-dropout")
    BertModel.from_pretrained(tiny_model, config=config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return str(folder)


def test_two_ranks_log_one_run_and_match_one_process(tracking_env, no_dropout_model, reviews_csv, tmp_path):
    args = ["--data", str(reviews_csv), "--model", no_dropout_model, *TINY_TRAIN, "--dropout", "0"]
    result = torchrun(args, tracking_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")
    assert len(runs) == 1  # rank 1 never touched MLflow
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert (
        run.data.params["distributed.world_size"] == "2" and run.data.params["distributed.per_rank_batch_size"] == "4"
    )
    assert run.data.tags["sentiment.launcher"] == "torchrun"
    table = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="predictions/test.parquet")
    )
    assert len(table) == 48 and table["id"].is_unique

    single = run_cli(["train", *args], {**tracking_env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    one = next(
        r
        for r in mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")
        if r.info.run_id != run.info.run_id
    )
    single_table = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=one.info.run_id, artifact_path="predictions/test.parquet")
    )
    assert list(single_table["id"]) == list(table["id"])  # same order, every review once
    client = MlflowClient()
    two_ranks, one_rank = (
        [m.value for m in sorted(client.get_metric_history(r, "train/loss"), key=lambda m: m.step)]
        for r in (run.info.run_id, one.info.run_id)
    )
    assert len(two_ranks) == len(one_rank)
    # the same global batches and schedule: the losses agree to float precision, drifting slowly
    assert two_ranks[:5] == pytest.approx(one_rank[:5], rel=1e-4)
    assert two_ranks == pytest.approx(one_rank, abs=0.02)
    assert run.data.metrics["val/best_accuracy"] == pytest.approx(one.data.metrics["val/best_accuracy"], abs=0.06)


def _worker_of_rank(parent_pid: int, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(parent_pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "sentiment" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    return None


def test_a_dead_rank_fails_the_job_and_the_run(tracking_env, tiny_model, reviews_csv, tmp_path):
    import os
    import signal
    import time

    args = ["--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--epochs", "30", "--log-every-steps", "1"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "sentiment",
        "train",
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        env={**tracking_env, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, run = time.time() + 300, None
        while time.time() < deadline:
            runs = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")
            if runs and "train/loss" in runs[0].data.metrics:
                run = runs[0]
                break
            time.sleep(0.5)
        assert run is not None, "training never logged"
        os.kill(_worker_of_rank(proc.pid, 1), signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode != 0
    ended = mlflow.get_run(run.info.run_id)
    assert ended.info.status == "FAILED", (ended.info.status, err[-2000:])
    assert "another rank of the distributed job failed" in ended.data.tags["sentiment.error"]
    assert "another rank of the distributed job failed" in err
