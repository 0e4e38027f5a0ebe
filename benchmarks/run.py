"""One command, one run: `sentiment` against `transformers.Trainer` and `pipeline`, side by side.

Measures on this machine, with the same model, data, batch size, epochs, max length, seed,
threads and tracking store for every side:
  1. training throughput (samples/s, tokens/s): `sentiment train` vs `Trainer` (+ report_to mlflow);
  2. evaluation throughput: `sentiment evaluate` vs `pipeline(...)` batched vs padding to 512;
  3. the share of training wall time spent in MLflow calls;
  4. peak memory (RSS; GPU memory on CUDA);
and the test accuracy each side reaches. Prints the tables and logs them as one MLflow run
(benchmarks/record.py), from which `make results` renders benchmarks/RESULTS.md.

On the real corpus (`--data real`: the shared parquet, else the Hub's imdb) our side runs the
`cpu` preset's settings, in fp32 and at the preset's precision, against Trainer in fp32 and with
its bf16 autocast, all on the same token ids; then a time-to-accuracy comparison: our preset on as
many reviews as fit in Trainer's training time, both tested on the same reviews.

    python -m benchmarks.run                       # generated IMDB-like corpus + real reviews
    python -m benchmarks.run --data real           # real reviews only
    python -m benchmarks.run --tiny --model DIR    # seconds, for a smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import record
from benchmarks.corpora import (
    DEFAULTS,
    REAL_DATA,
    TINY,
    generated_spec,
    init_tracking,
    real_source,
    real_spec,
    run_corpus,
    run_real_corpus,
    time_budget,
    write_generated,
    write_imdb_subsample,
    write_real,
)
from benchmarks.document import render_body
from benchmarks.machine import LoadMonitor, imdb_reachable, machine_facts
from benchmarks.ratios import derive, derive_real
from benchmarks.real_tables import real_section
from benchmarks.tables import ratio_lines, tables, why_lines

# Kept importable from here, where they lived before the split: render_body (benchmarks/render.py),
# write_real and time_budget (tests/test_benchmarks.py).
__all__ = ["main", "parse_args", "render_body", "time_budget", "write_real"]


# long function: one argparse option after another
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes and in-process phases (a smoke test; seconds)")
    p.add_argument("--model", help="encoder for both sides (default: offline-minilm; real: the preset's)")
    p.add_argument(
        "--data",
        choices=("auto", "generated", "real", "imdb"),
        default="auto",
        help="auto: generated, plus real when its parquet exists or the Hub is reachable; "
        "imdb: the Hub's imdb at the generated corpus's settings",
    )
    p.add_argument(
        "--real-data",
        default=str(REAL_DATA),
        help="Parquet of real reviews (id, text, label, split train/test) for --data real; "
        f"absent: the Hub's imdb (default: {REAL_DATA})",
    )
    p.add_argument("--train-size", type=int, help="training reviews (default 512; real 2000; tiny 48)")
    p.add_argument("--val-size", type=int, help="validation reviews (default 128; real 500; tiny 16)")
    p.add_argument("--test-size", type=int, help="test reviews (default 512; real 1000; tiny 32)")
    p.add_argument("--max-length", type=int, help="tokens per review (default 512; real: the preset's; tiny 128)")
    p.add_argument("--batch-size", type=int, help="training batch (default 16; real: the preset's; tiny 8)")
    p.add_argument("--eval-batch-size", type=int, help="evaluation batch for every method (default 32; tiny 16)")
    p.add_argument("--epochs", type=int, help="passes over the training reviews (default 1; real: the preset's)")
    p.add_argument("--lr", type=float, help="peak learning rate, both sides (default 2e-4; real: the preset's)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0, help="torch threads for every side (default: all cores)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile on both sides (ours: --compile true; Trainer: torch_compile)",
    )
    p.add_argument(
        "--tracking-uri",
        default="",
        help="tracking store for both sides (default: a fresh SQLite store in the work dir)",
    )
    p.add_argument("--workdir", default="", help="scratch folder (default: a temporary one, removed after)")
    p.add_argument(
        "--record-uri",
        default="",
        help="tracking server the benchmark's own run goes to (default: --tracking-uri, else MLFLOW_TRACKING_URI)",
    )
    p.add_argument(
        "--output",
        default="",
        help="also write this run's section as Markdown here (benchmarks/RESULTS.md itself is rendered by make "
        "results)",
    )
    p.add_argument("--json", default="", help="also write the raw numbers as JSON here")
    isolate = p.add_mutually_exclusive_group()
    isolate.add_argument(
        "--isolate",
        dest="isolate",
        action="store_true",
        default=None,
        help="each phase in a fresh process (default unless --tiny)",
    )
    isolate.add_argument("--in-process", dest="isolate", action="store_false", help="every phase in this process")
    args = p.parse_args(argv)
    args.explicit = sorted(name for name in DEFAULTS if getattr(args, name) is not None)
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, TINY[name] if args.tiny and name in TINY else default)
    if args.isolate is None:
        args.isolate = not args.tiny
    args.output = str(Path(args.output).resolve()) if args.output else ""
    args.json = str(Path(args.json).resolve()) if args.json else ""
    if Path(args.model).expanduser().exists():
        args.model = str(Path(args.model).expanduser().resolve())
    if args.max_length > 512:
        p.error("--max-length must be at most 512 (the pad-to-512 baseline pads to 512)")
    return args


# ----------------------------------------------------------------------------- environment


def build_payload(
    args: argparse.Namespace,
    command: str,
    facts: dict,
    load: LoadMonitor,
    results: dict,
    skipped: dict,
    elapsed_s: float,
) -> dict:
    """Everything the document's section renders from, as its MLflow run stores it (benchmark.json)."""
    return record.plain(
        {
            "kind": "run",
            "command": command,
            "commit": record.commit(),
            "elapsed_s": elapsed_s,
            "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "facts": facts,
            "load": {"summary": load.summary(), "busy": load.busy},
            "args": vars(args),
            "results": results,
            "skipped": skipped,
        }
    )


