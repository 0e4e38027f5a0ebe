"""The served model under load: `mlflow models serve` on loopback, N concurrent clients sending
real reviews of mixed lengths, then malformed payloads that must be answered 4xx while the server
keeps serving.

1. Starts `mlflow models serve -m MODEL_URI --env-manager local` on a free loopback port (the
   tracking server in MLFLOW_TRACKING_URI resolves `models:/` URIs) and waits for /ping.
2. Load: ``--clients`` threads, each sending requests of 1 to ``--max-batch`` reviews drawn at
   random from ``--data`` (real reviews: short and long ones alike), until ``--requests`` requests
   are answered or ``--duration`` seconds pass. Reports requests/s, reviews/s, p50/p95/p99
   latency and errors (any answer but 200).
3. Malformed payloads, one at a time: not JSON, a JSON object without inputs, non-string reviews,
   a null review, an empty list, a 5 MB review, 10,000 reviews in one request. Each must get a
   4xx answer with a message, and a good request right after each must still get 200.

    python -m benchmarks.serving --model-uri models:/imdb-sentiment@champion --clients 4 --requests 400
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import record

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "imdb_reviews.parquet"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`mlflow models serve` in its own process group on a loopback port."""

    def __init__(
        self, model_uri: str, port: int, log: Path, workers: int = 1, timeout_s: float = 300, threads: int = 0
    ):
        self.port = port
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
        self.log = open(log, "w")
        # mlflow models serve starts uvicorn from PATH: this interpreter's, as an activated venv would
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        if threads:  # torch's intra-op threads per worker (its default: one per core, in every worker)
            env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        self.proc = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"mlflow models serve exited ({self.proc.returncode}); see {log}")
            try:
                if self.request("GET", "/ping", b"")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"mlflow models serve did not answer /ping within {timeout_s:.0f} s; see {log}")

    def request(
        self, method: str, path: str, body: bytes, content_type: str = "application/json", timeout: float = 120
    ) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    def invoke(self, payload) -> tuple[int, str]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", "/invocations", body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def load(
    server: Server, texts: list[str], clients: int, requests: int, duration_s: float, max_batch: int, seed: int
) -> dict:
    """Send requests from ``clients`` threads; returns throughput, latency percentiles, errors."""
    latencies, statuses, sizes, lock = [], [], [], threading.Lock()
    deadline = time.monotonic() + duration_s
    budget = iter(range(requests))

    def client(worker: int) -> None:
        rng = random.Random(seed + worker)
        while time.monotonic() < deadline:
            with lock:
                if next(budget, None) is None:
                    return
            batch = rng.sample(texts, rng.randint(1, max_batch))
            started = time.perf_counter()
            try:
                status, _ = server.invoke({"inputs": batch})
            except OSError:
                status = 0  # connection refused or reset: counted as an error
            with lock:
                latencies.append(time.perf_counter() - started)
                statuses.append(status)
                sizes.append(len(batch))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(statuses),
        "reviews": int(sum(sizes)),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(statuses) / elapsed, 2),
        "reviews_per_s": round(sum(sizes) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "errors": sum(s != 200 for s in statuses),
    }


