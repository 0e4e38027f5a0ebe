"""Statistics of paired comparisons, pure functions: McNemar's exact test, macro F1, a two-level
bootstrap of the accuracy and macro-F1 deltas (seeds, then reviews), a Student-t interval over
the per-seed deltas, the verdict on a published change, Holm's adjustment.

    python -c "from sentiment.stats import holm; print(holm([0.01, 0.04, 0.03]))"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

BOOTSTRAP_RESAMPLES = 1000
LEVEL = 0.95


def mcnemar(variant_correct: np.ndarray, reference_correct: np.ndarray) -> tuple[int, int, float]:
    """Exact (binomial) McNemar test on paired outcomes of the same reviews.

    Returns:
        (b, c, p): b = reviews only the variant gets right, c = only the reference; two-sided p.
    """
    from scipy.stats import binomtest  # scipy comes with scikit-learn

    b = int(np.sum(variant_correct & ~reference_correct))
    c = int(np.sum(~variant_correct & reference_correct))
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return b, c, p


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Macro F1 of two classes along the last axis (works on (resamples, reviews) arrays)."""
    scores = []
    for cls in (0, 1):
        tp = np.sum((predictions == cls) & (labels == cls), axis=-1)
        fp = np.sum((predictions == cls) & (labels != cls), axis=-1)
        fn = np.sum((predictions != cls) & (labels == cls), axis=-1)
        denominator = 2 * tp + fp + fn
        scores.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
    return np.mean(scores, axis=0)


@dataclass(frozen=True)
class Paired:
    """One seed's variant and reference predictions on the same test reviews."""

    labels: np.ndarray
    variant: np.ndarray
    reference: np.ndarray

    @classmethod
    def join(cls, variant: pd.DataFrame, reference: pd.DataFrame) -> "Paired":
        both = variant[["id", "label", "prediction"]].merge(
            reference[["id", "prediction"]], on="id", suffixes=("", "_ref")
        )
        return cls(both["label"].to_numpy(), both["prediction"].to_numpy(), both["prediction_ref"].to_numpy())

    @property
    def accuracy_delta(self) -> float:
        """Variant accuracy minus reference accuracy on these reviews."""
        return float(np.mean(self.variant == self.labels) - np.mean(self.reference == self.labels))


def compare(pairs: list[Paired], seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """Delta (variant - reference) of accuracy and macro F1 with 95% intervals, and McNemar.

    The interval is a two-level percentile bootstrap: seeds are resampled (when there are
    several), then reviews within each seed, paired, so it reflects both seed-to-seed and
    test-set variation. With one seed it covers the test set only. McNemar pools the discordant
    reviews of all seeds.
    """
    pairs = [p for p in pairs if len(p.labels)]
    if not pairs:
        return {}
    rng = np.random.default_rng(seed)
    draws = np.stack([_review_bootstrap(p, rng, resamples) for p in pairs])  # (seeds, 2, resamples)
    if len(pairs) > 1:
        pick = rng.integers(0, len(pairs), size=(resamples, len(pairs)))
        draws = draws[pick, :, np.arange(resamples)[:, None]].mean(axis=1).T  # (2, resamples)
    else:
        draws = draws[0]
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(draws, tail, axis=1), np.quantile(draws, 1 - tail, axis=1)
    accuracy = np.mean([p.accuracy_delta for p in pairs])
    f1 = np.mean([macro_f1(p.labels, p.variant) - macro_f1(p.labels, p.reference) for p in pairs])
    b, c, p_value = mcnemar(
        np.concatenate([p.variant == p.labels for p in pairs]), np.concatenate([p.reference == p.labels for p in pairs])
    )
    return {
        "delta_test_accuracy": float(accuracy),
        "delta_test_accuracy_low": float(low[0]),
        "delta_test_accuracy_high": float(high[0]),
        "delta_test_f1_macro": float(f1),
        "delta_test_f1_macro_low": float(low[1]),
        "delta_test_f1_macro_high": float(high[1]),
        "mcnemar_variant_only": b,
        "mcnemar_reference_only": c,
        "p_value": p_value,
        "paired_reviews": int(sum(len(p.labels) for p in pairs)),
    }


def _review_bootstrap(pair: Paired, rng: np.random.Generator, resamples: int, chunk: int = 100) -> np.ndarray:
    """(2, resamples): accuracy and macro-F1 differences over reviews resampled with replacement."""
    n = len(pair.labels)
    out = np.empty((2, resamples))
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)  # chunked: (chunk, n) at a time
        y, v, r = pair.labels[idx], pair.variant[idx], pair.reference[idx]
        out[0, start:stop] = (v == y).mean(axis=1) - (r == y).mean(axis=1)
        out[1, start:stop] = macro_f1(y, v) - macro_f1(y, r)
    return out


