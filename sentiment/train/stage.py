"""The train stage: prepare -> fit -> publish, everything `sentiment train` does inside its run.

- `prepare`: seed, data splits, tokenizer, model (head masking for keep_heads), device and
  precision (picked once), the resume state, what the run records before training, encodings.
- `fit` (loop.py): the epochs, with hooks for the stop signal, checkpoints and epoch ends.
- `calibrate_and_test`: the best model predicts the validation split, a temperature T is fitted
  on those logits (calibration.py), and the model with T predicts the test split.
- `publish`: training curves, the best model (with T in its config) as a LoggedModel, the
  calibration metrics and the validation table, the test predictions table and its metrics,
  registration.

    sentiment train --preset quick --register-as imdb-sentiment
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from sentiment import data as data_mod
from sentiment import calibration, card, evaluate, heads, plots, tokens, tracking
from sentiment import promote as promote_mod
from sentiment import model as model_mod
from sentiment.config import Config, to_yaml
from sentiment.device import Runtime, pick_runtime
from sentiment.distributed import Dist
from sentiment.preflight import TrainInputs, check_inputs
from sentiment.train import loop
from sentiment.train.checkpoint import Checkpointer, load_resume_state, save_model
from sentiment.train.loop import EpochResult, History, Hooks


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


def run_train(
    config: Config,
    tracker: tracking.Tracker,
    workdir: Path,
    register_as: str | None = None,
    resume: bool = False,
    promote_if: str = promote_mod.DEFAULT_RULE,
    promote_alpha: float = promote_mod.DEFAULT_ALPHA,
    should_stop=lambda: 0,
    dist: Dist | None = None,
    inputs: TrainInputs | None = None,
    after_epoch=None,
) -> TrainOutcome | None:
    """The train stage: prepare, fit, publish in the tracker's run.

    With ``resume`` the run's latest checkpoint (local, else downloaded from the run) is loaded
    and training continues where it stopped. Under torchrun every rank calls this; only rank 0
    gets a real tracker, writes checkpoints and logs models (other ranks get a NullTracker and
    return None). ``inputs`` are what `check_inputs` found before the run opened (checked here
    when not given). ``after_epoch`` (`Hooks.after_epoch`) sees each epoch's result once it is
    logged; an exception it raises ends training there (a pruned `sentiment tune` trial).
    """
    dist = dist or Dist()
    prepared = prepare(config, tracker, workdir, resume, dist, inputs)
    main, every_epoch = dist.is_main, config.log_checkpoints == "all"
    hooks = Hooks(
        should_stop=should_stop,
        checkpoints=Checkpointer(workdir, tracker, config.upload_state) if main else None,
        on_epoch_end=_epoch_checkpoint(prepared, tracker, workdir) if every_epoch and main else None,
        after_epoch=after_epoch,
    )
    p = prepared
    history = loop.fit(p.model, p.train, p.val, config, tracker, workdir, p.runtime, hooks, p.state)
    calibrated = calibrate_and_test(prepared, history)  # every rank predicts its share
    if not dist.is_main:
        return None
    registry = promote_mod.RegisterRequest(register_as, promote_if, promote_alpha) if register_as else None
    return publish(prepared, history, calibrated, tracker, workdir, registry)


def prepare(
    config: Config, tracker: tracking.Tracker, workdir: Path, resume: bool, dist: Dist, inputs: TrainInputs | None = None
) -> Prepared:
    """Everything before the first step, in the order that keeps runs reproducible: the seed
    first, then data, tokenizer and model (whose fresh head draws from the seeded RNG)."""
    from transformers import set_seed

    started = time.time()
    set_seed(config.seed)
    inputs = inputs or check_inputs(config, dist)  # every rank needs the weights and the data
    model_source, splits = inputs.model_source, inputs.splits
    tokenizer = model_mod.load_tokenizer(model_source, config.model.trust_remote_code)
    net = model_mod.build_model(replace(config.model, name=model_source), config.data.max_length)
    runtime = pick_runtime(config.train, dist)
    heads.mask_heads(net, splits.train["text"].tolist(), splits.train["label"].to_numpy(), tokenizer, config, runtime.device)
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
        sizes = {f"data/{name}_reviews": float(n) for name, n in splits.sizes().items()}
        parameters = {"model/parameters": counts["total"], "model/trainable_parameters": counts["trainable"]}
        tracker.log_metrics({**parameters, **sizes}, step=0)
        tracker.log_splits(splits)
        dist = runtime.dist
        if dist.enabled:
            per_rank = math.ceil(config.train.batch_size / dist.world_size)
            tracker.log_params({"distributed.world_size": dist.world_size, "distributed.per_rank_batch_size": per_rank})
            tracker.set_tags({"sentiment.launcher": dist.launcher, "sentiment.world_size": dist.world_size})
    else:
        tracker.set_tags({"sentiment.resumed_from_step": state["progress"]["step"]})
    # transformers picks SDPA attention for encoders that support it (BERT, DistilBERT, RoBERTa,
    # MiniLM), eager otherwise; recorded so runs on different versions compare honestly.
    attention = getattr(net.config, "_attn_implementation", None) or "eager"
    tracker.set_tags({**runtime.tags(), "sentiment.kind": "train", "sentiment.attention": attention})


def _epoch_checkpoint(prepared: Prepared, tracker: tracking.Tracker, workdir: Path):
    """The epoch-end hook of ``--log-checkpoints all``: every epoch's model as a LoggedModel."""

    def log_epoch(result: EpochResult, net) -> str:
        epoch = result.epoch
        save_model(net, workdir / f"epoch_{epoch}")
        folder = package_model(workdir / f"epoch_{epoch}", prepared.tokenizer, prepared.config, workdir / f"package_epoch_{epoch}")
        return tracker.log_model(folder, name=f"checkpoint-epoch-{epoch}", step=epoch).model_id

    return log_epoch


