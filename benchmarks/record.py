"""Every benchmark command logs what it measured as one MLflow run, so benchmarks/RESULTS.md is
rendered from runs anyone can open (`make results`, from the evidence store), never written by hand.

The run (experiment ``benchmarks``, tag ``sentiment.benchmark`` = the command) holds the whole
measurement as ``benchmark.json`` (what its section of RESULTS.md renders from), the numeric
ratios and rates as metrics (for the MLflow UI's charts and compare view), the command line, the
commit and the model versions it used (a version, never a movable alias).

    MLFLOW_TRACKING_URI=sqlite:///bench.db python -m benchmarks.run --data real
    sentiment evidence add RUN_ID        # then name the run in experiments/results.yaml
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "benchmark"  # the sides of benchmarks.run log to it too
ARTIFACT = "benchmark.json"
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def commit() -> str:
    """The commit the benchmark ran at, marked when the work tree had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" (with uncommitted changes)" if dirty else "")


def pinned(model_uri: str) -> str:
    """``models:/NAME@ALIAS`` as the version the alias pointed at now (``models:/NAME/3``); any other
    URI unchanged. A document names what was measured, and an alias moves."""
    match = re.fullmatch(r"models:/(?P<name>[^/@]+)@(?P<alias>[\w-]+)", model_uri)
    if not match:
        return model_uri
    import mlflow

    version = mlflow.MlflowClient().get_model_version_by_alias(match["name"], match["alias"]).version
    return f"models:/{match['name']}/{version}"


def source_run(model_uri: str) -> str:
    """The run that logged ``models:/m-ID`` (a LoggedModel), so a document can name the run; "" for
    any other URI."""
    match = re.fullmatch(r"models:/(?P<id>m-[0-9a-f]{32})", model_uri)
    if not match:
        return ""
    import mlflow

    return mlflow.get_logged_model(match["id"]).source_run_id or ""


def plain(value):
    """``value`` as JSON gives it back (tuples as lists, numpy scalars as Python numbers), so the
    document rendered at the end of a benchmark equals the one rendered from its stored run."""
    return json.loads(json.dumps(value, default=_default))


def _default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    """The finite numeric leaves of ``tree`` as metric keys (``a/b/c``); booleans as 0/1."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = _KEY.sub("_", f"{prefix}{key}")[:250]
        if isinstance(value, dict):
            out.update(numbers(value, f"{name}/"))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


def log(kind: str, payload: dict, metrics: dict[str, float], tracking_uri: str = "") -> str | None:
    """Log one benchmark run to ``tracking_uri`` (else MLFLOW_TRACKING_URI); returns its id, or None
    (and says so) when neither is set: a benchmark nobody can open is not evidence."""
    import mlflow

    from sentiment.tracking import keys

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        print("benchmark not recorded: set MLFLOW_TRACKING_URI (or --record-uri) to log it as a run for make results")
        return None
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = None  # a server decides where artifacts go; a SQLite file keeps them beside it
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
        experiment_id = client.create_experiment(EXPERIMENT, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    tags = {
        keys.BENCHMARK: kind,
        "mlflow.source.git.commit": payload.get("commit", ""),
        keys.COMMAND: payload.get("command", "")[:5000],
    }
    run = client.create_run(experiment_id, run_name=f"benchmark-{kind}", tags=tags)
    run_id = run.info.run_id
    try:
        from mlflow.entities import Metric

        stamp = run.info.start_time
        items = [Metric(key, value, stamp, 0) for key, value in sorted(metrics.items())]
        for start in range(0, len(items), 1000):
            client.log_batch(run_id, metrics=items[start : start + 1000])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ARTIFACT
            path.write_text(json.dumps(payload, indent=1))  # key order is table order
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    print(
        f"benchmark recorded as run {run_id} on {uri} (experiment {EXPERIMENT!r}); publish it with: sentiment evidence "
        f"add {run_id}"
    )
    return run_id


def finish(kind: str, payload: dict, metrics: dict[str, float], args, markdown) -> str | None:
    """Log the benchmark's run (`log`), then write ``--json`` and ``--output`` (its section, rendered by
    ``markdown(payload, run_id)``) where the command was given them; returns the run id."""
    run_id = log(kind, payload, metrics, args.record_uri)
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2))
    if args.output:
        Path(args.output).write_text(markdown(payload, run_id))
    return run_id