def run_metrics(payload: dict) -> dict[str, float]:
    """The run's metrics: every corpus's ratios and each side's rates and accuracies."""
    out: dict[str, float] = {}
    for label, result in payload["results"].items():
        out.update(record.numbers(result.get("ratios", {}), f"{label}/"))
        for side in ("sentiment", "sentiment_bf16", "sentiment_fp32", "trainer", "trainer_bf16"):
            if isinstance(result.get(side), dict):
                out.update(
                    record.numbers(
                        {k: v for k, v in result[side].items() if not isinstance(v, (dict, list))}, f"{label}/{side}/"
                    )
                )
    out["elapsed_s"] = float(payload["elapsed_s"])
    return out


def plan_corpora(args: argparse.Namespace, shared: dict, log) -> tuple[list, dict[str, str]]:
    """Which corpora run: (label, make: parquet path -> Spec, source) each, and those skipped
    with the reason. ``auto`` is the generated corpus plus the real one when it has a source."""
    corpora, skipped = [], {}
    if args.data in ("auto", "generated"):
        make = lambda path: generated_spec(args, write_generated(path, args), "generated", shared)  # noqa: E731
        corpora.append(("generated", make, "generated"))
    if args.data in ("auto", "real"):
        source, described = real_source(args)
        if source is not None:
            corpora.append(("real", lambda path: real_spec(args, path, source, shared), described))
        else:
            skipped["real"] = described
            log(f"[real] skipped: {described}")
    if args.data == "imdb":
        ok, reason = imdb_reachable()
        if ok:
            make = lambda path: generated_spec(args, write_imdb_subsample(path, args), "imdb", shared)  # noqa: E731
            corpora.append(("imdb", make, "the Hub's `imdb`"))
        else:
            skipped["imdb"] = reason
            log(f"[imdb] skipped: {reason}")
    return corpora, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks.run " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
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
    shared = {"tracking_uri": tracking_uri, "experiment": experiment, "workdir": str(workdir)}
    corpora, skipped = plan_corpora(args, shared, log)
    results = {}
    with LoadMonitor() as load:
        for label, make, source in corpora:
            try:
                spec = make(workdir / f"{label}.parquet")
            except Exception as exc:  # the real source failing must not lose the generated results
                skipped[label] = f"could not load ({' '.join(str(exc).split())[:200]})"
                log(f"[{label}] skipped: {skipped[label]}")
                continue
            if label == "real":
                result = {**run_real_corpus(spec, args.isolate, log, load), "source": source}
                result["ratios"] = derive_real(result)
                results[label] = result
                log("\n".join(["", *real_section(result)]))
                continue
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
    payload = build_payload(args, command, facts, load, results, skipped, elapsed)
    run_id = record.log("run", payload, run_metrics(payload), args.record_uri or args.tracking_uri) if results else None
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("# Benchmark results\n\n" + render_body(payload, run_id))
        log(f"wrote {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2))
    log(f"done in {elapsed / 60:.1f} minutes")
    if not args.workdir:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
