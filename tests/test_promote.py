"""Promotion compares models on the same reviews (a real server, real tiny models).

Two review files with their own train/test split (a `split` column): on the EASY file the cue
words are one vocabulary (A); the HARD file trains on both vocabularies and tests on reviews
carrying only vocabulary B, a fifth of them mislabelled. A model trained on the easy file only
(`narrow`) scores high on its easy test set and poorly on B; a model trained on the hard file
(`broad`) scores lower on its own hard test set but is the better model on any shared reviews.
Comparing each model's own test accuracy (the old rule) gets both orders wrong.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from sentiment.promote import decide
from tests.conftest import NEGATIVE, POSITIVE, run_cli

pytestmark = pytest.mark.slow

POSITIVE_B = "excellent fantastic beautiful terrific perfect enjoyable wonderful fun".split()
NEGATIVE_B = "horrible lousy mediocre stupid annoying ugly pointless bad".split()
FILLER = "the film plot was and a with story acting it cast scene director".split()
TRAIN_ROWS = 200
TRAIN = [
    "--epochs",
    "8",
    "--batch-size",
    "8",
    "--lr",
    "3e-3",
    "--max-length",
    "48",
    "--val-fraction",
    "0.2",
    "--layer-decay",
    "1.0",
    "--log-every-steps",
    "5",
]


def _review(rng: random.Random, label: int, vocabulary: str) -> str:
    positive, negative = (POSITIVE, NEGATIVE) if vocabulary == "A" else (POSITIVE_B, NEGATIVE_B)
    words = [rng.choice(positive if label else negative) for _ in range(rng.randint(2, 4))]
    words += [rng.choice(FILLER) for _ in range(rng.randint(4, 20))]
    rng.shuffle(words)
    return " ".join(words)


def _write(path: Path, train: list[str], test: list[str], test_size: int, flip: float = 0.0, seed: int = 0) -> Path:
    """``train`` / ``test``: the vocabularies of the rows, cycled; ``flip``: mislabelled test share."""
    rng = random.Random(seed)
    rows = []
    for i in range(TRAIN_ROWS):
        rows.append((_review(rng, i % 2, train[(i // 2) % len(train)]), i % 2, "train"))  # each vocabulary, both labels
    flips = set(rng.sample(range(test_size), int(round(flip * test_size))))
    for i in range(test_size):
        label = i % 2
        rows.append((_review(rng, label, test[(i // 2) % len(test)]), 1 - label if i in flips else label, "test"))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment", "split"])
        writer.writerows((text, "positive" if label else "negative", split) for text, label, split in rows)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("promotion-data")
    return {
        "easy": _write(root / "easy.csv", ["A"], ["A"], 100),
        "hard": _write(root / "hard.csv", ["A", "B"], ["B"], 100, flip=0.2, seed=1),
        "tiny_hard": _write(root / "tiny_hard.csv", ["A", "B"], ["B"], 5, seed=2),
    }


def _train(env, model: str, data: Path, name: str, *extra: str) -> tuple[str, str]:
    result = run_cli(["train", "--data", str(data), "--model", model, *TRAIN, "--register-as", name, *extra], env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = re.search(r"run id:\s+(\w+)", result.stdout).group(1)
    line = next(line for line in result.stdout.splitlines() if line.startswith("promotion ("))
    print(
        f"\n$ sentiment train --data {data.name} --register-as {name} {' '.join(extra)}\n{line}"
    )  # README's transcript (pytest -s)
    return run_id, line


def _champion(name: str) -> str:
    return MlflowClient().get_model_version_by_alias(name, "champion").version


# several trainings; test_significant_refuses_an_advantage_a_small_test_set_cannot_show crosses the promotion rule in
# make test
@pytest.mark.extended
def test_a_better_model_on_a_harder_set_is_promoted_and_a_worse_one_on_an_easier_set_is_not(
    tracking_env, tiny_model, files
):
    client = MlflowClient()
    # narrow first, then broad: broad's own number is lower, yet it wins on its reviews
    narrow_run, line = _train(tracking_env, tiny_model, files["easy"], "fair-ab")
    assert "no champion yet" in line and _champion("fair-ab") == "1"
    broad_run, line = _train(tracking_env, tiny_model, files["hard"], "fair-ab", "--promote-if", "better")
    versions = {v.version: v for v in client.search_model_versions("name = 'fair-ab'")}
    assert float(versions["1"].tags["test_accuracy"]) > float(
        versions["2"].tags["test_accuracy"]
    )  # the old rule would keep v1
    assert _champion("fair-ab") == "2", line
    tags = versions["2"].tags
    assert (
        tags["promotion.decision"] == "promoted"
        and tags["promotion.against"] == "v1"
        and tags["promotion.rule"] == "better"
    )
    assert tags["promotion.reviews"] == "100"
    # every number of the decision is the two predictions tables on the same 100 reviews
    run = client.get_run(broad_run)
    champion_run = client.get_run(tags["promotion.champion_eval_run"])
    assert (
        champion_run.data.tags["sentiment.model_uri"] == "models:/fair-ab/1"
        and champion_run.data.tags["sentiment.promotion_for_run"] == broad_run
    )
    ours = _table(broad_run)
    theirs = _table(champion_run.info.run_id)
    assert sorted(ours["id"]) == sorted(theirs["id"])
    metrics = run.data.metrics
    assert metrics["promotion/candidate_accuracy"] == pytest.approx(run.data.metrics["test/accuracy"])
    assert metrics["promotion/champion_accuracy"] == pytest.approx(champion_run.data.metrics["test/accuracy"])
    assert metrics["promotion/delta_accuracy"] == pytest.approx(
        metrics["promotion/candidate_accuracy"] - metrics["promotion/champion_accuracy"]
    )
    assert metrics["promotion/delta_accuracy"] > 0.1 and run.data.tags["sentiment.promotion.decision"] == "promoted"
    assert f"vs champion v1 {metrics['promotion/champion_accuracy']:.4f}" in line and "promoted to champion" in line
    # the version page shows the model card, with the decision in it
    description = client.get_model_version("fair-ab", "2").description
    assert description.startswith("# Model card: fair-ab v2") and line in description
    assert "| test | 100 | `" in description

    # broad first, then narrow: narrow's own number is higher, yet it loses on its reviews
    _train(tracking_env, tiny_model, files["hard"], "fair-ba")
    _, line = _train(tracking_env, tiny_model, files["easy"], "fair-ba", "--promote-if", "better")
    assert _champion("fair-ba") == "1", line
    versions = {v.version: v for v in client.search_model_versions("name = 'fair-ba'")}
    assert float(versions["2"].tags["test_accuracy"]) > float(
        versions["1"].tags["test_accuracy"]
    )  # the old rule would promote v2
    assert versions["2"].tags["promotion.decision"] == "not promoted" and "champion unchanged" in line

    # by hand: the same comparison, compare only, prints and moves nothing
    result = run_cli(
        ["promote", "--name", "fair-ba", "--version", "2", "--compare-only", "--promote-if", "always"], tracking_env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "promoted to champion" in result.stdout and _champion("fair-ba") == "1"
    # nothing to compare: the champion itself, a version that does not exist (one line, exit 2)
    for args, message in (
        (["--name", "fair-ba", "--version", "1"], "version 1 is the champion of 'fair-ba'"),
        (["--name", "fair-ba", "--version", "9"], "model 'fair-ba' has no version '9'"),
    ):
        result = run_cli(["promote", *args], tracking_env)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_significant_refuses_an_advantage_a_small_test_set_cannot_show(tracking_env, tiny_model, files):
    """An untrained champion against a good model, on five reviews: McNemar's exact p is at least
    2 * 0.5**5 = 0.0625 whatever the predictions, so `significant` cannot move the champion."""
    _train(tracking_env, tiny_model, files["easy"], "small-set", "--epochs", "1", "--lr", "1e-7")
    _, line = _train(tracking_env, tiny_model, files["tiny_hard"], "small-set")  # default rule: significant
    assert _champion("small-set") == "1", line
    assert "higher accuracy but not significant" in line and "McNemar p=" in line
    tags = MlflowClient().get_model_version("small-set", "2").tags
    assert tags["promotion.rule"] == "significant" and float(tags["promotion.p_value"]) >= 0.05
    assert float(tags["promotion.delta_accuracy"]) > 0


# two trainings and a broken champion; test_significant_refuses_an_advantage_a_small_test_set_cannot_show crosses
# promotion in make test
@pytest.mark.extended
def test_a_champion_that_cannot_be_evaluated_is_reported_and_replaced(tracking_env, tiny_model, files):
    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    _train(tracking_env, tiny_model, files["easy"], "broken")
    version = MlflowClient().get_model_version("broken", "1")
    model_id = version.model_id or version.source.split("/")[-1]  # some stores leave model_id empty
    get_artifact_repository(mlflow.get_logged_model(model_id).artifact_location).delete_artifacts()
    _, line = _train(tracking_env, tiny_model, files["easy"], "broken")
    assert (
        "champion v1 could not be evaluated" in line and "it cannot serve either" in line and _champion("broken") == "2"
    )


def _table(run_id: str) -> pd.DataFrame:
    import mlflow

    return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="predictions/test.parquet"))


def _tables(labels, candidate, champion):
    ids = [str(i) for i in range(len(labels))]
    make = lambda predictions: pd.DataFrame({"id": ids, "label": labels, "prediction": predictions})  # noqa: E731
    return make(candidate), make(champion)


@pytest.mark.parametrize(
    ("rule", "discordant", "promoted", "reason"),
    [
        ("better", (3, 1), True, "higher accuracy"),
        ("significant", (3, 1), False, "higher accuracy but not significant"),  # McNemar 3 vs 1: p = 0.625
        ("significant", (12, 1), True, "significant"),  # p = 0.0034
        ("better", (1, 3), False, "not higher accuracy"),
        ("never", (12, 1), False, "rule never"),
        ("always", (1, 3), True, "rule always"),
    ],
)
def test_decide_applies_the_rule_to_paired_predictions(rule, discordant, promoted, reason):
    """Exact McNemar on the discordant pairs; the same reviews on both sides."""
    only_candidate, only_champion = discordant
    n = 200
    labels = np.array([i % 2 for i in range(n)])
    candidate, champion = labels.copy(), labels.copy()
    champion[:only_candidate] = 1 - labels[:only_candidate]
    candidate[only_candidate : only_candidate + only_champion] = (
        1 - labels[only_candidate : only_candidate + only_champion]
    )
    decision = decide("m", "2", "1", rule, 0.05, _tables(labels, candidate, champion))
    assert decision.promoted is promoted and reason in decision.reason
    assert decision.stats["delta"] == pytest.approx((only_candidate - only_champion) / n)
    from scipy.stats import binomtest

    expected = binomtest(min(discordant), sum(discordant), 0.5).pvalue
    assert decision.stats["p_value"] == pytest.approx(expected)
    assert decision.reviews == n and decision.sides[0].accuracy == pytest.approx(1 - only_champion / n)
