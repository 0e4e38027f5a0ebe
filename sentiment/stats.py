"""Statistics of paired comparisons, pure functions: McNemar's exact test, macro F1, a two-level
bootstrap of the accuracy and macro-F1 deltas (seeds, then reviews), Holm's adjustment.

    python -c "from sentiment.stats import holm; print(holm([0.01, 0.04, 0.03]))"
"""

from __future__ import annotations

import math
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
        both = variant[["id", "label", "prediction"]].merge(reference[["id", "prediction"]], on="id", suffixes=("", "_ref"))
        return cls(both["label"].to_numpy(), both["prediction"].to_numpy(), both["prediction_ref"].to_numpy())


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
    accuracy = np.mean([np.mean(p.variant == p.labels) - np.mean(p.reference == p.labels) for p in pairs])
    f1 = np.mean([macro_f1(p.labels, p.variant) - macro_f1(p.labels, p.reference) for p in pairs])
    b, c, p_value = mcnemar(
        np.concatenate([p.variant == p.labels for p in pairs]), np.concatenate([p.reference == p.labels for p in pairs])
    )
    return {
        "delta_test_accuracy": float(accuracy), "delta_test_accuracy_low": float(low[0]), "delta_test_accuracy_high": float(high[0]),
        "delta_test_f1_macro": float(f1), "delta_test_f1_macro_low": float(low[1]), "delta_test_f1_macro_high": float(high[1]),
        "mcnemar_variant_only": b, "mcnemar_reference_only": c, "p_value": p_value, "paired_reviews": int(sum(len(p.labels) for p in pairs)),
    }  # fmt: skip


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
