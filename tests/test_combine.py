"""`sentiment combine` through the CLI against a real MLflow server: a fine-tuned encoder run and
a TF-IDF run trained on the same reviews become one model of the `combined` family, weighted on
validation; it logs an encoder's run layout (the one predictions table, metrics with intervals,
calibration, its weights and the paired difference to each member), serves through the same pyfunc
exactly as its table says, registers and is promoted on the same reviews as any model. Runs that
saw different reviews are refused in one line before a run exists.
"""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from sentiment.train.combine import choose, weightings
from tests.conftest import TINY_TRAIN, run_cli

SPLIT = ["--val-fraction", "0.2", "--test-fraction", "0.2"]


def _run_id(result) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return re.search(r"run id:\s+(\w+)", result.stdout).group(1)


def _table(run_id: str, split: str = "test") -> pd.DataFrame:
    return pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"predictions/{split}.parquet")
    )


def test_weightings_cover_the_simplex_and_the_better_member_gets_the_weight():
    assert weightings(2, 0.25) == [(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25), (1.0, 0.0)]
    three = weightings(3, 0.1)
    assert len(three) == 66 and all(sum(w) == pytest.approx(1) for w in three)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    informed = np.where(labels == 1, 1.0, -1.0) * 2 + rng.normal(0, 1, 2000)  # ~98% right
    noise = rng.normal(0, 1, 2000)
    grid = choose([noise, informed], labels, [0.0, 0.0], [1.0, 1.0], 0.1)
    assert grid.iloc[0]["weight_1"] == 1.0 and grid.iloc[0]["val_accuracy"] > 0.95
    assert list(grid["val_loss"]) == sorted(grid["val_loss"])


# long function: one story, told in the order a user meets it (train two families, combine, serve, promote)
def test_an_encoder_and_tfidf_combine_into_one_served_registered_model(tracking_env, tiny_model, reviews_csv):
    name = "combined-sentiment"
    data = ["--data", str(reviews_csv)]
    tfidf = _run_id(run_cli(["train", "--model", "tfidf-logreg", *data, *SPLIT, "--register-as", name], tracking_env))
    encoder = _run_id(run_cli(["train", *data, "--model", tiny_model, *TINY_TRAIN], tracking_env))

    # members that saw different reviews: refused in one line, no run created
    other = _run_id(run_cli(["train", "--model", "tfidf-logreg", *data, *SPLIT, "--seed", "7"], tracking_env))
    before = len(mlflow.search_runs(search_all_experiments=True))
    refused = run_cli(["combine", encoder, other], tracking_env)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and len(refused.stderr.splitlines()) == 1
    assert "trained on different reviews" in refused.stderr
    assert len(mlflow.search_runs(search_all_experiments=True)) == before

    result = run_cli(["combine", encoder, tfidf, "--weight-step", "0.1", "--register-as", name], tracking_env)
    run_id = _run_id(result)
    run = mlflow.get_run(run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["sentiment.family"] == "combined" and tags["sentiment.combined.members"] == f"{encoder},{tfidf}"
    assert params["combine.member_1.family"] == "tfidf-logreg" and params["combine.member_0.run"] == encoder
    assert metrics["combine/weight_0"] + metrics["combine/weight_1"] == pytest.approx(1)
    members_seconds = run_metric(encoder, "test/seconds") + run_metric(tfidf, "test/seconds")
    assert metrics["test/seconds"] == pytest.approx(members_seconds)  # serving it runs both members
    for member in (0, 1):
        key = f"combine/member_{member}/test_delta_accuracy"
        assert metrics[f"{key}_low"] <= metrics[key] <= metrics[f"{key}_high"]

    # the one predictions table, on the members' test reviews, from their logits and the chosen weights
    table, members = _table(run_id), [_table(encoder), _table(tfidf)]
    assert set(table["id"]) == set(members[0]["id"]) == set(members[1]["id"]) and len(table) == 48
    assert metrics["test/accuracy"] == pytest.approx((table["label"] == table["prediction"]).mean())
    temperature = metrics["calibration/temperature"]
    assert table["probability"].to_numpy() == pytest.approx(1 / (1 + np.exp(-table["logit"].to_numpy() / temperature)))
    weights = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="tables/combination_weights.parquet")
    )
    assert len(weights) == 11 and weights.iloc[0]["weight_0"] == metrics["combine/weight_0"]
    delta = metrics["combine/member_1/test_delta_accuracy"]
    assert delta == pytest.approx(metrics["test/accuracy"] - run_metric(tfidf, "test/accuracy"))

    # served through the one pyfunc: the same probabilities as the table, review by review
    uri = f"models:/{name}@candidate"
    assert MlflowClient().get_model_version_by_alias(name, "candidate").version == "2"
    served = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": table["text"][:6].tolist()}))
    assert served["probability"].to_numpy() == pytest.approx(table["probability"][:6].to_numpy(), abs=1e-5)
    assert metrics["promotion/reviews"] == 48  # compared with the TF-IDF champion on the same test reviews
    # the champion's side is the TF-IDF run's own table, so the promotion delta is the logged member delta
    assert metrics["promotion/champion_accuracy"] == pytest.approx(run_metric(tfidf, "test/accuracy"))
    assert metrics["promotion/delta_accuracy"] == pytest.approx(delta)
    champion = MlflowClient().get_model_version_by_alias(name, "champion").version
    assert (champion == "2") == (metrics["promotion/promoted"] == 1.0)


def run_metric(run_id: str, key: str) -> float:
    return mlflow.get_run(run_id).data.metrics[key]
