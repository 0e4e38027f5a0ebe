"""What every model family's training publishes once its model is logged (stage.py for encoders,
baseline.py for the classical baselines): the best epoch's validation scores linked to the model,
the calibration (temperature, validation table, before/after figure), the test predictions table
with its metrics and what testing cost, registration with its promotion decision, the model card.

    sentiment train --preset quick --register-as imdb-sentiment
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sentiment import card, evaluate, tracking
from sentiment import data as data_mod
from sentiment import promote as promote_mod
from sentiment.config import Config
from sentiment.train.loop import History


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    model_uri: str
    history: History
    test_metrics: dict[str, float]
    registered: tracking.Registration | None  # when --register-as was given (with its promotion decision)


@dataclass(frozen=True)
class Calibrated:
    """The best model's predictions tables under its fitted temperature (`calibrate_and_test`)."""

    temperature: float
    val: pd.DataFrame
    test: pd.DataFrame | None  # None without run_test
    test_seconds: float  # tokenizing (or the token cache) and predicting the test split


@dataclass(frozen=True)
class Trained:
    """What the card and the records need of a training run besides its model."""

    config: Config
    splits: data_mod.Splits
    hardware: dict[str, str]  # the runtime's tags (device, precision, versions)
    started: float  # time.time() when preparation began (the card's wall time)


def package_bytes(folder: Path) -> int:
    """Bytes of a packaged model folder on disk (``model/size_bytes``)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def publish_logged(
    trained: Trained,
    history: History,
    calibrated: Calibrated,
    tracker: tracking.Tracker,
    logged: tracking.LoggedModelRef,
    registry: promote_mod.RegisterRequest | None,
) -> TrainOutcome:
    """The logged best model's records: validation scores and calibration linked to it, the test
    table and its metrics (``test/seconds``, ``test/reviews_per_s``), registration and promotion
    when asked, the model card."""
    config, step = trained.config, history.best_epoch
    best = {"val/best_accuracy": history.best_val_accuracy, "train/best_epoch": step}
    best_f1 = next((e.val_f1_macro for e in history.epochs if e.epoch == step), float("nan"))
    if not math.isnan(best_f1):
        best["val/best_f1_macro"] = best_f1
    tracker.log_metrics(best, step=step, model_id=logged.model_id)
    calibration_scores = log_calibration(calibrated, tracker, step, logged.model_id)
    test_metrics: dict[str, float] = {}
    if calibrated.test is not None:
        test_metrics = evaluate.log_evaluation(
            calibrated.test, "test", tracker, model_id=logged.model_id, seed=config.seed
        )
        cost = {"test/seconds": calibrated.test_seconds}
        if calibrated.test_seconds > 0:
            cost["test/reviews_per_s"] = len(calibrated.test) / calibrated.test_seconds
        tracker.log_metrics(cost, step=step)
    registered = promote_mod.register(registry, tracker, logged, calibrated.test, test_metrics) if registry else None
    metrics = {**best, **test_metrics, "calibration/temperature": calibrated.temperature}
    metrics |= calibration_scores
    publish_card(trained, history, tracker, logged, calibrated.test, metrics, registered)
    return TrainOutcome(tracker.run_id, logged.model_uri, history, test_metrics, registered)


def log_calibration(calibrated: Calibrated, tracker: tracking.Tracker, step: int, model_id: str) -> dict[str, float]:
    """``calibration/temperature``, the validation table it was fitted on (``predictions/val``),
    its calibration before and after (``val/ece``, ``val/ece_calibrated``, ``val/brier``, ...)
    and ``figures/calibration_val.png``; at the best epoch's step, linked to the model. Returns
    those ``val/*`` scores."""
    scores = {f"val/{k}": v for k, v in evaluate.calibration_metrics(calibrated.val).items()}
    tracker.log_metrics({"calibration/temperature": calibrated.temperature, **scores}, step=step, model_id=model_id)
    tracker.log_table(calibrated.val, "predictions/val")
    tracker.log_figure(evaluate.calibration_figure(calibrated.val, "val"), "figures/calibration_val.png")
    return scores


def publish_card(trained: Trained, history: History, tracker, logged, table, metrics: dict, registered) -> None:
    """The model card, from what the run logged: in the run and the LoggedModel as
    ``model_card.md``, and as the registered version's description."""
    last = history.epochs[-1] if history.epochs else None
    facts = card.CardFacts(
        config=trained.config,
        run_id=tracker.run_id,
        datasets=tracking.dataset_facts(trained.splits),
        metrics={**metrics, **({"train/samples_per_s": last.samples_per_s} if last else {})},
        hardware=trained.hardware,
        minutes=(time.time() - trained.started) / 60,
        test_table=table,
        registered=(registered.name, registered.version) if registered else None,
        promotion=registered.decision.line() if registered and registered.decision else "",
    )
    path = card.write(facts)
    tracker.log_text(path.read_text(), card.CARD_FILE)
    tracker.log_model_file(logged.model_id, path)
    if registered:
        tracking.set_version_description(registered.name, registered.version, path.read_text())
