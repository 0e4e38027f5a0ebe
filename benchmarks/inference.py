"""CPU inference paths side by side: ours (PyTorch fp32, bf16 autocast where the CPU has it
natively, dynamic int8 with one weight scale per matrix and per output channel) against ONNX
Runtime (the same model exported by `torch.onnx.export`, fp32 and dynamic int8 per channel), on
the same real test reviews, and how close each gets to the machine's matmul ceiling.

Each path scores the same reviews (a seeded stratified sample of the test split of ``--data``):
- batched: reviews/s at batch 32 in length-sorted batches (what `sentiment evaluate` and
  `sentiment score` do), timed after a warm-up pass;
- batch 1: one review per call over the first ``--latency-reviews`` of the sample (what a served
  request of one review costs): reviews/s, p50 and p99 milliseconds;
- accuracy, the paired delta to PyTorch fp32 (bootstrap interval, McNemar's p), agreement, and
  the model's size on disk (int8 paths: their quantized weights).

The limit: FLOPs per review from the encoder's shape and the sample's real token counts (every
layer's projections and feed-forward, and attention's two n x n products), against the machine's
matmul throughput measured at one layer's feed-forward shape (`torch.mm` fp32 and bf16,
`torch._int_mm` int8); each path's GFLOP/s on real tokens and its share of that ceiling.

The rule: ONNX Runtime becomes an export format (`sentiment export --format onnx`) only if its
fastest path within 0.5 points of PyTorch fp32 is at least 1.3x our fastest such path.

    python -m benchmarks.inference --model models:/NAME/VERSION --reviews 5000 --latency-reviews 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from benchmarks import record

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "imdb_reviews.parquet"
BATCH = 32
MAX_DELTA_POINTS = -0.5  # a path counts as "within half a point" of PyTorch fp32 at or above this delta
ONNX_RULE = 1.3  # ONNX Runtime must beat our fastest path within half a point by this factor


@dataclass
class InferencePath:
    """One way of turning encoded reviews into logits."""

    name: str
    family: str  # "torch" or "onnxruntime"
    logits: Callable  # (Encoded, batch_size) -> (N, 2) float32
    size_mb: float
    int8: bool = False


def sample_reviews(path: str, n: int, seed: int = 42) -> pd.DataFrame:
    """``n`` test reviews (half of each label), seeded, in id order."""
    frame = pd.read_parquet(path, columns=["id", "text", "label", "split"])
    test = frame[frame["split"] == "test"]
    picked = test.groupby("label", group_keys=False).sample(n=n // 2, random_state=seed)
    return picked.sort_values("id").reset_index(drop=True)[["id", "text", "label"]]


def subset(encoded, rows: list[int]):
    from sentiment import tokens

    return tokens.Encoded([encoded.input_ids[i] for i in rows], encoded.full_lengths[rows])


def torch_paths(folder: str, tmp: Path, pad_id: int) -> list[InferencePath]:
    import torch

    from sentiment import model as model_mod
    from sentiment.device import cpu_has_native_bf16, pick_precision
    from sentiment.inference import predict_logits

    cpu = torch.device("cpu")

    def runner(model, precision: str):
        chosen = pick_precision(precision, cpu)
        return lambda encoded, batch: predict_logits(model, encoded, cpu, batch, chosen, pad_id)

    def size_of(model) -> float:
        path = tmp / "state.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size / 1e6

    fp32 = model_mod.load_trained(folder).eval()
    paths = [
        InferencePath("PyTorch fp32 (sentiment evaluate, score, serve)", "torch", runner(fp32, "fp32"), size_of(fp32))
    ]
    if cpu_has_native_bf16():
        paths.append(InferencePath("PyTorch bf16 autocast", "torch", runner(fp32, "bf16"), size_of(fp32)))
    for per_channel, label in (
        (False, "per matrix (--quantize int8)"),
        (True, "per channel (sentiment export's default)"),
    ):
        q = model_mod.quantize_int8(model_mod.load_trained(folder).eval(), per_channel=per_channel)
        paths.append(InferencePath(f"PyTorch dynamic int8, {label}", "torch", runner(q, "fp32"), size_of(q), int8=True))
    return paths


def onnx_paths(folder: str, tmp: Path, pad_id: int, threads: int) -> list[InferencePath]:
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sentiment import data as data_mod
    from sentiment import model as model_mod

    model = model_mod.load_trained(folder).eval()
    fp32 = tmp / "model.onnx"
    example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    int8 = tmp / "model_int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    collate = data_mod.make_collate(pad_id)

    def runner(file: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])

        def logits(encoded, batch_size):
            out = np.empty((len(encoded.input_ids), 2), dtype=np.float32)
            for rows in data_mod.sorted_batches(encoded.lengths, batch_size):
                batch = collate([(encoded.input_ids[i], -1) for i in rows])
                feed = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
                out[rows] = session.run(None, feed)[0]
            return out

        return logits

    return [
        InferencePath("ONNX Runtime fp32", "onnxruntime", runner(fp32), fp32.stat().st_size / 1e6),
        InferencePath(
            "ONNX Runtime dynamic int8, per channel", "onnxruntime", runner(int8), int8.stat().st_size / 1e6, True
        ),
    ]


def measure(path: InferencePath, encoded, reviews: pd.DataFrame, latency_rows: int) -> tuple[dict, np.ndarray]:
    """Batched and batch-1 speed of one path, and its predictions."""
    path.logits(subset(encoded, list(range(min(BATCH, len(reviews))))), BATCH)  # warm-up
    started = time.perf_counter()
    logits = path.logits(encoded, BATCH)
    seconds = time.perf_counter() - started
    latencies = []
    for i in range(min(latency_rows, len(reviews))):
        one = subset(encoded, [i])
        started = time.perf_counter()
        path.logits(one, 1)
        latencies.append(time.perf_counter() - started)
    ms = 1000 * np.asarray(latencies)
    prediction = logits.argmax(axis=1)
    return {
        "path": path.name,
        "family": path.family,
        "int8": path.int8,
        "size_mb": path.size_mb,
        "seconds": seconds,
        "reviews_per_s": len(reviews) / seconds,
        "batch1_reviews_per_s": len(ms) / (ms.sum() / 1000),
        "batch1_p50_ms": float(np.percentile(ms, 50)),
        "batch1_p99_ms": float(np.percentile(ms, 99)),
        "accuracy": float((prediction == reviews["label"].to_numpy()).mean()),
    }, prediction


def flops_per_review(config: dict, lengths: np.ndarray) -> float:
    """Multiply-adds x 2 of one forward pass, averaged over the reviews' real token counts."""
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    n = lengths.astype(np.float64)
    per_layer = 2 * n * (4 * hidden * hidden + 2 * hidden * inner) + 2 * 2 * n * n * hidden
    return float(np.mean(layers * per_layer))


