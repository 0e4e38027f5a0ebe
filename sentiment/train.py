"""Fine-tune a classifier: AdamW, linear warmup and decay, clipping, mixed precision on CUDA.

`fit` is the loop and returns a History; it logs only through the tracker it is given.
`run_train` is the stage: data -> model -> fit -> logged model -> test evaluation -> registry.

    sentiment train --preset quick
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import sklearn.metrics as skm
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sentiment import data as data_mod
from sentiment import device as device_mod
from sentiment import evaluate, model as model_mod, plots, tokens
from sentiment.config import Config, to_yaml
from sentiment.distributed import Dist
from sentiment.errors import Interrupted, TrainingError, UserError


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
    val_f1_macro: float = float("nan")  # (absent from states saved before it was added)


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
    best_state: dict | None = None  # best weights in memory, on ranks other than 0


def _show_progress() -> bool:
    return sys.stderr.isatty()


@dataclass
class Progress:
    """Where training stands inside the current epoch; saved with every checkpoint."""

    epoch: int = 1  # the epoch in progress (1-based)
    batches_done: int = 0  # batches of that epoch already trained
    step: int = 0  # optimizer steps so far, all epochs
    loss_sum: float = 0.0  # partial-epoch sums, so resumed epoch metrics equal uninterrupted ones
    correct: int = 0
    seen: int = 0
    tokens: int = 0
    seconds: float = 0.0
    window_loss: float = 0.0  # loss sum since the last train/loss point
    window_n: int = 0


@dataclass
class Parts:
    """Everything a training step touches, built once by `setup`."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    sampler: data_mod.LengthGroupedBatches
    device: torch.device
    precision: device_mod.Precision
    micro_batch_size: int  # 0 = whole batch; halved on CUDA out-of-memory
    lr_groups: list[dict] = field(default_factory=list)
    net: torch.nn.Module | None = None  # the unwrapped model (``model`` may be its DDP wrapper)
    dist: Dist = field(default_factory=Dist)


def setup(model: torch.nn.Module, train: tokens.Encoded, config: Config, dist: Dist | None = None) -> Parts:
    """Device, precision, optimizer (layer-wise groups), linear warmup/decay schedule, sampler,
    and the DistributedDataParallel wrapper when launched with several ranks."""
    from transformers import get_linear_schedule_with_warmup

    t = config.train
    dist = dist or Dist()
    device = dist.device(device_mod.pick_device(t.device))
    precision = device_mod.pick_precision(t.precision, device)
    model.to(device)
    if t.compile:
        # In place, so parameter names, state_dict and save_pretrained are unchanged. dynamic=True:
        # dynamic padding gives a new sequence width almost every batch; one graph serves them all.
        model.compile(dynamic=True)
    groups = model_mod.layerwise_param_groups(model, t.lr, t.layer_decay, t.weight_decay)
    # Fused: one kernel over all parameters (CUDA, and CPU since torch 2.4): about 3x faster steps
    # than the per-group foreach path, 2-5% of a MiniLM training step on 2 CPU cores.
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "name"} for g in groups], lr=t.lr, fused=device.type in ("cuda", "cpu")
    )
    sampler = data_mod.LengthGroupedBatches(train.lengths, t.batch_size, seed=config.seed)
    total_steps = len(sampler) * t.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(t.warmup_ratio * total_steps), total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.name == "fp16")
    wrapped = model
    if dist.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return Parts(wrapped, optimizer, scheduler, scaler, sampler, device, precision, t.micro_batch_size, model_mod.lr_table(groups), model, dist)


