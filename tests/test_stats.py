"""sentiment.stats: McNemar, macro F1, Holm and the paired bootstrap, against hand-checked values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from sentiment.stats import Paired, compare, holm, macro_f1, mcnemar


def test_mcnemar_is_the_exact_binomial_test():
    variant = np.array([True] * 10 + [False] * 2 + [True] * 50)
    reference = np.array([False] * 10 + [True] * 2 + [True] * 50)
    b, c, p = mcnemar(variant, reference)
    assert (b, c) == (10, 2)
    assert p == pytest.approx(2 * sum(math.comb(12, k) for k in range(3)) / 2**12)
    assert mcnemar(reference, reference)[2] == 1.0


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))
    assert macro_f1(np.array([1, 1]), np.array([1, 1])) == pytest.approx(0.5)  # zero_division=0 like sklearn


def test_holm_adjusts_and_keeps_nan():
    assert holm([0.01, float("nan"), 0.04, 0.03]) == pytest.approx([0.03, float("nan"), 0.06, 0.06], nan_ok=True)


def test_compare_identical_and_better_variants():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    reference = np.where(rng.random(400) < 0.7, labels, 1 - labels)
    same = compare([Paired(labels, reference, reference)] * 2)
    assert same["delta_test_accuracy"] == 0 and same["p_value"] == 1.0
    assert same["delta_test_accuracy_low"] == same["delta_test_accuracy_high"] == 0
    better = np.where(rng.random(400) < 0.95, labels, 1 - labels)
    stats = compare([Paired(labels, better, reference)])
    assert stats["delta_test_accuracy"] == pytest.approx(np.mean(better == labels) - np.mean(reference == labels))
    assert 0 < stats["delta_test_accuracy_low"] < stats["delta_test_accuracy"] < stats["delta_test_accuracy_high"]
    assert stats["p_value"] < 1e-6 and stats["paired_reviews"] == 400


def test_paired_join_uses_the_same_reviews():
    variant = pd.DataFrame({"id": ["a", "b", "c"], "label": [1, 0, 1], "prediction": [1, 1, 1]})
    reference = pd.DataFrame({"id": ["c", "a", "z"], "label": [1, 1, 0], "prediction": [0, 1, 0]})
    pair = Paired.join(variant, reference)
    assert list(pair.labels) == [1, 1] and list(pair.variant) == [1, 1] and list(pair.reference) == [1, 0]
