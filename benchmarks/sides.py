"""The measured phases: `sentiment` training, `transformers.Trainer` training (and the evaluations, in
benchmarks/evaluation.py).

Each phase is a plain function of a picklable `Spec`, so the runner can call it in a fresh
process (clean memory peak, no state shared between the sides) or in-process for a smoke test.
Both training sides get the same model (built by `sentiment.model.build_model` under the same
seed, so even the fresh classification head is identical), the same splits, batch size, epochs,
max length, optimiser recipe, threads and tracking store; what differs is what each tool does by
itself: batching and padding, tokenization, the loop, and its MLflow logging.

    python -m benchmarks.run --tiny --model PATH     # runs every phase here at toy size
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import measure


@dataclass(frozen=True)
class Spec:
    """Everything both sides share. Paths are strings so the spec pickles across processes."""

    model: str
    data_path: str  # Parquet with id, text, label, split ("" = train/val pool, "test")
    val_fraction: float
    max_length: int
    batch_size: int
    eval_batch_size: int
    epochs: int
    lr: float
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    dropout: float
    seed: int
    threads: int
    device: str
    tracking_uri: str
    experiment: str
    workdir: str
    compile: bool = False
    label: str = "generated"  # which corpus, for names
    precision: str = "auto"  # ours only: auto (fp32 on CPU, bf16/fp16 on CUDA) or bf16
    preset: str = "seed"  # our config starts from this preset; the fields above override it
    truncation: str = "head"  # head or head_tail (sentiment.tokens.encode)
    layer_decay: float = 1.0  # ours only: Trainer has no layer-wise learning-rate decay
    train_size: int = 0  # stratified seeded sample of the training split (0: all of it)
    trainer_precision: str = "fp32"  # Trainer: fp32 (its default), bf16 or fp16 (its autocast)
    trainer_ids: str = "tokenizer"  # Trainer's token ids: its tokenizer, or `encode` (ours, exact)
    variant: str = ""  # appended to run and folder names (e.g. time-budget)


def _prepare(spec: Spec, cache_name: str) -> None:
    """Threads, quiet libraries, the tracking store, and a fresh token cache for this phase."""
    import torch

    torch.set_num_threads(spec.threads)
    os.environ["MLFLOW_TRACKING_URI"] = spec.tracking_uri
    os.environ["MLFLOW_EXPERIMENT_NAME"] = spec.experiment
    os.environ.pop("MLFLOW_RUN_ID", None)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["SENTIMENT_CACHE_DIR"] = str(Path(spec.workdir) / cache_name)
    from sentiment.model import _quiet_transformers

    _quiet_transformers()


def sentiment_config(spec: Spec):
    """Our config for the benchmark recipe: ``spec.preset`` with the shared settings. The data file
    holds the validation pool and the test reviews already, so only the training split is sampled."""
    from sentiment.config import build_config

    return build_config(
        spec.preset,
        {
            "data.source": spec.data_path,
            "data.max_length": spec.max_length,
            "data.truncation": spec.truncation,
            "data.val_fraction": spec.val_fraction,
            "data.train_size": spec.train_size,
            "data.val_size": 0,
            "data.test_size": 0,
            "model.name": spec.model,
            "model.dropout": spec.dropout,
            "train.epochs": spec.epochs,
            "train.batch_size": spec.batch_size,
            "train.eval_batch_size": spec.eval_batch_size,
            "train.lr": spec.lr,
            "train.layer_decay": spec.layer_decay,
            "train.weight_decay": spec.weight_decay,
            "train.warmup_ratio": spec.warmup_ratio,
            "train.max_grad_norm": spec.max_grad_norm,
            "train.device": spec.device,
            "train.compile": spec.compile,
            # run_test: the test predictions make the model a registrable version that `sentiment export`
            # measures (benchmarks/RESULTS.md, int8 section); fit() alone is timed
            "train.precision": spec.precision,
            "seed": spec.seed,
            "run_test": True,
        },
    )


def side_name(spec: Spec, side: str) -> str:
    """Run and folder name of a training side: corpus, non-default precision, variant."""
    precision = spec.precision if side == "sentiment" else spec.trainer_precision
    default = "auto" if side == "sentiment" else "fp32"
    parts = [spec.label, *([precision] if precision != default else []), *([spec.variant] if spec.variant else [])]
    return "-".join(parts)


def load_splits(spec: Spec):
    from sentiment import data as data_mod

    config = sentiment_config(spec)
    return data_mod.load_splits(config.data, config.seed)


# ----------------------------------------------------------------------------- ours


# long function: one timed side as the CLI runs it: config, run, training, test, each phase's clock in order
def train_sentiment(spec: Spec) -> dict:
    """`sentiment train` as the CLI runs it (a run with system metrics, then `run_train`), timed.

    Training wall time = `fit` (the loop, per-epoch validation, checkpoints and their uploads,
    all logging) plus the MLflow calls made before it (run start, params, datasets, tags), so
    it covers what Trainer's `train()` covers (its run start and parameter logging happen inside).
    """
    _prepare(spec, "cache-train-sentiment")
    from sentiment import evaluate, tracking
    from sentiment import train as train_mod
    from sentiment.train import loop as train_loop

    config = sentiment_config(spec)
    name = side_name(spec, "sentiment")
    workdir = Path(spec.workdir) / f"sentiment-{name}"
    clock = measure.MlflowClock()
    marks: dict[str, float] = {"validation_s": 0.0}
    real_fit, real_predict = train_loop.fit, evaluate.predict_logits

    def timed_fit(*args, **kwargs):
        measure.sync()
        marks.update(
            fit_start=time.perf_counter(),
            mlflow_before_fit=clock.seconds,
            threads_cpu_start=measure.mlflow_thread_cpu_seconds(),
        )
        history = real_fit(*args, **kwargs)
        measure.sync()
        marks.update(
            fit_end=time.perf_counter(),
            mlflow_after_fit=clock.seconds,
            threads_cpu_end=measure.mlflow_thread_cpu_seconds(),
        )
        return history

    def timed_predict(*args, **kwargs):
        started = time.perf_counter()
        try:
            return real_predict(*args, **kwargs)
        finally:
            if "fit_start" in marks and "fit_end" not in marks:
                marks["validation_s"] += time.perf_counter() - started

    measure.reset_gpu_peak()
    train_loop.fit, evaluate.predict_logits = timed_fit, timed_predict
    try:
        with clock.installed(), measure.PeakRss() as rss:
            stage_start = time.perf_counter()
            with tracking.open_run(run_name=f"bench-sentiment-{name}", system_metrics=True) as tracker:
                outcome = train_mod.run_train(config, tracker, train_mod.TrainRequest(workdir))
            stage_s = time.perf_counter() - stage_start
    finally:
        train_loop.fit, evaluate.predict_logits = real_fit, real_predict
    fit_s = marks["fit_end"] - marks["fit_start"]
    train_s = fit_s + marks["mlflow_before_fit"]
    mlflow_s = marks["mlflow_after_fit"]  # before and during fit
    return {
        "side": "sentiment train",
        "train_wall_s": train_s,
        "validation_s": marks["validation_s"],
        "mlflow_s": mlflow_s,
        "mlflow_top": clock.top(),
        "mlflow_thread_cpu_s": marks["threads_cpu_end"] - marks["threads_cpu_start"],
        "stage_s": stage_s,
        "stage_mlflow_s": clock.seconds,
        "peak_rss_mb": rss.peak_mb,
        "peak_gpu_mb": measure.gpu_peak_mb(),
        "val_accuracy": outcome.history.best_val_accuracy,
        "model_dir": str(outcome.history.best_dir),
        "run_id": outcome.run_id,
        "attention": _attention_of(outcome.run_id),
    }


def _attention_of(run_id: str) -> str:
    import mlflow

    from sentiment.tracking import keys

    return mlflow.get_run(run_id).data.tags.get(keys.ATTENTION, "?")


def padded_tokens_sentiment(lengths: np.ndarray, spec: Spec) -> int:
    """Tokens our length-grouped batches pad to, over all epochs (the sampler is deterministic)."""
    from sentiment.data import LengthGroupedBatches

    sampler = LengthGroupedBatches(lengths, spec.batch_size, seed=spec.seed)
    total = 0
    for epoch in range(1, spec.epochs + 1):
        sampler.set_epoch(epoch)
        total += sum(len(batch) * int(lengths[batch].max()) for batch in sampler)
    return total


# ----------------------------------------------------------------------------- Trainer


class _CountingCollator:
    """Wraps Trainer's own collator to count the padded tokens it produces (no other effect)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.padded_tokens = 0

    def __call__(self, features):
        batch = self.inner(features)
        self.padded_tokens += int(batch["input_ids"].numel())
        return batch


