"""One command, one run: `sentiment` against `transformers.Trainer` and `pipeline`, side by side.

Measures on this machine, with the same model, data, batch size, epochs, max length, seed,
threads and tracking store for every side:
  1. training throughput (samples/s, tokens/s): `sentiment train` vs `Trainer` (+ report_to mlflow);
  2. evaluation throughput: `sentiment evaluate` vs `pipeline(...)` batched vs padding to 512;
  3. the share of training wall time spent in MLflow calls;
  4. peak memory (RSS; GPU memory on CUDA);
and the test accuracy each side reaches. Prints a table and writes benchmarks/RESULTS.md.

    python -m benchmarks.run                       # generated IMDB-like corpus (+ imdb when reachable)
    python -m benchmarks.run --tiny --model DIR    # seconds, for a smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks import corpus
from benchmarks.sides import Spec, evaluate_all, padded_tokens_sentiment, train_sentiment, train_trainer

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"train_speedup": 1.5, "accuracy_points": 1.0, "eval_vs_pipeline": 2.0, "eval_vs_pad512": 2.5, "mlflow_share": 0.03}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes and in-process phases (a smoke test; seconds)")
    p.add_argument("--model", default="offline-minilm", help="encoder for both sides (default: offline-minilm)")
    p.add_argument("--data", choices=("auto", "generated", "imdb"), default="auto", help="auto: generated, plus imdb when reachable")
    p.add_argument("--train-size", type=int, help="training reviews (default 512; tiny 48)")
    p.add_argument("--val-size", type=int, help="validation reviews (default 128; tiny 16)")
    p.add_argument("--test-size", type=int, help="test reviews (default 512; tiny 32)")
    p.add_argument("--max-length", type=int, help="tokens per review (default 512; tiny 128)")
    p.add_argument("--batch-size", type=int, help="training batch (default 16; tiny 8)")
    p.add_argument("--eval-batch-size", type=int, help="evaluation batch for every method (default 32; tiny 16)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate for both sides")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0, help="torch threads for every side (default: all cores)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile on both sides (ours: --compile true; Trainer: torch_compile)")
    p.add_argument("--tracking-uri", default="", help="tracking store for both sides (default: a fresh SQLite store in the work dir)")
    p.add_argument("--workdir", default="", help="scratch folder (default: a temporary one, removed after)")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "RESULTS.md"), help="where to write the results (Markdown)")
    p.add_argument("--json", default="", help="also write the raw numbers as JSON here")
    isolate = p.add_mutually_exclusive_group()
    isolate.add_argument("--isolate", dest="isolate", action="store_true", default=None, help="each phase in a fresh process (default unless --tiny)")
    isolate.add_argument("--in-process", dest="isolate", action="store_false", help="every phase in this process")
    args = p.parse_args(argv)
    sizes = (48, 16, 32, 128, 8, 16) if args.tiny else (512, 128, 512, 512, 16, 32)
    for name, default in zip(("train_size", "val_size", "test_size", "max_length", "batch_size", "eval_batch_size"), sizes):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.isolate is None:
        args.isolate = not args.tiny
    args.output = str(Path(args.output).resolve())
    args.json = str(Path(args.json).resolve()) if args.json else ""
    if Path(args.model).expanduser().exists():
        args.model = str(Path(args.model).expanduser().resolve())
    if args.max_length > 512:
        p.error("--max-length must be at most 512 (the pad-to-512 baseline pads to 512)")
    return args


# ----------------------------------------------------------------------------- environment


def machine_facts(device: str) -> dict[str, str]:
    import accelerate
    import datasets
    import mlflow
    import psutil
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else open(os.devnull) as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts = {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() and device != "cpu" else "none used",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "mlflow": mlflow.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "commit": _git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""),
    }
    return facts


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


class LoadMonitor:
    """Samples, every ``interval_s`` while the benchmark runs, the CPU that processes outside it use
    (in cores) and the 1-minute load average, and remembers the busiest of those processes."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.load: list[float] = []
        self.other_cores: list[float] = []
        self.times: list[float] = []  # when each other_cores sample was taken (time.monotonic)
        self.busiest: dict[str, float] = {}  # command -> highest CPU % seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="benchmark-load", daemon=True)

    def _loop(self) -> None:
        import psutil

        tracked: dict[int, psutil.Process] = {}
        first = True
        while True:
            me = psutil.Process()
            mine = {me.pid, *(c.pid for c in me.children(recursive=True))}
            total = 0.0
            for proc in psutil.process_iter(["pid", "name", "cmdline"]):
                if proc.pid in mine:
                    continue
                proc = tracked.setdefault(proc.pid, proc)
                try:
                    percent = proc.cpu_percent(None)  # since the previous sample (0 the first time)
                    if percent >= 20:
                        command = " ".join(proc.cmdline() or [proc.name()])[:100]
                        self.busiest[command] = max(self.busiest.get(command, 0.0), percent)
                except psutil.Error:
                    continue
                total += percent
            if not first:
                self.other_cores.append(total / 100)
                self.times.append(time.monotonic())
                self.load.append(os.getloadavg()[0])
            first = False
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "LoadMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def cores_between(self, start: float, end: float) -> float | None:
        """Mean cores used by other processes between two time.monotonic() readings."""
        inside = [cores for t, cores in zip(self.times, self.other_cores) if start <= t <= end + self.interval_s]
        return float(np.mean(inside)) if inside else None

    @property
    def busy(self) -> bool:
        return bool(self.other_cores) and float(np.mean(self.other_cores)) > 0.2

    def summary(self) -> str:
        if not self.other_cores:
            return "not sampled"
        top = sorted(self.busiest.items(), key=lambda kv: -kv[1])[:4]
        return (
            f"processes outside the benchmark used {np.mean(self.other_cores):.2f} cores on average (max {max(self.other_cores):.2f}) "
            f"of {os.cpu_count()}; 1-min load average mean {np.mean(self.load):.1f}, max {max(self.load):.1f} ({len(self.load)} samples, "
            f"every {self.interval_s:.0f} s). Busiest others: {'; '.join(f'`{cmd}` up to {pct:.0f}%' for cmd, pct in top) or 'none above 20%'}"
        )


