"""The train stage: prepare -> fit -> publish, everything `sentiment train` does inside its run.

- `prepare`: seed, data splits, tokenizer, model (head masking for keep_heads), device and
  precision (picked once), the resume state, what the run records before training, encodings.
- `fit` (loop.py): the epochs, with hooks for the stop signal, checkpoints and epoch ends.
- `publish`: training curves, the best model as a LoggedModel, the test predictions table and
  its metrics, registration.

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
from sentiment import evaluate, heads, plots, tokens, tracking
from sentiment import model as model_mod
from sentiment.config import Config, to_yaml
from sentiment.device import Runtime, pick_runtime
from sentiment.distributed import Dist
from sentiment.train import loop
from sentiment.train.checkpoint import Checkpointer, load_resume_state, save_model
from sentiment.train.loop import EpochResult, History, Hooks


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    model_uri: str
    history: History
    test_metrics: dict[str, float]
    registered: tracking.Registration | None  # when --register-as was given


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


def run_train(
    config: Config,
    tracker: tracking.Tracker,
    workdir: Path,
    register_as: str | None = None,
    resume: bool = False,
    should_stop=lambda: 0,
    dist: Dist | None = None,
) -> TrainOutcome | None:
    """The train stage: prepare, fit, publish in the tracker's run.

    With ``resume`` the run's latest checkpoint (local, else downloaded from the run) is loaded
    and training continues where it stopped. Under torchrun every rank calls this; only rank 0
    gets a real tracker, writes checkpoints and logs models (other ranks get a NullTracker and
    return None).
    """
    dist = dist or Dist()
    prepared = prepare(config, tracker, workdir, resume, dist)
    main, every_epoch = dist.is_main, config.log_checkpoints == "all"
    hooks = Hooks(
        should_stop=should_stop,
        checkpoints=Checkpointer(workdir, tracker, config.upload_state) if main else None,
        on_epoch_end=_epoch_checkpoint(prepared, tracker, workdir) if every_epoch and main else None,
    )
    p = prepared
    history = loop.fit(p.model, p.train, p.val, config, tracker, workdir, p.runtime, hooks, p.state)
    if not dist.is_main:
        _test_table(prepared, history)  # its share of the test set
        return None
    return publish(prepared, history, tracker, workdir, register_as)


def prepare(config: Config, tracker: tracking.Tracker, workdir: Path, resume: bool, dist: Dist) -> Prepared:
    """Everything before the first step, in the order that keeps runs reproducible: the seed
    first, then data, tokenizer and model (whose fresh head draws from the seeded RNG)."""
    from transformers import set_seed

    set_seed(config.seed)
    model_source = tracking.resolve_model_source(config.model.name)  # every rank needs the weights
    splits = data_mod.load_splits(config.data, config.seed)
    tokenizer = model_mod.load_tokenizer(model_source, config.model.trust_remote_code)
    net = model_mod.build_model(replace(config.model, name=model_source), config.data.max_length)
    runtime = pick_runtime(config.train, dist)
    heads.mask_heads(net, splits.train["text"].tolist(), splits.train["label"].to_numpy(), tokenizer, config, runtime.device)
    state = load_resume_state(tracker.run_id, workdir, config.upload_state) if resume else None
    _log_start(config, tracker, net, splits, runtime, state)
    d = config.data
    train = tokens.encode_reviews(splits.train, tokenizer, d.max_length, d.truncation)
    val = tokens.encode_reviews(splits.val, tokenizer, d.max_length, d.truncation)
    return Prepared(config, net, tokenizer, splits, train, val, runtime, state)


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
    prepared: Prepared, history: History, tracker: tracking.Tracker, workdir: Path, register_as: str | None
) -> TrainOutcome:
    """After training: curves, the best model as a LoggedModel (its validation scores linked),
    the test predictions table and its metrics, and registration when asked."""
    config = prepared.config
    tracker.log_figure(plots.training_curves(history), "figures/training_curves.png")
    tracker.log_table(pd.DataFrame(history.lr_groups), "tables/layerwise_lr")
    package = package_model(history.best_dir, prepared.tokenizer, config, workdir / "package_best")
    logged = tracker.log_model(package, name="model", step=history.best_epoch)
    best = {"val/best_accuracy": history.best_val_accuracy, "train/best_epoch": history.best_epoch}
    best_f1 = next((e.val_f1_macro for e in history.epochs if e.epoch == history.best_epoch), float("nan"))
    if not math.isnan(best_f1):
        best["val/best_f1_macro"] = best_f1
    tracker.log_metrics(best, step=history.best_epoch, model_id=logged.model_id)
    test_metrics: dict[str, float] = {}
    if config.run_test:
        started = time.perf_counter()
        table = _test_table(prepared, history)
        test_seconds = time.perf_counter() - started  # tokenizing (or the token cache) and predicting
        test_metrics = evaluate.log_evaluation(table, "test", tracker, model_id=logged.model_id, seed=config.seed)
        tracker.log_metrics({"test/seconds": test_seconds}, step=history.best_epoch)
    registered = None
    if register_as:
        score = test_metrics.get("test/accuracy", history.best_val_accuracy)
        registered = tracking.register_model(tracker, logged.model_uri, register_as, score=score)
    return TrainOutcome(tracker.run_id, logged.model_uri, history, test_metrics, registered)


def _test_table(prepared: Prepared, history: History) -> pd.DataFrame | None:
    """The test predictions table of the best checkpoint (None without ``run_test``); under
    torchrun each rank predicts its share and every rank gets the whole table."""
    config = prepared.config
    if not config.run_test:
        return None
    if history.best_state is not None:
        prepared.model.load_state_dict(history.best_state)
        best = prepared.model
    else:
        best = model_mod.load_trained(history.best_dir).to(prepared.runtime.device)
    test = tokens.encode_reviews(prepared.splits.test, prepared.tokenizer, config.data.max_length, config.data.truncation)
    return evaluate.predict_table(best, test, prepared.runtime, config.train.eval_batch_size)


def package_model(model_dir: Path, tokenizer, config: Config, parent: Path) -> Path:
    """Model, tokenizer and the run's config in ``parent/hf_model``: what a logged model carries."""
    out = parent / tracking.MODEL_ARTIFACT
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model_dir, out)
    tokenizer.save_pretrained(out)
    (out / "sentiment_config.yaml").write_text(to_yaml(config))
    return out
