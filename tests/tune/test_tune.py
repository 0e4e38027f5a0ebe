"""`sentiment tune` end to end through the CLI against the real tracking server (tiny model,
spaces written here): the parent and its trial children, pruning, kill -9 then --resume, two
processes sharing one study, and a bad space refused before any run exists."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from sentiment.stats import wilson_interval
from tests.conftest import run_cli

# The tiny model learns the review file only from its third epoch on, so these searches do not
# depend on learning: pruning is made deterministic by searching `epochs` with a threshold no
# trial reaches (a 2-epoch trial is pruned after epoch 1; a 1-epoch trial is at its last epoch,
# which is never pruned, so it completes).
BASE = {
    "epochs": 1,
    "batch_size": 8,
    "max_length": 64,
    "val_fraction": 0.2,
    "test_fraction": 0.2,
    "layer_decay": 1.0,
    "log_every_steps": 5,
    "device": "cpu",
}


def write_space(
    tmp_path, tiny_model, reviews_csv, search: dict, trials: int, pruner: dict, enqueue=None, fixed: dict | None = None
):
    options = {"data": str(reviews_csv), "model": tiny_model, **BASE, **(fixed or {})}
    for name in search:
        options.pop(name, None)
    space = {
        "name": "tiny",
        "base": {"preset": "seed", "options": options},
        "search": search,
        "trials": trials,
        "pruner": pruner,
        "sampler": {"name": "tpe", "seed": 1},
    }
    if enqueue:
        space["enqueue"] = enqueue
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def runs_of(experiment: str, filter_string: str = ""):
    return mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string, output_format="list")


def parent_of(experiment: str):
    runs = runs_of(experiment, "tags.`sentiment.kind` = 'tune'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def children_of(experiment: str, parent_id: str):
    return runs_of(experiment, f"tags.mlflow.parentRunId = '{parent_id}'")


def test_a_bad_space_fails_before_any_run_in_one_line(tracking_env, tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text(
        "name: bad\nbase: {preset: quick}\nsearch:\n  lr: {uniform: [3.0e-4, 1.0e-5]}\n  dropuot: {choice: "
        "[0.1]}\npruner: {name: hyperband}\n"
    )
    result = run_cli(["tune", "--space", str(space)], tracking_env, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: space "), result.stderr
    assert "line 4: lr: low 0.0003 must be below high 1e-05" in lines[0]
    assert "line 5: unknown option 'dropuot' in search (did you mean 'dropout'?)" in lines[0]
    assert "line 6: unknown pruner 'hyperband'" in lines[0]
    experiment = mlflow.get_experiment_by_name(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    assert experiment is None or runs_of(experiment.name) == []
    mlflow.set_experiment(tracking_env["MLFLOW_EXPERIMENT_NAME"])  # (not an experiment an earlier test made active)
    with mlflow.start_run() as run:  # --resume of a run that is not a tune parent
        pass
    result = run_cli(["tune", "--resume", run.info.run_id], tracking_env, timeout=120)
    assert result.returncode == 2 and "is not a tune parent" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_tiny_search_parent_children_pruning_best_tested_once_and_registered(
    tracking_env, tiny_model, reviews_csv, tmp_path
):
    search = {"lr": {"log_uniform": [1e-3, 1e-2]}, "epochs": {"choice": [1, 2]}}
    space = write_space(
        tmp_path,
        tiny_model,
        reviews_csv,
        search,
        trials=3,
        pruner={"name": "threshold", "lower": 1.01},
        enqueue=[{"epochs": 1}, {"epochs": 2}],
    )
    result = run_cli(["tune", "--space", str(space), "--register-as", "tuned-tiny"], tracking_env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    parent = parent_of(experiment)
    pid = parent.info.run_id
    assert parent.info.status == "FINISHED" and parent.data.tags["sentiment.tune.study"] == f"tune-{pid}"
    children = children_of(experiment, pid)
    assert sorted(int(c.data.tags["sentiment.trial"]) for c in children) == [0, 1, 2]
    assert all(c.data.tags["mlflow.parentRunId"] == pid and c.info.status == "FINISHED" for c in children)
    for child in children:  # an ordinary train run, validation only; pruned exactly when it had a second epoch
        tags, metrics, params = child.data.tags, child.data.metrics, child.data.params
        assert tags["sentiment.kind"] == "train" and params["run_test"] == "False"
        assert not any(k.startswith("test/") for k in metrics)
        float(params["train.lr"])  # searched values are logged as numbers
        if params["train.epochs"] == "2":
            assert tags["sentiment.trial_state"] == "pruned" and tags["sentiment.pruned_epoch"] == "1"
            assert {"val/accuracy", "train/loss", "train/epoch_seconds"} <= set(
                metrics
            ) and "val/best_accuracy" not in metrics
            assert [m.step for m in MlflowClient().get_metric_history(child.info.run_id, "val/accuracy")] == [1]
        else:
            assert tags["sentiment.trial_state"] == "complete" and "val/best_accuracy" in metrics
    states = {c.data.tags["sentiment.trial_state"] for c in children}
    assert states == {"complete", "pruned"}
    # what the UI's compare view opens on: the params that differ between trials (the searched ones; a pruned
    # trial, which logged no model, has the model_config params too) and no constant logged as a metric
    keys = set.union(*(set(c.data.params) for c in children))
    differing = {k for k in keys if len({c.data.params.get(k) for c in children}) > 1}
    assert differing == {"train.lr", "train.epochs"}, differing
    assert not any(k.startswith(("data/", "model/parameters")) for c in children for k in c.data.metrics)

    # the parent: best trial, its test evaluation (once, here), counts, minutes, table, figures, registration
    parent = MlflowClient().get_run(pid)
    metrics, params, tags = parent.data.metrics, parent.data.params, parent.data.tags
    best = next(c for c in children if c.info.run_id == tags["sentiment.tune.best_run"])
    assert best.data.tags["sentiment.trial_state"] == "complete"
    assert metrics["tune/best_value"] == pytest.approx(best.data.metrics["val/best_accuracy"])
    assert params["best.epochs"] == "1" and float(params["best.lr"]) == pytest.approx(
        float(best.data.params["train.lr"])
    )
    assert 0 <= metrics["test/accuracy"] <= 1 and metrics["test/examples"] == 48
    assert metrics["tune/trials_complete"] + metrics["tune/trials_pruned"] == 3 and metrics["tune/trials_failed"] == 0
    assert metrics["tune/cpu_minutes"] > 0 and metrics["tune/cpu_minutes_saved_by_pruning"] > 0
    table = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=pid, artifact_path="tune/trials.parquet"))
    assert sorted(table["trial"]) == [0, 1, 2] and set(table["run_id"]) == {c.info.run_id for c in children}
    by_run = {c.info.run_id: c for c in children}  # the searched epochs beside the epochs each trial trained
    assert all(
        str(row.epochs) == by_run[row.run_id].data.params["train.epochs"] and row.epochs_trained == 1
        for row in table.itertuples()
    )
    figures = {a.path for a in MlflowClient().list_artifacts(pid, "figures/tune")}
    assert {
        "figures/tune/optimization_history.png",
        "figures/tune/parallel_coordinate.png",
        "figures/tune/intermediate_values.png",
    } <= figures
    assert "predictions/test.parquet" in {a.path for a in MlflowClient().list_artifacts(pid, "predictions")}
    version = MlflowClient().get_model_version_by_alias("tuned-tiny", "champion")
    assert version.tags["run_id"] == pid and version.run_id == best.info.run_id
    assert f"best trial:      {tags['sentiment.tune.best_trial']} (run {best.info.run_id})" in result.stdout
    assert "registered:      models:/tuned-tiny/1" in result.stdout


def _wait_for(condition, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.extended  # a search killed and resumed; the tiny search test crosses tune in make test
@pytest.mark.slow
def test_resume_after_kill_9_reruns_nothing_finished_and_ends_with_the_trials_asked(
    tracking_env, tiny_model, reviews_csv, tmp_path
):
    space = write_space(
        tmp_path, tiny_model, reviews_csv, {"lr": {"log_uniform": [1e-3, 1e-2]}}, trials=3, pruner={"name": "none"}
    )
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    process = subprocess.Popen(
        [sys.executable, "-m", "sentiment", "tune", "--space", str(space)],
        env=tracking_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def second_trial_running():
        runs = runs_of(experiment, "tags.`sentiment.trial` != ''") if mlflow.get_experiment_by_name(experiment) else []
        states = {(r.data.tags["sentiment.trial"], r.info.status) for r in runs}
        return ("0", "FINISHED") in states and ("1", "RUNNING") in states

    try:
        _wait_for(second_trial_running, 600, "trial 0 to finish and trial 1 to start")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    parent = parent_of(experiment)
    pid = parent.info.run_id
    assert parent.info.status == "RUNNING"  # as kill -9 left it
    first = {c.data.tags["sentiment.trial"]: c for c in children_of(experiment, pid)}

    result = run_cli(["tune", "--resume", pid], tracking_env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "re-running the parameters of trial(s) 1, left running by a killed process" in result.stdout
    children = children_of(experiment, pid)
    by_trial = {c.data.tags["sentiment.trial"]: c for c in children}
    assert sorted(by_trial) == ["0", "1", "2", "3"]  # one of 2 and 3 is trial 1 again
    killed = by_trial["1"]
    assert killed.info.run_id == first["1"].info.run_id and killed.info.status == "KILLED"
    assert killed.data.tags["sentiment.trial_state"] == "failed" and "killed" in killed.data.tags["sentiment.error"]
    assert by_trial["0"].info.run_id == first["0"].info.run_id and by_trial["0"].info.status == "FINISHED"  # not re-run
    table = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=pid, artifact_path="tune/trials.parquet"))
    retry = int(table.loc[table["retry_of"] == 1, "trial"].item())
    # the same parameters again (from the study: a run killed this early may not have logged its params yet)
    assert table.loc[table["trial"] == retry, "lr"].item() == table.loc[table["trial"] == 1, "lr"].item()
    assert float(by_trial[str(retry)].data.params["train.lr"]) == pytest.approx(
        table.loc[table["trial"] == 1, "lr"].item()
    )
    complete = [c for c in children if c.data.tags["sentiment.trial_state"] == "complete"]
    assert len(complete) == 3 and all(c.info.status == "FINISHED" for c in complete)
    parent = MlflowClient().get_run(pid)
    assert parent.info.status == "FINISHED" and parent.data.tags["sentiment.tune.attempt"] == "2"
    assert parent.data.metrics["tune/trials_complete"] == 3 and parent.data.metrics["tune/trials_failed"] == 1


@pytest.mark.extended
@pytest.mark.slow
def test_two_processes_share_one_study_under_one_parent(tracking_env, tiny_model, reviews_csv, tmp_path):
    space = write_space(
        tmp_path, tiny_model, reviews_csv, {"lr": {"log_uniform": [1e-3, 1e-2]}}, trials=4, pruner={"name": "none"}
    )
    result = run_cli(["tune", "--space", str(space), "--max-parallel", "2"], tracking_env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    parent = parent_of(experiment)
    children = children_of(experiment, parent.info.run_id)
    assert sorted(int(c.data.tags["sentiment.trial"]) for c in children) == [0, 1, 2, 3]
    assert all(c.data.tags["sentiment.trial_state"] == "complete" and c.info.status == "FINISHED" for c in children)
    assert len({c.data.params["train.lr"] for c in children}) == 4  # the workers' samplers draw apart
    assert {c.data.tags["sentiment.tune_worker"] for c in children} == {"0", "1"}  # both processes ran trials
    study = parent.data.tags["sentiment.tune.study"]
    assert {c.data.tags["sentiment.tune_study"] for c in children} == {study}
    assert parent.data.metrics["tune/trials_complete"] == 4


@pytest.mark.extended  # a search whose baseline is re-tested; the tiny search test crosses tune in make test
@pytest.mark.slow
def test_the_best_trial_is_compared_with_the_baseline_on_the_same_test_reviews(
    tracking_env, tiny_model, reviews_csv, tmp_path
):
    # the first enqueued trial is the baseline: 1 epoch (the tiny model has not learned yet);
    # the second trains 4 epochs at the recipe that learns the file, so it is the best trial
    space = write_space(
        tmp_path,
        tiny_model,
        reviews_csv,
        {"epochs": {"choice": [1, 4]}},
        trials=2,
        pruner={"name": "none"},
        enqueue=[{"epochs": 1}, {"epochs": 4}],
        fixed={"lr": 3e-3},
    )
    result = run_cli(["tune", "--space", str(space)], tracking_env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    parent = parent_of(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    pid, metrics, tags = parent.info.run_id, parent.data.metrics, parent.data.tags
    children = {
        int(c.data.tags["sentiment.trial"]): c for c in children_of(tracking_env["MLFLOW_EXPERIMENT_NAME"], pid)
    }
    assert tags["sentiment.tune.best_trial"] == "1" and tags["sentiment.tune.baseline_trial"] == "0"
    assert metrics["tune/baseline_value"] == pytest.approx(children[0].data.metrics["val/best_accuracy"])
    assert (
        metrics["tune/val_reviews"] == 38
    )  # the Wilson intervals: over the validation reviews (0.2 of the 192 not tested)
    for name in ("best", "baseline"):
        interval = (metrics[f"tune/{name}_value_ci_low"], metrics[f"tune/{name}_value_ci_high"])
        assert interval == pytest.approx(wilson_interval(metrics[f"tune/{name}_value"], 38))
    assert metrics["tune/best_value"] > metrics["tune/baseline_value"]
    # the baseline's model, tested once on the best's test reviews, paired
    client = MlflowClient()
    best = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=pid, artifact_path="predictions/test.parquet"))
    base = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=pid, artifact_path="predictions/test_baseline.parquet")
    )
    assert sorted(best["id"]) == sorted(base["id"]) and metrics["test/paired_reviews_vs_baseline"] == len(best) == 48
    assert metrics["test_baseline/accuracy"] == pytest.approx((base["label"] == base["prediction"]).mean())
    delta = (best["label"] == best["prediction"]).mean() - (base["label"] == base["prediction"]).mean()
    assert metrics["test/delta_vs_baseline"] == pytest.approx(delta)
    assert metrics["test/delta_vs_baseline_low"] <= delta <= metrics["test/delta_vs_baseline_high"]
    assert 0 <= metrics["test/delta_vs_baseline_p_value"] <= 1
    assert tags["sentiment.tune.baseline"].startswith("best trial 1 vs baseline trial 0 on the same 48 test reviews: ")
    assert f"baseline:        {tags['sentiment.tune.baseline']}" in result.stdout
    # a resume after the end tests nothing again: the tables are read back, the numbers unchanged
    before = {a.path: a.file_size for a in client.list_artifacts(pid, "predictions")}
    again = run_cli(["tune", "--resume", pid], tracking_env)
    assert again.returncode == 0, again.stderr[-3000:]
    after = client.get_run(pid).data.metrics
    assert after["test/delta_vs_baseline"] == metrics["test/delta_vs_baseline"]
    assert {a.path: a.file_size for a in client.list_artifacts(pid, "predictions")} == before
    assert len(client.get_metric_history(pid, "test_baseline/accuracy")) == 1
    # the report renders the same numbers from the parent
    out = tmp_path / "report" / "search.md"
    rendered = run_cli(["report", "--run", pid, "--output", str(out)], tracking_env)
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    text = out.read_text()
    assert "## Search `tiny`" in text and "2 trials of 2 (2 complete, 0 pruned, 0 failed)" in text
    best_row = next(
        line for line in text.splitlines() if line.startswith(f"| best (trial 1, run `{children[1].info.run_id}`)")
    )
    assert (
        f"{100 * metrics['test/accuracy']:.2f}%" in best_row and f"{100 * metrics['tune/best_value']:.2f}%" in best_row
    )
    base_row = next(
        line for line in text.splitlines() if line.startswith(f"| baseline (trial 0, run `{children[0].info.run_id}`)")
    )
    assert f"{100 * metrics['test_baseline/accuracy']:.2f}%" in base_row
    assert f"Verdict: {tags['sentiment.tune.baseline']}." in text
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert any("optimization_history" in link for link in linked) and all(
        (out.parent / link).is_file() for link in linked
    )
