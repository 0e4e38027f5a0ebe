"""Unit tests for sentiment.evaluate: predictions table, metrics, calibration, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from sentiment import evaluate as ev
from sentiment import tokens
from sentiment.config import Config, DataConfig, ModelConfig, TrainConfig
from sentiment.device import pick_precision
from sentiment.model import build_model, load_tokenizer

# ----------------------------------------------------------------------------- a hand-made table
#
# row  label  prediction  probability  confidence  correct
#  0     1        1          0.90         0.90        1
#  1     1        1          0.80         0.80        1
#  2     1        1          0.70         0.70        1
#  3     1        1          0.60         0.60        1
#  4     1        0          0.40         0.60        0
#  5     0        0          0.10         0.90        1
#  6     0        0          0.20         0.80        1
#  7     0        0          0.30         0.70        1
#  8     0        1          0.55         0.55        0
#  9     0        1          0.65         0.65        0
#
# TP = 4 (rows 0-3), FN = 1 (row 4), TN = 3 (rows 5-7), FP = 2 (rows 8, 9)
# accuracy           = 7/10 = 0.7
# precision_positive = TP/(TP+FP) = 4/6 = 2/3      recall_positive = TP/(TP+FN) = 4/5 = 0.8
# f1_positive        = 2*(2/3)*0.8/(2/3+0.8) = 8/11
# precision_negative = TN/(TN+FN) = 3/4            recall_negative = TN/(TN+FP) = 3/5 = 0.6
# f1_negative        = 2*0.75*0.6/(0.75+0.6) = 2/3
# precision_macro    = (3/4 + 2/3)/2 = 17/24       recall_macro = (0.6 + 0.8)/2 = 0.7
# f1_macro           = (2/3 + 8/11)/2 = 23/33
# roc_auc: positive scores {.9,.8,.7,.6,.4} vs negative {.1,.2,.3,.55,.65}: pairs ranked right
#          5 + 5 + 5 + 4 + 3 = 22 of 25 -> 0.88
# ece (15 equal bins on [0.5, 1], each distinct confidence in its own bin since they are >= 0.05 apart):
#   0.90: rows 0,5 acc 1.0 -> |1-.9|*.2 = .02     0.80: rows 1,6 acc 1.0 -> .2*.2 = .04
#   0.70: rows 2,7 acc 1.0 -> .3*.2 = .06         0.60: rows 3,4 acc 0.5 -> .1*.2 = .02
#   0.55: row 8 acc 0      -> .55*.1 = .055       0.65: row 9 acc 0      -> .65*.1 = .065
#   total 0.26
# brier: mean (p - y)^2 = (.01+.04+.09+.16+.36 + .01+.04+.09+.3025+.4225)/10 = 0.1525
# no probability_uncalibrated column (a table from before calibration): before = after
# loss column: arbitrary numbers 0.1..1.0 -> mean 0.55; truncated: 3 of 10 -> 0.3

LABEL = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
PREDICTION = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]
PROBABILITY = [0.9, 0.8, 0.7, 0.6, 0.4, 0.1, 0.2, 0.3, 0.55, 0.65]


@pytest.fixture
def table():
    prob = np.array(PROBABILITY)
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(10)],
            "text": ["t"] * 10,
            "label": LABEL,
            "prediction": PREDICTION,
            "probability": prob,
            "confidence": np.maximum(prob, 1 - prob),
            "loss": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
            "n_tokens": [600, 700, 900, 10, 20, 30, 40, 50, 60, 70],
            "truncated": [True, True, True] + [False] * 7,
        }
    )


EXPECTED_KEYS = {
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "loss",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_negative",
    "precision_positive",
    "recall_negative",
    "recall_positive",
    "f1_negative",
    "f1_positive",
    "ece",
    "ece_calibrated",
    "brier",
    "brier_calibrated",
    "loss_calibrated",
    "examples",
    "truncated_share",
    "roc_auc",
    "average_precision",
}


def test_compute_metrics_hand_checked(table):
    m = ev.compute_metrics(table, "test", seed=0)
    assert set(m) == {f"test/{k}" for k in EXPECTED_KEYS}
    assert m["test/accuracy"] == pytest.approx(0.7)
    assert m["test/precision_positive"] == pytest.approx(2 / 3)
    assert m["test/recall_positive"] == pytest.approx(0.8)
    assert m["test/f1_positive"] == pytest.approx(8 / 11)
    assert m["test/precision_negative"] == pytest.approx(0.75)
    assert m["test/recall_negative"] == pytest.approx(0.6)
    assert m["test/f1_negative"] == pytest.approx(2 / 3)
    assert m["test/precision_macro"] == pytest.approx(17 / 24)
    assert m["test/recall_macro"] == pytest.approx(0.7)
    assert m["test/f1_macro"] == pytest.approx(23 / 33)
    assert m["test/loss"] == pytest.approx(0.55)
    assert m["test/roc_auc"] == pytest.approx(0.88)
    assert m["test/roc_auc"] == pytest.approx(skm.roc_auc_score(LABEL, PROBABILITY))
    assert m["test/average_precision"] == pytest.approx(skm.average_precision_score(LABEL, PROBABILITY))
    assert m["test/ece"] == pytest.approx(0.26)
    assert m["test/brier"] == pytest.approx(0.1525)
    assert m["test/brier"] == pytest.approx(skm.brier_score_loss(LABEL, PROBABILITY))
    assert (m["test/ece_calibrated"], m["test/brier_calibrated"]) == (m["test/ece"], m["test/brier"])
    p_true = np.where(np.array(LABEL) == 1, PROBABILITY, 1 - np.array(PROBABILITY))
    assert m["test/loss_calibrated"] == pytest.approx(-np.log(p_true).mean())
    assert m["test/examples"] == 10
    assert m["test/truncated_share"] == pytest.approx(0.3)
    assert m["test/accuracy_ci_low"] <= 0.7 <= m["test/accuracy_ci_high"]
    correct = (np.array(LABEL) == np.array(PREDICTION)).astype(float)
    assert (m["test/accuracy_ci_low"], m["test/accuracy_ci_high"]) == ev.bootstrap_accuracy_ci(correct, 0)
    assert all(isinstance(v, float) for v in m.values())


def test_compute_metrics_prefix_and_seed(table):
    m = ev.compute_metrics(table, "val", seed=5)
    assert all(k.startswith("val/") for k in m)
    assert m["val/accuracy"] == pytest.approx(0.7)
    assert ev.compute_metrics(table, "val", seed=5) == m


def test_compute_metrics_single_class_has_no_auc(table):
    one = table[table["label"] == 1].reset_index(drop=True)
    m = ev.compute_metrics(one, "test")
    assert "test/roc_auc" not in m and "test/average_precision" not in m
    assert m["test/accuracy"] == pytest.approx(0.8)
    assert m["test/recall_positive"] == pytest.approx(0.8)
    assert m["test/precision_negative"] == 0.0  # one negative prediction, wrong; zero_division not hit
    assert m["test/recall_negative"] == 0.0  # no negatives at all: zero_division=0


# ----------------------------------------------------------------------------- calibration


def test_ece_constant_confidence():
    confidence = np.full(10, 0.9)
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=float)
    assert ev.expected_calibration_error(confidence, correct) == pytest.approx(0.1)


def test_ece_overconfident_and_underconfident_are_both_positive():
    confidence = np.full(4, 0.6)
    assert ev.expected_calibration_error(confidence, np.ones(4)) == pytest.approx(0.4)
    assert ev.expected_calibration_error(confidence, np.zeros(4)) == pytest.approx(0.6)


def test_ece_perfectly_calibrated_bins():
    # 0.6 with 3 of 5 right, 0.8 with 4 of 5 right, 1.0 with all right
    confidence = np.array([0.6] * 5 + [0.8] * 5 + [1.0] * 2)
    correct = np.array([1, 1, 1, 0, 0] + [1, 1, 1, 1, 0] + [1, 1], dtype=float)
    assert ev.expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-12)


def test_ece_low_confidences_use_full_range():
    # 0.25 with 1 of 4 right and 0.75 with 3 of 4 right: calibrated on [0, 1] bins
    confidence = np.array([0.25] * 4 + [0.75] * 4)
    correct = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=float)
    assert ev.expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-12)


def test_ece_weights_bins_by_share():
    # bin at 0.95 (8 rows, all right): |1 - .95| * .8 = .04 ; bin at 0.55 (2 rows, none right): .55 * .2 = .11
    confidence = np.array([0.95] * 8 + [0.55] * 2)
    correct = np.array([1] * 8 + [0] * 2, dtype=float)
    assert ev.expected_calibration_error(confidence, correct) == pytest.approx(0.15)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_accuracy_and_shrinks():
    small = np.array([1.0] * 75 + [0.0] * 25)
    large = np.tile(small, 40)  # 4,000 rows, same 0.75 accuracy
    lo_s, hi_s = ev.bootstrap_accuracy_ci(small, seed=0)
    lo_l, hi_l = ev.bootstrap_accuracy_ci(large, seed=0)
    assert 0 <= lo_s <= 0.75 <= hi_s <= 1
    assert lo_l <= 0.75 <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3  # ~sqrt(40) = 6.3 times narrower
    # close to the normal approximation 2 * 1.96 * sqrt(p (1 - p) / n)
    expected = 2 * 1.96 * math.sqrt(0.75 * 0.25 / len(large))
    assert hi_l - lo_l == pytest.approx(expected, rel=0.2)


def test_bootstrap_ci_deterministic_for_seed():
    correct = np.random.default_rng(0).integers(0, 2, size=300).astype(float)
    assert ev.bootstrap_accuracy_ci(correct, seed=7) == ev.bootstrap_accuracy_ci(correct, seed=7)
    assert ev.bootstrap_accuracy_ci(correct, seed=7) != ev.bootstrap_accuracy_ci(correct, seed=8)


def test_bootstrap_ci_level():
    correct = np.random.default_rng(1).integers(0, 2, size=500).astype(float)
    lo90, hi90 = ev.bootstrap_accuracy_ci(correct, seed=0, level=0.9)
    lo99, hi99 = ev.bootstrap_accuracy_ci(correct, seed=0, level=0.99)
    assert lo99 < lo90 < correct.mean() < hi90 < hi99
    assert ev.bootstrap_accuracy_ci(np.ones(50), seed=0) == (1.0, 1.0)


# ----------------------------------------------------------------------------- confusion


def test_confusion_counts(table):
    # rows = true (negative, positive), columns = predicted: [[TN, FP], [FN, TP]]
    assert ev.confusion(table).tolist() == [[3, 2], [1, 4]]


def test_confusion_always_two_by_two(table):
    one = table[table["label"] == 1]
    assert ev.confusion(one).tolist() == [[0, 0], [1, 4]]


# ----------------------------------------------------------------------------- predicting with a model


TEXTS = [
    "A wonderful, moving film.",
    "Terrible.",
    "The acting was wooden and the plot dragged on for what felt like hours without any payoff at all.",
    "ok",
    "Brilliant cast, gripping story, superb score, and a finale I will remember for a long time to come.",
    "Dull<br />and boring",
    "Not great, not awful either; somewhere in the middle of the pack for this kind of thriller.",
]
MAX_LENGTH = 16


@pytest.fixture(scope="module")
def tiny(tiny_model):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=tiny_model))
    return model, load_tokenizer(tiny_model)


def test_predict_logits_keeps_input_order(tiny):
    model, tokenizer = tiny
    cpu = torch.device("cpu")
    precision = pick_precision("auto", cpu)
    encoded = tokens.encode(TEXTS, tokenizer, MAX_LENGTH)
    assert len(set(encoded.lengths.tolist())) > 3  # lengths differ, so sorted batches reorder rows
    batched = ev.predict_logits(model, encoded, cpu, 3, precision, tokenizer.pad_token_id)
    assert batched.shape == (len(TEXTS), 2) and batched.dtype == np.float32
    for i, text in enumerate(TEXTS):
        alone = tokens.encode([text], tokenizer, MAX_LENGTH)
        single = ev.predict_logits(model, alone, cpu, 1, precision, tokenizer.pad_token_id)
        np.testing.assert_allclose(batched[i], single[0], atol=1e-5, rtol=1e-4)
    # rows are not all the same (the check above would be vacuous otherwise)
    assert np.ptp(batched[:, 1] - batched[:, 0]) > 1e-4
    assert not model.training


def test_predictions_table_from_model(tiny):
    model, tokenizer = tiny
    frame = pd.DataFrame({"id": [f"x{i}" for i in range(len(TEXTS))], "text": TEXTS, "label": [1, 0, 0, 0, 1, 0, 1]})
    config = Config(data=DataConfig(max_length=MAX_LENGTH), train=TrainConfig(eval_batch_size=4))
    table = ev.predict_frame(model, tokenizer, frame, config, torch.device("cpu"))
    assert list(table.columns) == [
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
    assert table["id"].tolist() == frame["id"].tolist()
    assert table["text"].tolist() == TEXTS
    assert table["label"].tolist() == frame["label"].tolist()
    prob = table["probability"].to_numpy()
    assert ((prob >= 0) & (prob <= 1)).all()
    np.testing.assert_allclose(table["confidence"], np.maximum(prob, 1 - prob), rtol=1e-6)
    assert (table["prediction"] == (prob > 0.5).astype(int)).all()
    p_true = np.where(table["label"] == 1, prob, 1 - prob)
    np.testing.assert_allclose(table["loss"], -np.log(p_true), rtol=1e-5)
    full = tokens.encode(TEXTS, tokenizer, 10_000).lengths
    assert table["n_tokens"].tolist() == full.tolist()
    assert table["truncated"].tolist() == (full > MAX_LENGTH).tolist()
    assert table["truncated"].any() and not table["truncated"].all()

    # same numbers, in the same order, as predicting one text at a time
    for i, text in enumerate(TEXTS):
        single = ev.predict_frame(model, tokenizer, frame.iloc[[i]].reset_index(drop=True), config, torch.device("cpu"))
        assert single["probability"].iloc[0] == pytest.approx(prob[i], abs=1e-5)


def test_predictions_table_from_logits():
    frame = pd.DataFrame({"id": [1, 2, 3], "text": ["a", "b", "c"], "label": [0, 1, 1]})
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.9, 0.1]])
    logits = np.log(probs).astype(np.float32) + 3.0  # any shift: softmax(logits) = probs
    encoded = tokens.Encoded(input_ids=[[1, 2], [1, 2, 3], [1]], full_lengths=np.array([5, 12, 8]))
    table = ev.predictions_table(frame, logits, encoded, max_length=8)
    assert table["id"].tolist() == ["1", "2", "3"]
    assert table["prediction"].tolist() == [0, 1, 0]
    assert table["probability"].tolist() == pytest.approx([0.2, 0.7, 0.1])
    assert table["confidence"].tolist() == pytest.approx([0.8, 0.7, 0.9])
    assert table["loss"].tolist() == pytest.approx([-math.log(0.8), -math.log(0.7), -math.log(0.1)])
    assert table["n_tokens"].tolist() == [5, 12, 8]
    assert table["truncated"].tolist() == [False, True, False]  # 8 tokens fit max_length 8
    assert table["logit"].tolist() == pytest.approx(
        [math.log(0.2 / 0.8), math.log(0.7 / 0.3), math.log(0.1 / 0.9)], rel=1e-6
    )
    assert table["probability_uncalibrated"].tolist() == table["probability"].tolist()  # T = 1

    # temperature 2: probabilities from logit / 2, the same predictions; loss stays the network's
    warm = ev.predictions_table(frame, logits, encoded, max_length=8, temperature=2.0)
    expected = 1 / (1 + np.exp(-table["logit"].to_numpy() / 2))
    np.testing.assert_allclose(warm["probability"], expected, rtol=1e-12)
    np.testing.assert_allclose(warm["confidence"], np.maximum(expected, 1 - expected), rtol=1e-12)
    assert warm["prediction"].tolist() == table["prediction"].tolist()
    for column in ("logit", "probability_uncalibrated", "loss", "n_tokens", "truncated"):
        assert warm[column].tolist() == table[column].tolist()
    assert ev.apply_temperature(table, 2.0).equals(warm) and ev.apply_temperature(warm, 1.0).equals(table)


def test_predict_probabilities_cleans_and_matches_logits(tiny):
    model, tokenizer = tiny
    probs, encoded = ev.predict_probabilities(
        model, tokenizer, ["Dull<br />and boring", "Dull and boring"], MAX_LENGTH, "head"
    )
    assert encoded.input_ids[0] == encoded.input_ids[1]
    assert probs[0] == pytest.approx(probs[1], abs=1e-6)
    logits = ev.predict_logits(
        model, encoded, torch.device("cpu"), 8, pick_precision("fp32", torch.device("cpu")), tokenizer.pad_token_id
    )
    np.testing.assert_allclose(probs, ev.softmax(logits)[:, 1], rtol=1e-6)


def test_softmax_rows_sum_to_one_and_stable():
    logits = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, math.log(3.0)]])
    probs = ev.softmax(logits)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    np.testing.assert_allclose(probs[0], [0.5, 0.5])
    np.testing.assert_allclose(probs[1], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(probs[2], [0.25, 0.75])


# ----------------------------------------------------------------------------- the stage, in memory


def test_evaluate_stage_against_the_in_memory_tracker(trained_in_memory, reviews_csv):
    """The model a training logged, evaluated on the same data and config: the same test table
    and numbers as the training's own test evaluation, and everything evaluate records."""
    from sentiment.tracking import InMemoryTracker

    tracker = InMemoryTracker("evaluate-run")
    package = str(trained_in_memory["package"])
    metrics = ev.run_evaluate(ev.plan_evaluate(package, str(reviews_csv), "test"), tracker)
    trained = trained_in_memory["tracker"]
    assert metrics == {k: trained.metric(k)[0] for k in metrics}  # one prediction path, one table
    assert trained.artifacts["predictions/test.parquet"].equals(tracker.artifacts["predictions/test.parquet"])
    assert tracker.tags["sentiment.kind"] == "evaluate" and tracker.tags["sentiment.model_uri"] == package
    assert tracker.tags["sentiment.split"] == "test" and tracker.tags["sentiment.precision"] == "fp32"
    assert [split for split, _, _ in tracker.datasets] == ["test"] and tracker.params["data.source"] == str(reviews_csv)
    assert {"metrics/test.json", "figures/test_confusion_matrix.png", "figures/test_roc_curve.png"} <= set(
        tracker.artifacts
    )
    assert tracker.linked_models == []  # a local folder is no LoggedModel
