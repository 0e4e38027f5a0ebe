"""CUDA check: our training loop's throughput, model FLOP utilisation, and the projected time of
the full reference recipe, in a few minutes on one GPU with the offline encoder.

Trains `offline-minilm` for two short epochs on a generated IMDB-like corpus through
`sentiment.train.fit` (mixed precision, fused AdamW, length-grouped batches, MLflow logging to
a scratch store, epoch checkpoints uploaded), takes the second (steady-state) epoch, and reports
samples/s, tokens/s, MFU, the MLflow share, peak GPU memory and evaluation throughput; then
projects DistilBERT's reference recipe (18,750 train x 3 epochs + 6,250 val x 3 + 25,000 test
at max length 512) from the measured MFU.

    bash benchmarks/gpu_check.sh                          # on a CUDA machine, under 5 minutes
    python -m benchmarks.gpu_check --device cpu --model DIR --reviews 32 --max-length 64   # dry run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import corpus, measure

# Dense bf16/fp16 tensor-core peaks (no sparsity), TFLOP/s. Override with GPU_PEAK_TFLOPS.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "GH200": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "A6000": 155.0,
    "V100": 125.0,
    "T4": 65.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}
# The reference recipe (README, preset `seed`): DistilBERT-base, IMDB at max length 512.
REFERENCE = {
    "layers": 6,
    "hidden": 768,
    "ffn": 3072,
    "train": 18_750,
    "val": 6_250,
    "test": 25_000,
    "epochs": 3,
    "t4_minutes": 47,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="offline-minilm")
    p.add_argument("--reviews", type=int, default=4096, help="training reviews per epoch (two epochs run)")
    p.add_argument("--val-reviews", type=int, default=1024)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16, help="the reference recipe's batch")
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu only for a dry run of this script")
    p.add_argument("--compile", action="store_true", help="also measure with torch.compile (adds about a minute)")
    p.add_argument("--output", default="", help="also write the report (Markdown) here")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def encoder_shape(model) -> dict[str, int]:
    """Layers, hidden size and non-embedding parameters of the encoder (what FLOPs scale with)."""
    from sentiment.model import embeddings

    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for p in embeddings(model).parameters())
    config = model.config
    return {
        "layers": int(getattr(config, "num_hidden_layers", getattr(config, "n_layers", 0))),
        "hidden": int(getattr(config, "hidden_size", getattr(config, "dim", 0))),
        "non_embedding_params": int(total - embedding),
    }


def training_flops(lengths: np.ndarray, params: int, layers: int, hidden: int) -> float:
    """Useful training FLOPs (forward + backward = 3x forward) over reviews of these lengths:
    6 N per token for the weights plus 12 L d t per token for attention scores and mixing."""
    t = lengths.astype(np.float64)
    return float((6.0 * params * t + 12.0 * layers * hidden * t * t).sum())


def peak_tflops(device_name: str) -> tuple[float | None, str]:
    if os.environ.get("GPU_PEAK_TFLOPS"):
        return float(os.environ["GPU_PEAK_TFLOPS"]), "GPU_PEAK_TFLOPS"
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return PEAK_TFLOPS[key], f"dense bf16/fp16 peak of {key}"
    return None, "unknown GPU: set GPU_PEAK_TFLOPS"


def project_reference(lengths_512: np.ndarray, mfu: float, peak: float) -> dict[str, float]:
    """Seconds for DistilBERT's full recipe at the measured MFU, from an IMDB-like length sample."""
    r = REFERENCE
    params = r["layers"] * (4 * r["hidden"] ** 2 + 2 * r["hidden"] * r["ffn"])
    per_review_train = training_flops(lengths_512, params, r["layers"], r["hidden"]) / len(lengths_512)
    flops = per_review_train * r["train"] * r["epochs"] + per_review_train / 3 * (r["val"] * r["epochs"] + r["test"])
    return {"flops": flops, "seconds": flops / (mfu * peak * 1e12), "non_embedding_params": params}


# long function: one measured training run in order: set up, train two epochs, read the second epoch's numbers
def run_once(args: argparse.Namespace, compile_model: bool, workdir: Path, frames) -> dict:
    """Two epochs of `fit` with MLflow tracking; the second epoch's throughput."""
    import torch

    from sentiment import device as device_mod
    from sentiment import evaluate, tokens, tracking
    from sentiment import model as model_mod
    from sentiment import train as train_mod
    from sentiment.config import build_config

    config = build_config(
        "seed",
        {
            "model.name": args.model,
            "data.max_length": args.max_length,
            "train.epochs": 2,
            "train.batch_size": args.batch_size,
            "train.eval_batch_size": args.eval_batch_size,
            "train.device": args.device,
            "train.compile": compile_model,
            "seed": args.seed,
        },
    )
    train_frame, val_frame = frames
    source = model_mod.resolve_source(args.model)
    tokenizer = model_mod.load_tokenizer(source)
    train_reviews = tokens.encode_reviews(train_frame, tokenizer, args.max_length, "head")
    val_reviews = tokens.encode_reviews(val_frame, tokenizer, args.max_length, "head")
    train_enc, val_enc = train_reviews.encoded, val_reviews.encoded
    torch.manual_seed(args.seed)
    model = model_mod.build_model(config.model, args.max_length)
    shape = encoder_shape(model)
    clock = measure.MlflowClock()
    measure.reset_gpu_peak()
    out_dir = workdir / ("compiled" if compile_model else "eager")
    with clock.installed(), tracking.open_run(run_name=f"gpu-check{'-compile' if compile_model else ''}") as tracker:
        started = time.perf_counter()
        hooks = train_mod.Hooks(checkpoints=train_mod.Checkpointer(out_dir, tracker))
        history = train_mod.fit(model, train_reviews, val_reviews, config, tracker, out_dir, hooks=hooks)
        fit_s = time.perf_counter() - started
        mlflow_s = clock.seconds
    second = history.epochs[-1]
    device = device_mod.pick_device(args.device)
    precision = device_mod.pick_precision("auto", device)
    measure.sync()
    eval_start = time.perf_counter()
    evaluate.predict_logits(model, val_enc, device, args.eval_batch_size, precision, tokenizer.pad_token_id)
    measure.sync()
    eval_s = time.perf_counter() - eval_start
    flops = training_flops(train_enc.lengths, shape["non_embedding_params"], shape["layers"], shape["hidden"])
    return {
        "compile": compile_model,
        "precision": precision.name,
        "attention": getattr(model.config, "_attn_implementation", "?"),
        "samples_per_s": second.samples_per_s,
        "tokens_per_s": second.tokens_per_s,
        "epoch_s": second.seconds,
        "first_epoch_s": history.epochs[0].seconds,
        "achieved_tflops": flops / second.seconds / 1e12,
        "fit_s": fit_s,
        "mlflow_s": mlflow_s,
        "mlflow_share": mlflow_s / fit_s,
        "eval_reviews_per_s": len(val_enc.input_ids) / eval_s,
        "val_accuracy": second.val_accuracy,
        "peak_gpu_mb": measure.gpu_peak_mb(),
        **shape,
    }


