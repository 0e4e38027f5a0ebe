"""The corpora a benchmark runs on (generated, the Hub's imdb, the real reviews), their specs, and the
runs of every side on one corpus, each phase timed (in a fresh process with --isolate)."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path

from benchmarks import corpus
from benchmarks.evaluation import evaluate_all
from benchmarks.machine import LoadMonitor, imdb_reachable
from benchmarks.sides import Spec, padded_tokens_sentiment, train_sentiment, train_trainer

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "imdb_reviews.parquet"
# Settings left unset on the command line take these values (the generated and imdb corpora) ...
DEFAULTS = {
    "model": "offline-minilm",
    "train_size": 512,
    "val_size": 128,
    "test_size": 512,
    "max_length": 512,
    "batch_size": 16,
    "eval_batch_size": 32,
    "epochs": 1,
    "lr": 2e-4,
}
# ... or these with --tiny (every corpus) ...
TINY = {
    "train_size": 48,
    "val_size": 16,
    "test_size": 32,
    "max_length": 128,
    "batch_size": 8,
    "eval_batch_size": 16,
}
# ... and on the real corpus these sizes; its other settings come from PRESETS["cpu"].
REAL_SIZES = {"train_size": 2000, "val_size": 500, "test_size": 1000}


def write_generated(path: Path, args: argparse.Namespace) -> Path:
    mean_words = 60.0 if args.tiny else corpus.MEAN_WORDS
    frame = corpus.generate(args.train_size + args.val_size + args.test_size, seed=args.seed, mean_words=mean_words)
    frame["split"] = ["test" if i >= args.train_size + args.val_size else "" for i in range(len(frame))]
    frame.to_parquet(path, index=False)
    return path


def write_imdb_subsample(path: Path, args: argparse.Namespace) -> Path:
    """A stratified, seeded subsample of the real imdb train and test splits, same sizes."""
    from sklearn.model_selection import train_test_split

    from sentiment.data import load_source

    frame = load_source("imdb")
    parts = []
    for split, n in (("train", args.train_size + args.val_size), ("test", args.test_size)):
        rows = frame[frame["split"] == split]
        picked, _ = train_test_split(rows, train_size=n, stratify=rows["label"], random_state=args.seed)
        parts.append(picked.assign(split="test" if split == "test" else ""))
    import pandas as pd

    pd.concat(parts, ignore_index=True)[["id", "text", "label", "split"]].to_parquet(path, index=False)
    return path


def real_source(args: argparse.Namespace) -> tuple[str | None, str]:
    """Where the real corpus comes from: the ``--real-data`` parquet when it exists, else the Hub's
    imdb when reachable. Returns (source for `load_source`, how to name it), or (None, why not)."""
    path = Path(args.real_data).expanduser()
    if path.is_file():
        return str(path.resolve()), f"`{path.resolve()}`"
    ok, reason = imdb_reachable()
    if ok:
        return "imdb", f"the Hub's `imdb` (no parquet at `{path}`)"
    return None, f"no parquet at {path} and the Hub's imdb is not available: {reason}"


def write_real(path: Path, source: str, test_size: int, seed: int) -> int:
    """The real corpus as the benchmark reads it: every review of the source's train split (the
    pool that validation and the training samples come from, split "") and a stratified, seeded
    sample of ``test_size`` reviews of its test split (split "test"). Returns the pool's size."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from sentiment.data import load_source

    frame = load_source(source)
    pool, test = frame[frame["split"] != "test"], frame[frame["split"] == "test"]
    if test.empty:
        raise ValueError(f"{source} has no test split: its split column needs train and test rows")
    if test_size < len(test):
        test, _ = train_test_split(test, train_size=test_size, stratify=test["label"], random_state=seed)
    parts = [pool.assign(split=""), test.assign(split="test")]
    pd.concat(parts, ignore_index=True)[["id", "text", "label", "split"]].to_parquet(path, index=False)
    return len(pool)


def setting(args: argparse.Namespace, name: str, default):
    """A real-corpus setting: the command line's value when given, the tiny one with --tiny,
    else ``default`` (the real corpus's size, or the `cpu` preset's value)."""
    if name in args.explicit:
        return getattr(args, name)
    return TINY[name] if args.tiny and name in TINY else default


def generated_spec(args: argparse.Namespace, path: Path, label: str, shared: dict) -> Spec:
    """The spec of the generated and imdb corpora: the command line's settings on both sides."""
    return Spec(
        model=args.model,
        data_path=str(path),
        val_fraction=args.val_size / (args.train_size + args.val_size),
        max_length=args.max_length,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        epochs=args.epochs,
        lr=args.lr,
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_grad_norm=1.0,
        dropout=0.1,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        compile=args.compile,
        label=label,
        **shared,
    )


