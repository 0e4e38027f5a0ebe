"""benchmarks/RESULTS.md, rendered by `make results` from the benchmark runs in the evidence store.

experiments/results.yaml names the runs (``renderer: benchmarks.render:document``): the runs the
benchmark commands logged (benchmarks/record.py: ``benchmark.json`` holds what each section
shows) and `sentiment export` runs (their ``export/*`` metrics). Each section names its command,
commit, run id and the model versions it measured.
"""

from __future__ import annotations

import json

TARGETS = {"speedup": 1.8, "delta_points": -0.5}  # int8: at least this much faster, losing at most half a point


def document(records: list[dict], source: str) -> str:
    """``records``: one per run, in the manifest's order: ``run_id``, ``run`` (its tags, metrics, name
    and start as `sentiment.tracking.get_run` reads them) and
    ``payload`` (its benchmark.json, None for an export run)."""
    from benchmarks import inference, scoring, serving
    from benchmarks import run as run_mod
    from sentiment.tracking import keys

    parts = ["# Benchmark results", "", source, ""]
    for item in records:
        payload, run_id = item["payload"], item["run_id"]
        if payload is None and item["run"].tags.get(keys.KIND) == "export":
            parts.append(export_section(item["run"]))
        elif payload and payload.get("kind") == "run":
            parts.append(run_mod.render_body(payload, run_id))
        elif payload and payload.get("kind") == "serving":
            parts.append(serving.markdown(payload, run_id))
        elif payload and payload.get("kind") == "scoring":
            parts.append(scoring.markdown(payload, run_id))
        elif payload and payload.get("kind") == "inference":
            parts.append(inference.markdown(payload, run_id))
        else:
            raise ValueError(f"run {run_id} is neither a benchmark run (benchmark.json) nor a `sentiment export` run")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def load_payload(path) -> dict | None:
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def export_section(run) -> str:
    """The int8 export of one registered version: its speed and paired accuracy against the parent,
    from the `sentiment export` run's metrics and tags."""
    from sentiment.tracking import keys

    m, tags = run.metrics, run.tags
    name, parent = tags.get(keys.REGISTERED_MODEL, "?"), tags.get(keys.PARENT_VERSION, "?")
    kind = tags.get(keys.QUANTIZATION, "int8")
    scales = "one weight scale per output channel" if kind == "int8-per-channel" else "one weight scale per matrix"
    delta = 100 * m["export/delta"]
    speed_met = m["export/speedup"] >= TARGETS["speedup"]
    accuracy_met = delta >= TARGETS["delta_points"]
    rows = [
        "| model | reviews/s | test accuracy |",
        "|---|---:|---:|",
        f"| `models:/{name}/{parent}` (fp32, the parent) | {m['export/parent_reviews_per_s']:.1f} | "
        f"{100 * m['export/parent_accuracy']:.2f}% |",
        f"| its {kind} export (`torch.ao.quantization.quantize_dynamic`, {scales}) | {m['export/reviews_per_s']:.1f} | "
        f"{100 * m['export/accuracy']:.2f}% |",
    ]
    if "export/parent_bf16_reviews_per_s" in m:
        rows.append(
            f"| the parent with bf16 autocast | {m['export/parent_bf16_reviews_per_s']:.1f} | "
            f"{100 * m['export/parent_bf16_accuracy']:.2f}% |"
        )
    lines = [
        f"## A faster CPU model: {kind} export",
        "",
        f"Measured by `sentiment export --name {name} --version {parent} --quantize {kind}` on "
        f"{_when(run.start_ms)} at commit `{tags.get('mlflow.source.git.commit', 'unknown')}`; MLflow run "
        f"`{run.run_id}` (`{run.name}`). Both "
        f"models scored the parent's {m['export/reviews']:,.0f} test reviews on CPU, each after a warm-up batch.",
        "",
        *rows,
        "",
        "| ratio | measured | target | |",
        "|---|---:|---:|---|",
        f"| speed, int8 / parent | {m['export/speedup']:.2f}x | >= {TARGETS['speedup']}x | "
        f"{'met' if speed_met else 'NOT met'} |",
        f"| accuracy, int8 - parent (paired 95% interval) | {delta:+.2f} points [{100 * m['export/delta_low']:+.2f}, "
        f"{100 * m['export/delta_high']:+.2f}], McNemar p {m['export/p_value']:.3g} | >= {TARGETS['delta_points']} "
        f"points | {'met' if accuracy_met else 'NOT met'} |",
        f"| predictions the two agree on | {100 * m['export/agreement']:.2f}% | | |",
    ]
    if "export/speedup_vs_bf16" in m:
        lines.append(f"| speed, int8 / the parent with bf16 autocast | {m['export/speedup_vs_bf16']:.2f}x | | |")
    return "\n".join(lines) + "\n"


def _when(millis: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
