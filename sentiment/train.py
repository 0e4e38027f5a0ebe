"""Fine-tune a classifier: AdamW, linear warmup and decay, clipping, mixed precision on CUDA.

`fit` is the loop and returns a History; it logs only through the tracker it is given.
`run_train` is the stage: data -> model -> fit -> logged model -> test evaluation -> registry.

    sentiment train --preset quick
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sentiment import data as data_mod
from sentiment import evaluate, model as model_mod, plots
from sentiment.config import Config, to_yaml
from sentiment.errors import TrainingError


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float
    samples_per_s: float
    tokens_per_s: float
    step: int


@dataclass
class History:
    epochs: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_dir: Path | None = None
    lr_groups: list[dict] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    step_lr: list[float] = field(default_factory=list)


def device_tags(device: torch.device, precision: model_mod.Precision) -> dict[str, str]:
    tags = {
        "sentiment.device": device.type,
        "sentiment.precision": precision.name,
        "sentiment.torch_version": torch.__version__,
    }
    if device.type == "cuda":
        tags["sentiment.gpu_name"] = torch.cuda.get_device_name(device)
        tags["sentiment.cuda_version"] = str(torch.version.cuda)
    return tags


def _show_progress() -> bool:
    return sys.stderr.isatty()


def fit(
    model: torch.nn.Module,
    train: data_mod.Encoded,
    train_labels: np.ndarray,
    val: data_mod.Encoded,
    val_labels: np.ndarray,
    config: Config,
    tracker,
    workdir: Path,
    pad_id: int,
    on_epoch_end=None,
) -> History:
    """Train for ``config.train.epochs``; validate each epoch; keep the best in ``workdir/best``.

    Args:
        model: the classifier, on any device; moved to the configured one.
        train, val: encoded reviews; *_labels their 0/1 labels.
        tracker: receives per-step and per-epoch metrics (``train/loss``, ``val/accuracy``...).
        workdir: local folder for the best checkpoint.
        pad_id: the tokenizer's padding id.
        on_epoch_end: called as ``on_epoch_end(result, model)`` after each epoch; it may return
            the id of a LoggedModel (an epoch checkpoint) that the epoch's metrics then rank.
    Returns:
        The History with one EpochResult per epoch and the best checkpoint's folder.
    """
    t = config.train
    device = model_mod.pick_device(t.device)
    precision = model_mod.pick_precision(t.precision, device)
    model.to(device)
    groups = model_mod.layerwise_param_groups(model, t.lr, t.layer_decay, t.weight_decay)
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "name"} for g in groups], lr=t.lr, fused=fused
    )
    sampler = data_mod.LengthGroupedBatches(train.lengths, t.batch_size, seed=config.seed)
    loader = data_mod.make_loader(train, train_labels, sampler, pad_id)
    total_steps = len(sampler) * t.epochs
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(t.warmup_ratio * total_steps), total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.name == "fp16")
    history = History(lr_groups=model_mod.lr_table(groups))
    best_dir = workdir / "best"
    step = 0
    for epoch in range(1, t.epochs + 1):
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        loss_sum, correct, seen, tokens = _train_epoch(
            model, loader, optimizer, scheduler, scaler, precision, device, t, tracker, history, step, epoch
        )
        step += len(sampler)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        logits = evaluate.predict_logits(model, val, device, t.eval_batch_size, precision, pad_id)
        val_loss = float(F.cross_entropy(torch.tensor(logits), torch.tensor(val_labels, dtype=torch.long)).item())
        val_accuracy = float((logits.argmax(1) == val_labels).mean())
        result = EpochResult(
            epoch=epoch,
            train_loss=loss_sum / seen,
            train_accuracy=correct / seen,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            seconds=seconds,
            samples_per_s=seen / seconds,
            tokens_per_s=tokens / seconds,
            step=step,
        )
        history.epochs.append(result)
        is_best = val_accuracy > history.best_val_accuracy
        if is_best:
            history.best_epoch, history.best_val_accuracy, history.best_dir = epoch, val_accuracy, best_dir
            _save(model, best_dir)
        model_id = on_epoch_end(result, model) if on_epoch_end is not None else None
        tracker.log_metrics(_epoch_metrics(result, device), step=epoch, model_id=model_id)
    return history


def _train_epoch(model, loader, optimizer, scheduler, scaler, precision, device, t, tracker, history, step, epoch):
    """One pass over the training loader; returns (loss sum, correct, samples, real tokens)."""
    model.train()
    # Accumulate on the device: reading a value per step would be a host-device sync point.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    window_loss = torch.zeros((), device=device)
    window_n = 0
    seen = tokens = 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{t.epochs}", disable=not _show_progress(), leave=False)
    for batch in bar:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with precision.autocast(device):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits.float(), batch["labels"])
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        n = batch["labels"].shape[0]
        step += 1
        seen += n
        tokens += int(batch["attention_mask"].sum())  # host-side count from the CPU copy is fine
        loss_sum += loss.detach() * n
        window_loss += loss.detach()
        window_n += 1
        correct += (logits.argmax(-1) == batch["labels"]).sum()
        if step % t.log_every_steps == 0:
            mean_loss = (window_loss / window_n).item()  # note: one sync per log interval
            if not math.isfinite(mean_loss):
                raise TrainingError(f"training loss became {mean_loss} at step {step} (epoch {epoch}); lower the learning rate")
            lr = max(scheduler.get_last_lr())
            tracker.log_metrics({"train/loss": mean_loss, "train/lr": lr}, step=step)
            history.steps.append(step)
            history.step_loss.append(mean_loss)
            history.step_lr.append(lr)
            window_loss.zero_()
            window_n = 0
            bar.set_postfix(loss=f"{mean_loss:.4f}")
    total = float(loss_sum.item())
    if not math.isfinite(total):
        raise TrainingError(f"training loss became {total} in epoch {epoch}; lower the learning rate")
    return total, int(correct.item()), seen, tokens


def _epoch_metrics(result: EpochResult, device: torch.device) -> dict[str, float]:
    metrics = {
        "train/epoch_loss": result.train_loss,
        "train/accuracy": result.train_accuracy,
        "val/loss": result.val_loss,
        "val/accuracy": result.val_accuracy,
        "train/epoch_seconds": result.seconds,
        "train/samples_per_s": result.samples_per_s,
        "train/tokens_per_s": result.tokens_per_s,
    }
    if device.type == "cuda":
        metrics["train/peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return metrics


def _save(model: torch.nn.Module, folder: Path) -> None:
    """Write the model to ``folder`` atomically (temp folder + rename)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    model_uri: str
    history: History
    test_metrics: dict[str, float]
    registered: object | None  # tracking.Registration when --register-as was given