def publish(
    prepared: Prepared, history: History, calibrated: Calibrated, tracker: tracking.Tracker, workdir: Path,
    registry: promote_mod.RegisterRequest | None,
) -> TrainOutcome:
    """After training: curves, the best model with its temperature as a LoggedModel (its
    validation scores linked), calibration, the test predictions table and its metrics,
    registration (with promotion) when asked, the model card, and checkpoint retention."""
    config = prepared.config
    tracker.log_figure(plots.training_curves(history), "figures/training_curves.png")
    tracker.log_table(pd.DataFrame(history.lr_groups), "tables/layerwise_lr")
    package = package_model(history.best_dir, prepared.tokenizer, config, workdir / "package_best", calibrated.temperature)
    logged = tracker.log_model(package, name="model", step=history.best_epoch)
    best = {"val/best_accuracy": history.best_val_accuracy, "train/best_epoch": history.best_epoch}
    best_f1 = next((e.val_f1_macro for e in history.epochs if e.epoch == history.best_epoch), float("nan"))
    if not math.isnan(best_f1):
        best["val/best_f1_macro"] = best_f1
    tracker.log_metrics(best, step=history.best_epoch, model_id=logged.model_id)
    _log_calibration(calibrated, tracker, history.best_epoch, logged.model_id)
    test_metrics: dict[str, float] = {}
    if calibrated.test is not None:
        test_metrics = evaluate.log_evaluation(calibrated.test, "test", tracker, model_id=logged.model_id, seed=config.seed)
        tracker.log_metrics({"test/seconds": calibrated.test_seconds}, step=history.best_epoch)
    registered = promote_mod.register(registry, tracker, logged, calibrated.test, test_metrics) if registry else None
    metrics = {**best, **test_metrics, "calibration/temperature": calibrated.temperature}
    metrics |= {f"val/{k}": v for k, v in evaluate.calibration_metrics(calibrated.val).items()}
    _publish_card(prepared, history, tracker, logged, calibrated.test, metrics, registered)
    _retain(config, history, tracker)
    return TrainOutcome(tracker.run_id, logged.model_uri, history, test_metrics, registered)


def _retain(config: Config, history: History, tracker) -> None:
    """Checkpoint retention at the end of a successful training: only the best
    ``keep_checkpoints`` epoch models keep their weights; the resumable state goes unless
    ``keep_state``."""
    if config.log_checkpoints == "all" and config.keep_checkpoints > 0:
        pruned = tracker.prune_checkpoints(config.keep_checkpoints, {e.epoch: e.val_accuracy for e in history.epochs})
        tracker.set_tags({"sentiment.pruned_checkpoints": ",".join(map(str, pruned)) or "none"})
    if config.upload_state and not config.keep_state:
        tracker.delete_artifacts("checkpoints")
        tracker.set_tags({"sentiment.state": "deleted after a successful run (keep_state false)"})


def _publish_card(prepared: Prepared, history: History, tracker, logged, table, metrics: dict, registered) -> None:
    """The model card, from what the run logged: in the run and the LoggedModel as
    ``model_card.md``, and as the registered version's description."""
    last = history.epochs[-1] if history.epochs else None
    facts = card.CardFacts(
        config=prepared.config, run_id=tracker.run_id, datasets=tracking.dataset_facts(prepared.splits),
        metrics={**metrics, **({"train/samples_per_s": last.samples_per_s} if last else {})},
        hardware=prepared.runtime.tags(), minutes=(time.time() - prepared.started) / 60, test_table=table,
        registered=(registered.name, registered.version) if registered else None,
        promotion=registered.decision.line() if registered and registered.decision else "",
    )  # fmt: skip
    path = card.write(facts)
    tracker.log_text(path.read_text(), card.CARD_FILE)
    tracker.log_model_file(logged.model_id, path)
    if registered:
        tracking.set_version_description(registered.name, registered.version, path.read_text())


def _test_table(prepared: Prepared, history: History) -> pd.DataFrame | None:
    """The test predictions table of the best checkpoint (None without ``run_test``); under
    torchrun each rank predicts its share and every rank gets the whole table."""
    config = prepared.config
    if not config.run_test:
        return None


def _log_calibration(calibrated: Calibrated, tracker: tracking.Tracker, step: int, model_id: str) -> None:
    """``calibration/temperature``, the validation table it was fitted on (``predictions/val``),
    its calibration before and after (``val/ece``, ``val/ece_calibrated``, ``val/brier``, ...)
    and ``figures/calibration_val.png``; at the best epoch's step, linked to the model."""
    scores = {f"val/{k}": v for k, v in evaluate.calibration_metrics(calibrated.val).items()}
    tracker.log_metrics({"calibration/temperature": calibrated.temperature, **scores}, step=step, model_id=model_id)
    tracker.log_table(calibrated.val, "predictions/val")
    tracker.log_figure(evaluate.calibration_figure(calibrated.val, "val"), "figures/calibration_val.png")


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
    test = tokens.encode_reviews(prepared.splits.test, prepared.tokenizer, config.data.max_length, config.data.truncation)
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
