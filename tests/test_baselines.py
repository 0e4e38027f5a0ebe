"""The classical baselines as model families, through the CLI against a real MLflow server:
`--model tfidf-logreg` trains on the bundled sample corpus in seconds, logs what an encoder's
run logs (the one predictions table, metrics with intervals, calibration, cost metrics), is
served by the same pyfunc (and MLflow's scikit-learn flavour), registers, and is promoted (or
not) on the same reviews as any model; an ablation grid takes it as a variant.
"""

from __future__ import annotations

import json
import re
import textwrap

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from sentiment.config import build_config
from sentiment.errors import UserError
from tests.conftest import TINY_TRAIN, run_cli

TABLE_COLUMNS = [
    "id",
    "text",
    "label",
    "prediction",
    "probability",
    "confidence",
    "loss",
    "n_tokens",
    "truncated",
    "logit",
    "probability_uncalibrated",
]
COST_KEYS = {
    "train/fit_seconds",
    "train/epoch_seconds",
    "train/samples_per_s",
    "model/size_bytes",
    "test/seconds",
    "test/reviews_per_s",
}
SCORE_KEYS = {
    "test/accuracy",
    "test/accuracy_ci_low",
    "test/accuracy_ci_high",
    "test/f1_macro",
    "test/roc_auc",
    "test/ece",
    "test/ece_calibrated",
    "val/best_accuracy",
    "val/accuracy",
    "calibration/temperature",
}
TEXTS = [
    "An absolute delight from start to finish, funny and moving.",
    "Dull, clumsy and far too long. I want my money back.",
]


def _train(env, *args: str) -> tuple[str, str]:
    result = run_cli(["train", "--model", "tfidf-logreg", *args], env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = re.search(r"run id:\s+(\w+)", result.stdout).group(1)
    return run_id, result.stdout


def _table(run_id: str, name: str = "predictions/test.parquet") -> pd.DataFrame:
    return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name))


def test_tfidf_logreg_trains_serves_registers_and_a_worse_candidate_stays_candidate(tracking_env, monkeypatch):
    name = "tfidf-sentiment"
    run_id, stdout = _train(tracking_env, "--data", "sample", "--register-as", name)
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED" and "promoted to champion" in stdout
    assert run.data.params["model.name"] == "tfidf-logreg" and run.data.params["baseline.logreg.C"] == "8.0"
    assert run.data.params["baseline.tfidf.ngram_range"] == "(1, 2)"
    assert run.data.tags["sentiment.kind"] == "train" and run.data.tags["sentiment.baseline"] == "tfidf-logreg"
    metrics = run.data.metrics
    assert SCORE_KEYS | COST_KEYS <= set(metrics), (SCORE_KEYS | COST_KEYS) - set(metrics)
    assert metrics["test/accuracy"] >= 0.85, metrics["test/accuracy"]  # 0.94 on the 78 sample test reviews
    assert metrics["model/size_bytes"] > 0 and metrics["test/reviews_per_s"] > 0
    assert int(run.data.params["model.trainable_parameters"]) > 1000  # one weight per TF-IDF feature

    # the one predictions table, on the same 78 test reviews a fine-tuned encoder gets with this seed
    table = _table(run_id)
    assert list(table.columns) == TABLE_COLUMNS and len(table) == metrics["test/examples"] == 78
    assert metrics["test/accuracy"] == pytest.approx((table["label"] == table["prediction"]).mean())
    assert not table["truncated"].any() and (table["n_tokens"] > 0).all()  # TF-IDF reads every word
    temperature = metrics["calibration/temperature"]
    assert table["probability"].to_numpy() == pytest.approx(1 / (1 + np.exp(-table["logit"].to_numpy() / temperature)))
    contexts = {tag.value for inp in run.inputs.dataset_inputs for tag in inp.tags if tag.key == "mlflow.data.context"}
    assert contexts == {"training", "validation", "testing"}

    # served: the pyfunc answers as the table; the scikit-learn flavour is the same calibrated pipeline
    uri = f"models:/{name}@champion"
    served = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": [*TEXTS, table["text"][0]]}))
    assert list(served.columns) == ["label", "score", "probability"]
    assert list(served["label"][:2]) == ["positive", "negative"]
    assert served["score"].tolist()[:2] == [served["probability"][0], 1 - served["probability"][1]]
    assert served["probability"][2] == pytest.approx(table["probability"][0])
    monkeypatch.setenv(
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true"
    )  # MLflow's gate on any sklearn load (skops included)
    pipeline = mlflow.sklearn.load_model(uri)
    assert pipeline.predict_proba(TEXTS)[:, 1] == pytest.approx(served["probability"][:2].to_numpy())

    # registry: v1 champion; a candidate trained on 16 reviews is compared on the same reviews and stays candidate
    client = MlflowClient()
    assert set(client.get_model_version_by_alias(name, "champion").aliases) == {"candidate", "champion"}
    worse_id, stdout = _train(tracking_env, "--data", "sample", "--train-size", "16", "--register-as", name)
    worse = mlflow.get_run(worse_id)
    assert worse.data.metrics["test/accuracy"] < metrics["test/accuracy"]
    assert worse.data.tags["sentiment.promotion.decision"] == "not promoted" and "champion unchanged" in stdout
    assert worse.data.metrics["promotion/reviews"] == 78 and worse.data.metrics["promotion/delta_accuracy"] < 0
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_model_version_by_alias(name, "candidate").version == "2"


