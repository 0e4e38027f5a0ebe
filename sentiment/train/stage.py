"""The train stage: prepare -> fit -> publish, everything `sentiment train` does inside its run.

- `prepare`: seed, data splits, tokenizer, model (head masking for keep_heads), device and
  precision (picked once), the resume state, what the run records before training, encodings.
- `fit` (loop.py): the epochs, with hooks for the stop signal, checkpoints and epoch ends.
- `calibrate_and_test`: the best model predicts the validation split, a temperature T is fitted
  on those logits (calibration.py), and the model with T predicts the test split.
- `publish`: training curves, the best model (with T in its config) as a LoggedModel, then
  (publish.py, shared with the classical baselines of baseline.py) the calibration metrics and
  the validation table, the test predictions table and its metrics, registration, the card.

    sentiment train --preset quick --register-as imdb-sentiment
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from sentiment import calibration, evaluate, heads, plots, tokens, tracking
from sentiment import data as data_mod
from sentiment import model as model_mod
from sentiment import promote as promote_mod
from sentiment.config import BASELINES, Config, scale_epochs, to_yaml
from sentiment.device import Runtime, pick_runtime
from sentiment.distributed import Dist
from sentiment.preflight import TrainInputs, check_inputs
from sentiment.tracking import counts as counts_mod
from sentiment.tracking import keys
from sentiment.train import console, loop
from sentiment.train.baseline import run_baseline
from sentiment.train.checkpoint import Checkpointer, load_resume_state, save_model
from sentiment.train.loop import EpochResult, History, Hooks
from sentiment.train.publish import Calibrated, Trained, TrainOutcome, package_bytes, publish_logged
from sentiment.train.request import TrainRequest


@dataclass
class Prepared:
    """What `prepare` hands to `fit` and `publish`."""

    config: Config
    model: object  # the classifier (a transformers model)
    tokenizer: object
    splits: data_mod.Splits
    train: tokens.Reviews
    val: tokens.Reviews
    runtime: Runtime
    state: dict | None  # the training state to resume from
    started: float = 0.0  # time.time() when preparation began (the model card's wall time)


def run_train(config: Config, tracker: tracking.Tracker, request: TrainRequest) -> TrainOutcome | None:
    """The train stage: prepare, fit, publish in the tracker's run.

    With ``request.resume`` the run's latest checkpoint (local, else downloaded from the run) is
    loaded and training continues where it stopped. Under torchrun every rank calls this; only
    rank 0 gets a real tracker, writes checkpoints and logs models (other ranks get a NullTracker
    and return None).
    """
    if config.model.name in BASELINES:  # a scikit-learn pipeline: train/baseline.py
        return run_baseline(config, tracker, request)
    workdir, dist = request.workdir, request.dist
    prepared = prepare(config, tracker, workdir, request.resume, dist, request.inputs)
    main, every_epoch = dist.is_main, config.log_checkpoints == "all"
    hooks = Hooks(
        should_stop=request.should_stop,
        checkpoints=Checkpointer(workdir, tracker, config.upload_state) if main else None,
        on_epoch_end=_epoch_checkpoint(prepared, tracker, workdir) if every_epoch and main else None,
        after_epoch=request.after_epoch,
    )
    p = prepared
    history = loop.fit(p.model, p.train, p.val, p.config, tracker, workdir, p.runtime, hooks, p.state)
    calibrated = calibrate_and_test(prepared, history)  # every rank predicts its share
    if not dist.is_main:
        return None
    return publish(prepared, history, calibrated, tracker, workdir, request.registry)


# Below this many optimizer steps a fine-tuned encoder has barely left its initialisation: the cpu
# preset's one epoch of 500 reviews (32 steps) keeps its training loss near 0.69, while the quick
# preset's 80 steps on the 250-review sample reach about 88% on its test reviews (`make demo`), so
# the demo is not warned. How many steps small sets need is measured by experiments/small_data_cpu.yaml
# (300, 600, 1,200); until then the warning suggests the middle one.
FEW_STEPS = 64
SUGGESTED_MIN_STEPS = 600


def _warn_if_few_steps(config: Config, train_reviews: int, dist: Dist) -> None:
    steps = config.train.epochs * math.ceil(train_reviews / config.train.batch_size)
    if steps < FEW_STEPS and dist.is_main:
        console.say(
            f"warning: {train_reviews:,} training reviews give {steps} optimizer steps, too few for fine-tuning "
            f"to learn much: train longer (--min-steps {SUGGESTED_MIN_STEPS}) or try --model tfidf-logreg, a strong "
            "baseline on small training sets (learning curves: experiments/RESULTS.md)"
        )


def prepare(
    config: Config,
    tracker: tracking.Tracker,
    workdir: Path,
    resume: bool,
    dist: Dist,
    inputs: TrainInputs | None = None,
) -> Prepared:
    """Everything before the first step, in the order that keeps runs reproducible: the seed
    first, then data, tokenizer and model (whose fresh head draws from the seeded RNG)."""
    from transformers import set_seed

    started = time.time()
    set_seed(config.seed)
    inputs = inputs or check_inputs(config, dist)  # every rank needs the weights and the data
    model_source, splits = inputs.model_source, inputs.splits
    scaled = scale_epochs(config, len(splits.train))  # a small training split trains min_steps steps
    if scaled is not config and dist.is_main:
        console.say(
            f"{len(splits.train):,} training reviews: {scaled.train.epochs} epochs, so that training takes at least "
            f"train.min_steps = {config.train.min_steps} steps"
        )
    config = scaled
    _warn_if_few_steps(config, len(splits.train), dist)
    tokenizer = model_mod.load_tokenizer(model_source, config.model.trust_remote_code)
    net = model_mod.build_model(replace(config.model, name=model_source), config.data.max_length)
    runtime = pick_runtime(config.train, dist)
    heads.mask_heads(
        net, splits.train["text"].tolist(), splits.train["label"].to_numpy(), tokenizer, config, runtime.device
    )
    state = load_resume_state(tracker.run_id, workdir, config.upload_state) if resume else None
    _log_start(config, tracker, net, splits, runtime, state)
    d = config.data
    train = tokens.encode_reviews(splits.train, tokenizer, d.max_length, d.truncation)
    val = tokens.encode_reviews(splits.val, tokenizer, d.max_length, d.truncation)
    return Prepared(config, net, tokenizer, splits, train, val, runtime, state, started)


def _log_start(
    config: Config, tracker: tracking.Tracker, net, splits: data_mod.Splits, runtime: Runtime, state: dict | None
) -> None:
    """What the run records before training: config, sizes and datasets (a resumed run has
    them already), then where it trains."""
    if state is None:
        counts = model_mod.count_parameters(net)
        tracker.log_config(config)
        parameters = counts_mod.parameter_counts(counts["total"], counts["trainable"])
        tracker.log_params({**parameters, **counts_mod.split_sizes(splits.sizes())})
        tracker.log_splits(splits)
        dist = runtime.dist
        if dist.enabled:
            per_rank = math.ceil(config.train.batch_size / dist.world_size)
            tracker.log_params({"distributed.world_size": dist.world_size, "distributed.per_rank_batch_size": per_rank})
            tracker.set_tags({keys.LAUNCHER: dist.launcher, keys.WORLD_SIZE: dist.world_size})
    else:
        tracker.set_tags({keys.RESUMED_FROM_STEP: state["progress"]["step"]})
    # transformers picks SDPA attention for encoders that support it (BERT, DistilBERT, RoBERTa,
    # MiniLM), eager otherwise; recorded so runs on different versions compare honestly.
    attention = getattr(net.config, "_attn_implementation", None) or "eager"
    tracker.set_tags({**runtime.tags(), keys.KIND: "train", keys.ATTENTION: attention})


def _epoch_checkpoint(prepared: Prepared, tracker: tracking.Tracker, workdir: Path):
    """The epoch-end hook of ``--log-checkpoints all``: every epoch's model as a LoggedModel."""

    def log_epoch(result: EpochResult, net) -> str:
        epoch = result.epoch
        save_model(net, workdir / f"epoch_{epoch}")
        folder = package_model(
            workdir / f"epoch_{epoch}", prepared.tokenizer, prepared.config, workdir / f"package_epoch_{epoch}"
        )
        return tracker.log_model(folder, name=f"checkpoint-epoch-{epoch}", step=epoch).model_id

    return log_epoch