def fit(
    model: torch.nn.Module,
    train: tokens.Encoded,
    train_labels: np.ndarray,
    val: tokens.Encoded,
    val_labels: np.ndarray,
    config: Config,
    tracker,
    workdir: Path,
    pad_id: int,
    on_epoch_end=None,
    checkpoints: "Checkpointer | None" = None,
    resume: dict | None = None,
    should_stop=lambda: 0,
    dist: Dist | None = None,
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
        checkpoints: saves the full training state at epoch ends (and every N steps).
        resume: a state saved by ``checkpoints``: training continues exactly where it stopped.
        should_stop: returns a signal number (non-zero) when training must save and stop.
    Returns:
        The History with one EpochResult per epoch and the best checkpoint's folder.
    Raises:
        Interrupted: should_stop fired; the state was saved first.
        TrainingError: a non-finite loss or gradient.
    """
    parts = setup(model, train, config, dist)
    history, progress = History(lr_groups=parts.lr_groups), Progress()
    if resume is not None:
        progress, history = restore_state(parts, resume)
    best_dir = workdir / "best"
    while progress.epoch <= config.train.epochs:
        _train_epoch(parts, train, train_labels, pad_id, config, tracker, history, progress, checkpoints, should_stop)
        logits = sharded_logits(parts.net, val, parts.dist, parts.device, parts.precision, config.train.eval_batch_size, pad_id)
        loss_sum, correct, seen, tokens = parts.dist.all_sum([progress.loss_sum, progress.correct, progress.seen, progress.tokens])
        result = EpochResult(
            epoch=progress.epoch,
            train_loss=loss_sum / seen,
            train_accuracy=correct / seen,
            val_loss=float(F.cross_entropy(torch.tensor(logits), torch.tensor(val_labels, dtype=torch.long)).item()),
            val_accuracy=float((logits.argmax(1) == val_labels).mean()),
            val_f1_macro=float(skm.f1_score(val_labels, logits.argmax(1), average="macro", labels=[0, 1], zero_division=0)),
            seconds=progress.seconds,
            samples_per_s=seen / progress.seconds,
            tokens_per_s=tokens / progress.seconds,
            step=progress.step,
        )
        history.epochs.append(result)
        if result.val_accuracy > history.best_val_accuracy:
            history.best_epoch, history.best_val_accuracy, history.best_dir = result.epoch, result.val_accuracy, best_dir
            if parts.dist.is_main:
                _save(parts.net, best_dir)
            else:  # other ranks may not share rank 0's disk: they keep the best weights in memory
                history.best_state = {k: v.detach().cpu().clone() for k, v in parts.net.state_dict().items()}
            if checkpoints is not None:
                checkpoints.upload_best(best_dir)
        model_id = on_epoch_end(result, parts.net) if on_epoch_end is not None else None
        tracker.log_metrics(_epoch_metrics(result, parts.device), step=result.epoch, model_id=model_id)
        progress = Progress(epoch=progress.epoch + 1, step=progress.step)
        if checkpoints is not None:
            checkpoints.save(capture_state(parts, progress, history), upload=True)
    history.best_dir = best_dir
    return history


def sharded_logits(net, encoded: tokens.Encoded, dist: Dist, device, precision, batch_size: int, pad_id: int) -> np.ndarray:
    """Logits for every review in input order, each rank predicting its share (rank::world) and
    all gathering (one process: simply all of them)."""
    index = np.arange(len(encoded.input_ids))[dist.rank :: dist.world_size]
    shard = tokens.Encoded([encoded.input_ids[i] for i in index], encoded.full_lengths[index])
    logits = evaluate.predict_logits(net, shard, device, batch_size, precision, pad_id)
    out = np.empty((len(encoded.input_ids), 2), dtype=np.float32)
    for rank_index, rank_logits in dist.gather((index, logits)):
        out[rank_index] = rank_logits
    return out


def _train_epoch(parts: Parts, train, train_labels, pad_id, config, tracker, history, progress, checkpoints, should_stop) -> None:
    """Train the rest of ``progress.epoch``, updating ``progress`` in place."""
    t = config.train
    parts.model.train()
    parts.sampler.set_epoch(progress.epoch)
    batches = list(parts.sampler)[progress.batches_done :]
    collate = data_mod.make_collate(pad_id)
    # Accumulate on the device: reading a value per step would be a host-device sync point.
    acc = {name: torch.tensor(getattr(progress, name), device=parts.device, dtype=torch.float64) for name in ("loss_sum", "correct", "window_loss")}
    nonfinite = torch.zeros((), device=parts.device, dtype=torch.bool)
    started = time.perf_counter()
    bar = tqdm(batches, desc=f"epoch {progress.epoch}/{t.epochs}", disable=not _show_progress(), leave=False)
    rank, world = parts.dist.rank, parts.dist.world_size
    for indices in bar:
        # Every rank walks the same global batches and trains on its own slice of each, so the
        # global batch, and with it the learning-rate schedule, does not depend on the world size.
        mine = indices[rank::world]
        scale = world / len(indices) if mine else 0.0  # an empty slice still joins DDP's all-reduce
        mine = mine or indices[:1]
        batch = collate([(train.input_ids[i], int(train_labels[i])) for i in mine])
        batch = {k: v.to(parts.device, non_blocking=True) for k, v in batch.items()}
        loss_sum, correct, grad_norm = _optimizer_step(parts, batch, t.max_grad_norm, tracker, scale)
        if parts.precision.name != "fp16":  # fp16 overflows are expected; the scaler skips them
            nonfinite |= ~torch.isfinite(grad_norm)
        progress.step += 1
        progress.batches_done += 1
        progress.window_n += 1
        if scale:
            progress.seen += len(mine)
            progress.tokens += int(batch["attention_mask"].sum())
            acc["loss_sum"] += loss_sum
            acc["window_loss"] += loss_sum / len(indices)
            acc["correct"] += correct
        if progress.step % t.log_every_steps == 0:
            # note: one sync (and one all-reduce) per log interval
            mean_loss = parts.dist.all_sum([acc["window_loss"].item()])[0] / progress.window_n
            _check_finite(mean_loss, bool(nonfinite), progress)
            lr = max(parts.scheduler.get_last_lr())
            tracker.log_metrics({"train/loss": mean_loss, "train/lr": lr}, step=progress.step)
            history.steps.append(progress.step)
            history.step_loss.append(mean_loss)
            history.step_lr.append(lr)
            acc["window_loss"].zero_()
            progress.window_n = 0
            bar.set_postfix(loss=f"{mean_loss:.4f}")
        checkpoint_due = t.checkpoint_every_steps and progress.step % t.checkpoint_every_steps == 0
        signum = should_stop()
        if checkpoint_due or signum:
            _sync_progress(progress, acc, started)
            started = time.perf_counter()
            _check_finite(progress.loss_sum, bool(nonfinite), progress)
            if checkpoints is not None:
                checkpoints.save(capture_state(parts, progress, history), upload=True)
            if signum:
                raise Interrupted(signum)
    _sync_progress(progress, acc, started)
    _check_finite(progress.loss_sum, bool(nonfinite), progress)


def _sync_progress(progress: Progress, acc: dict, started: float) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    progress.seconds += time.perf_counter() - started
    progress.loss_sum = float(acc["loss_sum"].item())
    progress.correct = int(acc["correct"].item())
    progress.window_loss = float(acc["window_loss"].item())


def _check_finite(loss: float, nonfinite_grad: bool, progress: Progress) -> None:
    if math.isfinite(loss) and not nonfinite_grad:
        return
    what = f"training loss became {loss}" if not math.isfinite(loss) else "gradients became non-finite"
    raise TrainingError(
        f"{what} by step {progress.step} (epoch {progress.epoch}); the last good checkpoint is kept; lower the learning rate",
        tags={"sentiment.failed_step": str(progress.step), "sentiment.failure": "non-finite"},
    )


def _optimizer_step(parts: Parts, batch: dict, max_grad_norm: float, tracker, scale: float):
    """Forward, backward (in micro-batches if needed), clip, step.

    The backward loss is ``scale`` times the summed example losses (1/batch in one process, so
    the mean). Returns detached (summed loss, correct, grad norm).

    On CUDA out-of-memory the step is retried with half the micro-batch and gradient
    accumulation, so the effective batch size (and the result) stay the same.
    """
    while True:
        try:
            loss, correct = _forward_backward(parts, batch, scale)
            break
        except torch.OutOfMemoryError:
            parts.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            size = batch["labels"].shape[0] if not parts.micro_batch_size else parts.micro_batch_size
            if size <= 1:
                raise TrainingError("CUDA out of memory even with micro-batch 1; lower --max-length or use a smaller model") from None
            parts.micro_batch_size = size // 2
            tracker.set_tags({"sentiment.micro_batch_size": parts.micro_batch_size})
    parts.scaler.unscale_(parts.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), max_grad_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return loss, correct, grad_norm


def _forward_backward(parts: Parts, batch: dict, scale: float):
    n = batch["labels"].shape[0]
    size = parts.micro_batch_size or n
    loss_total = torch.zeros((), device=parts.device, dtype=torch.float64)
    correct = torch.zeros((), device=parts.device, dtype=torch.float64)
    for start in range(0, n, size):
        chunk = {k: v[start : start + size] for k, v in batch.items()}
        width = int(chunk["attention_mask"].sum(1).max()) if size < n else chunk["input_ids"].shape[1]
        with parts.precision.autocast(parts.device):
            logits = parts.model(input_ids=chunk["input_ids"][:, :width], attention_mask=chunk["attention_mask"][:, :width]).logits
        # summed per chunk: micro-batches and ranks add up to the mean over the global batch
        loss = F.cross_entropy(logits.float(), chunk["labels"], reduction="sum")
        parts.scaler.scale(loss * scale).backward()
        loss_total += loss.detach()
        correct += (logits.argmax(-1) == chunk["labels"]).sum()
    return loss_total, correct


class StopOnSignal:
    """SIGINT/SIGTERM set a flag the loop checks after each step (it then saves and stops);
    a second signal stops at once."""

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self) -> int:
        return self.signum

    def install(self) -> "StopOnSignal":
        def handler(signum, frame):
            if self.signum:
                raise Interrupted(signum)
            self.signum = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
        return self


# ----------------------------------------------------------------------------- checkpoints

STATE_FILE = "state.pt"


def capture_state(parts: Parts, progress: Progress, history: History) -> dict:
    """Everything needed to continue bit-for-bit: weights, optimizer, schedule, scaler, RNGs, position."""
    numpy_state = np.random.get_state()
    rng = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": 1,
        "model": parts.net.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "micro_batch_size": parts.micro_batch_size,
        "rng": rng,
        "progress": asdict(progress),
        "history": _history_to_dict(history),
    }


def restore_state(parts: Parts, state: dict) -> tuple[Progress, History]:
    parts.net.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    parts.micro_batch_size = state["micro_batch_size"]
    rng = state["rng"]
    random.setstate(_tuples(rng["python"]))
    numpy_state = rng["numpy"]
    np.random.set_state((numpy_state[0], numpy_state[1].numpy(), *numpy_state[2:]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    history = state["history"]
    return Progress(**state["progress"]), History(
        epochs=[EpochResult(**e) for e in history["epochs"]],
        best_epoch=history["best_epoch"],
        best_val_accuracy=history["best_val_accuracy"],
        lr_groups=history["lr_groups"],
        steps=history["steps"],
        step_loss=history["step_loss"],
        step_lr=history["step_lr"],
    )


def _tuples(value):
    """torch.load gives lists back where random.setstate wants tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _history_to_dict(history: History) -> dict:
    out = asdict(history)
    out["best_dir"] = None
    out.pop("best_state", None)
    return out


class Checkpointer:
    """Writes the training state atomically to ``folder/state.pt`` and uploads it to the run."""

    def __init__(self, folder: Path, tracker, upload: bool = True) -> None:
        self.folder = folder
        self.tracker = tracker
        self.upload = upload  # False: the state stays on local disk (e.g. ablation children)
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, state: dict, upload: bool) -> Path:
        # Everything logged so far reaches the server before the state that follows it exists.
        self.tracker.flush()
        path = self.folder / STATE_FILE
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a crash leaves the previous state whole
        if upload and self.upload:
            self.tracker.upload_checkpoint(path)
        return path

    def upload_best(self, best_dir: Path) -> None:
        if self.upload:
            self.tracker.upload_checkpoint(best_dir)

    @staticmethod
    def load(path: Path) -> dict:
        # weights_only: a checkpoint is data, never code
        return torch.load(path, map_location="cpu", weights_only=True)