def report(
    args,
    device_name: str,
    runs: list[dict],
    peak: float | None,
    peak_source: str,
    profile: dict,
    lengths_512: np.ndarray,
) -> str:
    lines = [
        "# GPU check",
        "",
        f"`{' '.join(['bash benchmarks/gpu_check.sh', *sys.argv[1:]])}` on {device_name}; model `{args.model}`, "
        f"{args.reviews} training reviews x 2 epochs (second epoch measured), batch {args.batch_size}, max length "
        f"{args.max_length}; "
        f"corpus mean {profile['mean_tokens']:.0f} tokens, {profile['over_limit_share']:.1%} over 512.",
        f"Peak used for MFU: {f'{peak:.0f} TFLOP/s' if peak else 'unknown'} ({peak_source}).",
        "",
        "| run | precision | attention | samples/s | tokens/s | achieved TFLOP/s | MFU | first epoch s | MLflow share "
        "| eval reviews/s | peak GPU MB | val acc |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        mfu = run["achieved_tflops"] / peak if peak else float("nan")
        lines.append(
            f"| {'torch.compile' if run['compile'] else 'eager'} | {run['precision']} | {run['attention']} | "
            f"{run['samples_per_s']:.1f} | {run['tokens_per_s']:,.0f} | {run['achieved_tflops']:.1f} | {mfu:.1%} | "
            f"{run['first_epoch_s']:.1f} | {run['mlflow_share']:.2%} | {run['eval_reviews_per_s']:.0f} | "
            f"{run['peak_gpu_mb'] or 0:,.0f} | {run['val_accuracy']:.3f} |"
        )
    best = max(runs, key=lambda r: r["achieved_tflops"])
    if peak:
        mfu = best["achieved_tflops"] / peak
        projection = project_reference(lengths_512, mfu, peak)
        lines += [
            "",
            f"Projected reference recipe (DistilBERT, {REFERENCE['train']:,} x {REFERENCE['epochs']} epochs + "
            f"validation + {REFERENCE['test']:,} test, max length 512) at the best measured MFU {mfu:.1%}: "
            f"{projection['flops'] / 1e15:.0f} PFLOP -> **{projection['seconds'] / 60:.1f} minutes** (the reference "
            f"took {REFERENCE['t4_minutes']} minutes on a T4). DistilBERT's wider layers usually reach a higher MFU "
            "than MiniLM's, so this is an upper bound.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU visible; this check needs one (use --device cpu only for a dry run)", file=sys.stderr)
        return 2
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (dry run)"
    workdir = Path(tempfile.mkdtemp(prefix="sentiment-gpu-check-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "gpu-check"
    os.environ.pop("MLFLOW_RUN_ID", None)
    os.environ.setdefault("SENTIMENT_CACHE_DIR", str(workdir / "cache"))
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.create_experiment("gpu-check", artifact_location=(workdir / "artifacts").as_uri())
    from sentiment import model as model_mod

    frame = corpus.generate(args.reviews + args.val_reviews, seed=args.seed)
    frames = (frame.iloc[: args.reviews].reset_index(drop=True), frame.iloc[args.reviews :].reset_index(drop=True))
    tokenizer = model_mod.load_tokenizer(model_mod.resolve_source(args.model))
    profile = corpus.length_profile(frame["text"].tolist()[:2000], tokenizer)
    full = np.array(
        [len(ids) for ids in tokenizer(frame["text"].tolist()[:2000], truncation=True, max_length=512)["input_ids"]]
    )
    peak, peak_source = peak_tflops(device_name) if args.device == "cuda" else (None, "CPU dry run")
    runs: list[dict] = []
    for compile_model in (False, True) if args.compile else (False,):
        runs.append(run_once(args, compile_model, workdir, frames))
        text = report(args, device_name, runs, peak, peak_source, profile, full)
        print(text, flush=True)  # after each run: a timeout in the next one keeps this one's numbers
        if args.output:
            Path(args.output).write_text(text + "\n")
    print(json.dumps(runs, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