def publish(
    prepared: Prepared,
    history: History,
    calibrated: Calibrated,
    tracker: tracking.Tracker,
    workdir: Path,
    registry: promote_mod.RegisterRequest | None,
) -> TrainOutcome:
    """After training: curves, the best model with its temperature as a LoggedModel (its size,
    ``model/size_bytes``, and validation scores linked), calibration, the test predictions table and its metrics,
    registration (with promotion) when asked, the model card, and checkpoint retention."""
    config = prepared.config
    tracker.log_figure(plots.training_curves(history), "figures/training_curves.png")
    tracker.log_table(pd.DataFrame(history.lr_groups), "tables/layerwise_lr")
    package = package_model(
        history.best_dir, prepared.tokenizer, config, workdir / "package_best", calibrated.temperature
    )
    logged = tracker.log_model(package, name="model", step=history.best_epoch)
    tracker.log_metrics({"model/size_bytes": package_bytes(package)}, step=history.best_epoch, model_id=logged.model_id)
    trained = Trained(config, prepared.splits, prepared.runtime.tags(), prepared.started)
    outcome = publish_logged(trained, history, calibrated, tracker, logged, registry)
    _retain(config, history, tracker)
    return outcome


def _retain(config: Config, history: History, tracker) -> None:
    """Checkpoint retention at the end of a successful training: only the best
    ``keep_checkpoints`` epoch models keep their weights; the resumable state goes unless
    ``keep_state``."""
    if config.log_checkpoints == "all" and config.keep_checkpoints > 0:
        pruned = tracker.prune_checkpoints(config.keep_checkpoints, {e.epoch: e.val_accuracy for e in history.epochs})
        tracker.set_tags({keys.PRUNED_CHECKPOINTS: ",".join(map(str, pruned)) or "none"})
    if config.upload_state and not config.keep_state:
        tracker.delete_artifacts("checkpoints")
        tracker.set_tags({keys.STATE: "deleted after a successful run (keep_state false)"})


