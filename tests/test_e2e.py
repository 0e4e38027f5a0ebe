"""End to end through the CLI, in fresh processes, against the real tracking server."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, TINY_TRAIN, run_cli

METRIC_KEYS = {
    "train/loss",
    "train/lr",
    "train/accuracy",
    "val/loss",
    "val/accuracy",
    "val/f1_macro",
    "val/best_f1_macro",
    "train/samples_per_s",
    "train/tokens_per_s",
    "test/loss",
    "test/accuracy",
    "test/precision_macro",
    "test/recall_macro",
    "test/f1_macro",
    "test/f1_negative",
    "test/f1_positive",
    "test/roc_auc",
    "test/ece",
    "test/accuracy_ci_low",
    "test/accuracy_ci_high",
    "calibration/temperature",
    "val/ece",
    "val/ece_calibrated",
    "test/ece_calibrated",
    "test/brier",
    "test/brier_calibrated",
}


def only_run(experiment: str):
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def test_train_evaluate_register_serve(tracking_env, tiny_model, reviews_csv, tmp_path):
    name = "tiny-sentiment"
    result = run_cli(
        ["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--register-as", name], tracking_env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    assert run.info.status == "FINISHED"
    assert run.info.run_id in result.stdout and f"models:/{name}" in result.stdout

    # params: the whole flattened config
    params = run.data.params
    assert params["data.source"] == str(reviews_csv)
    assert params["model.name"] == tiny_model
    assert params["train.epochs"] == "4" and params["train.lr"] == "0.003" and params["seed"] == "42"

    # metrics: every documented key, per-step loss with steps, a score bound
    assert METRIC_KEYS <= set(run.data.metrics), METRIC_KEYS - set(run.data.metrics)
    client = MlflowClient()
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)) and steps[0] == 5
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/accuracy")] == [1, 2, 3, 4]
    val_f1 = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/f1_macro")}
    assert sorted(val_f1) == [1, 2, 3, 4] and all(0 <= v <= 1 for v in val_f1.values())
    assert run.data.metrics["val/best_f1_macro"] == val_f1[int(run.data.metrics["train/best_epoch"])]
    assert run.data.metrics["test/accuracy"] >= 0.8
    assert run.data.tags["sentiment.device"] == "cpu" and run.data.tags["sentiment.precision"] == "fp32"

    # artifacts: config, figures, predictions table (+ parquet), metrics json
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {
        "figures/test_confusion_matrix.png",
        "figures/training_curves.png",
        "figures/test_roc_curve.png",
        "figures/calibration_test.png",
    } <= artifacts
    table = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="predictions/test.parquet")
    )
    assert list(table.columns[:6]) == ["id", "text", "label", "prediction", "probability", "confidence"]
    assert len(table) == 48  # 20% of 240, stratified
    assert run.data.metrics["test/accuracy"] == pytest.approx((table["label"] == table["prediction"]).mean())
    config_yaml = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml")
    assert "max_length: 64" in config_yaml

    # datasets: one input per split with its context
    contexts = {tag.value for inp in run.inputs.dataset_inputs for tag in inp.tags if tag.key == "mlflow.data.context"}
    assert contexts == {"training", "validation", "testing"}

    # registry: version 1 with both aliases; the LoggedModel carries linked metrics
    version = client.get_model_version_by_alias(name, "champion")
    assert version.version == "1" and set(version.aliases) == {"candidate", "champion"}
    assert float(version.tags["test_accuracy"]) == pytest.approx(run.data.metrics["test/accuracy"], abs=1e-6)
    logged = mlflow.get_logged_model(version.model_id or version.source.split("/")[-1])
    assert {m.key for m in logged.metrics} >= {"val/best_accuracy", "test/accuracy"}

    # serving: pyfunc from the registry returns label, score and P(positive) per text
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = model.predict(["wonderful brilliant loved it", "awful boring waste"])
    assert list(out.columns) == ["label", "score", "probability"]
    assert list(out["label"]) == ["positive", "negative"]
    assert ((out["score"] >= 0.5) & (out["score"] <= 1)).all()
    assert out["score"].tolist() == [out["probability"][0], 1 - out["probability"][1]]
    with pytest.raises(Exception, match="empty text"):
        model.predict(["   "])

    # evaluate: a new run on the registered model, linked to it
    result = run_cli(
        ["evaluate", "--model-uri", f"models:/{name}@champion", "--data", str(reviews_csv), "--split", "all"],
        tracking_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")
    evaluation = next(r for r in runs if r.info.run_id != run.info.run_id)
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["sentiment.model_uri"] == f"models:/{name}@champion"
    assert evaluation.data.metrics["all/examples"] == 240
    assert evaluation.data.params["data.max_length"] == "64"  # rebuilt from the model's logged config
    assert evaluation.data.metrics["all/accuracy"] >= 0.8
    assert evaluation.data.tags["sentiment.precision"] == "fp32" and evaluation.data.tags["sentiment.device"] == "cpu"

    # the same evaluation with bf16 matmuls on CPU: tagged, and it predicts as fp32 does
    result = run_cli(
        [
            "evaluate",
            "--model-uri",
            f"models:/{name}@champion",
            "--data",
            str(reviews_csv),
            "--split",
            "all",
            "--device",
            "cpu",
            "--precision",
            "bf16",
        ],
        tracking_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")
    bf16 = next(r for r in runs if r.info.run_id not in (run.info.run_id, evaluation.info.run_id))
    assert bf16.data.tags["sentiment.precision"] == "bf16" and bf16.data.params["train.precision"] == "bf16"
    assert abs(bf16.data.metrics["all/accuracy"] - evaluation.data.metrics["all/accuracy"]) <= 0.02
    assert bf16.data.metrics["all/loss"] != evaluation.data.metrics["all/loss"]  # really computed in bf16
    assert abs(bf16.data.metrics["all/loss"] - evaluation.data.metrics["all/loss"]) < 0.05

    # a second, worse training keeps the champion where it is
    result = run_cli(
        [
            "train",
            "--data",
            str(reviews_csv),
            "--model",
            tiny_model,
            *TINY_TRAIN,
            "--epochs",
            "1",
            "--lr",
            "1e-6",
            "--register-as",
            name,
        ],
        tracking_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert client.get_model_version_by_alias(name, "candidate").version == "2"
    assert client.get_model_version_by_alias(name, "champion").version == "1"


# every epoch's LoggedModel; tests/train/test_stage.py's keep_checkpoints test crosses log_checkpoints all in make test
@pytest.mark.extended
def test_log_checkpoints_all_ranks_logged_models(tracking_env, tiny_model, reviews_csv):
    """Every epoch a ranked LoggedModel; --keep-checkpoints 2 leaves exactly two with weights."""
    args = ["--log-checkpoints", "all", "--keep-checkpoints", "2", "--run-test", "false"]
    result = run_cli(["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, *args], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    assert "test/accuracy" not in run.data.metrics
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        order_by=[{"field_name": "metrics.val/accuracy", "ascending": False}],
        output_format="list",
    )
    names = {m.name for m in models}
    assert {"checkpoint-epoch-1", "checkpoint-epoch-2", "checkpoint-epoch-3", "checkpoint-epoch-4", "model"} == names
    history = MlflowClient().get_metric_history(run.info.run_id, "val/accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4]  # logged once each, linked to its checkpoint
    by_epoch = {m.step: m.value for m in history}
    ranked = [m for m in models if m.name.startswith("checkpoint")]
    assert [next(x.value for x in m.metrics if x.key == "val/accuracy") for m in ranked] == sorted(
        by_epoch.values(), reverse=True
    )

    # retention: the two best epochs keep their weights; the others are tagged and emptied
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    def files(model) -> list:
        return get_artifact_repository(model.artifact_location).list_artifacts()

    kept = sorted(by_epoch, key=lambda e: (-by_epoch[e], e))[:2]
    for model in ranked:
        epoch = int(model.name.rsplit("-", 1)[1])
        if epoch in kept:
            assert files(model) and "sentiment.retention" not in model.tags, model.name
        else:
            assert not files(model) and "not among the 2 best" in model.tags["sentiment.retention"], model.name
    assert run.data.tags["sentiment.pruned_checkpoints"] == ",".join(str(e) for e in sorted(set(by_epoch) - set(kept)))
    best = next(m for m in models if m.name == "model")
    assert files(best)  # the run's model is never pruned
    # the resumable state is gone once the run succeeded (keep_state false)
    assert not MlflowClient().list_artifacts(run.info.run_id, "checkpoints")


def test_mlflow_run_reuses_the_project_run(tracking_env, tiny_model, reviews_csv):
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(REPO),
        "-e",
        "train",
        "--env-manager",
        "local",
        "--experiment-name",
        tracking_env["MLFLOW_EXPERIMENT_NAME"],
        "-P",
        f"data={reviews_csv}",
        "-P",
        f"model={tiny_model}",
        "-P",
        "epochs=2",
        "-P",
        "batch_size=8",
        "-P",
        "lr=3e-3",
        "-P",
        "max_length=64",
        "-P",
        "val_fraction=0.2",
        "-P",
        "test_fraction=0.2",
        "-P",
        "register_as=projects-model",
    ]
    result = subprocess.run(cmd, env=tracking_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tracking_env["MLFLOW_EXPERIMENT_NAME"])  # one run: the project's, reused
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("mlflow.project.entryPoint") == "train"
    assert run.data.params["train.epochs"] == "2" and run.data.params["preset"] == "seed"
    assert "test/accuracy" in run.data.metrics
    out = mlflow.pyfunc.load_model("models:/projects-model@champion").predict(["loved it, brilliant"])
    assert out["label"][0] in ("positive", "negative")
