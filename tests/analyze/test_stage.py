"""The analyze stage: inputs checked before any run, the stage against the in-memory tracker, and
the whole stage through the CLI against the real tracking server."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from sentiment import analyze
from sentiment.analyze.failures import TOP_ERRORS
from sentiment.cli import main
from sentiment.errors import UserError
from tests.conftest import REPO, TINY_TRAIN, run_cli


def test_parts_and_texts_are_checked(tmp_path):
    assert analyze.parse_parts("") == analyze.PARTS
    assert analyze.parse_parts("failures, EDA") == ("eda", "failures")
    with pytest.raises(UserError, match="unknown: heads"):
        analyze.parse_parts("eda,heads")
    with pytest.raises(UserError, match="does not exist"):
        analyze.read_texts(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(UserError, match="has no reviews"):
        analyze.read_texts(str(tmp_path / "empty.txt"))
    (tmp_path / "two.txt").write_text("Great film!<br />Loved it.\n\nDull.\n")
    assert analyze.read_texts(str(tmp_path / "two.txt")) == ["Great film! Loved it.", "Dull."]


# ----------------------------------------------------------------------------- through the CLI


def _flip_some_labels(source, target) -> None:
    """The review file with every 7th label flipped: a model that learned the file errs both ways."""
    with open(source, newline="") as handle:
        rows = list(csv.reader(handle))
    for i, row in enumerate(rows[1:]):
        if i % 7 == 0:
            row[1] = "negative" if row[1] == "positive" else "positive"
    with open(target, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _parquet(run_id: str, path: str) -> pd.DataFrame:
    return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


def _run_id(stdout: str) -> str:
    return re.search(r"run id:\s+(\w+)", stdout).group(1)


@pytest.fixture(scope="module")
def evaluated(mlflow_server, tiny_model, reviews_csv, tmp_path_factory):
    """A tiny model trained and registered once, then evaluated on a noisy copy of its data."""
    folder = tmp_path_factory.mktemp("analyze")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env.update(
        {
            "MLFLOW_TRACKING_URI": mlflow_server,
            "MLFLOW_EXPERIMENT_NAME": f"analyze-{uuid.uuid4().hex[:8]}",
            "PYTHONPATH": str(REPO),
        }
    )
    name = f"analyze-{uuid.uuid4().hex[:6]}"
    result = run_cli(
        [
            "train",
            "--data",
            str(reviews_csv),
            "--model",
            tiny_model,
            *TINY_TRAIN,
            "--run-test",
            "false",
            "--register-as",
            name,
        ],
        env,
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    noisy = folder / "noisy.csv"
    _flip_some_labels(reviews_csv, noisy)
    result = run_cli(
        ["evaluate", "--model-uri", f"models:/{name}@champion", "--data", str(noisy), "--split", "all"], env, cwd=folder
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(mlflow_server)
    return {
        "env": env,
        "cwd": folder,
        "model_uri": f"models:/{name}@champion",
        "data": str(noisy),
        "run_id": _run_id(result.stdout),
    }


def test_analyze_reuses_the_evaluate_predictions(evaluated, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("wonderful brilliant film, loved it\nnot boring at all, but the plot was dull\n")
    args = [
        "analyze",
        "--model-uri",
        evaluated["model_uri"],
        "--data",
        evaluated["data"],
        "--predictions-run",
        evaluated["run_id"],
        "--texts",
        str(texts),
    ]
    result = run_cli(args, evaluated["env"], cwd=evaluated["cwd"])
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient()
    run = client.get_run(_run_id(result.stdout))
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["sentiment.kind"] == "analyze" and tags["sentiment.predictions_run_id"] == evaluated["run_id"]
    assert tags["sentiment.split"] == "all"  # the evaluate run's split
    train_run = client.get_run(tags["sentiment.model_run_id"])  # linked to the run that logged the model
    assert train_run.data.tags["sentiment.kind"] == "train"

    artifacts = {
        a.path for folder in ("eda", "failures", "attention") for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "eda/class_balance.png",
        "eda/length_histograms.png",
        "eda/length_boxplot.png",
        "eda/summary.json",
        "eda/exploration.json",
    } <= artifacts
    assert {
        "failures/confusion_matrix.png",
        "failures/error_rates.png",
        "failures/confidence.png",
        "failures/summary.md",
        "failures/most_confident_errors.json",
        "failures/error_rates.json",
        "failures/stats.json",
    } <= artifacts
    pages = sorted(p for p in artifacts if p.endswith(".html"))
    groups = [re.sub(r"attention/\d+_(.*)\.html", r"\1", p) for p in pages]
    assert groups == [
        "correct_positive",
        "correct_negative",
        "false_positive",
        "false_negative",
        "least_confident",
        "user",
        "user",
    ]
    assert all(p.replace(".html", ".png") in artifacts for p in pages)

    # failures agree with the evaluate run's confusion matrix, by construction
    metrics = run.data.metrics
    evaluation = json.loads(mlflow.artifacts.load_text(f"runs:/{evaluated['run_id']}/metrics/all.json"))
    (tn, fp), (fn, tp) = evaluation["confusion_matrix"]
    assert fp > 0 and fn > 0
    assert (metrics["failures/false_positives"], metrics["failures/false_negatives"], metrics["failures/errors"]) == (
        fp,
        fn,
        fp + fn,
    )
    # the table's confidence is the served model's (temperature applied)
    assert metrics["failures/ece"] == pytest.approx(
        client.get_run(evaluated["run_id"]).data.metrics["all/ece_calibrated"]
    )
    summary = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/failures/summary.md")
    assert f"{fp + fn} errors in {tn + fp + fn + tp} reviews" in summary and f"{fp} false positives" in summary
    top = _parquet(run.info.run_id, "failures/most_confident_errors.parquet")
    assert len(top) == min(fp + fn, TOP_ERRORS) and (top["label"] != top["prediction"]).all()

    # exploration metrics
    assert metrics["eda/all/examples"] == 240 and metrics["eda/max_length"] == 64
    assert {
        "eda/train/tokens_mean",
        "eda/test/truncated_share",
        "eda/vocabulary_size",
        "eda/tokenizer_vocab_size",
    } <= set(metrics)

    # attention weights of the user's texts, as logged
    weights = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/attention/06_user.json"))
    assert weights["tokens"][0] == "[CLS]" and "wonderful" in weights["tokens"]
    assert sum(weights["rollout"]) == pytest.approx(1.0, abs=1e-5)
    examples = _parquet(run.info.run_id, "attention/examples.parquet")
    assert len(examples) == 7


def test_analyze_predicts_again_with_the_same_counts(evaluated, tracking_env):
    from sentiment import tracking

    plan = analyze.plan_analyze(
        model_uri=evaluated["model_uri"], data_source=evaluated["data"], parts=("failures",), split="all"
    )
    with tracking.open_run() as tracker:
        outcome = analyze.run_analyze(plan, tracker)
    evaluation = json.loads(mlflow.artifacts.load_text(f"runs:/{evaluated['run_id']}/metrics/all.json"))
    assert outcome.failures["confusion_matrix"] == evaluation["confusion_matrix"]
    assert mlflow.get_run(tracker.run_id).data.metrics["all/accuracy"] == pytest.approx(outcome.failures["accuracy"])


def test_exploration_without_a_model_through_mlflow_run(tracking_env):
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(REPO),
        "-e",
        "analyze",
        "--env-manager",
        "local",
        "--experiment-name",
        tracking_env["MLFLOW_EXPERIMENT_NAME"],
        "-P",
        "data=sample",
        "-P",
        "only=eda",
    ]
    result = subprocess.run(cmd, env=tracking_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the project's run, reused
    metrics = runs[0].data.metrics
    assert metrics["eda/all/examples"] == 390 and metrics["eda/train/positive_share"] == pytest.approx(0.5, abs=0.01)
    assert metrics["eda/tokenizer_vocab_size"] == 30522 and not any(k.startswith("failures/") for k in metrics)
    assert runs[0].data.params["model.name"] == "offline-minilm"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--texts", "missing.txt"], "--texts file 'missing.txt' does not exist"),
        (["--texts", "empty.txt"], "--texts file 'empty.txt' has no reviews"),
        (["--only", "eda,heads"], "unknown: heads"),
    ],
)
def test_bad_analyze_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--model-uri", "models:/nothing@champion", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_analyze_without_a_model_asks_for_one(tracking_env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--data", "sample"])
    assert exit_info.value.code == 2
    assert "need --model-uri" in capsys.readouterr().err
    assert (
        mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list") == []
    )  # found before the run


def test_analyze_stage_against_the_in_memory_tracker(trained_in_memory, reviews_csv):
    """Every part on a packaged model without a server: failure counts equal the confusion
    matrix of the predictions table it logged, attention pages for the chosen reviews."""
    from sentiment import evaluate
    from sentiment.tracking import InMemoryTracker

    tracker = InMemoryTracker("analyze-run")
    plan = analyze.plan_analyze(
        model_uri=str(trained_in_memory["package"]), data_source=str(reviews_csv), texts=["a wonderful film, loved it"]
    )
    outcome = analyze.run_analyze(plan, tracker)
    table = tracker.artifacts["predictions/test.parquet"]
    assert outcome.failures["confusion_matrix"] == evaluate.confusion(table).tolist()
    assert tracker.metric("failures/errors") == [float((table["label"] != table["prediction"]).sum())]
    assert outcome.exploration.summary_rows()[-1]["examples"] == 240 and tracker.metric("eda/all/examples") == [240.0]
    pages = sorted(path for path in tracker.artifacts if path.startswith("attention/") and path.endswith(".html"))
    assert pages[-1].endswith("_user.html") and len(outcome.attention) == len(pages)
    assert "<p class='review'>" in tracker.artifacts[pages[-1]]
    assert tracker.tags["sentiment.kind"] == "analyze" and tracker.tags["sentiment.parts"] == "eda,attention,failures"