def calibrate_and_test(prepared: Prepared, history: History) -> Calibrated:
    """The best epoch's model predicts the validation split; T is fitted on those logits
    (`calibration.fit_temperature`: one more pass over the validation split); the model with T
    predicts the test split (when ``run_test``). Under torchrun every rank takes part in both
    predictions, gets the same tables and so fits the same T."""
    config, runtime = prepared.config, prepared.runtime
    if history.best_state is not None:
        prepared.model.load_state_dict(history.best_state)
        best = prepared.model
    else:
        best = model_mod.load_trained(history.best_dir).to(runtime.device)
    batch_size = config.train.eval_batch_size
    val = evaluate.predict_table(best, prepared.val, runtime, batch_size, temperature=1.0)
    temperature = calibration.fit_temperature(val["logit"].to_numpy(), val["label"].to_numpy())
    val = evaluate.apply_temperature(val, temperature)
    if not config.run_test:
        return Calibrated(temperature, val, None, 0.0)
    started = time.perf_counter()
    test = tokens.encode_reviews(
        prepared.splits.test, prepared.tokenizer, config.data.max_length, config.data.truncation
    )
    table = evaluate.predict_table(best, test, runtime, batch_size, temperature=temperature)
    return Calibrated(temperature, val, table, time.perf_counter() - started)


def package_model(model_dir: Path, tokenizer, config: Config, parent: Path, temperature: float | None = None) -> Path:
    """Model, tokenizer and the run's config in ``parent/hf_model``: what a logged model carries.
    With ``temperature``, the model applies it (`model.save_temperature`); without (epoch
    checkpoints), T = 1."""
    out = parent / tracking.MODEL_ARTIFACT
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model_dir, out)
    if temperature is not None:
        model_mod.save_temperature(out, temperature)
    tokenizer.save_pretrained(out)
    (out / "sentiment_config.yaml").write_text(to_yaml(config))
    return out