def _epoch_metrics(result: EpochResult, device: torch.device) -> dict[str, float]:
    metrics = {
        "train/epoch_loss": result.train_loss,
        "train/accuracy": result.train_accuracy,
        "val/loss": result.val_loss,
        "val/accuracy": result.val_accuracy,
        "val/f1_macro": result.val_f1_macro,
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


def run_train(
    config: Config,
    tracker,
    workdir: Path,
    register_as: str | None = None,
    resume: bool = False,
    should_stop=lambda: 0,
    dist: Dist | None = None,
) -> TrainOutcome | None:
    """The train stage: everything `sentiment train` does inside its MLflow run.

    With ``resume`` the run's latest checkpoint (local, else downloaded from the run) is loaded
    and training continues where it stopped, logging no step twice. Under torchrun every rank
    calls this; only rank 0 gets a real tracker, writes checkpoints and logs models (other ranks
    return None).
    """
    dist = dist or Dist()
    from transformers import set_seed

    set_seed(config.seed)
    model_source = tracker.resolve_model_source(config.model.name)
    splits = data_mod.load_splits(config.data, config.seed)
    tokenizer = model_mod.load_tokenizer(model_source, config.model.trust_remote_code)
    net = model_mod.build_model(replace(config.model, name=model_source), config.data.max_length)
    model_mod.mask_heads(net, splits.train["text"].tolist(), splits.train["label"].to_numpy(), tokenizer, config)  # keep_heads
    device = dist.device(device_mod.pick_device(config.train.device))
    precision = device_mod.pick_precision(config.train.precision, device)
    state = load_resume_state(tracker, workdir, config.upload_state) if resume else None
    if state is None:
        counts = model_mod.count_parameters(net)
        tracker.log_config(config)
        sizes = {f"data/{name}_reviews": float(n) for name, n in splits.sizes().items()}
        tracker.log_metrics({"model/parameters": counts["total"], "model/trainable_parameters": counts["trainable"], **sizes}, step=0)
        tracker.log_splits(splits)
        if dist.enabled:
            per_rank = math.ceil(config.train.batch_size / dist.world_size)
            tracker.log_params({"distributed.world_size": dist.world_size, "distributed.per_rank_batch_size": per_rank})
            tracker.set_tags({"sentiment.launcher": dist.launcher, "sentiment.world_size": dist.world_size})
    else:
        tracker.set_tags({"sentiment.resumed_from_step": state["progress"]["step"]})
    # transformers picks SDPA attention for encoders that support it (BERT, DistilBERT, RoBERTa,
    # MiniLM), eager otherwise; recorded so runs on different versions compare honestly.
    attention = getattr(net.config, "_attn_implementation", None) or "eager"
    tracker.set_tags({**device_mod.device_tags(device, precision), "sentiment.kind": "train", "sentiment.attention": attention})
    encoded = {
        name: tokens.encode_cached(frame["text"].tolist(), tokenizer, config.data.max_length, config.data.truncation)
        for name, frame in (("train", splits.train), ("val", splits.val))
    }
    labels = {name: frame["label"].to_numpy() for name, frame in (("train", splits.train), ("val", splits.val))}

    def on_epoch_end(result: EpochResult, net) -> str | None:
        if config.log_checkpoints != "all" or not dist.is_main:
            return None
        _save(net, workdir / f"epoch_{result.epoch}")
        folder = package_model(workdir / f"epoch_{result.epoch}", tokenizer, config, workdir / f"package_epoch_{result.epoch}")
        return tracker.log_model(folder, name=f"checkpoint-epoch-{result.epoch}", step=result.epoch).model_id

    history = fit(
        net, encoded["train"], labels["train"], encoded["val"], labels["val"], config, tracker, workdir,
        tokenizer.pad_token_id, on_epoch_end, Checkpointer(workdir, tracker, config.upload_state) if dist.is_main else None, state,
        should_stop, dist,
    )  # fmt: skip
    if not dist.is_main:
        _test_predictions(net, history, tokenizer, splits.test, config, device, precision, dist)  # its share of the test set
        return None
    tracker.log_figure(plots.training_curves(history), "figures/training_curves.png")
    tracker.log_table(_frame(history.lr_groups), "tables/layerwise_lr")
    package = package_model(history.best_dir, tokenizer, config, workdir / "package_best")
    logged = tracker.log_model(package, name="model", step=history.best_epoch)
    best = {"val/best_accuracy": history.best_val_accuracy, "train/best_epoch": history.best_epoch}
    best_f1 = next((e.val_f1_macro for e in history.epochs if e.epoch == history.best_epoch), float("nan"))
    if not math.isnan(best_f1):
        best["val/best_f1_macro"] = best_f1
    tracker.log_metrics(best, step=history.best_epoch, model_id=logged.model_id)
    test_metrics: dict[str, float] = {}
    if config.run_test:
        started = time.perf_counter()
        predictions = _test_predictions(net, history, tokenizer, splits.test, config, device, precision, dist)
        test_seconds = time.perf_counter() - started  # tokenizing (or the token cache) and predicting
        test_metrics = evaluate.log_evaluation(predictions, "test", tracker, model_id=logged.model_id, seed=config.seed)
        tracker.log_metrics({"test/seconds": test_seconds}, step=history.best_epoch)
    registered = None
    if register_as:
        registered = tracker.register(logged.model_uri, register_as, score=test_metrics.get("test/accuracy", history.best_val_accuracy))
    return TrainOutcome(tracker.run_id, logged.model_uri, history, test_metrics, registered)


def _test_predictions(net, history: History, tokenizer, test, config: Config, device, precision, dist: Dist):
    """The test predictions table of the best checkpoint; under torchrun each rank predicts its
    share and rank 0 gets ONE table with every review exactly once, in the split's order."""
    if not config.run_test:
        return None
    if history.best_state is not None:
        net.load_state_dict(history.best_state)
        best = net
    else:
        best = model_mod.load_trained(history.best_dir).to(device)
    encoded = tokens.encode_cached(test["text"].tolist(), tokenizer, config.data.max_length, config.data.truncation)
    logits = sharded_logits(best, encoded, dist, device, precision, config.train.eval_batch_size, tokenizer.pad_token_id)
    if not dist.is_main:
        return None
    return evaluate.predictions_table(test, evaluate.softmax(logits), encoded, config.data.max_length)


def load_resume_state(tracker, workdir: Path, uploaded: bool = True) -> dict:
    """The latest training state of the run: the local copy if there is one, else the uploaded one."""

    path = workdir / STATE_FILE
    if not path.is_file() and not uploaded:
        raise UserError(
            f"run {tracker.run_id} kept its training state on local disk (upload_state false) and {path} does not exist; "
            "resume it on the machine that trained it, with the same --output-dir"
        )
    if not path.is_file():
        tracker.download_checkpoints(workdir)
    if not path.is_file():
        raise UserError(f"run {tracker.run_id} has no training checkpoint to resume from (no {STATE_FILE} locally or in its artifacts)")
    state = Checkpointer.load(path)
    if not (workdir / "best").is_dir() and state["progress"]["epoch"] > 1:
        raise UserError(f"run {tracker.run_id} has a state but no best model checkpoint; it cannot be resumed")
    tracker.skip_logged_steps()
    return state


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)
