"""Failure analysis from the predictions table alone: errors, false positives and negatives
(the confusion matrix's counts, by construction), error rates by length and by cue (negation,
contrast, truncation), calibration of the confidence column (the served model's, temperature
applied: the bins and value of `test/ece_calibrated`), the most confident errors, and a
generated summary.

    sentiment analyze --model-uri models:/imdb-sentiment@champion --predictions-run RUN_ID --only failures
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from sentiment import data as data_mod
from sentiment import evaluate, plots
from sentiment.analyze.render import excerpt, pct
from sentiment.errors import UserError

PREDICTION_COLUMNS = ("id", "text", "label", "prediction", "probability", "confidence", "n_tokens", "truncated")
TOP_ERRORS = 20
NEGATION = re.compile(
    r"\b(?:not|no|never|nothing|nobody|none|neither|nor|nowhere|cannot|without|hardly|barely)\b|n't\b", re.IGNORECASE
)
CONTRAST = re.compile(
    r"\b(?:but|however|although|though|yet|despite|nevertheless|nonetheless|whereas|instead)\b|\bon the other hand\b",
    re.IGNORECASE,
)


def _rate(errors: int, reviews: int) -> float | None:
    return errors / reviews if reviews else None


def _group_row(factor: str, group: str, errors: np.ndarray) -> dict:
    return {
        "factor": factor,
        "group": group,
        "reviews": int(len(errors)),
        "errors": int(errors.sum()),
        "error_rate": _rate(int(errors.sum()), len(errors)),
    }


def length_buckets(n_tokens: np.ndarray, errors: np.ndarray, buckets: int = 4) -> list[dict]:
    """Error rate per equal-count bucket of review length (tokens before truncation)."""
    codes, edges = pd.qcut(
        n_tokens, q=min(buckets, len(np.unique(n_tokens))), labels=False, retbins=True, duplicates="drop"
    )
    rows = []
    for b in range(len(edges) - 1):
        mask = codes == b
        low, high = int(n_tokens[mask].min()), int(n_tokens[mask].max())
        rows.append({**_group_row("length", f"{low}-{high} tokens", errors[mask]), "low": low, "high": high})
    return rows


def failure_stats(table: pd.DataFrame) -> dict:
    """Every number of the failure analysis, from the predictions table alone.

    Returns:
        A JSON-ready dict: counts (errors, false positives/negatives: the confusion matrix's),
        error rates by length bucket and by cue (negation, contrast, truncation), reliability
        bins and ECE.
    """
    check_table(table)
    y, p = table["label"].to_numpy().astype(int), table["prediction"].to_numpy().astype(int)
    errors = y != p
    confidence = table["confidence"].to_numpy().astype(float)
    texts = table["text"].astype(str)
    counts = evaluate.confusion(table)
    negation, contrast = texts.str.contains(NEGATION).to_numpy(), texts.str.contains(CONTRAST).to_numpy()
    truncated = table["truncated"].to_numpy().astype(bool)
    words = texts.str.split().str.len().to_numpy()
    cues = []
    for factor, mask, yes, no in (
        ("negation", negation, "with negation", "without negation"),
        ("contrast", contrast, "with contrast marker", "without contrast marker"),
        ("truncation", truncated, "truncated", "not truncated"),
    ):
        cues += [_group_row(factor, yes, errors[mask]), _group_row(factor, no, errors[~mask])]
    return {
        "reviews": int(len(table)),
        "errors": int(errors.sum()),
        "false_positives": int(counts[0, 1]),
        "false_negatives": int(counts[1, 0]),
        "true_negatives": int(counts[0, 0]),
        "true_positives": int(counts[1, 1]),
        "error_rate": float(errors.mean()),
        "accuracy": float(1 - errors.mean()),
        "confusion_matrix": counts.tolist(),
        "ece": evaluate.expected_calibration_error(confidence, (~errors).astype(float)),
        "errors_mean_confidence": float(confidence[errors].mean()) if errors.any() else None,
        "correct_mean_confidence": float(confidence[~errors].mean()) if (~errors).any() else None,
        **reference_findings(words, negation, errors),
        "by_length": length_buckets(table["n_tokens"].to_numpy(), errors),
        "by_cue": cues,
        "reliability": evaluate.reliability(confidence, (~errors).astype(float)),  # the bins of test/ece
    }


def reference_findings(words: np.ndarray, negation: np.ndarray, errors: np.ndarray, resamples: int = 2000) -> dict:
    """The reference report's two failure findings as numbers: words per misclassified and per
    correct review, and the share of each with a negation word; each difference (errors minus
    correct) with a 95% percentile bootstrap interval over the reviews (errors and correct
    resampled apart, seed 0)."""
    if not errors.any() or errors.all():
        return {}
    rng = np.random.default_rng(0)
    out = {}
    for name, values in (("words", words.astype(float)), ("negation_share", negation.astype(float))):
        wrong, right = values[errors], values[~errors]
        draws = [rng.choice(wrong, len(wrong)).mean() - rng.choice(right, len(right)).mean() for _ in range(resamples)]
        low, high = np.quantile(draws, [0.025, 0.975])
        prefix = "words_mean" if name == "words" else name
        out |= {
            f"{prefix}_errors": float(wrong.mean()),
            f"{prefix}_correct": float(right.mean()),
            f"{name}_difference": float(wrong.mean() - right.mean()),
            f"{name}_difference_low": float(low),
            f"{name}_difference_high": float(high),
        }
    return out


def most_confident_errors(table: pd.DataFrame, k: int = TOP_ERRORS) -> pd.DataFrame:
    """The ``k`` errors the model was surest of, with an excerpt and the cues they carry."""
    wrong = (
        table[table["label"] != table["prediction"]].sort_values("confidence", ascending=False, kind="stable").head(k)
    )
    return pd.DataFrame(
        {
            "id": wrong["id"].astype(str),
            "label": [data_mod.LABELS[int(v)] for v in wrong["label"]],
            "prediction": [data_mod.LABELS[int(v)] for v in wrong["prediction"]],
            "confidence": wrong["confidence"].astype(float),
            "n_tokens": wrong["n_tokens"].astype(int),
            "truncated": wrong["truncated"].astype(bool),
            "negation": wrong["text"].str.contains(NEGATION),
            "contrast": wrong["text"].str.contains(CONTRAST),
            "excerpt": [excerpt(t) for t in wrong["text"]],
        }
    ).reset_index(drop=True)


def failure_summary(stats: dict, split: str, top: pd.DataFrame) -> str:
    """Findings in markdown; every number is read from ``stats`` or ``top``."""
    s = stats
    lines = [
        f"# Failure analysis ({split} split)",
        "",
        f"- {s['errors']:,} errors in {s['reviews']:,} reviews (error rate {pct(s['error_rate'])}, accuracy "
        f"{pct(s['accuracy'])}): {s['false_positives']:,} false positives (negative reviews predicted positive) and "
        f"{s['false_negatives']:,} false negatives; the same counts as the confusion matrix, from the same predictions "
        "table.",
        f"- Calibration: ECE {s['ece']:.4f}; mean confidence {pct(s['correct_mean_confidence'])} when right, "
        f"{pct(s['errors_mean_confidence'])} when wrong.",
        "- Error rate by length (equal-count buckets): "
        + "; ".join(f"{r['group']}: {pct(r['error_rate'])} of {r['reviews']:,}" for r in s["by_length"])
        + ".",
    ]
    for factor in ("negation", "contrast", "truncation"):
        yes, no = (r for r in s["by_cue"] if r["factor"] == factor)
        lines.append(
            f"- {factor.capitalize()}: {yes['group']} {pct(yes['error_rate'])} errors ({yes['errors']:,} of "
            f"{yes['reviews']:,}); {no['group']} {pct(no['error_rate'])} ({no['errors']:,} of {no['reviews']:,})."
        )
    if len(top):
        first = top.iloc[0]
        lines.append(
            f"- Most confident error: {first['id']} (true {first['label']}, predicted {first['prediction']} with "
            f'confidence {first["confidence"]:.3f}): "{excerpt(first["excerpt"], 160)}"'
        )
    lines += [
        "",
        "Words counted as negation: not, no, never, nothing, nobody, none, neither, nor, nowhere, cannot, without, "
        "hardly, barely, n't. Contrast markers: but, however, although, though, yet, despite, nevertheless, "
        "nonetheless, whereas, instead, on the other hand.",
    ]
    return "\n".join(lines) + "\n"


def failure_metrics(stats: dict) -> dict[str, float]:
    keys = ("reviews", "errors", "false_positives", "false_negatives", "error_rate", "ece")
    for name in ("words", "negation_share"):
        keys += tuple(f"{name}_difference{end}" for end in ("", "_low", "_high"))
    keys += ("words_mean_errors", "words_mean_correct", "negation_share_errors", "negation_share_correct")
    out = {f"failures/{k}": float(stats[k]) for k in keys if stats.get(k) is not None}
    for row in stats["by_cue"]:
        if row["error_rate"] is not None:
            out[f"failures/error_rate_{row['group'].replace(' ', '_')}"] = row["error_rate"]
    return out


def log_failures(table: pd.DataFrame, split: str, tracker) -> dict:
    stats = failure_stats(table)
    top = most_confident_errors(table)
    tracker.log_metrics(failure_metrics(stats), step=0)
    tracker.log_dict({"split": split, **stats}, "failures/stats.json")
    tracker.log_table(
        pd.DataFrame(stats["by_length"] + stats["by_cue"]).drop(columns=["low", "high"], errors="ignore"),
        "failures/error_rates",
    )
    if len(top):
        tracker.log_table(top, "failures/most_confident_errors")
    counts = np.asarray(stats["confusion_matrix"])
    tracker.log_figure(
        plots.confusion_matrix(counts, title=f"Confusion matrix ({split}, n={stats['reviews']:,})"),
        "failures/confusion_matrix.png",
    )
    tracker.log_figure(
        plots.error_rates(stats["by_length"], stats["by_cue"], stats["error_rate"], split), "failures/error_rates.png"
    )
    correct = (table["label"] == table["prediction"]).to_numpy()
    tracker.log_figure(
        plots.confidence_calibration(
            table["confidence"].to_numpy(), correct, stats["reliability"], stats["ece"], split
        ),
        "failures/confidence.png",
    )
    tracker.log_text(failure_summary(stats, split, top), "failures/summary.md")
    return stats


def check_table(table: pd.DataFrame) -> None:
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(
            f"the predictions table lacks columns {', '.join(missing)}; use a table logged by sentiment evaluate or "
            "train"
        )
    if table.empty:
        raise UserError("the predictions table has no rows")