# ----------------------------------------------------------------------------- data


def imdb_reachable() -> tuple[bool, str]:
    """Whether the Hub's imdb can be loaded: a cached copy in offline mode, else a quick connect."""
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if not offline:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
        except OSError as exc:
            return False, f"huggingface.co not reachable ({exc.__class__.__name__}: {exc})"
    return True, "offline mode: a cached copy is needed" if offline else "reachable"


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


def data_profile(spec: Spec) -> dict:
    """Length profile of the training split under the benchmark tokenizer."""
    from sentiment import data as data_mod
    from sentiment import model as model_mod
    from benchmarks.sides import load_splits

    splits = load_splits(spec)
    tokenizer = model_mod.load_tokenizer(model_mod.resolve_source(spec.model))
    encoded = data_mod.encode(splits.train["text"].tolist(), tokenizer, spec.max_length, "head")
    profile = corpus.length_profile(splits.test["text"].tolist() + splits.train["text"].tolist(), tokenizer)
    lengths = encoded.lengths
    return {
        **profile,
        "train_reviews": len(lengths),
        "val_reviews": len(splits.val),
        "test_reviews": len(splits.test),
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
    log(f"[{spec.label}] {profile['train_reviews']} train / {profile['val_reviews']} val / {profile['test_reviews']} test reviews, "
        f"mean {profile['mean_words']:.0f} words, {profile['over_limit_share']:.1%} over 512 tokens")  # fmt: skip
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
    evaluation = timed_call(isolate, load, evaluate_all, spec, ours["model_dir"], theirs["model_dir"], bf16["model_dir"] if bf16 else None)
    return {"spec": asdict(spec), "profile": profile, "sentiment": ours, "trainer": theirs, "sentiment_bf16": bf16, "evaluation": evaluation}


def cpu_bf16(spec: Spec) -> bool:
    """Does this run train on a CPU (where our default is fp32), so a bf16 side adds something?"""
    import torch

    return spec.device == "cpu" or (spec.device == "auto" and not torch.cuda.is_available())


def derive(result: dict) -> dict:
    """Throughputs and the ratios the targets are stated in."""
    profile, ours, theirs, ev = result["profile"], result["sentiment"], result["trainer"], result["evaluation"]
    samples = profile["train_reviews"] * result["spec"]["epochs"]
    tokens = profile["train_real_tokens"]
    loop_s = ours["train_wall_s"] - ours["validation_s"]
    out = {
        "ours_samples_per_s": samples / loop_s,
        "ours_samples_per_s_with_validation": samples / ours["train_wall_s"],
        "ours_tokens_per_s": tokens / loop_s,
        "trainer_samples_per_s": samples / theirs["train_wall_s"],
        "trainer_tokens_per_s": tokens / theirs["train_wall_s"],
        "ours_padding_share": 1 - tokens / profile["sentiment_padded_tokens"],
        "trainer_padding_share": 1 - tokens / theirs["padded_tokens"] if theirs["padded_tokens"] else float("nan"),
        "ours_padded_tokens_per_s": profile["sentiment_padded_tokens"] / loop_s,
        "trainer_padded_tokens_per_s": theirs["padded_tokens"] / theirs["train_wall_s"],
        "ours_mlflow_share": ours["mlflow_s"] / ours["train_wall_s"],
        "ours_mlflow_share_with_threads": (ours["mlflow_s"] + ours["mlflow_thread_cpu_s"]) / ours["train_wall_s"],
        "trainer_mlflow_share": theirs["mlflow_s"] / theirs["train_wall_s"],
        "trainer_mlflow_share_with_threads": (theirs["mlflow_s"] + theirs["mlflow_thread_cpu_s"]) / theirs["train_wall_s"],
        "accuracy_points": 100 * (ev["sentiment_accuracy"] - ev["trainer_accuracy"]),
    }
    out["train_speedup"] = out["ours_samples_per_s"] / out["trainer_samples_per_s"]
    out["train_speedup_with_validation"] = out["ours_samples_per_s_with_validation"] / out["trainer_samples_per_s"]
    rows = ev["rows"]
    ours_s = rows["sentiment evaluate"]["seconds"]
    out["eval_vs_pipeline"] = rows["transformers.pipeline"]["seconds"] / ours_s
    out["eval_vs_pad512"] = rows["pad every review to 512"]["seconds"] / ours_s
    out["eval_warm_vs_pipeline"] = rows["transformers.pipeline"]["seconds"] / rows["sentiment evaluate (token cache warm)"]["seconds"]
    # What padding alone allows: if time were proportional to computed (padded) tokens.
    ours_padded = rows["sentiment evaluate"]["padded_tokens"]
    out["train_padding_bound"] = theirs["padded_tokens"] / profile["sentiment_padded_tokens"] if theirs["padded_tokens"] else float("nan")
    out["eval_pipeline_padding_bound"] = rows["transformers.pipeline"]["padded_tokens"] / ours_padded
    out["eval_pad512_padding_bound"] = rows["pad every review to 512"]["padded_tokens"] / ours_padded
    # bf16 on both sides (CPU; on CUDA our default row already autocasts to bf16)
    ours_bf16 = rows.get("sentiment evaluate --precision bf16", rows["sentiment evaluate"] if ev["device"].startswith("cuda") else None)
    pipe_bf16 = rows.get("transformers.pipeline, bf16 weights")
    if ours_bf16 is not None:
        out["eval_bf16_vs_pipeline"] = rows["transformers.pipeline"]["seconds"] / ours_bf16["seconds"]
        out["eval_bf16_vs_pad512"] = rows["pad every review to 512"]["seconds"] / ours_bf16["seconds"]
        out["eval_bf16_accuracy_points"] = 100 * (ours_bf16["accuracy"] - rows["sentiment evaluate"]["accuracy"])
        if pipe_bf16 is not None:
            out["eval_bf16_vs_pipeline_bf16"] = pipe_bf16["seconds"] / ours_bf16["seconds"]
    bf16 = result.get("sentiment_bf16")
    if bf16:
        bf16_loop_s = bf16["train_wall_s"] - bf16["validation_s"]
        out["bf16_samples_per_s"] = samples / bf16_loop_s
        out["bf16_tokens_per_s"] = tokens / bf16_loop_s
        out["bf16_padded_tokens_per_s"] = profile["sentiment_padded_tokens"] / bf16_loop_s
        out["bf16_mlflow_share"] = bf16["mlflow_s"] / bf16["train_wall_s"]
        out["train_bf16_speedup"] = out["bf16_samples_per_s"] / out["trainer_samples_per_s"]
        out["train_bf16_vs_fp32"] = out["bf16_samples_per_s"] / out["ours_samples_per_s"]
        out["bf16_accuracy_points"] = 100 * (ev["bf16_trained_accuracy"] - ev["sentiment_accuracy"])
    out["met"] = {
        "train_speedup": out["train_speedup"] >= TARGETS["train_speedup"],
        "accuracy_points": abs(out["accuracy_points"]) <= TARGETS["accuracy_points"],
        "eval_vs_pipeline": out["eval_vs_pipeline"] >= TARGETS["eval_vs_pipeline"],
        "eval_vs_pad512": out["eval_vs_pad512"] >= TARGETS["eval_vs_pad512"],
        "mlflow_share": out["ours_mlflow_share_with_threads"] < TARGETS["mlflow_share"],
    }
    return out


# ----------------------------------------------------------------------------- report


def _cores(phase: dict) -> str:
    value = phase.get("other_cores")
    return "-" if value is None else f"{value:.2f}"


def _mb(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def tables(result: dict, ratios: dict) -> str:
    profile, ours, theirs, ev = result["profile"], result["sentiment"], result["trainer"], result["evaluation"]
    spec = result["spec"]
    lines = [
        f"Training: {profile['train_reviews']} reviews x {spec['epochs']} epoch(s), batch {spec['batch_size']}, max length {spec['max_length']}, "
        f"{profile['train_real_tokens']:,} real tokens",
        "",
        "| side | wall s | samples/s | tokens/s | padding | padded tokens/s | MLflow s (share) | MLflow threads CPU s | peak RSS MB | peak GPU MB | other processes, cores | test accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| `sentiment train` | {ours['train_wall_s']:.1f} (validation {ours['validation_s']:.1f}) | {ratios['ours_samples_per_s']:.2f} "
        f"({ratios['ours_samples_per_s_with_validation']:.2f} with validation) | {ratios['ours_tokens_per_s']:,.0f} | {ratios['ours_padding_share']:.1%} | "
        f"{ratios['ours_padded_tokens_per_s']:,.0f} | {ours['mlflow_s']:.2f} ({ratios['ours_mlflow_share']:.2%}) | {ours['mlflow_thread_cpu_s']:.2f} | "
        f"{_mb(ours['peak_rss_mb'])} | {_mb(ours['peak_gpu_mb'])} | {_cores(ours)} | {ev['sentiment_accuracy']:.4f} |",
        f"| `Trainer` + mlflow | {theirs['train_wall_s']:.1f} | {ratios['trainer_samples_per_s']:.2f} | {ratios['trainer_tokens_per_s']:,.0f} | "
        f"{ratios['trainer_padding_share']:.1%} | {ratios['trainer_padded_tokens_per_s']:,.0f} | {theirs['mlflow_s']:.2f} ({ratios['trainer_mlflow_share']:.2%}) | "
        f"{theirs['mlflow_thread_cpu_s']:.2f} | {_mb(theirs['peak_rss_mb'])} | {_mb(theirs['peak_gpu_mb'])} | {_cores(theirs)} | {ev['trainer_accuracy']:.4f} |",
        *_bf16_train_row(result, ratios),
        "",
        f"Evaluation: {ev['reviews']} test reviews, {ev['real_tokens']:,} real tokens, batch {spec['eval_batch_size']}, device {ev['device']}; "
        f"other processes used {_cores(ev)} cores meanwhile",
        "",
        "| method | seconds | reviews/s | tokens/s | padded tokens | peak RSS MB | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in ev["rows"].items():
        lines.append(
            f"| {name} | {row['seconds']:.2f} | {ev['reviews'] / row['seconds']:.1f} | {ev['real_tokens'] / row['seconds']:,.0f} | "
            f"{row['padded_tokens']:,} | {_mb(row['peak_rss_mb'])} | {row['accuracy']:.4f} |"
        )
    return "\n".join(lines)


def _bf16_train_row(result: dict, ratios: dict) -> list[str]:
    bf16, ev = result.get("sentiment_bf16"), result["evaluation"]
    if not bf16:
        return []
    return [
        f"| `sentiment train --precision bf16` | {bf16['train_wall_s']:.1f} (validation {bf16['validation_s']:.1f}) | {ratios['bf16_samples_per_s']:.2f} | "
        f"{ratios['bf16_tokens_per_s']:,.0f} | {ratios['ours_padding_share']:.1%} | {ratios['bf16_padded_tokens_per_s']:,.0f} | "
        f"{bf16['mlflow_s']:.2f} ({ratios['bf16_mlflow_share']:.2%}) | {bf16['mlflow_thread_cpu_s']:.2f} | {_mb(bf16['peak_rss_mb'])} | "
        f"{_mb(bf16['peak_gpu_mb'])} | {_cores(bf16)} | {ev['bf16_trained_accuracy']:.4f} |"
    ]


def ratio_lines(ratios: dict) -> str:
    def mark(key: str) -> str:
        return "met" if ratios["met"][key] else "NOT met"

    return "\n".join(
        [
            "| ratio | measured | padding bound | target | |",
            "|---|---:|---:|---:|---|",
            f"| training samples/s, sentiment / Trainer (our per-epoch validation excluded; Trainer runs none) | {ratios['train_speedup']:.2f}x | {ratios['train_padding_bound']:.2f}x | >= 1.5x | {mark('train_speedup')} |",
            f"| the same with our validation time included | {ratios['train_speedup_with_validation']:.2f}x | | | |",
            *([f"| training samples/s, sentiment --precision bf16 / Trainer (fp32) | {ratios['train_bf16_speedup']:.2f}x | | >= 1.5x | "
               f"{'met with bf16' if ratios['train_bf16_speedup'] >= TARGETS['train_speedup'] else 'NOT met with bf16'} |",
               f"| training samples/s, sentiment bf16 / sentiment fp32 | {ratios['train_bf16_vs_fp32']:.2f}x | | | |",
               f"| test accuracy, sentiment trained in bf16 - in fp32 (both predicted in fp32) | {ratios['bf16_accuracy_points']:+.2f} points | | | |"]
              if "train_bf16_speedup" in ratios else []),
            f"| test accuracy, sentiment - Trainer | {ratios['accuracy_points']:+.2f} points | | within 1 | {mark('accuracy_points')} |",
            f"| evaluation, pipeline time / sentiment evaluate time (cold token cache) | {ratios['eval_vs_pipeline']:.2f}x | {ratios['eval_pipeline_padding_bound']:.2f}x | >= 2x | {mark('eval_vs_pipeline')} |",
            f"| evaluation, pad-to-512 time / sentiment evaluate time | {ratios['eval_vs_pad512']:.2f}x | {ratios['eval_pad512_padding_bound']:.2f}x | >= 2.5x | {mark('eval_vs_pad512')} |",
            f"| evaluation, pipeline / sentiment evaluate with the token cache warm | {ratios['eval_warm_vs_pipeline']:.2f}x | | | |",
            *bf16_lines(ratios),
            f"| MLflow share of our training wall time: blocking calls (+ background threads' CPU) | {ratios['ours_mlflow_share']:.2%} ({ratios['ours_mlflow_share_with_threads']:.2%}) | | < 3% | {mark('mlflow_share')} |",
            f"| the same for Trainer's MLflowCallback | {ratios['trainer_mlflow_share']:.2%} ({ratios['trainer_mlflow_share_with_threads']:.2%}) | | | |",
            "",
            "Padding bound: the ratio of computed (padded) tokens, i.e. the speed-up if time were proportional to them; on a",
            "CPU, where an encoder's cost per token barely depends on sequence length, it is close to the reachable ratio.",
        ]
    )


def bf16_lines(ratios: dict) -> list[str]:
    """The evaluation ratios with bf16 on our side: against the fp32 defaults the targets name, and
    against `pipeline` also in bf16 (precision equal on both sides)."""
    if "eval_bf16_vs_pipeline" not in ratios:
        return []

    def mark(value: float, key: str) -> str:
        return "met with bf16" if value >= TARGETS[key] else "NOT met with bf16"

    lines = [
        f"| evaluation, pipeline (fp32) time / sentiment evaluate --precision bf16 time | {ratios['eval_bf16_vs_pipeline']:.2f}x | | >= 2x | {mark(ratios['eval_bf16_vs_pipeline'], 'eval_vs_pipeline')} |",
        f"| evaluation, pad-to-512 (fp32) time / sentiment evaluate --precision bf16 time | {ratios['eval_bf16_vs_pad512']:.2f}x | | >= 2.5x | {mark(ratios['eval_bf16_vs_pad512'], 'eval_vs_pad512')} |",
        f"| test accuracy, sentiment evaluate bf16 - fp32 | {ratios['eval_bf16_accuracy_points']:+.2f} points | | | |",
    ]
    if "eval_bf16_vs_pipeline_bf16" in ratios:
        lines.append(f"| evaluation, pipeline with bf16 weights / sentiment evaluate --precision bf16 (bf16 on both sides) | {ratios['eval_bf16_vs_pipeline_bf16']:.2f}x | | | |")
    return lines


def why_lines(result: dict, ratios: dict) -> str:
    """For each target not met, what the measurements say about why."""
    ev, profile = result["evaluation"], result["profile"]
    cost = {int(k): v for k, v in ev["ms_per_1k_tokens"].items()}
    widths = sorted(cost)
    per_width = ", ".join(f"{w}: {cost[w]:.2f} ms" for w in widths)
    lines = [f"Forward cost per 1,000 tokens by padded width ({ev['device']}): {per_width}."]
    mean_len = ev["real_tokens"] / ev["reviews"]
    growth = cost[widths[-1]] / cost[min(widths, key=lambda w: abs(w - mean_len))]
    lines[0] += f" A token at width {widths[-1]} costs {growth:.2f}x one near our mean length ({mean_len:.0f} tokens)"
    lines[0] += ": time follows the number of computed tokens, so the padding bound is about the reachable ratio." if 0.8 <= growth <= 1.25 else "."
    met = ratios["met"]
    comparisons = (
        ("train_speedup", "Training against Trainer", ratios["train_padding_bound"], ratios["train_speedup"]),
        ("eval_vs_pipeline", "Evaluation against pipeline", ratios["eval_pipeline_padding_bound"], ratios["eval_vs_pipeline"]),
        ("eval_vs_pad512", "Evaluation against pad-to-512", ratios["eval_pad512_padding_bound"], ratios["eval_vs_pad512"]),
    )
    for key, name, bound, measured in comparisons:
        if met[key]:
            continue
        if bound * max(growth, 1.0) < TARGETS[key]:
            lines.append(
                f"Why {name.lower()} is below {TARGETS[key]}x (measured {measured:.2f}x): the other side computes only {bound:.2f}x "
                f"the tokens we compute, and its long tokens cost about {growth:.2f}x ours (above), so batching cannot take the "
                f"ratio much past {bound * max(growth, 1.0):.2f}x on this length profile. Padding is all that separates the "
                "two here in fp32; more needs cheaper FLOPs per real token, which is what `--precision bf16` gives (bf16 "
                "matmuls, native on CPUs with AVX512-BF16 or AMX): the bf16 rows above show the ratios it reaches and what it "
                "does to accuracy, against both the fp32 defaults and `pipeline` in bf16."
            )
        else:
            lines.append(
                f"{name}: the padding bound ({bound:.2f}x) allows {TARGETS[key]}x but {measured:.2f}x was measured: per-run fixed costs "
                "(loading, Python overhead, logging) or contention from other processes, which dominate small runs."
            )
    ours_cores, their_cores = result["sentiment"].get("other_cores"), result["trainer"].get("other_cores")
    if ours_cores is not None and their_cores is not None and abs(ours_cores - their_cores) > 0.25:
        lines.append(
            f"Contention differed between the training phases (other processes used {ours_cores:.2f} cores during ours, "
            f"{their_cores:.2f} during Trainer's), so the wall-time ratio ({ratios['train_speedup']:.2f}x) is skewed by it. The "
            f"robust figures are the padded tokens each side computes (padding bound {ratios['train_padding_bound']:.2f}x) and the "
            "rate at which each computes them (padded tokens/s), which is the same for both in a quiet machine."
        )
    if not met["accuracy_points"]:
        p = ev["sentiment_accuracy"]
        half = 196 * (p * (1 - p) / ev["reviews"]) ** 0.5
        lines.append(f"Accuracy: {ratios['accuracy_points']:+.2f} points on {ev['reviews']} test reviews; one accuracy alone has a 95% interval of about +-{half:.1f} points.")
    if not met["mlflow_share"]:
        lines.append(f"MLflow: {result['sentiment']['mlflow_top']}.")
    return " ".join(lines[:1]) + ("\n\n" + "\n\n".join(lines[1:]) if len(lines) > 1 else "")


def write_results(path: Path, args: argparse.Namespace, command: str, facts: dict, load: LoadMonitor, results: dict, skipped: dict, elapsed_s: float) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    busy = load.busy
    parts = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {when} in {elapsed_s / 60:.1f} minutes (one run of the command; every number below comes from it).",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in facts.items()],
        f"- while it ran: {load.summary()}",
        "",
        ("**The machine was shared with other processes during this run**, so absolute times are noisy and the sides, "
         "which ran one after the other, did not see exactly the same contention; read the ratios with that in mind." if busy else
         "No other process used noticeable CPU while it ran."),
        "",
        "## Setup",
        "",
        f"Model `{args.model}`, {args.epochs} epoch(s), batch {args.batch_size}, evaluation batch {args.eval_batch_size}, max length "
        f"{args.max_length} (head truncation), learning rate {args.lr} with 10% linear warmup then linear decay, weight decay 0.01, "
        f"clipping 1.0, dropout 0.1, seed {args.seed}, {args.threads} torch threads, device {args.device}, "
        f"{'each phase in a fresh process' if args.isolate else 'all phases in one process'}, tracking store: {'given' if args.tracking_uri else 'a fresh SQLite store'} "
        "shared by both sides.",
        "",
    ]
    for label, result in results.items():
        profile = result["profile"]
        ratios = result["ratios"]
        parts += [
            f"## Corpus: {label}",
            "",
            f"{profile['reviews']:.0f} reviews (train + test) with mean {profile['mean_words']:.0f} words (median {profile['median_words']:.0f}, "
            f"p90 {profile['p90_words']:.0f}), mean {profile['mean_tokens']:.0f} tokens, {profile['over_limit_share']:.1%} over 512 tokens. "
            f"Attention implementation: {result['sentiment']['attention']}.",
            "",
            tables(result, ratios),
            "",
            "### Ratios",
            "",
            ratio_lines(ratios),
            "",
            why_lines(result, ratios),
            "",
            f"MLflow time by function, ours: {result['sentiment']['mlflow_top']}; Trainer: {result['trainer']['mlflow_top'] or 'none'}. "
            f"Our whole `sentiment train` stage (data, model, training, logging the model) took {result['sentiment']['stage_s']:.1f} s, "
            f"{result['sentiment']['stage_mlflow_s']:.1f} s of it in MLflow (mostly logging the servable model once, after training).",
            "",
        ]
    for label, reason in skipped.items():
        parts += [f"## Corpus: {label}", "", f"Skipped: {reason}.", ""]
    parts += [METHOD, ""]
    text = "\n".join(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


METHOD = """## How it is measured

- **Same everything**: both training sides get the model built by `sentiment.model.build_model` under the same seed
  (identical fresh classification head), the same splits (`sentiment.data.load_splits`), batch size, epochs, max length,
  learning-rate schedule (linear warmup and decay), weight decay, clipping, seed, `torch.set_num_threads`, and the same
  tracking store. Ours uses no layer-wise learning-rate decay here (Trainer has none).
- **Trainer** keeps its defaults: random sampling, `DataCollatorWithPadding` (each batch padded to its longest review),
  fused AdamW, logging and checkpointing every 500 steps, plus `report_to=["mlflow"]`; its progress bar is off.
  Its tokenization (`datasets.map`) is not timed, and neither is ours (cached, see the evaluation rows).
- **Training wall time**: Trainer, `trainer.train()`; ours, `fit()` (the loop, per-epoch validation, checkpoint saves and
  their uploads to MLflow, all metric logging) plus the MLflow calls made before it (run start, params, datasets, tags).
  Samples/s and tokens/s divide by it (real, unpadded tokens; the padding column is the share of computed tokens that
  were padding). Trainer validates nothing by default, so the headline ratio excludes the time of our validation
  pass; the ratio with it included is shown too.
- **bf16 on CPU** (CPU runs only; on CUDA our default already is bf16): a third training side, `sentiment train
  --precision bf16` (autocast to bfloat16), same recipe, its model evaluated like the others. In evaluation, ours with
  `--precision bf16` and `pipeline` with the model's weights cast to bf16. The fp32 rows are what the targets compare;
  the bf16 rows show how far cheaper arithmetic goes, and what it does to accuracy.
- **Accuracy**: every trained model is evaluated on the same test split by the same code (`evaluate.predict_frame`,
  fp32 on CPU).
- **Evaluation**: the model trained by `sentiment`, on the test split, in one process after a warm-up forward pass:
  our `predict_frame` (what `sentiment evaluate` runs: cached tokenization with an empty cache, batches sorted by
  length, dynamic padding), the same with the cache warm, `pipeline("text-classification")` with the same batch size and
  truncation, batches in input order padded to 512 tokens, then the two bf16 rows. Times include tokenization.
- **MLflow share**: the public `mlflow` functions (`log_metrics`, `log_params`, `log_artifact(s)`, `start_run`,
  `end_run`, `set_tags`, `log_input`, `flush_async_logging`, `pyfunc.log_model`, `data.from_pandas`, ...) are wrapped for
  the duration of each training phase, and the wall time of the outermost calls is summed. Both our tracker and
  Trainer's `MLflowCallback` call MLflow through these functions, so one instrument measures both. Asynchronous
  logging returns at once; the CPU time of MLflow's background threads (async logging, system metrics) during training
  is read from the OS and shown beside it, and the target is judged on the sum.
- **Memory**: resident memory sampled every 50 ms during each phase (each phase in its own process by default); GPU
  memory from `torch.cuda.max_memory_allocated` on CUDA.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    import torch

    args.threads = args.threads or torch.get_num_threads()
    started = time.perf_counter()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sentiment-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri = args.tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    experiment = "benchmark"
    init_tracking(tracking_uri, experiment, workdir / "artifacts")
    facts = machine_facts(args.device)
    log = lambda message: print(message, flush=True)  # noqa: E731
    results, skipped = {}, {}
    corpora = []
    if args.data in ("auto", "generated"):
        corpora.append(("generated", lambda path: write_generated(path, args)))
    if args.data in ("auto", "imdb"):
        ok, reason = imdb_reachable()
        if ok:
            corpora.append(("imdb", lambda path: write_imdb_subsample(path, args)))
        else:
            skipped["imdb"] = reason
            log(f"[imdb] skipped: {reason}")
    with LoadMonitor() as load:
        for label, make in corpora:
            try:
                path = make(workdir / f"{label}.parquet")
            except Exception as exc:  # the real source failing must not lose the generated results
                skipped[label] = f"could not load ({' '.join(str(exc).split())[:200]})"
                log(f"[{label}] skipped: {skipped[label]}")
                continue
            spec = Spec(
                model=args.model, data_path=str(path), val_fraction=args.val_size / (args.train_size + args.val_size),
                max_length=args.max_length, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, epochs=args.epochs,
                lr=args.lr, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0, dropout=0.1, seed=args.seed,
                threads=args.threads, device=args.device, tracking_uri=tracking_uri, experiment=experiment,
                workdir=str(workdir), compile=args.compile, label=label,
            )  # fmt: skip
            result = run_corpus(spec, args.isolate, log, load)
            result["ratios"] = derive(result)
            results[label] = result
            log("")
            log(tables(result, result["ratios"]))
            log("")
            log(ratio_lines(result["ratios"]))
            log("")
            log(why_lines(result, result["ratios"]))
            log("")
    elapsed = time.perf_counter() - started
    output = Path(args.output)
    write_results(output, args, command, facts, load, results, skipped, elapsed)
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": facts, "results": results, "skipped": skipped}, indent=2, default=str))
    log(f"wrote {output} ({elapsed / 60:.1f} minutes)")
    if not args.workdir:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