def real_spec(args: argparse.Namespace, path: Path, source: str, shared: dict) -> Spec:
    """Write the real corpus and return its spec: the `cpu` preset's settings, read from
    PRESETS at run time, for both sides (layer decay and precision: ours only), and Trainer
    trained on our exact token ids, so the two differ only in the loop and the precision."""
    from sentiment.config import build_config

    config = build_config("cpu")
    d, m, t = config.data, config.model, config.train
    train_size = setting(args, "train_size", REAL_SIZES["train_size"])
    val_size = setting(args, "val_size", REAL_SIZES["val_size"])
    pool = write_real(path, source, setting(args, "test_size", REAL_SIZES["test_size"]), args.seed)
    if train_size + val_size > pool:
        raise ValueError(f"{train_size} train + {val_size} validation reviews asked; the train split has {pool}")
    return Spec(
        model=setting(args, "model", m.name),
        data_path=str(path),
        val_fraction=val_size / pool,
        max_length=setting(args, "max_length", d.max_length),
        batch_size=setting(args, "batch_size", t.batch_size),
        eval_batch_size=args.eval_batch_size,
        epochs=setting(args, "epochs", t.epochs),
        lr=setting(args, "lr", t.lr),
        warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        dropout=m.dropout,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        compile=args.compile,
        label="real",
        precision=t.precision,
        preset="cpu",
        truncation=d.truncation,
        layer_decay=t.layer_decay,
        train_size=train_size,
        trainer_ids="encode",
        **shared,
    )


def data_profile(spec: Spec) -> dict:
    """Length profile of the training split under the benchmark tokenizer, and how many training
    reviews the source offers (``train_pool_reviews``: the split before sampling ``train_size``)."""
    from benchmarks.sides import sentiment_config
    from sentiment import data as data_mod
    from sentiment import model as model_mod
    from sentiment import tokens

    config = sentiment_config(spec)
    frame = data_mod.load_source(config.data.source)
    splits = data_mod.make_splits(frame, config.data, config.seed)
    pool = splits.train
    if spec.train_size:  # the training split before the sample
        pool = data_mod.make_splits(frame, replace(config.data, train_size=0), config.seed).train
    tokenizer = model_mod.load_tokenizer(model_mod.resolve_source(spec.model))
    encoded = tokens.encode(splits.train["text"].tolist(), tokenizer, spec.max_length, spec.truncation)
    profile = corpus.length_profile(splits.test["text"].tolist() + splits.train["text"].tolist(), tokenizer)
    lengths = encoded.lengths
    return {
        **profile,
        "train_reviews": len(lengths),
        "train_pool_reviews": len(pool),
        "val_reviews": len(splits.val),
        "test_reviews": len(splits.test),
        "truncated_share": float((encoded.full_lengths > spec.max_length).mean()),
        "train_real_tokens": int(lengths.sum()) * spec.epochs,
        "sentiment_padded_tokens": padded_tokens_sentiment(lengths, spec),
    }


# ----------------------------------------------------------------------------- running


def call(isolate: bool, fn, *args):
    """Run a phase in a fresh process (spawned, so nothing is inherited) or right here."""
    if not isolate:
        return fn(*args)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def timed_call(isolate: bool, load: "LoadMonitor", fn, *args) -> dict:
    """`call`, adding the CPU other processes used meanwhile (``other_cores``) to its result."""
    start = time.monotonic()
    result = call(isolate, fn, *args)
    result["other_cores"] = load.cores_between(start, time.monotonic())
    return result


