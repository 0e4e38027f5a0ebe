"""sentiment.stats: McNemar, macro F1, Holm, the paired bootstrap, the Student-t interval over
seeds and the verdict on a published change, against hand-checked values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from sentiment.stats import (
    BOOTSTRAP,
    CONFIRMED,
    CONTRADICTED,
    NOT_CONFIRMED,
    SEEDS,
    Paired,
    compare,
    holm,
    macro_f1,
    mcnemar,
    seed_interval,
    verdict,
    wider_interval,
)


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


def _pair(n: int, variant_right: int, reference_right: int) -> Paired:
    """n positive reviews; the variant gets the first ``variant_right`` right, the reference the first
    ``reference_right``."""
    labels = np.ones(n, dtype=int)
    return Paired(labels, (np.arange(n) < variant_right).astype(int), (np.arange(n) < reference_right).astype(int))


def test_seed_interval_is_student_t_over_the_seed_deltas():
    from scipy.stats import t

    deltas = [-0.016, -0.0084, -0.006]
    low, high = seed_interval(deltas)
    expected = t.interval(0.95, 2, loc=np.mean(deltas), scale=np.std(deltas, ddof=1) / math.sqrt(3))
    assert (low, high) == pytest.approx(expected)
    assert high - low == pytest.approx(
        2 * 4.3027 * np.std(deltas, ddof=1) / math.sqrt(3), rel=1e-4
    )  # t(0.975, 2) = 4.30
    assert all(math.isnan(x) for x in seed_interval([0.01])) and all(math.isnan(x) for x in seed_interval([]))
    assert seed_interval([0.02, 0.02, 0.02]) == pytest.approx((0.02, 0.02))


def test_three_seeds_bootstrap_is_narrower_than_the_seed_interval():
    # Seed deltas -1, +0.5 and +2 points on 2,000 reviews: the two-level bootstrap cannot leave
    # the range of the three deltas (and review noise barely widens it); Student-t does.
    pairs = [_pair(2000, 1600 + d, 1600) for d in (-20, 10, 40)]
    assert [p.accuracy_delta for p in pairs] == pytest.approx([-0.01, 0.005, 0.02])
    stats = compare(pairs)
    seeds = seed_interval([p.accuracy_delta for p in pairs])
    assert stats["delta_test_accuracy_high"] - stats["delta_test_accuracy_low"] < seeds[1] - seeds[0]
    assert stats["delta_test_accuracy_low"] > -0.02 and stats["delta_test_accuracy_high"] < 0.035
    low, high, which = wider_interval((stats["delta_test_accuracy_low"], stats["delta_test_accuracy_high"]), seeds)
    assert (low, high, which) == (seeds[0], seeds[1], SEEDS)


def test_wider_interval_falls_back_to_the_bootstrap():
    assert wider_interval((-0.01, 0.03), (float("nan"), float("nan"))) == (-0.01, 0.03, BOOTSTRAP)  # one seed
    assert wider_interval((-0.01, 0.03), (0.0, 0.02)) == (-0.01, 0.03, BOOTSTRAP)  # seeds agree closely
    assert wider_interval((-0.01, 0.03), (-0.05, 0.05)) == (-0.05, 0.05, SEEDS)


@pytest.mark.parametrize(
    ("published", "low", "high", "word", "reason"),
    [
        (-0.02, -0.03, -0.01, CONFIRMED, "includes the published size"),
        (-0.05, -0.03, -0.01, CONFIRMED, "confirmed in direction, smaller than published"),
        (-0.005, -0.03, -0.01, CONFIRMED, "confirmed in direction, larger than published"),
        (0.01, 0.002, 0.02, CONFIRMED, "includes the published size"),
        (0.03, 0.002, 0.02, CONFIRMED, "smaller than published"),
        (-0.02, 0.005, 0.02, CONTRADICTED, "opposite direction"),
        (0.02, -0.03, -0.001, CONTRADICTED, "opposite direction"),
        (0.0, 0.005, 0.02, CONTRADICTED, "no change was published"),
        (-0.0145, -0.006, 0.006, CONTRADICTED, "includes 0 but excludes the published change"),
        (0.003, -0.007, 0.004, NOT_CONFIRMED, "includes 0"),
        (
            -0.01,
            -0.01,
            0.0,
            NOT_CONFIRMED,
            "includes 0",
        ),  # closed: bounds at 0 and at the published change include them
        (0.0, -0.01, 0.01, NOT_CONFIRMED, "includes 0"),
    ],
)
def test_verdict_rules(published, low, high, word, reason):
    judged = verdict(published, low, high)
    assert judged.word == word and reason in judged.reason


def test_verdict_needs_numbers():
    with pytest.raises(ValueError, match="finite"):
        verdict(-0.02, float("nan"), float("nan"))