def package_model(model_dir: Path, tokenizer, config: Config, parent: Path) -> Path:
    """Model, tokenizer and the run's config in ``parent/hf_model``: what a logged model carries."""
    out = parent / "hf_model"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model_dir, out)
    tokenizer.save_pretrained(out)
    (out / "sentiment_config.yaml").write_text(to_yaml(config))
    return out


def run_train(config: Config, tracker, workdir: Path, register_as: str | None = None) -> TrainOutcome:
    """The train stage: everything `sentiment train` does inside its MLflow run."""
    from transformers import set_seed

    set_seed(config.seed)
    model_source = tracker.resolve_model_source(config.model.name)
    splits = data_mod.load_splits(config.data, config.seed)
    tokenizer = model_mod.load_tokenizer(model_source)
    net = model_mod.build_model(replace(config.model, name=model_source), config.data.max_length)
    device = model_mod.pick_device(config.train.device)
    precision = model_mod.pick_precision(config.train.precision, device)
    counts = model_mod.count_parameters(net)
    tracker.log_config(config)
    tracker.set_tags({**device_tags(device, precision), "sentiment.kind": "train"})
    tracker.log_metrics({"model/parameters": counts["total"], "model/trainable_parameters": counts["trainable"]}, step=0)
    tracker.log_splits(splits)
    encoded = {
        name: data_mod.encode(frame["text"].tolist(), tokenizer, config.data.max_length, config.data.truncation)
        for name, frame in (("train", splits.train), ("val", splits.val))
    }
    labels = {name: frame["label"].to_numpy() for name, frame in (("train", splits.train), ("val", splits.val))}

    def on_epoch_end(result: EpochResult, net) -> str | None:
        if config.log_checkpoints != "all":
            return None
        _save(net, workdir / f"epoch_{result.epoch}")
        folder = package_model(workdir / f"epoch_{result.epoch}", tokenizer, config, workdir / f"package_epoch_{result.epoch}")
        return tracker.log_model(folder, name=f"checkpoint-epoch-{result.epoch}", step=result.epoch).model_id

    history = fit(net, encoded["train"], labels["train"], encoded["val"], labels["val"], config, tracker, workdir, tokenizer.pad_token_id, on_epoch_end)
    tracker.log_figure(plots.training_curves(history), "figures/training_curves.png")
    tracker.log_table(_frame(history.lr_groups), "tables/layerwise_lr")
    package = package_model(history.best_dir, tokenizer, config, workdir / "package_best")
    logged = tracker.log_model(package, name="model", step=history.best_epoch)
    best = {"val/best_accuracy": history.best_val_accuracy, "train/best_epoch": history.best_epoch}
    tracker.log_metrics(best, step=history.best_epoch, model_id=logged.model_id)
    test_metrics: dict[str, float] = {}
    if config.run_test:
        best = model_mod.load_trained(history.best_dir)
        predictions = evaluate.predict_frame(best, tokenizer, splits.test, config, device)
        test_metrics = evaluate.log_evaluation(predictions, "test", tracker, model_id=logged.model_id, seed=config.seed)
    registered = None
    if register_as:
        registered = tracker.register(logged.model_uri, register_as, score=test_metrics.get("test/accuracy", history.best_val_accuracy))
    return TrainOutcome(tracker.run_id, logged.model_uri, history, test_metrics, registered)


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)