MALFORMED = {
    "not JSON": lambda texts: b"{this is not json",
    "no inputs key": lambda texts: {"reviews": texts[:2]},
    "non-string reviews": lambda texts: {"inputs": [1, 2, 3]},
    "a null review": lambda texts: {"inputs": [texts[0], None]},
    "empty list": lambda texts: {"inputs": []},
    "a 5 MB review": lambda texts: {"inputs": ["great film " * (5 * 2**20 // 11)]},
    "10,000 reviews in one request": lambda texts: {"inputs": [texts[i % len(texts)] for i in range(10_000)]},
}


def malformed(server: Server, texts: list[str]) -> list[dict]:
    """Each malformed payload's answer, and whether a good request right after it still got 200."""
    rows = []
    for name, make in MALFORMED.items():
        status, message = server.invoke(make(texts))
        after, _ = server.invoke({"inputs": texts[:1]})
        rows.append({"payload": name, "status": status, "message": _message(message), "next_good_request": after})
    return rows


def _message(body: str) -> str:
    try:
        message = json.loads(body).get("message", body)
    except (ValueError, AttributeError):
        message = body
    # MLflow prefixes our message with the repr of the frame it failed on; keep the reason
    return " ".join(message.split("Error: ")[-1].split())[:200]


def real_texts(data: str, n: int, seed: int) -> list[str]:
    frame = pd.read_parquet(data) if data.endswith(".parquet") else pd.read_csv(data)
    column = "text" if "text" in frame.columns else "review"
    return frame[column].sample(n=min(n, len(frame)), random_state=seed).tolist()


def markdown(report: dict, run_id: str | None = None) -> str:
    """The section of benchmarks/RESULTS.md, from the run's stored payload alone."""
    result, rows, texts = report["load"], report["malformed"], report["texts"]
    where = f"; MLflow run `{run_id}` (experiment `{record.EXPERIMENT}`)" if run_id else ""
    lines = [
        "## Served model under load",
        "",
        f"Measured by `{report['command']}` on {report['when']} against `mlflow models serve` on loopback, "
        f"at commit `{report['commit']}`{where}.",
        "",
        f"Model `{report['model_uri']}`; {result['clients']} concurrent clients, requests of 1 to "
        f"{result['max_batch']} real reviews ({texts['count']:,} reviews drawn from, median {texts['median_chars']:,} "
        f"characters, longest {texts['max_chars']:,}).",
        "",
        "| clients | requests | reviews | requests/s | reviews/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| {clients} | {requests} | {reviews} | {requests_per_s} | {reviews_per_s} | {p50_ms} | {p95_ms} | {p99_ms} | "
        "{errors} |".format(**result),
        "",
        *_configs_table(report.get("configs", [])),
        "| malformed payload | status | message | next good request |",
        "|---|---:|---|---:|",
        *[
            f"| {r['payload']} | {r['status']} | {r['message'].replace('|', '/')} | {r['next_good_request']} |"
            for r in rows
        ],
    ]
    return "\n".join(lines) + "\n"


TARGET = 1.5  # a configuration worth switching to: this many times the first one's reviews/s, p99 no worse


def _configs_table(configs: list[dict]) -> list[str]:
    """Configurations served one after another with the same clients and requests, against the first."""
    if len(configs) < 2:
        return []
    first = configs[0]
    lines = [
        f"Configurations, one after another with the same clients, requests and seed (target: >= {TARGET}x the "
        "first row's reviews/s with p99 no worse):",
        "",
        "| model | workers | threads per worker | reviews/s | ratio | p50 ms | p99 ms | errors | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in configs:
        ratio = c["reviews_per_s"] / first["reviews_per_s"]
        met = "" if c is first else ("met" if ratio >= TARGET and c["p99_ms"] <= first["p99_ms"] else "NOT met")
        lines.append(
            f"| `{c['model_uri']}` | {c['workers']} | {c['threads'] or 'torch default'} | {c['reviews_per_s']} | "
            f"{ratio:.2f}x | {c['p50_ms']} | {c['p99_ms']} | {c['errors']} | {met} |"
        )
    return [*lines, ""]


def serve_and_load(uri: str, workers: int, threads: int, texts: list[str], args, log: Path) -> tuple[dict, Server]:
    """Start a server for one configuration, warm it up and put it under load; the server stays up."""
    server = Server(uri, free_port(), log, workers, threads=threads)
    try:
        server.invoke({"inputs": texts[:2]})  # warm-up
        result = load(server, texts, args.clients, args.requests, args.duration, args.max_batch, args.seed)
    except BaseException:
        server.stop()
        raise
    return {"model_uri": uri, "workers": workers, "threads": threads, **result}, server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", required=True, help="e.g. models:/imdb-sentiment@champion")
    parser.add_argument(
        "--data", default=str(REAL_DATA), help="reviews to send (parquet or csv with a text/review column)"
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400, help="stop after this many answered requests")
    parser.add_argument("--duration", type=float, default=300, help="or after this many seconds")
    parser.add_argument("--max-batch", type=int, default=8, help="reviews per request: 1 to this")
    parser.add_argument("--workers", type=int, default=1, help="scoring server workers")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (default: torch's)")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="URI,WORKERS,THREADS",
        help="also serve this configuration afterwards under the same load (repeatable); compared with the first",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="also write the numbers here")
    parser.add_argument(
        "--output",
        default="",
        help="also write this run's section as Markdown here (benchmarks/RESULTS.md is rendered by make results)",
    )
    parser.add_argument(
        "--record-uri", default="", help="tracking server the benchmark's run goes to (default: MLFLOW_TRACKING_URI)"
    )
    return parser


def measure(args, texts: list[str]) -> dict:
    """The first configuration under load and against every malformed payload, then each --compare one."""
    try:
        compare = [(pinned(u), int(w), int(t)) for u, w, t in (c.split(",") for c in args.compare)]
    except ValueError:
        raise SystemExit("error: --compare takes URI,WORKERS,THREADS (e.g. models:/NAME/3,2,1)") from None
    pinned_uri = pinned(args.model_uri)
    log = Path(args.json or "serving").with_suffix(".server.log")
    first, server = serve_and_load(pinned_uri, args.workers, args.threads, texts, args, log)
    try:
        result = {k: v for k, v in first.items() if k not in ("model_uri", "workers", "threads")}
        result["max_batch"] = args.max_batch
        rows = malformed(server, texts)
        alive = server.request("GET", "/ping", b"")[0] == 200
    finally:
        server.stop()
    configs = [first]
    for uri, workers, threads in compare:
        other, server = serve_and_load(uri, workers, threads, texts, args, log)
        server.stop()
        configs.append(other)
    return {"model_uri": pinned_uri, "load": result, "malformed": rows, "alive_after": alive, "configs": configs}


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    if not Path(args.data).exists():
        raise SystemExit(f"error: --data {args.data} does not exist: pass a parquet/csv of reviews")
    texts = real_texts(args.data, 2000, args.seed)
    measured = measure(args, texts)
    chars = np.asarray([len(t) for t in texts])
    command = " ".join(["python -m benchmarks.serving", *(sys.argv[1:] if argv is None else argv)])
    report = record.plain(
        {
            "kind": "serving",
            "command": command,
            "commit": record.commit(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **measured,
            "texts": {"count": len(texts), "median_chars": int(np.median(chars)), "max_chars": int(chars.max())},
        }
    )
    numbers = record.numbers(report["load"])
    numbers.update(record.numbers({f"config_{i}": c for i, c in enumerate(report["configs"])}))
    run_id = record.log("serving", report, numbers, args.record_uri)
    text = markdown(report, run_id)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.output:
        Path(args.output).write_text(text)
    return report


def pinned(model_uri: str) -> str:
    """The model version an alias points at now, read from MLFLOW_TRACKING_URI's registry."""
    if "@" not in model_uri:
        return model_uri
    from sentiment import tracking

    tracking.connect()
    return record.pinned(model_uri)


if __name__ == "__main__":
    main()