def seed_interval(deltas: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of the mean of per-seed paired deltas (variant minus reference, each
    seed's pair scored on the same test reviews).

    The seeds are the units, with n - 1 degrees of freedom: with 3 seeds the half-width is
    t(0.975, 2) = 4.30 standard errors, as wide as 3 seeds warrant. The two-level bootstrap cannot
    be wider than the range of the seed deltas it resamples, so it understates seed-to-seed
    variation when seeds are few; this interval does not.

    Args:
        deltas: one paired accuracy delta per seed (fractions, not points).
    Returns:
        (low, high); both NaN with fewer than two seeds (no seed-to-seed spread to estimate).
    """
    from scipy.stats import t  # scipy comes with scikit-learn

    values = np.asarray(deltas, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    mean = float(values.mean())
    return mean - half, mean + half


BOOTSTRAP, SEEDS = "bootstrap", "seeds"  # which interval a verdict rests on


def wider_interval(bootstrap: tuple[float, float], seeds: tuple[float, float]) -> tuple[float, float, str]:
    """The wider (high - low) of the bootstrap and the seed-level interval, and which it is.

    Returns:
        (low, high, BOOTSTRAP or SEEDS); the bootstrap when the seed interval is NaN (one seed)
        or not wider.
    """
    if not all(math.isfinite(x) for x in seeds) or seeds[1] - seeds[0] <= bootstrap[1] - bootstrap[0]:
        return bootstrap[0], bootstrap[1], BOOTSTRAP
    return seeds[0], seeds[1], SEEDS


CONFIRMED, NOT_CONFIRMED, CONTRADICTED = "confirmed", "not confirmed", "contradicted"


@dataclass(frozen=True)
class Verdict:
    """What our interval says about a published change: ``word`` is one of CONFIRMED,
    NOT_CONFIRMED, CONTRADICTED; ``reason`` says why, in words."""

    word: str
    reason: str


def verdict(published: float, low: float, high: float) -> Verdict:
    """Judge a published change (variant minus reference) by our interval [low, high] of it.

    The interval is closed: a bound equal to 0 (or to the published change) includes it. Rules,
    in this order:

    1. **confirmed**: the published change is not 0 and the interval excludes 0 on its side
       (low > 0 for a published gain, high < 0 for a loss). The reason adds the size: the
       published change inside the interval ("size included"), beyond its far end ("confirmed in
       direction, smaller than published"), or between 0 and its near end ("confirmed in
       direction, larger than published").
    2. **contradicted**: the interval excludes 0 on the other side (the change goes the opposite
       way, or there is a change where the published one is 0), or it includes 0 but excludes
       the published change (a change as large as published is ruled out).
    3. **not confirmed**: the interval includes both 0 and the published change.

    Raises:
        ValueError: a bound or the published change is not a finite number.
    """
    if not all(math.isfinite(x) for x in (published, low, high)):
        raise ValueError(f"verdict needs finite numbers, got published={published}, interval=[{low}, {high}]")
    if low > 0 or high < 0:  # the interval excludes 0
        if published != 0 and (low > 0) == (published > 0):
            if low <= published <= high:
                return Verdict(
                    CONFIRMED, "the interval excludes 0 in the published direction and includes the published size"
                )
            size = "smaller" if abs(published) > max(abs(low), abs(high)) else "larger"
            return Verdict(
                CONFIRMED,
                f"confirmed in direction, {size} than published (the published size lies outside the interval)",
            )
        if published == 0:
            return Verdict(CONTRADICTED, "the interval excludes 0, where no change was published")
        return Verdict(CONTRADICTED, "the interval excludes 0 in the opposite direction: the change goes the other way")
    if not low <= published <= high:
        return Verdict(
            CONTRADICTED, "the interval includes 0 but excludes the published change: a change that large is ruled out"
        )
    return Verdict(NOT_CONFIRMED, "the interval includes 0 (and the published change)")


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy measured on ``n`` reviews."""
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    values = np.asarray(p_values, dtype=float)
    order = [i for i in np.argsort(values) if not math.isnan(values[i])]
    adjusted = np.full(len(values), np.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * values[i]))
        adjusted[i] = running
    return adjusted.tolist()