def init_tracking(uri: str, experiment: str, artifacts: Path) -> None:
    """Create the store and experiment up front, so neither side pays the schema migration;
    a new experiment keeps its artifacts in the work dir, not in the current folder."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifacts.resolve().as_uri())


def run_corpus(spec: Spec, isolate: bool, log, load: "LoadMonitor") -> dict:
    profile = data_profile(spec)
    log(
        f"[{spec.label}] {profile['train_reviews']} train / {profile['val_reviews']} val / {profile['test_reviews']} "
        f"test reviews, mean {profile['mean_words']:.0f} words, {profile['over_limit_share']:.1%} over 512 tokens"
    )
    log(f"[{spec.label}] training with sentiment ...")
    ours = timed_call(isolate, load, train_sentiment, spec)
    log(f"[{spec.label}]   {ours['train_wall_s']:.1f} s")
    log(f"[{spec.label}] training with transformers.Trainer ...")
    theirs = timed_call(isolate, load, train_trainer, spec)
    log(f"[{spec.label}]   {theirs['train_wall_s']:.1f} s")
    bf16 = None
    if cpu_bf16(spec):  # on CUDA our default already trains in bf16
        log(f"[{spec.label}] training with sentiment --precision bf16 ...")
        bf16 = timed_call(isolate, load, train_sentiment, replace(spec, precision="bf16"))
        log(f"[{spec.label}]   {bf16['train_wall_s']:.1f} s")
    log(f"[{spec.label}] evaluating: sentiment evaluate, pipeline, pad to 512 ...")
    evaluation = timed_call(
        isolate, load, evaluate_all, spec, ours["model_dir"], theirs["model_dir"], bf16["model_dir"] if bf16 else None
    )
    return {
        "spec": asdict(spec),
        "profile": profile,
        "sentiment": ours,
        "trainer": theirs,
        "sentiment_bf16": bf16,
        "evaluation": evaluation,
    }


def cpu_bf16(spec: Spec) -> bool:
    """Does this run train on a CPU (where our default is fp32), so a bf16 side adds something?"""
    import torch

    return spec.device == "cpu" or (spec.device == "auto" and not torch.cuda.is_available())


def run_real_corpus(spec: Spec, isolate: bool, log, load: "LoadMonitor") -> dict:
    """The real corpus: ours in fp32 and at the `cpu` preset's precision, Trainer with its defaults
    (fp32) and with its own mixed precision at that precision, then ours at the preset once more,
    for one epoch on as many reviews as fit in Trainer's training time; every model is tested on
    the same reviews. A preset that resolves to fp32 here runs once, and Trainer only in fp32."""
    from sentiment.device import pick_device, pick_precision

    precision = pick_precision(spec.precision, pick_device(spec.device)).name
    profile = data_profile(spec)
    log(
        f"[{spec.label}] {profile['train_reviews']} train (of {profile['train_pool_reviews']}) / "
        f"{profile['val_reviews']} val / {profile['test_reviews']} test reviews, mean {profile['mean_words']:.0f} "
        f"words, {profile['truncated_share']:.1%} of training reviews over {spec.max_length} tokens"
    )

    def train(what: str, fn, side: Spec) -> dict:
        log(f"[{spec.label}] training with {what} ...")
        out = timed_call(isolate, load, fn, side)
        log(f"[{spec.label}]   {out['train_wall_s']:.1f} s")
        return out

    mixed = precision != "fp32"
    ours = train("sentiment --precision fp32", train_sentiment, replace(spec, precision="fp32"))
    preset = train(f"sentiment, cpu preset ({precision})", train_sentiment, spec) if mixed else None
    theirs = train("transformers.Trainer (defaults: fp32)", train_trainer, spec)
    theirs_mixed = None
    if mixed:
        side = replace(spec, trainer_precision=precision)
        theirs_mixed = train(f"transformers.Trainer ({precision}=True)", train_trainer, side)
    budget = time_budget(profile, spec, preset or ours, theirs)
    log(f"[{spec.label}] {budget['train_reviews']} reviews fit in Trainer's {budget['budget_s']:.1f} s")
    side = replace(spec, epochs=1, train_size=budget["train_reviews"], variant="time-budget")
    timed = {**train("sentiment, cpu preset, the same time budget", train_sentiment, side), **budget}
    log(f"[{spec.label}] evaluating: sentiment evaluate, pipeline, pad to 512; each model's accuracy ...")
    others = {"trainer_bf16": theirs_mixed and theirs_mixed["model_dir"], "time_budget": timed["model_dir"]}
    evaluation = timed_call(
        isolate,
        load,
        evaluate_all,
        replace(spec, precision="auto"),
        ours["model_dir"],
        theirs["model_dir"],
        preset["model_dir"] if preset else None,
        others,
    )
    return {
        "spec": asdict(spec),
        "profile": profile,
        "preset_precision": precision,
        "sentiment": ours,
        "sentiment_bf16": preset,
        "trainer": theirs,
        "trainer_bf16": theirs_mixed,
        "time_budget": timed,
        "evaluation": evaluation,
    }


def time_budget(profile: dict, spec: Spec, ours: dict, theirs: dict) -> dict:
    """How many training reviews our side gets in Trainer's training time: that time less one
    validation pass, at our measured samples/s (loop, logging and checkpoints; no validation),
    capped by the training reviews the source has, and at least one batch."""
    per_s = profile["train_reviews"] * spec.epochs / (ours["train_wall_s"] - ours["validation_s"])
    validation_s = ours["validation_s"] / spec.epochs  # one pass: the budget run trains one epoch
    fits = int((theirs["train_wall_s"] - validation_s) * per_s)
    return {
        "budget_s": theirs["train_wall_s"],
        "budget_samples_per_s": per_s,
        "budget_validation_s": validation_s,
        "fits_reviews": fits,
        "available_reviews": profile["train_pool_reviews"],
        "train_reviews": min(profile["train_pool_reviews"], max(spec.batch_size, fits)),
    }