@pytest.mark.extended
@pytest.mark.slow  # five CLI processes: about 1.5 minutes on 2 busy cores
def test_a_baseline_is_evaluated_scored_and_predicted_like_an_encoder(tracking_env, tmp_path):
    name = "tfidf-cli"
    run_id, _ = _train(tracking_env, "--data", "sample", "--register-as", name)
    trained = mlflow.get_run(run_id).data.metrics

    result = run_cli(["evaluate", "--model-uri", f"models:/{name}/1", "--split", "test"], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = re.search(r"run id:\s+(\w+)", result.stdout).group(1)
    again = mlflow.get_run(evaluated).data.metrics
    assert again["test/accuracy"] == trained["test/accuracy"]
    assert again["test/ece_calibrated"] == pytest.approx(trained["test/ece_calibrated"])
    assert again["calibration/temperature"] == pytest.approx(trained["calibration/temperature"])

    result = run_cli(["predict", "--model-uri", f"models:/{name}@champion", *TEXTS], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["positive", "negative"]

    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("".join(json.dumps({"review": text}) + "\n" for text in [*TEXTS, ""]))
    output = tmp_path / "out.parquet"
    result = run_cli(
        ["score", "--model-uri", f"models:/{name}@champion", "--input", str(reviews), "--output", str(output)],
        tracking_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = pd.read_parquet(output)
    assert scored["label"].tolist()[:2] == ["positive", "negative"] and scored["reason"].tolist()[2] == "empty text"

    result = run_cli(["export", "--name", name, "--version", "1"], tracking_env)
    assert result.returncode != 0 and "scikit-learn baseline" in result.stderr


# an encoder and a baseline trained; test_tfidf_logreg_trains_serves... crosses the baseline path in make test
@pytest.mark.extended
@pytest.mark.slow  # two trainings, one of an encoder: about 1.5 minutes on 2 busy cores
def test_a_baseline_candidate_is_compared_with_an_encoder_champion_on_the_same_reviews(
    tracking_env, tiny_model, reviews_csv
):
    name = "mixed-families"
    result = run_cli(
        ["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--register-as", name], tracking_env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_id, stdout = _train(
        tracking_env,
        "--data",
        str(reviews_csv),
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
        "--register-as",
        name,
        "--promote-if",
        "always",
    )
    run = mlflow.get_run(run_id)
    assert run.data.metrics["promotion/reviews"] == 48  # the encoder champion re-scored on the baseline's test reviews
    assert run.data.metrics["promotion/champion_accuracy"] >= 0 and "vs champion v1" in stdout
    assert MlflowClient().get_model_version_by_alias(name, "champion").version == "2"


def test_an_ablation_grid_takes_a_baseline_as_a_variant(tmp_path):
    from sentiment.ablate import check_children, load_grid

    grid = tmp_path / "grid.yaml"
    grid.write_text(
        textwrap.dedent("""\
        name: baselines
        base: {preset: quick}
        seeds: [0]
        groups:
          - name: families
            variants:
              - {name: tfidf, options: {model: tfidf-logreg}}
              - {name: minilm-frozen, options: {model: minilm-logreg}}
        """)
    )
    loaded = load_grid(grid)
    assert [child.config.model.name for child in loaded.children()] == [
        "offline-minilm",
        "tfidf-logreg",
        "minilm-logreg",
    ]
    check_children(loaded)  # no encoder shape to check for tfidf; minilm-logreg's frozen encoder fits max_length
    assert loaded.children()[1].cli_options("quick")["model"] == "tfidf-logreg"


def test_encoder_options_are_refused_for_a_baseline():
    with pytest.raises(UserError, match="model.freeze_layers reshape an encoder; the tfidf-logreg baseline"):
        build_config("seed", {"model.name": "tfidf-logreg", "model.freeze_layers": 2})


@pytest.mark.extended
@pytest.mark.slow  # MiniLM embeds 390 reviews on the CPU: about 2 minutes on 2 busy cores
def test_minilm_logreg_embeds_with_the_frozen_encoder_and_loads_as_sklearn(tracking_env, monkeypatch):
    result = run_cli(["train", "--model", "minilm-logreg", "--data", "sample", "--max-length", "128"], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = mlflow.get_run(re.search(r"run id:\s+(\w+)", result.stdout).group(1))
    metrics = run.data.metrics
    assert SCORE_KEYS | COST_KEYS <= set(metrics) and metrics["test/accuracy"] >= 0.65, metrics.get("test/accuracy")
    assert (
        run.data.params["model.trainable_parameters"] == "385" and int(run.data.params["model.parameters"]) > 22e6
    )  # 384 weights + bias; MiniLM frozen
    assert metrics["model/size_bytes"] > 80e6  # the frozen encoder's files count
    table = _table(run.info.run_id)
    assert list(table.columns) == TABLE_COLUMNS and table["truncated"].any() and table["n_tokens"].max() > 128
    uri = f"runs:/{run.info.run_id}/model"
    served = mlflow.pyfunc.load_model(uri).predict(TEXTS)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    pipeline = mlflow.sklearn.load_model(uri)  # the embedder class comes with the model's code
    assert pipeline.predict_proba(TEXTS)[:, 1] == pytest.approx(served["probability"].to_numpy(), abs=1e-5)
