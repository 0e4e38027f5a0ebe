"""Temperature scaling: the fit on synthetic logits, what a training run records about it
(against the in-memory tracker), and the registered model applying it, scored by
`mlflow.models.evaluate` against the real tracking server."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy.special import expit

from sentiment import calibration, evaluate
from sentiment import model as model_mod
from tests.conftest import TINY_TRAIN, run_cli

CALIBRATION_KEYS = ("ece", "ece_calibrated", "brier", "brier_calibrated", "loss_calibrated")

# ----------------------------------------------------------------------------- the fit


def synthetic(true_temperature: float, n: int = 50_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(s), logits s * T: a model whose logits are T times too large."""
    rng = np.random.default_rng(seed)
    calibrated = rng.normal(0.0, 2.0, size=n)
    labels = (rng.random(n) < expit(calibrated)).astype(int)
    return calibrated * true_temperature, labels


@pytest.mark.parametrize("true_temperature", [2.5, 0.4])
def test_fit_recovers_a_known_temperature_and_lowers_the_nll(true_temperature):
    logit, label = synthetic(true_temperature)
    fitted = calibration.fit_temperature(logit, label)
    assert fitted == pytest.approx(true_temperature, rel=0.03)
    nll = calibration.temperature_nll(logit, label, fitted)
    assert nll < calibration.temperature_nll(logit, label, 1.0) - 0.01
    for nearby in (fitted * 0.98, fitted / 0.98):  # a minimum
        assert nll <= calibration.temperature_nll(logit, label, nearby)
    # softmax over [0, z] / T is sigmoid(z / T): the margin is all a binary model needs
    two = np.stack([np.zeros_like(logit[:5]), logit[:5]], axis=1) / fitted
    np.testing.assert_allclose(evaluate.softmax(two)[:, 1], expit(logit[:5] / fitted), rtol=1e-12)


def test_fit_stays_in_its_bounds_and_leaves_uninformative_logits_alone():
    separated, right, wrong = np.array([6.0, -5.0, 4.0, -7.0]), np.array([1, 0, 1, 0]), np.array([0, 1, 0, 1])
    # all right: the NLL falls towards T -> 0; the fit sharpens until it is flat (or the bound)
    sharp = calibration.fit_temperature(separated, right)
    assert calibration.MIN_TEMPERATURE <= sharp < 0.5 and calibration.temperature_nll(separated, right, sharp) < 1e-9
    # all wrong: the NLL falls towards T -> infinity (probabilities 1/2), stopped by the bound
    assert calibration.fit_temperature(separated, wrong) == pytest.approx(calibration.MAX_TEMPERATURE)
    assert calibration.fit_temperature(np.zeros(4), np.array([1, 0, 1, 0])) == 1.0
    assert calibration.fit_temperature(np.array([]), np.array([])) == 1.0


def test_probability_metrics_are_sklearns():
    from sklearn import metrics as skm

    logit, label = synthetic(2.0, n=2_000)
    p = expit(logit)
    scores = evaluate.probability_metrics(label, p)
    assert scores["roc_auc"] == pytest.approx(skm.roc_auc_score(label, p))
    assert scores["brier"] == pytest.approx(skm.brier_score_loss(label, p))
    correct = ((p > 0.5) == label).astype(float)
    assert scores["ece"] == evaluate.expected_calibration_error(np.maximum(p, 1 - p), correct)
    assert "roc_auc" not in evaluate.probability_metrics(np.ones(3, dtype=int), np.array([0.2, 0.6, 0.9]))


# ----------------------------------------------------------------------------- the train stage, in memory


def test_a_training_fits_logs_and_packages_its_temperature(trained_in_memory):
    tracker, outcome, package = trained_in_memory["tracker"], trained_in_memory["outcome"], trained_in_memory["package"]
    history = outcome.history
    (temperature,) = tracker.metric("calibration/temperature")
    assert calibration.MIN_TEMPERATURE < temperature < calibration.MAX_TEMPERATURE and temperature != 1.0
    assert json.loads((package / "config.json").read_text())[model_mod.TEMPERATURE_ATTRIBUTE] == temperature
    assert (
        tracker.metrics["calibration/temperature"][0][0] == history.best_epoch
    )  # at the best epoch, linked to the model
    assert tracker.metrics["calibration/temperature"][0][2] == "m-1"

    # validation: the best epoch's table, T fitted on it, every val/ number from it
    val = tracker.artifacts["predictions/val.parquet"]
    assert evaluate.validation_metrics(val)["accuracy"] == history.best_val_accuracy
    assert temperature == calibration.fit_temperature(val["logit"].to_numpy(), val["label"].to_numpy())
    scores = evaluate.calibration_metrics(val)
    assert {f"val/{k}": tracker.metric(f"val/{k}")[0] for k in CALIBRATION_KEYS} == {
        f"val/{k}": scores[k] for k in CALIBRATION_KEYS
    }
    assert scores["loss_calibrated"] <= val["loss"].mean() + 1e-12  # the NLL T minimised

    # test: the served probabilities carry T, the uncalibrated ones do not; metrics from the table
    test = tracker.artifacts["predictions/test.parquet"]
    np.testing.assert_allclose(test["probability"], expit(test["logit"] / temperature), rtol=1e-12)
    np.testing.assert_allclose(test["probability_uncalibrated"], expit(test["logit"]), rtol=1e-12)
    assert (test["prediction"] == (test["logit"] > 0)).all()  # T > 0 changes no prediction
    metrics = evaluate.compute_metrics(test, "test", seed=0)
    assert {k: tracker.metric(k)[0] for k in metrics} == metrics
    assert (
        metrics["test/ece"] != metrics["test/ece_calibrated"]
        and metrics["test/brier"] != metrics["test/brier_calibrated"]
    )
    assert {"figures/calibration_val.png", "figures/calibration_test.png"} <= set(tracker.artifacts)


