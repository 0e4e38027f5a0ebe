"""analyze.failures: statistics on a hand-made table (tests/analyze/conftest.py) that agree
with evaluate's confusion matrix and ECE by construction."""

from __future__ import annotations

import pytest

from sentiment import evaluate
from sentiment.analyze import failures


def by_group(stats: dict) -> dict[str, dict]:
    return {row["group"]: row for row in stats["by_cue"]}


def test_failure_counts_match_the_confusion_matrix_and_cues(table):
    stats = failures.failure_stats(table)
    counts = evaluate.confusion(table)
    assert (stats["errors"], stats["false_positives"], stats["false_negatives"]) == (3, 1, 2)
    assert stats["false_positives"] == counts[0, 1] and stats["false_negatives"] == counts[1, 0]
    assert stats["confusion_matrix"] == counts.tolist()
    cues = by_group(stats)
    assert (cues["with negation"]["reviews"], cues["with negation"]["errors"]) == (2, 2)
    assert cues["without negation"]["error_rate"] == pytest.approx(1 / 8)
    assert (cues["with contrast marker"]["reviews"], cues["with contrast marker"]["errors"]) == (2, 1)
    assert (cues["truncated"]["reviews"], cues["truncated"]["errors"]) == (2, 1)
    assert cues["not truncated"]["error_rate"] == pytest.approx(2 / 8)
    # 2 of the 3 errors carry a negation word, none of the 7 correct reviews does
    assert stats["negation_share_errors"] == pytest.approx(2 / 3) and stats["negation_share_correct"] == 0
    words = table["text"].str.split().str.len()
    wrong = table["label"] != table["prediction"]
    assert stats["words_mean_errors"] == pytest.approx(words[wrong].mean())
    assert stats["words_mean_correct"] == pytest.approx(words[~wrong].mean())
    assert stats["words_difference"] == pytest.approx(words[wrong].mean() - words[~wrong].mean())
    assert stats["words_difference_low"] <= stats["words_difference"] <= stats["words_difference_high"]
    assert stats["negation_share_difference_low"] <= 2 / 3 <= stats["negation_share_difference_high"]
    buckets = stats["by_length"]
    assert len(buckets) == 4 and sum(b["reviews"] for b in buckets) == 10 and sum(b["errors"] for b in buckets) == 3
    assert [b["low"] for b in buckets] == sorted(b["low"] for b in buckets)


def test_reliability_bins_give_the_evaluate_ece(table):
    stats = failures.failure_stats(table)
    assert stats["ece"] == pytest.approx(evaluate.compute_metrics(table, "test")["test/ece_calibrated"])
    rows = [r for r in stats["reliability"] if r["reviews"]]
    assert sum(r["reviews"] for r in rows) == 10
    ece = sum(abs(r["accuracy"] - r["confidence"]) * r["reviews"] / 10 for r in rows)
    assert ece == pytest.approx(stats["ece"])


def test_summary_and_tables_come_from_the_stats(table):
    stats = failures.failure_stats(table)
    top = failures.most_confident_errors(table)
    assert list(top["id"]) == ["r2", "r4", "r7"]  # errors, surest first
    assert list(top["negation"]) == [True, True, False] and list(top["contrast"]) == [False, False, True]
    text = failures.failure_summary(stats, "test", top)
    assert "3 errors in 10 reviews (error rate 30.0%, accuracy 70.0%)" in text
    assert "1 false positives" in text and "2 false negatives" in text
    assert "- Negation: with negation 100.0% errors (2 of 2); without negation 12.5% (1 of 8)." in text
    assert "- Truncation: truncated 50.0% errors (1 of 2); not truncated 25.0% (2 of 8)." in text
    assert f"ECE {stats['ece']:.4f}" in text
    metrics = failures.failure_metrics(stats)
    assert metrics["failures/false_negatives"] == 2 and metrics["failures/error_rate_with_negation"] == 1.0
