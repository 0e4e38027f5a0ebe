"""`sentiment export`: a faster CPU sibling of a registered version, measured honestly.

The version's package is copied and marked int8 (`model.mark_quantized`; per output channel by
default, or one scale per matrix): whoever loads it (the
served pyfunc, evaluate, score) gets its Linear layers dynamically quantized to int8, with the
same tokenizer, temperature and pyfunc interface. In one run (`export-int8-NAME-vV`), both the
parent (fp32) and the sibling predict the parent's own test reviews (the ids of its run's
predictions table): the paired accuracy delta with its bootstrap interval and McNemar's p, and
each side's CPU throughput on those reviews, timed back to back (and, on a CPU with native
bf16, the parent with bf16 autocast too: the other fast option there). The sibling is registered as a
new version of the same name, tagged with its parent version and measurements, and then
promoted like any candidate (`promote.promote`: compared with the champion on the same reviews).

    sentiment export --name imdb-sentiment --version 3 --promote-if never
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sentiment import evaluate, tokens, tracking
from sentiment import model as model_mod
from sentiment import promote as promote_mod
from sentiment.config import from_yaml
from sentiment.device import Runtime, cpu_has_native_bf16, pick_precision
from sentiment.errors import UserError
from sentiment.stats import Paired, compare
from sentiment.tracking import keys

KINDS = model_mod.QUANTIZATIONS


@dataclass(frozen=True)
class ExportOutcome:
    name: str
    parent: str
    version: str
    run_id: str
    kind: str
    metrics: dict[str, float]
    decision: promote_mod.Decision

    def line(self) -> str:
        m = self.metrics
        return (
            f"registered {self.name} v{self.version} ({self.kind} of v{self.parent}) from run {self.run_id}: accuracy "
            f"{m['export/accuracy']:.4f} vs {m['export/parent_accuracy']:.4f} on {int(m['export/reviews']):,} test "
            f"reviews, delta {100 * m['export/delta']:+.2f} points [{100 * m['export/delta_low']:+.2f}, "
            f"{100 * m['export/delta_high']:+.2f}], McNemar p {m['export/p_value']:.3g}; {m['export/speedup']:.2f}x "
            f"the fp32 CPU throughput ({m['export/reviews_per_s']:.1f} vs {m['export/parent_reviews_per_s']:.1f} "
            "reviews/s)"
            + (
                f"; the parent with bf16 autocast: {m['export/parent_bf16_reviews_per_s']:.1f} reviews/s"
                if "export/parent_bf16_reviews_per_s" in m
                else ""
            )
        )


def timed_table(
    model, reviews: tokens.Reviews, warm_up: tokens.Reviews, batch_size: int, precision: str = "fp32"
) -> tuple[pd.DataFrame, float]:
    """The predictions table on CPU in ``precision`` (int8 matmuls for a quantized model) and its
    seconds (after a warm-up pass on a few reviews, so neither side pays first-call costs)."""
    import torch

    device = torch.device("cpu")
    runtime = Runtime(device, pick_precision(precision, device))
    evaluate.predict_table(model, warm_up, runtime, batch_size)
    started = time.perf_counter()
    table = evaluate.predict_table(model, reviews, runtime, batch_size)
    return table, time.perf_counter() - started


# long function: the export's steps in order (check, quantize, time both, register, promote), sharing their numbers
def run_export(
    name: str, version: str, kind: str, rule: str, alpha: float, workdir: Path, batch_size: int = 32
) -> ExportOutcome:
    """Export, measure, register and promote (see the module docstring)."""
    if kind not in KINDS:
        raise UserError(f"--quantize must be one of {', '.join(KINDS)}, got {kind!r}")
    promote_mod.check_rule(rule, alpha)
    tracking.connect()
    reviews, parent_run = promote_mod.candidate_reviews(name, version)  # before the run: it must exist
    folder, parent_model_id = tracking.fetch_model(f"models:/{name}/{version}")
    if (folder / tracking.BASELINE_FILE).is_file():
        raise UserError(
            f"version {version} of {name!r} is a scikit-learn baseline: int8 export quantizes an encoder's Linear "
            "layers"
        )
    tags = {
        keys.KIND: "export",
        keys.PARENT_VERSION: version,
        keys.QUANTIZATION: kind,
        keys.REGISTERED_MODEL: name,
        keys.PARENT_RUN_ID: parent_run,
    }
    with tracking.open_run(run_name=f"export-{kind}-{name}-v{version}", tags=tags) as tracker:
        package = Path(workdir) / tracker.run_id / tracking.MODEL_ARTIFACT
        shutil.rmtree(package, ignore_errors=True)
        shutil.copytree(folder, package)
        model_mod.mark_quantized(package, kind)
        config = from_yaml((package / "sentiment_config.yaml").read_text())
        tokenizer = model_mod.load_tokenizer(str(package))
        d = config.data
        encoded = tokens.encode_reviews(reviews[["id", "text", "label"]], tokenizer, d.max_length, d.truncation)
        warm_up = tokens.encode_reviews(
            reviews[["id", "text", "label"]].head(batch_size), tokenizer, d.max_length, d.truncation
        )
        if parent_model_id:
            tracker.link_model(parent_model_id)
        parent = model_mod.load_trained(folder).eval()
        parent_table, parent_seconds = timed_table(parent, encoded, warm_up, batch_size)
        table, seconds = timed_table(model_mod.load_trained(package).eval(), encoded, warm_up, batch_size)
        metrics = _measure(table, parent_table, seconds, parent_seconds)
        if cpu_has_native_bf16():  # what the parent does with bf16 autocast on this CPU: the other fast option
            bf16_table, bf16_seconds = timed_table(parent, encoded, warm_up, batch_size, "bf16")
            metrics.update(
                {
                    "export/parent_bf16_reviews_per_s": len(bf16_table) / bf16_seconds,
                    "export/speedup_vs_bf16": bf16_seconds / seconds,
                    "export/parent_bf16_accuracy": float((bf16_table["label"] == bf16_table["prediction"]).mean()),
                }
            )
        tracker.log_metrics(metrics, step=0)
        logged = tracker.log_model(package, name="model", step=0)
        evaluate.log_evaluation(table, "test", tracker, model_id=logged.model_id, seed=config.seed)
        new_version = tracking.register_version(tracker, logged.model_uri, name, metrics["export/accuracy"])
        tracking.set_version_tags(
            name,
            new_version,
            {
                keys.PARENT_VERSION: version,
                keys.QUANTIZATION: kind,
                **{k.replace("/", "."): f"{v:.6g}" for k, v in metrics.items()},
            },
        )
        decision = promote_mod.promote(name, new_version, table, tracker.run_id, rule, alpha)
    return ExportOutcome(name, version, new_version, tracker.run_id, kind, metrics, decision)


def _measure(table: pd.DataFrame, parent: pd.DataFrame, seconds: float, parent_seconds: float) -> dict[str, float]:
    """Paired accuracy delta (sibling - parent) with its interval and McNemar, and throughputs."""
    result = compare([Paired.join(table, parent)])
    n = len(table)
    return {
        "export/reviews": float(n),
        "export/accuracy": float((table["label"] == table["prediction"]).mean()),
        "export/parent_accuracy": float((parent["label"] == parent["prediction"]).mean()),
        "export/delta": result["delta_test_accuracy"],
        "export/delta_low": result["delta_test_accuracy_low"],
        "export/delta_high": result["delta_test_accuracy_high"],
        "export/p_value": result["p_value"],
        "export/agreement": float((table["prediction"].to_numpy() == parent["prediction"].to_numpy()).mean()),
        "export/reviews_per_s": n / seconds,
        "export/parent_reviews_per_s": n / parent_seconds,
        "export/speedup": parent_seconds / seconds,
    }