# long function: one timed side: Trainer's arguments spelled out beside ours, then training, test and clocks
def train_trainer(spec: Spec) -> dict:
    """`transformers.Trainer` with its defaults plus ``report_to=["mlflow"]`` on the same recipe.

    Its defaults: random sampling (no length grouping), `DataCollatorWithPadding` (pads each
    batch to its longest review), fused AdamW, logging every 500 steps, checkpoints every 500
    steps. Set to the shared recipe: batch size, epochs, learning rate, warmup steps, weight
    decay, clipping, seed. Its progress bar is off (ours is off when not on a terminal).
    ``spec.trainer_precision`` bf16/fp16 turns on its mixed precision (``bf16=True``: autocast,
    on CPU too); ``spec.trainer_ids == "encode"`` gives it our exact token ids (head+tail).
    """
    _prepare(spec, "cache-train-trainer")
    import torch
    from transformers import Trainer, TrainingArguments, set_seed
    from transformers.integrations import MLflowCallback

    from sentiment import model as model_mod
    from sentiment.config import ModelConfig

    splits = load_splits(spec)
    source = model_mod.resolve_source(spec.model)
    tokenizer = model_mod.load_tokenizer(source)
    tokenize_start = time.perf_counter()
    dataset = _trainer_dataset(spec, splits.train, tokenizer)
    tokenize_s = time.perf_counter() - tokenize_start
    set_seed(spec.seed)  # as run_train does before building: the same fresh head
    model = model_mod.build_model(ModelConfig(name=source, dropout=spec.dropout), spec.max_length)
    steps = math.ceil(len(dataset) / spec.batch_size) * spec.epochs
    name = side_name(spec, "trainer")
    mixed = spec.trainer_precision != "fp32"
    args = TrainingArguments(
        output_dir=str(Path(spec.workdir) / f"trainer-{name}"),
        per_device_train_batch_size=spec.batch_size,
        num_train_epochs=spec.epochs,
        learning_rate=spec.lr,
        weight_decay=spec.weight_decay,
        warmup_steps=math.ceil(spec.warmup_ratio * steps),
        max_grad_norm=spec.max_grad_norm,
        seed=spec.seed,
        report_to=["mlflow"],
        run_name=f"bench-trainer-{name}",
        disable_tqdm=True,
        # mixed precision without a GPU needs use_cpu (Trainer refuses bf16 otherwise)
        use_cpu=spec.device == "cpu" or (mixed and not torch.cuda.is_available()),
        torch_compile=spec.compile,
        bf16=spec.trainer_precision == "bf16",
        fp16=spec.trainer_precision == "fp16",
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    assert any(isinstance(cb, MLflowCallback) for cb in trainer.callback_handler.callbacks), (
        "report_to mlflow is not active"
    )
    collator = _CountingCollator(trainer.data_collator)
    trainer.data_collator = collator
    clock = measure.MlflowClock()
    measure.reset_gpu_peak()
    with clock.installed(), measure.PeakRss() as rss:
        started = time.perf_counter()
        trainer.train()
        measure.sync()
        train_s = time.perf_counter() - started
    threads_s = rss.mlflow_thread_cpu_s  # sampled: its async threads end with the run, inside train()
    out_dir = Path(spec.workdir) / f"trainer-model-{name}"
    trainer.save_model(str(out_dir))
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "side": "transformers.Trainer",
        "train_wall_s": train_s,
        "validation_s": 0.0,
        "mlflow_s": clock.seconds,
        "mlflow_top": clock.top(),
        "mlflow_thread_cpu_s": threads_s,
        "tokenize_s": tokenize_s,
        "padded_tokens": collator.padded_tokens,
        "peak_rss_mb": rss.peak_mb,
        "peak_gpu_mb": measure.gpu_peak_mb(),
        "model_dir": str(out_dir),
        "precision": spec.trainer_precision,
    }


def _trainer_dataset(spec: Spec, train, tokenizer):
    """Trainer's training set: its own tokenizer truncating at the head (what a user writes), or,
    with ``spec.trainer_ids == "encode"``, exactly the ids our side trains on (e.g. head+tail)."""
    import datasets

    if spec.trainer_ids == "encode":
        from sentiment import tokens

        ids = tokens.encode(train["text"].tolist(), tokenizer, spec.max_length, spec.truncation).input_ids
        columns = {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]}
        return datasets.Dataset.from_dict({**columns, "label": train["label"].astype(int).tolist()})
    return datasets.Dataset.from_pandas(train[["text", "label"]], preserve_index=False).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=spec.max_length),
        batched=True,
        remove_columns=["text"],
    )


# ----------------------------------------------------------------------------- evaluation