def matmul_ceiling(hidden: int, inner: int, rows: int = 4096, seconds: float = 3.0) -> dict[str, float]:
    """GFLOP/s of one layer's feed-forward matmuls on this CPU, the faster of (rows x hidden) @
    (hidden x inner) and its way back: fp32 and bf16 with `torch.mm`, int8 with a dynamically
    quantized Linear (fbgemm's int8 kernels, what the int8 paths run, activations quantized on the fly)."""
    import torch

    from sentiment import model as model_mod

    def fp(dtype):
        def make(n_in, n_out):
            a, b = torch.randn(rows, n_in).to(dtype), torch.randn(n_in, n_out).to(dtype)
            return lambda: torch.mm(a, b)

        return make

    def int8(n_in, n_out):
        layer = model_mod.quantize_int8(torch.nn.Sequential(torch.nn.Linear(n_in, n_out)))
        x = torch.randn(rows, n_in)
        return lambda: layer(x)

    out = {}
    with torch.inference_mode():
        for kind, make in {"fp32": fp(torch.float32), "bf16": fp(torch.bfloat16), "int8": int8}.items():
            best = 0.0
            for n_in, n_out in ((hidden, inner), (inner, hidden)):
                op = make(n_in, n_out)
                op()
                calls, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds / 2:
                    op()
                    calls += 1
                best = max(best, 2 * rows * n_in * n_out * calls / (time.perf_counter() - started) / 1e9)
            out[kind] = best
    return out


