"""Scoring at scale, measured: `sentiment score` against `transformers.pipeline` on real reviews,
and peak memory as the file grows.

1. Throughput: the same model folder, the same reviews (the first ``--reviews`` of the real
   corpus), the same max length, truncation and batch size, fp32 on CPU (and bf16 for ours with
   ``--precision bf16``): `sentiment score` (length-sorted batches, streamed) vs
   `pipeline("text-classification")` batched; both timed after loading the model and a warm-up
   pass (pipeline truncates to the head, ours to the model's own truncation: the same tokens
   per review, so the same compute).
2. Memory: `sentiment score` on the real reviews repeated to each of ``--rows`` (e.g. 50,000 and
   200,000; Parquet row groups of 10,000), peak RSS of the process sampled every 20 ms. A small
   model (``--memory-model``, e.g. a tiny random BERT) keeps the 200k-row pass short; the
   streaming, not the model, is what this measures.

    python -m benchmarks.scoring --model DIR_OR_URI --reviews 2000 --rows 50000,200000 --memory-model TINY_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import psutil

from benchmarks import record

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "imdb_reviews.parquet"


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a command, RSS sampled every 20 ms."""
    started, peak = time.perf_counter(), 0
    proc = psutil.Popen(
        cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - started, peak / 2**20


def score_cmd(model: str, source: Path, out: Path, precision: str, batch_size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sentiment",
        "score",
        "--model-uri",
        model,
        "--input",
        str(source),
        "--output",
        str(out),
        "--precision",
        precision,
        "--batch-size",
        str(batch_size),
    ]


def pipeline_rate(folder: str, texts: list[str], max_length: int, batch_size: int) -> float:
    """Reviews/s of transformers.pipeline on ``texts`` (after a warm-up batch)."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=folder, tokenizer=folder, device=-1)
    kwargs = {"truncation": True, "max_length": max_length, "batch_size": batch_size}
    classify(texts[:batch_size], **kwargs)
    started = time.perf_counter()
    classify(texts, **kwargs)
    return len(texts) / (time.perf_counter() - started)


# long function: its argparse options, then the benchmark's steps in order (throughput, memory passes, record)
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", required=True, help="a packaged model folder or an MLflow model URI (the throughput model)"
    )
    parser.add_argument("--data", default=str(REAL_DATA), help="real reviews (the shared parquet)")
    parser.add_argument("--reviews", type=int, default=2000, help="reviews for the throughput comparison")
    parser.add_argument("--rows", default="50000,200000", help="file sizes for the memory comparison")
    parser.add_argument("--memory-model", default="", help="model for the memory passes (default: --model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", default="", help="also write the numbers here")
    parser.add_argument(
        "--output",
        default="",
        help="also write this run's section as Markdown here (benchmarks/RESULTS.md is rendered by make results)",
    )
    parser.add_argument(
        "--record-uri", default="", help="tracking server the benchmark's run goes to (default: MLFLOW_TRACKING_URI)"
    )
    args = parser.parse_args(argv)
    from sentiment import tracking
    from sentiment.config import from_yaml

    folder = str(tracking.fetch_model(args.model)[0]) if ":/" in args.model else args.model
    config = from_yaml((Path(folder) / "sentiment_config.yaml").read_text())
    reviews = pd.read_parquet(args.data, columns=["text"])
    results: dict = {
        "kind": "scoring",
        "command": " ".join(["python -m benchmarks.scoring", *(sys.argv[1:] if argv is None else argv)]),
        "commit": record.commit(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": record.pinned(args.model),
        "memory_model": record.pinned(args.memory_model or args.model),
    }
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.parquet"
        reviews.head(args.reviews).to_parquet(sample, row_group_size=10_000)
        from sentiment import score as score_mod

        scorer = score_mod.Scorer(folder, args.precision, "cpu", args.batch_size)
        job = score_mod.plan_score(folder, str(sample), str(Path(tmp) / "scored.parquet"), batch_size=args.batch_size)
        score_mod.score_file(replace(job, output=Path(tmp) / "warm.parquet"), scorer)  # warm-up pass
        ours = score_mod.score_file(
            job, scorer
        ).reviews_per_s  # reading, scoring, writing; model loaded once, as pipeline's
        theirs = pipeline_rate(
            folder, reviews["text"].head(args.reviews).tolist(), config.data.max_length, args.batch_size
        )
        results["throughput"] = {
            "reviews": args.reviews,
            "max_length": config.data.max_length,
            "ours_reviews_per_s": ours,
            "pipeline_reviews_per_s": theirs,
            "ratio": ours / theirs,
            "precision": args.precision,
        }
        memory_model = args.memory_model or folder
        results["memory"] = []
        for rows in [int(r) for r in args.rows.split(",")]:
            source = Path(tmp) / f"rows_{rows}.parquet"
            repeated = pd.concat([reviews] * (rows // len(reviews) + 1), ignore_index=True).head(rows)
            repeated.to_parquet(source, row_group_size=10_000)
            del repeated
            seconds, peak = peak_rss(
                score_cmd(memory_model, source, Path(tmp) / f"out_{rows}.parquet", "fp32", args.batch_size)
            )
            results["memory"].append(
                {"rows": rows, "file_mib": source.stat().st_size / 2**20, "peak_rss_mib": peak, "seconds": seconds}
            )
    results = record.plain(results)
    print(json.dumps(results, indent=2))
    metrics = {"throughput": results["throughput"], **{f"memory/{m['rows']}": m for m in results["memory"]}}
    record.finish("scoring", results, record.numbers(metrics), args, markdown)
    return results


def markdown(results: dict, run_id: str | None = None) -> str:
    """The section of benchmarks/RESULTS.md, from the run's stored payload alone."""
    t, model, memory_model = results["throughput"], results["model"], results["memory_model"]
    where = f"; MLflow run `{run_id}` (experiment `{record.EXPERIMENT}`)" if run_id else ""
    lines = [
        "## Scoring files: `sentiment score` vs `transformers.pipeline`",
        "",
        f"Measured by `{results['command']}` on {results['when']} at commit `{results['commit']}`{where}.",
        "",
        f"Throughput: model `{model}`, the first {t['reviews']:,} real reviews, max length {t['max_length']}, "
        f"{t['precision']}, CPU, both timed after loading the model and a warm-up pass.",
        "",
        "| side | reviews/s | ratio |",
        "|---|---:|---:|",
        f"| `sentiment score` (streamed, length-sorted batches, read + score + write) | {t['ours_reviews_per_s']:.1f} "
        f"| {t['ratio']:.2f}x |",
        f"| `transformers.pipeline('text-classification')`, batched | {t['pipeline_reviews_per_s']:.1f} | 1.00x |",
        "",
        "Memory: `sentiment score` on the real reviews repeated to each size (Parquet row groups of 10,000), model "
        f"`{memory_model}`; peak RSS of the whole process sampled every 20 ms.",
        "",
        "| rows | file MiB | peak RSS MiB | seconds |",
        "|---:|---:|---:|---:|",
        *[
            f"| {m['rows']:,} | {m['file_mib']:.0f} | {m['peak_rss_mib']:.0f} | {m['seconds']:.0f} |"
            for m in results["memory"]
        ],
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
