"""Predict, then compute every metric and figure from ONE predictions table.

The one prediction path: `predict_table` turns a model and encoded reviews into the predictions
table, for training's validation and test, `evaluate`, `analyze` alike (a classical baseline's
comes from `baseline_table`, `predict_split` picks by family; both build it in `margin_table`).
Every metric is computed from it. One row per review:

- id, text, label (0/1), n_tokens (before truncation), truncated;
- the answer of the model as served, with its temperature T applied (`model.temperature_of`;
  1 for a model without one): prediction, probability (of positive), confidence (of the
  predicted class) -- what the served pyfunc returns as label, probability and score;
- the network before temperature scaling: logit (z_positive - z_negative), probability_uncalibrated
  (sigmoid(logit)) and loss (its cross-entropy: what training minimises).

Metrics without a suffix describe the network before temperature scaling (`test/ece`,
`test/brier`, `test/loss`; `val/loss` every epoch), `*_calibrated` the served model
(`test/ece_calibrated`, `test/brier_calibrated`, `test/loss_calibrated`). T > 0 never changes
the prediction, so accuracy, F1 and ROC AUC are the same for both.

    sentiment evaluate --model-uri models:/imdb-sentiment@champion --data sample --split test
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.special import expit, log_expit
from sklearn import metrics as skm

from sentiment import baselines, combined, plots, tokens
from sentiment import data as data_mod
from sentiment import device as device_mod
from sentiment import model as model_mod
from sentiment.config import Config, apply_overrides, from_yaml, validate
from sentiment.device import Runtime
from sentiment.inference import logit_margin, predict_logits, predict_probabilities, softmax  # noqa: F401 (re-exported)
from sentiment.tracking import keys

# ----------------------------------------------------------------------------- predicting


def predict_table(
    model, reviews: tokens.Reviews, runtime: Runtime, batch_size: int, temperature: float | None = None
) -> pd.DataFrame:
    """The predictions table of ``reviews`` (in their order), on ``runtime``'s device and precision.

    ``temperature`` divides the logits (default: the model's own, `model.temperature_of`).
    Under torchrun every rank predicts its share (rank::world) and receives everyone's logits,
    so each rank gets the same table with every review exactly once.
    """
    logits = _sharded_logits(model, reviews, runtime, batch_size)
    temperature = model_mod.temperature_of(model) if temperature is None else temperature
    return predictions_table(reviews.frame, logits, reviews.encoded, reviews.max_length, temperature)


def _sharded_logits(model, reviews: tokens.Reviews, runtime: Runtime, batch_size: int) -> np.ndarray:
    """Logits (N, 2) in input order; each rank predicts rows rank::world, then all gather."""
    encoded, dist = reviews.encoded, runtime.dist
    if not dist.enabled:
        return predict_logits(model, encoded, runtime.device, batch_size, runtime.precision, reviews.pad_id)
    index = np.arange(len(encoded.input_ids))[dist.rank :: dist.world_size]
    shard = tokens.Encoded([encoded.input_ids[i] for i in index], encoded.full_lengths[index])
    logits = predict_logits(model, shard, runtime.device, batch_size, runtime.precision, reviews.pad_id)
    out = np.empty((len(encoded.input_ids), 2), dtype=np.float32)
    for rank_index, rank_logits in dist.gather((index, logits)):
        out[rank_index] = rank_logits
    return out


def predictions_table(
    frame: pd.DataFrame, logits: np.ndarray, encoded: tokens.Encoded, max_length: int, temperature: float = 1.0
) -> pd.DataFrame:
    """The table's columns from a split's rows, the model's logits (N, 2), its encoding and the
    temperature the served model applies."""
    lengths = encoded.full_lengths
    return margin_table(frame, logit_margin(logits), lengths, lengths > max_length, temperature)


def margin_table(
    frame: pd.DataFrame, logit: np.ndarray, n_tokens: np.ndarray, truncated: np.ndarray, temperature: float = 1.0
) -> pd.DataFrame:
    """The predictions table of any model family: a split's rows, the logit before temperature
    scaling (N,), the reviews' lengths in the model's tokens, whether it cut them, and T."""
    labels = frame["label"].to_numpy().astype(int)
    table = pd.DataFrame(
        {
            "id": frame["id"].astype(str).to_numpy(),
            "text": frame["text"].to_numpy(),
            "label": labels,
            "prediction": np.zeros(len(labels), dtype=int),  # (set by apply_temperature)
            "probability": np.zeros(len(labels)),
            "confidence": np.zeros(len(labels)),
            "loss": -log_expit(np.where(labels == 1, logit, -logit)),  # cross-entropy before T
            "n_tokens": np.asarray(n_tokens),
            "truncated": np.asarray(truncated, dtype=bool),
            "logit": logit,
            "probability_uncalibrated": expit(logit),
        }
    )
    return apply_temperature(table, temperature)


def baseline_table(baseline, frame: pd.DataFrame, temperature: float | None = None) -> pd.DataFrame:
    """The predictions table of a model that reads texts itself (a classical baseline,
    `baselines.Baseline`, or a combined model, `combined.Combined`) for a split's rows (its own
    temperature unless ``temperature``): the columns of `predict_table`, n_tokens in the model's
    own tokens (TF-IDF: words, never truncated; a combined model: its first member's)."""
    scores = baseline.scores(frame["text"].tolist())
    temperature = baseline.temperature if temperature is None else temperature
    return margin_table(frame, scores.logit, scores.n_tokens, scores.truncated, temperature)


def predict_split(
    loaded: model_mod.LoadedPackage, frame: pd.DataFrame, config: Config, runtime: Runtime
) -> pd.DataFrame:
    """The predictions table of a split's rows by a loaded model of any family (`combined.load_package`),
    with its own temperature; an encoder reads them at ``config``'s max length and truncation."""
    if reads_texts(loaded.model):
        return baseline_table(loaded.model, frame)
    reviews = tokens.encode_reviews(frame, loaded.tokenizer, config.data.max_length, config.data.truncation)
    return predict_table(loaded.model.to(runtime.device), reviews, runtime, config.train.eval_batch_size)


def reads_texts(model) -> bool:
    """A classical baseline or a combined model: it tokenizes (or not) and predicts texts itself."""
    return isinstance(model, (baselines.Baseline, combined.Combined))


def apply_temperature(table: pd.DataFrame, temperature: float) -> pd.DataFrame:
    """The table as the model with ``temperature`` answers: prediction, probability and confidence
    recomputed from the logit column (logit, probability_uncalibrated and loss stay)."""
    probability = expit(table["logit"].to_numpy() / temperature)
    confidence = np.maximum(probability, 1 - probability)
    return table.assign(prediction=(probability > 0.5).astype(int), probability=probability, confidence=confidence)


def predict_frame(model, tokenizer, frame: pd.DataFrame, config: Config, device) -> pd.DataFrame:
    """The predictions table for a split (columns id, text, label), tokenized through the cache,
    at ``config.train.precision`` on ``device``: `predict_table` for one process."""
    model.to(device)
    reviews = tokens.encode_reviews(frame, tokenizer, config.data.max_length, config.data.truncation)
    runtime = Runtime(device, device_mod.pick_precision(config.train.precision, device))
    return predict_table(model, reviews, runtime, config.train.eval_batch_size)


def load_classifier(folder: Path) -> Callable[[list[str]], np.ndarray]:
    """What the served model predicts with (see tracking.serving): the packaged model in
    ``folder`` on CPU (``SENTIMENT_DEVICE=cuda`` for a GPU), texts -> P(positive) with the
    model's temperature applied (the `probability` column of its predictions tables), each text
    cleaned and truncated as in training. A classical baseline's package: `baselines.load_classifier`;
    a combined model's: `combined.load_classifier`."""
    if baselines.is_package(folder):
        return baselines.load_classifier(folder)
    if combined.is_package(folder):
        return combined.load_classifier(folder)
    config = from_yaml((folder / "sentiment_config.yaml").read_text())
    device = torch.device(os.environ.get("SENTIMENT_DEVICE", "cpu"))
    model = model_mod.load_trained(folder).to(device).eval()
    tokenizer = model_mod.load_tokenizer(str(folder))

    def classify(texts: list[str]) -> np.ndarray:
        probability, _ = predict_probabilities(model, tokenizer, texts, config.data.max_length, config.data.truncation)
        return probability

    return classify


# ----------------------------------------------------------------------------- metrics


CALIBRATION_BINS = 15


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Equal-width confidence bins (from 0.5 when every confidence is, as for the predicted
    class): per bin its edges, reviews, mean confidence and accuracy (None when empty)."""
    edges = np.linspace(0.5 if confidence.min() >= 0.5 else 0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "reviews": int(mask.sum()),
                "confidence": float(confidence[mask].mean()) if mask.any() else None,
                "accuracy": float(correct[mask].mean()) if mask.any() else None,
            }
        )
    return rows


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE over the `reliability` bins: sum of |accuracy - confidence| * share of reviews."""
    rows = reliability(confidence, correct, bins)
    return float(
        sum(abs(r["accuracy"] - r["confidence"]) * r["reviews"] / len(confidence) for r in rows if r["reviews"])
    )


def bootstrap_accuracy_ci(
    correct: np.ndarray, seed: int, resamples: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the accuracy."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(correct), size=(resamples, len(correct)))
    means = correct[draws].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def _per_class(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of the negative and the positive class."""
    y, p = table["label"], table["prediction"]
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y, p, labels=[0, 1], zero_division=0)
    return precision, recall, f1


def validation_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Accuracy, mean loss and macro F1 of a predictions table: what validation reports every
    epoch, computed as `compute_metrics` computes them for the test split."""
    _, _, f1 = _per_class(table)
    correct = table["label"].to_numpy() == table["prediction"].to_numpy()
    return {"accuracy": float(correct.mean()), "loss": float(table["loss"].mean()), "f1_macro": float(f1.mean())}


def probability_metrics(label: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """Scores of P(positive) against 0/1 labels: ece (the `reliability` bins of the confidence
    max(p, 1 - p), a review predicted positive when p > 0.5), brier (mean squared error of p,
    sklearn's brier_score_loss) and, when both classes occur, roc_auc. `compute_metrics` and the
    served model's MLflow evaluation (`tracking.evaluator`, `evaluators="sentiment"`) both call
    this, so their numbers agree by construction."""
    y, p = np.asarray(label).astype(int), np.asarray(probability, dtype=np.float64)
    correct = ((p > 0.5).astype(int) == y).astype(float)
    out = {
        "ece": expected_calibration_error(np.maximum(p, 1 - p), correct),
        "brier": float(skm.brier_score_loss(y, p, pos_label=1)),
    }
    if len(np.unique(y)) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y, p))
    return out


def _uncalibrated(table: pd.DataFrame) -> np.ndarray:
    """P(positive) before temperature scaling (a table from before it existed: its probability)."""
    column = "probability_uncalibrated" if "probability_uncalibrated" in table.columns else "probability"
    return table[column].to_numpy()


def calibration_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Calibration before temperature scaling (ece, brier: column probability_uncalibrated) and
    after it (ece_calibrated, brier_calibrated, loss_calibrated: column probability, as served)."""
    y = table["label"].to_numpy().astype(int)
    before, after = (
        probability_metrics(y, _uncalibrated(table)),
        probability_metrics(y, table["probability"].to_numpy()),
    )
    p_true = np.where(y == 1, table["probability"].to_numpy(), 1 - table["probability"].to_numpy())
    return {
        "ece": before["ece"],
        "ece_calibrated": after["ece"],
        "brier": before["brier"],
        "brier_calibrated": after["brier"],
        "loss_calibrated": float(-np.log(np.clip(p_true, 1e-12, 1.0)).mean()),
    }


def compute_metrics(table: pd.DataFrame, prefix: str, seed: int = 0) -> dict[str, float]:
    """Every scalar metric of a predictions table, keys like ``test/accuracy``."""
    y, p, prob = table["label"].to_numpy(), table["prediction"].to_numpy(), table["probability"].to_numpy()
    correct = (y == p).astype(float)
    precision, recall, f1 = _per_class(table)
    low, high = bootstrap_accuracy_ci(correct, seed)
    out = {
        "accuracy": float(correct.mean()),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "loss": float(table["loss"].mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_negative": float(precision[0]),
        "precision_positive": float(precision[1]),
        "recall_negative": float(recall[0]),
        "recall_positive": float(recall[1]),
        "f1_negative": float(f1[0]),
        "f1_positive": float(f1[1]),
        **calibration_metrics(table),
        "examples": float(len(table)),
        "truncated_share": float(table["truncated"].mean()),
    }
    if len(np.unique(y)) == 2:
        out["roc_auc"] = probability_metrics(y, _uncalibrated(table))["roc_auc"]
        out["average_precision"] = float(skm.average_precision_score(y, prob))
    return {f"{prefix}/{k}": v for k, v in out.items()}


def calibration_figure(table: pd.DataFrame, split: str) -> Figure:
    """Confidence histogram and reliability diagram before (top) and after (bottom) temperature
    scaling, in the bins and with the ECE of `calibration_metrics`."""
    y = table["label"].to_numpy().astype(int)
    panels = []
    served = table["probability"].to_numpy()
    for when, probability in (
        ("before temperature scaling", _uncalibrated(table)),
        ("as served, temperature applied", served),
    ):
        confidence, correct = np.maximum(probability, 1 - probability), (probability > 0.5).astype(int) == y
        bins = reliability(confidence, correct.astype(float))
        ece = probability_metrics(y, probability)["ece"]
        panels.append(
            {"label": f"{split}, {when}", "confidence": confidence, "correct": correct, "reliability": bins, "ece": ece}
        )
    return plots.calibration_before_after(panels)


def confusion(table: pd.DataFrame) -> np.ndarray:
    """2x2 counts, rows = true label (negative, positive), columns = predicted."""
    return skm.confusion_matrix(table["label"], table["prediction"], labels=[0, 1])


def log_evaluation(
    table: pd.DataFrame, split: str, tracker, model_id: str | None = None, seed: int = 0
) -> dict[str, float]:
    """Log the table, its metrics (also linked to ``model_id``) and the figures (confusion matrix,
    ROC and PR curves, calibration before/after temperature scaling); return the metrics."""
    metrics = compute_metrics(table, split, seed)
    tracker.log_metrics(metrics, step=0, model_id=model_id)
    tracker.log_table(table, f"predictions/{split}")
    tracker.log_dict(
        {"split": split, "metrics": metrics, "confusion_matrix": confusion(table).tolist()}, f"metrics/{split}.json"
    )
    y, prob = table["label"].to_numpy(), table["probability"].to_numpy()
    tracker.log_figure(
        plots.confusion_matrix(confusion(table), title=f"Confusion matrix ({split}, n={len(table):,})"),
        f"figures/{split}_confusion_matrix.png",
    )
    tracker.log_figure(calibration_figure(table, split), f"figures/calibration_{split}.png")
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = skm.roc_curve(y, prob)
        tracker.log_figure(
            plots.roc_curve(fpr, tpr, metrics[f"{split}/roc_auc"], split), f"figures/{split}_roc_curve.png"
        )
        precision, recall, _ = skm.precision_recall_curve(y, prob)
        tracker.log_figure(
            plots.pr_curve(recall, precision, metrics[f"{split}/average_precision"], split),
            f"figures/{split}_pr_curve.png",
        )
    return metrics


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class EvaluatePlan:
    """What `plan_evaluate` checked and loaded before any run exists."""

    model_uri: str
    split: str
    loaded: object  # model.LoadedPackage
    config: Config
    splits: data_mod.Splits


def plan_evaluate(model_uri: str, data_source: str | None, split: str, overrides: dict | None = None) -> EvaluatePlan:
    """Everything `evaluate` can get wrong, found before its run exists: the split name, the
    model (loaded), its config with the overrides, max_length against the model, the data.

    The data settings (max_length, truncation, split fractions, seed) come from the config logged
    with the model unless overridden; a Hub id or plain folder uses the defaults.
    """
    data_mod.check_split(split)
    loaded = combined.load_package(model_uri)
    config = validate(apply_overrides(loaded.config, {"data.source": data_source, **(overrides or {})}))
    if not reads_texts(loaded.model):  # (a baseline or a combined model reads reviews its own way)
        model_mod.check_max_length(loaded.model.config, config.data.max_length, model_uri)
    device_mod.pick_runtime(config.train)  # e.g. fp16 on a CPU: before the run, too
    splits = data_mod.load_splits(config.data, config.seed)
    return EvaluatePlan(model_uri, split, loaded, config, splits)


def predict_plan(plan: EvaluatePlan, runtime: Runtime) -> pd.DataFrame:
    """The predictions table of the planned split by the planned model (with its own temperature)."""
    return predict_split(plan.loaded, data_mod.select_split(plan.splits, plan.split), plan.config, runtime)


def run_evaluate(plan: EvaluatePlan, tracker) -> dict[str, float]:
    """The evaluate stage: predict the planned split with the planned model, log it all.

    Args:
        plan: from `plan_evaluate` (called before the run opens).
        tracker: the run's `tracking.Tracker`.
    Returns:
        Every metric of the split's predictions table (``test/accuracy``, ...).
    """
    loaded, config, split = plan.loaded, plan.config, plan.split
    if loaded.model_id:
        tracker.link_model(loaded.model_id)
    runtime = device_mod.pick_runtime(config.train)
    kind = {keys.KIND: "evaluate", keys.MODEL_URI: plan.model_uri, keys.SPLIT: split}
    tracker.set_tags({**runtime.tags(), **kind})
    tracker.log_config(config)
    tracker.log_splits(plan.splits, only=None if split == "all" else split)
    table = predict_plan(plan, runtime)
    # the temperature the model applies (1 for models packaged before calibration or from the Hub)
    temperature = loaded.model.temperature if reads_texts(loaded.model) else model_mod.temperature_of(loaded.model)
    tracker.log_metrics({"calibration/temperature": temperature}, step=0, model_id=loaded.model_id)
    return log_evaluation(table, split, tracker, model_id=loaded.model_id, seed=config.seed)
