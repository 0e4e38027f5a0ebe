"""The train stage of the classical baselines (`--model tfidf-logreg`, `--model minilm-logreg`,
sentiment/baselines.py): prepare -> fit -> calibrate_and_test -> publish, in the run layout of
an encoder's training, so reports, ablation grids, the registry and promotion take them as they
take any model.

- prepare: the seed, the same splits (`data.load_splits`: same seed, same reviews), what the run
  records before fitting (config, the pipeline's settings as ``baseline.*`` params, sizes,
  datasets, tags ``sentiment.kind=train`` and the device);
- fit: the pipeline on the training split, once ("epoch" 1: ``train/epoch_seconds`` and
  ``train/fit_seconds``, ``train/samples_per_s``, validation accuracy and loss);
- calibrate_and_test: validation table -> temperature T (`calibration.fit_temperature`) folded
  into the weights -> the test table (``test/seconds``, ``test/reviews_per_s``);
- publish: the package as the served pyfunc with MLflow's scikit-learn flavour, its size
  (``model/size_bytes``), then what every family publishes (publish.py).

    sentiment train --model tfidf-logreg --data sample --register-as imdb-sentiment
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd

from sentiment import baselines, calibration, evaluate, tracking
from sentiment.config import Config
from sentiment.device import Runtime, pick_runtime
from sentiment.errors import UserError
from sentiment.preflight import check_inputs
from sentiment.tracking import counts as counts_mod
from sentiment.tracking import keys
from sentiment.train import console
from sentiment.train.loop import EpochResult, History, epoch_metrics
from sentiment.train.publish import Calibrated, Trained, TrainOutcome, package_bytes, publish_logged
from sentiment.train.request import TrainRequest


def run_baseline(config: Config, tracker: tracking.Tracker, request: TrainRequest) -> TrainOutcome:
    """Fit, calibrate, test and publish a baseline in the tracker's run (see the module docstring).
    ``request.after_epoch`` is called once with the fit's `EpochResult` (as `Hooks.after_epoch`).
    Returns the outcome, with a one-"epoch" history (the fit)."""
    if request.dist.enabled:
        raise UserError(f"the {config.model.name} baseline trains in one process; run it without torchrun")
    if request.resume:
        raise UserError(f"the {config.model.name} baseline fits in one go and has no state to resume; train it again")
    from transformers import set_seed

    started = time.time()
    set_seed(config.seed)
    splits = (request.inputs or check_inputs(config)).splits
    runtime = _runtime(config)
    pipeline = baselines.build_pipeline(config, str(runtime.device))
    _log_start(config, tracker, pipeline, splits, runtime)
    result, val = fit(pipeline, splits.train, splits.val, config)
    console.say(console.epoch_line(result, 1, True))
    counts = baselines.parameters(pipeline)
    tracker.log_params(counts_mod.parameter_counts(counts["total"], counts["trainable"]))
    tracker.log_metrics({**epoch_metrics(result, runtime.device), "train/fit_seconds": result.seconds}, step=1)
    if request.after_epoch is not None:
        request.after_epoch(result)
    history = History(epochs=[result], best_epoch=1, best_val_accuracy=result.val_accuracy)
    calibrated = calibrate_and_test(pipeline, val, splits, config)
    package = baselines.save_package(pipeline, config, calibrated.temperature, request.workdir / "package_best")
    logged = tracker.log_model(package, name="model", step=1)
    size = package_bytes(package) + baselines.encoder_bytes(pipeline)
    tracker.log_metrics({"model/size_bytes": size}, step=1, model_id=logged.model_id)
    trained = Trained(config, splits, runtime.tags(), started)
    return publish_logged(trained, history, calibrated, tracker, logged, request.registry)


def _runtime(config: Config) -> Runtime:
    """Where the pipeline computes: TF-IDF on the CPU; MiniLM's embeddings on ``train.device``;
    both in fp32 (no autocast: the features are computed once)."""
    device = "cpu" if config.model.name == baselines.TFIDF_LOGREG else config.train.device
    return pick_runtime(replace(config.train, device=device, precision="fp32"))


def _log_start(config: Config, tracker: tracking.Tracker, pipeline, splits, runtime: Runtime) -> None:
    """The config, the pipeline's settings, sizes, datasets and tags, as an encoder's run has them."""
    tracker.log_config(config)
    tracker.log_params(baselines.hyperparameters(pipeline))
    tracker.log_params(counts_mod.split_sizes(splits.sizes()))
    tracker.log_splits(splits)
    tracker.set_tags({**runtime.tags(), keys.KIND: "train", keys.BASELINE: config.model.name})


def fit(pipeline, train, val, config: Config) -> tuple[EpochResult, pd.DataFrame]:
    """Fit the pipeline on the training split (features, then the logistic regression) and score
    it on both splits: the fit as one epoch (its seconds, reviews/s and tokens/s count the
    feature step: TF-IDF's vocabulary, MiniLM's forward passes), and the validation table (T = 1)."""
    texts, labels = train["text"].tolist(), train["label"].to_numpy()
    began = time.perf_counter()
    features, lengths = baselines.featurize(pipeline, texts, fit=True)
    pipeline[-1].fit(features, labels)
    seconds = time.perf_counter() - began
    train_table = evaluate.margin_table(
        train, pipeline[-1].decision_function(features), lengths.n_tokens, lengths.truncated
    )
    val_table = evaluate.baseline_table(baselines.Baseline(pipeline, config.model.name, 1.0, config), val)
    train_scores, val_scores = evaluate.validation_metrics(train_table), evaluate.validation_metrics(val_table)
    result = EpochResult(
        epoch=1,
        train_loss=train_scores["loss"],
        train_accuracy=train_scores["accuracy"],
        val_loss=val_scores["loss"],
        val_accuracy=val_scores["accuracy"],
        seconds=seconds,
        samples_per_s=len(texts) / seconds,
        tokens_per_s=float(np.sum(lengths.n_tokens)) / seconds,
        step=1,
        val_f1_macro=val_scores["f1_macro"],
    )
    return result, val_table


def calibrate_and_test(pipeline, val: pd.DataFrame, splits, config: Config) -> Calibrated:
    """T is fitted on the validation table's logits (`fit`'s) and folded into the pipeline's
    weights; the pipeline, now as served, predicts the test split when ``run_test``."""
    temperature = calibration.fit_temperature(val["logit"].to_numpy(), val["label"].to_numpy())
    baselines.fold_temperature(pipeline, temperature)
    val = evaluate.apply_temperature(val, temperature)
    if not config.run_test:
        return Calibrated(temperature, val, None, 0.0)
    started = time.perf_counter()
    test = evaluate.baseline_table(baselines.Baseline(pipeline, config.model.name, temperature, config), splits.test)
    return Calibrated(temperature, val, test, time.perf_counter() - started)