def test_the_packaged_model_applies_its_temperature(trained_in_memory, tiny_model):
    from sentiment.analyze.attention import extract_attention
    from sentiment.config import ModelConfig

    package = trained_in_memory["package"]
    (temperature,) = trained_in_memory["tracker"].metric("calibration/temperature")
    test = trained_in_memory["tracker"].artifacts["predictions/test.parquet"]
    loaded = model_mod.load_package(str(package))
    assert model_mod.temperature_of(loaded.model) == temperature
    classify = evaluate.load_classifier(package)  # what the served pyfunc predicts with
    np.testing.assert_allclose(classify(test["text"].tolist()), test["probability"], atol=1e-5)
    amap = extract_attention(
        loaded.model,
        loaded.tokenizer,
        test["text"].iloc[0],
        loaded.config.data.max_length,
        loaded.config.data.truncation,
    )
    assert amap.probability == pytest.approx(test["probability"].iloc[0], abs=1e-4)  # analyze's attention pages
    # fine-tuning from the package starts a fresh head at T = 1; a model without one has T = 1
    assert model_mod.temperature_of(model_mod.build_model(ModelConfig(name=str(package)))) == 1.0
    assert model_mod.temperature_of(model_mod.build_model(ModelConfig(name=tiny_model))) == 1.0


# ----------------------------------------------------------------------------- a registered model, real server


def _artifact_table(run_id: str, path: str) -> pd.DataFrame:
    return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


@pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow's hints about the evaluation data
def test_registered_model_serves_calibrated_probabilities_and_mlflow_evaluate_agrees(
    tracking_env, tiny_model, reviews_csv
):
    name = "calibrated-sentiment"
    result = run_cli(
        ["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--register-as", name], tracking_env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient()
    (run,) = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")
    m = run.data.metrics
    keys = {"calibration/temperature"} | {f"{split}/{k}" for split in ("val", "test") for k in CALIBRATION_KEYS}
    assert keys <= set(m), keys - set(m)
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/calibration_val.png", "figures/calibration_test.png"} <= figures
    table = _artifact_table(run.info.run_id, "predictions/test.parquet")
    assert {k: m[k] for k in evaluate.compute_metrics(table, "test", seed=42)} == evaluate.compute_metrics(
        table, "test", seed=42
    )
    val = _artifact_table(run.info.run_id, "predictions/val.parquet")
    assert all(m[f"val/{k}"] == v for k, v in evaluate.calibration_metrics(val).items())
    temperature = m["calibration/temperature"]
    assert abs(temperature - 1) > 1e-3  # else the checks below could not tell T from no T

    # the registered version applies T: its probability is the table's calibrated one
    uri = f"models:/{name}/1"
    served = mlflow.pyfunc.load_model(uri).predict(table["text"].tolist())
    assert list(served.columns) == ["label", "score", "probability"]
    np.testing.assert_allclose(served["probability"], table["probability"], atol=1e-5)
    assert np.abs(served["probability"] - table["probability_uncalibrated"]).max() > 1e-3
    assert (served["label"] == np.where(table["prediction"] == 1, "positive", "negative")).all()
    np.testing.assert_allclose(served["score"], table["confidence"], atol=1e-5)

    # mlflow.models.evaluate on the registered version in one call, as docs/evaluate-and-serve.md shows it,
    # with labels written as words and as IMDB stores them (0/1)
    (tn, fp), (fn, tp) = evaluate.confusion(table)
    for labels in (np.where(table["label"] == 1, "positive", "negative"), table["label"].to_numpy()):
        data = pd.DataFrame({"text": table["text"], "label": labels})
        with mlflow.start_run(run_name="mlflow-evaluate"):
            result = mlflow.models.evaluate(uri, data, targets="label", model_type="classifier", evaluators="sentiment")
        c = result.metrics
        assert c["accuracy_score"] == pytest.approx(m["test/accuracy"])
        assert c["f1_score"] == pytest.approx(m["test/f1_positive"])  # of the positive class
        assert c["precision_score"] == pytest.approx(m["test/precision_positive"])
        assert c["recall_score"] == pytest.approx(m["test/recall_positive"])
        assert (c["true_negatives"], c["false_positives"], c["false_negatives"], c["true_positives"]) == (
            tn,
            fp,
            fn,
            tp,
        )
        assert c["roc_auc"] == pytest.approx(m["test/roc_auc"], abs=1e-9)
        assert c["brier_score"] == pytest.approx(m["test/brier_calibrated"], abs=1e-6)
        assert c["expected_calibration_error"] == pytest.approx(m["test/ece_calibrated"], abs=1e-6)
        assert {"confusion_matrix", "roc_curve_plot", "calibration_curve_plot"} <= set(result.artifacts)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_sentiment_evaluator_steps_aside_for_other_models(tracking_env):
    """Installed as an MLflow plugin, it must not change another classifier's evaluation (MLflow
    runs every registered evaluator when none is named)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(int)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(LogisticRegression().fit(x, y), name="model")
        frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(label=y)
        result = mlflow.models.evaluate(
            info.model_uri,
            frame,
            targets="label",
            model_type="classifier",
            evaluator_config={"log_model_explainability": False},
        )
    assert result.metrics["accuracy_score"] > 0.9 and "expected_calibration_error" not in result.metrics