def paired(reviews: pd.DataFrame, prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    from sentiment.stats import Paired, compare

    labels = reviews["label"].to_numpy()
    result = compare([Paired(labels, prediction, reference)])
    return {
        "delta_points": 100 * result["delta_test_accuracy"],
        "delta_low": 100 * result["delta_test_accuracy_low"],
        "delta_high": 100 * result["delta_test_accuracy_high"],
        "p_value": result["p_value"],
        "agreement": float((prediction == reference).mean()),
    }


def decide(rows: list[dict]) -> dict:
    """The rule: ONNX Runtime's fastest path within half a point against ours."""
    within = [r for r in rows if r["delta_points"] >= MAX_DELTA_POINTS]
    ours = max((r for r in within if r["family"] == "torch"), key=lambda r: r["reviews_per_s"])
    theirs = max((r for r in within if r["family"] == "onnxruntime"), key=lambda r: r["reviews_per_s"], default=None)
    ratio = theirs["reviews_per_s"] / ours["reviews_per_s"] if theirs else 0.0
    return {
        "ours": ours["path"],
        "theirs": theirs["path"] if theirs else "",
        "ratio": ratio,
        "batch1_ratio": theirs["batch1_reviews_per_s"] / ours["batch1_reviews_per_s"] if theirs else 0.0,
        "offer_onnx": ratio >= ONNX_RULE,
    }


# long function: its argparse options, then the benchmark's steps in order (sample, paths, limit, record)
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a packaged model folder or an MLflow model URI")
    parser.add_argument("--data", default=str(REAL_DATA), help="real reviews with a test split (the shared parquet)")
    parser.add_argument("--reviews", type=int, default=5000, help="test reviews every path scores")
    parser.add_argument("--latency-reviews", type=int, default=300, help="of those, scored one at a time")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every path")
    parser.add_argument("--json", default="", help="also write the numbers here")
    parser.add_argument("--output", default="", help="also write this run's section as Markdown here")
    parser.add_argument(
        "--record-uri", default="", help="tracking server the benchmark's run goes to (default: MLFLOW_TRACKING_URI)"
    )
    args = parser.parse_args(argv)
    import torch

    from sentiment import data as data_mod
    from sentiment import model as model_mod
    from sentiment import tokens, tracking
    from sentiment.config import from_yaml

    torch.set_num_threads(args.threads)
    folder = str(tracking.fetch_model(args.model)[0]) if ":/" in args.model else args.model
    config = from_yaml((Path(folder) / "sentiment_config.yaml").read_text())
    encoder = json.loads((Path(folder) / "config.json").read_text())
    tokenizer = model_mod.load_tokenizer(folder)
    reviews = sample_reviews(args.data, args.reviews)
    encoded = tokens.encode(
        [data_mod.clean_text(t) for t in reviews["text"]], tokenizer, config.data.max_length, config.data.truncation
    )
    results: dict = {
        "kind": "inference",
        "command": " ".join(["python -m benchmarks.inference", *(sys.argv[1:] if argv is None else argv)]),
        "commit": record.commit(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": record.pinned(args.model),
        "model_run": record.source_run(args.model),
        "reviews": len(reviews),
        "latency_reviews": min(args.latency_reviews, len(reviews)),
        "max_length": config.data.max_length,
        "truncation": config.data.truncation,
        "threads": args.threads,
        "mean_tokens": float(encoded.lengths.mean()),
        "onnxruntime": __import__("onnxruntime").__version__,
        "torch": torch.__version__,
    }
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for path in [
            *torch_paths(folder, Path(tmp), tokenizer.pad_token_id),
            *onnx_paths(folder, Path(tmp), tokenizer.pad_token_id, args.threads),
        ]:
            row, prediction = measure(path, encoded, reviews, args.latency_reviews)
            reference = prediction if reference is None else reference
            rows.append({**row, **paired(reviews, prediction, reference)})
            print(f"{row['path']}: {row['reviews_per_s']:.1f} reviews/s, accuracy {row['accuracy']:.4f}", flush=True)
    flops = flops_per_review(encoder, encoded.lengths)
    ceiling = matmul_ceiling(encoder["hidden_size"], encoder["intermediate_size"])
    for row in rows:
        row["gflops"] = row["reviews_per_s"] * flops / 1e9
        peak = ceiling.get("int8" if row["int8"] else "bf16" if "bf16" in row["path"] else "fp32")
        row["share_of_ceiling"] = row["gflops"] / peak if peak else 0.0
    results.update({"paths": rows, "gflop_per_review": flops / 1e9, "ceiling_gflops": ceiling, "rule": decide(rows)})
    results = record.plain(results)
    print(json.dumps(results, indent=2))
    metrics = record.numbers(
        {
            **{f"path_{i}": {k: v for k, v in r.items() if k not in ("path", "family")} for i, r in enumerate(rows)},
            "ceiling_gflops": ceiling,
            "rule": results["rule"],
        }
    )
    record.finish("inference", results, metrics, args, markdown)
    return results


def markdown(results: dict, run_id: str | None = None) -> str:
    """The section of benchmarks/RESULTS.md, from the run's stored payload alone."""
    where = f"; MLflow run `{run_id}` (experiment `{record.EXPERIMENT}`)" if run_id else ""
    rule, ceiling = results["rule"], results["ceiling_gflops"]
    table = [
        "| path | reviews/s (batch 32) | batch 1: reviews/s | p50 ms | p99 ms | accuracy | vs PyTorch fp32 "
        "(paired 95% interval) | agree | MB | GFLOP/s | share of ceiling |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results["paths"]:
        table.append(
            f"| {r['path']} | {r['reviews_per_s']:.1f} | {r['batch1_reviews_per_s']:.1f} | {r['batch1_p50_ms']:.0f} | "
            f"{r['batch1_p99_ms']:.0f} | {100 * r['accuracy']:.2f}% | {r['delta_points']:+.2f} [{r['delta_low']:+.2f}, "
            f"{r['delta_high']:+.2f}], p {r['p_value']:.3g} | {100 * r['agreement']:.1f}% | {r['size_mb']:.0f} | "
            f"{r['gflops']:.0f} | {100 * r['share_of_ceiling']:.0f}% |"
        )
    verdict = (
        f"met: {rule['theirs']} is {rule['ratio']:.2f}x {rule['ours']}, so ONNX Runtime is offered as an export format"
        if rule["offer_onnx"]
        else (
            f"NOT met: ONNX Runtime's fastest path within half a point ({rule['theirs'] or 'none'}) is "
            f"{rule['ratio']:.2f}x our fastest ({rule['ours']}) batched and {rule['batch1_ratio']:.2f}x at batch 1, "
            f"below {ONNX_RULE}x; so no ONNX export format: it would add a runtime to install and a second model "
            "format to keep in step for less than the rule's gain"
        )
    )
    lines = [
        "## Inference paths: ours against ONNX Runtime",
        "",
        f"Measured by `{results['command']}` on {results['when']} at commit `{results['commit']}`{where}.",
        "",
        f"Model `{results['model']}`"
        + (f" (logged by run `{results['model_run']}`)" if results.get("model_run") else "")
        + f"; the same {results['reviews']:,} real test reviews (a seeded stratified sample) "
        f"for every path, max length {results['max_length']} ({results['truncation']} truncation), "
        f"{results['mean_tokens']:.0f} tokens per review on average; {results['threads']} threads; torch "
        f"{results['torch']}, onnxruntime {results['onnxruntime']}. Batch 32 in length-sorted batches after a "
        f"warm-up; batch 1 over the first {results['latency_reviews']} reviews one at a time. Deltas are paired "
        "against PyTorch fp32 on the same reviews (bootstrap interval, McNemar's p).",
        "",
        *table,
        "",
        f"The limit: {results['gflop_per_review']:.2f} GFLOP per review at this length profile (projections, "
        "feed-forward and attention of every layer, on real tokens); this CPU's measured matmul ceiling at one "
        "layer's feed-forward shape: "
        + ", ".join(f"{kind} {value:.0f} GFLOP/s" for kind, value in ceiling.items())
        + ". Each path's share is of the ceiling of its arithmetic (int8 paths: int8).",
        "",
        f"The rule (ONNX Runtime within half a point at >= {ONNX_RULE}x our fastest path within half a point): "
        f"{verdict}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
