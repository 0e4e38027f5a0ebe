"""`sentiment combine`: trained runs of any family (a fine-tuned encoder, a classical baseline)
combined into one model (sentiment/combined.py), chosen on the validation split only, logged and
registered as a training run of the `combined` family.

- plan_combine (before the run exists): each run finished training, logged a model and its
  validation and test predictions tables; all were trained on the same reviews (the digest of
  their training dataset) and predicted the same validation and test reviews; the data they were
  split from is readable (``--data`` when it moved) and holds those reviews;
- run_combine: each member's logit standardized on the validation split; every weighting on a
  grid (step ``--weight-step``) gets its temperature fitted on validation and is scored by
  validation cross-entropy; the best one makes the combined validation and test tables from the
  members' logged tables (no member predicts again); the package (members' packages inside) is
  logged, with the paired difference to each member on validation and test, then published as
  any family is (publish.py: calibration, test metrics, registration with promotion, card).

    sentiment combine e7be3dd1e53c495a87cc45d02393302e 87d329b7b2404b8194def8201dab01fc
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment import calibration, combined, evaluate, tracking
from sentiment import data as data_mod
from sentiment import promote as promote_mod
from sentiment.config import Config, apply_overrides, validate
from sentiment.device import pick_runtime
from sentiment.errors import UserError
from sentiment.stats import Paired, compare
from sentiment.tracking import counts as counts_mod
from sentiment.tracking import keys
from sentiment.train.loop import History
from sentiment.train.publish import Calibrated, Trained, TrainOutcome, package_bytes, publish_logged

SPLITS = ("val", "test")


@dataclass(frozen=True)
class MemberRun:
    """A member as its training run logged it."""

    run_id: str
    family: str
    model_uri: str
    config: Config
    tables: dict[str, pd.DataFrame]  # val, test: the run's predictions tables
    test_seconds: float  # what predicting its test split took (its test/seconds; 0 when not logged)


@dataclass(frozen=True)
class CombinePlan:
    members: list[MemberRun]
    config: Config  # the first member's, model.name "combined"
    splits: data_mod.Splits
    step: float


def plan_combine(run_ids: list[str], data_source: str | None = None, step: float = 0.05) -> CombinePlan:
    """Everything `combine` can get wrong, found before its run exists (module docstring)."""
    if len(run_ids) < 2:
        raise UserError(f"a combined model needs at least 2 member runs, got {len(run_ids)}: name two or more run ids")
    if len(set(run_ids)) < len(run_ids):
        raise UserError("a run id is named twice: name each member run once")
    if not 0 < step <= 0.5 or abs(round(1 / step) * step - 1) > 1e-9:
        raise UserError(f"--weight-step must divide 1 into at least 2 parts (e.g. 0.05, 0.1), got {step}")
    members = [_member(run_id) for run_id in run_ids]
    digests = {m.run_id: tracking.dataset_digests(m.run_id).get("training") for m in members}
    first = members[0]
    for m in members[1:]:
        if digests[m.run_id] != digests[first.run_id]:
            raise UserError(
                f"runs {first.run_id} and {m.run_id} were trained on different reviews (training datasets "
                f"{digests[first.run_id]} and {digests[m.run_id]}): combine runs trained with the same data, seed "
                "and split settings"
            )
        for split in SPLITS:
            if set(m.tables[split]["id"]) != set(first.tables[split]["id"]):
                raise UserError(
                    f"runs {first.run_id} and {m.run_id} predicted different {split} reviews: combine runs with "
                    "the same data, seed and split settings"
                )
    config = replace(first.config, model=replace(first.config.model, name=combined.FAMILY))
    config = validate(apply_overrides(config, {"data.source": data_source}))
    splits = data_mod.load_splits(config.data, config.seed)
    for split in SPLITS:
        if set(getattr(splits, split)["id"].astype(str)) != set(first.tables[split]["id"].astype(str)):
            raise UserError(
                f"{config.data.source} does not split into the {split} reviews the members predicted: pass --data "
                "with the file they were trained on"
            )
    return CombinePlan(members, config, splits, step)


def _member(run_id: str) -> MemberRun:
    record = tracking.get_run(run_id)
    if record.tags.get(keys.KIND) != "train":
        raise UserError(f"run {run_id} is not a training run: name runs of sentiment train (or sentiment combine)")
    if record.status != "FINISHED":
        raise UserError(f"run {run_id} is {record.status}, not FINISHED: combine runs whose training finished")
    config = tracking.read_run_config(run_id, required=True)
    uri = tracking.run_model_uri(run_id)
    if uri is None:
        raise UserError(f"run {run_id} logged no model: combine runs that logged one (sentiment train does)")
    hint = "train it with run_test true, which logs both predictions tables"
    tables = {s: tracking.load_run_table(run_id, f"predictions/{s}.parquet", hint=hint) for s in SPLITS}
    family = record.tags.get(keys.FAMILY) or record.tags.get(keys.BASELINE) or config.model.name
    return MemberRun(run_id, family, uri, config, tables, float(record.metrics.get("test/seconds", 0.0)))


def weightings(members: int, step: float) -> list[tuple[float, ...]]:
    """Every weighting of ``members`` on the simplex grid of ``step`` (weights >= 0, sum 1)."""
    parts = round(1 / step)
    return [
        tuple(c / parts for c in counts)
        for counts in itertools.product(range(parts + 1), repeat=members)
        if sum(counts) == parts
    ]


def choose(logits: list[np.ndarray], labels: np.ndarray, centers, scales, step: float) -> pd.DataFrame:
    """Each weighting's validation accuracy and cross-entropy with its own fitted temperature,
    best (lowest cross-entropy) first."""
    rows = []
    for weights in weightings(len(logits), step):
        z = combined.combine(logits, weights, centers, scales)
        temperature = calibration.fit_temperature(z, labels)
        signed = np.where(labels == 1, z, -z) / temperature
        rows.append(
            {
                **{f"weight_{i}": w for i, w in enumerate(weights)},
                "val_accuracy": float(np.mean((z > 0) == (labels == 1))),
                "val_loss": float(np.mean(np.logaddexp(0, -signed))),
                "temperature": temperature,
            }
        )
    return pd.DataFrame(rows).sort_values("val_loss", kind="stable").reset_index(drop=True)


def run_combine(
    plan: CombinePlan, tracker: tracking.Tracker, workdir: Path, registry: promote_mod.RegisterRequest | None
) -> TrainOutcome:
    """Combine the planned members in the tracker's run (see the module docstring)."""
    started = time.time()
    members, config = plan.members, plan.config
    runtime = pick_runtime(replace(config.train, device="cpu", precision="fp32"))
    tracker.log_config(config)
    tracker.log_params(
        {
            **{f"combine.member_{i}.run": m.run_id for i, m in enumerate(members)},
            **{f"combine.member_{i}.model": m.model_uri for i, m in enumerate(members)},
            **{f"combine.member_{i}.family": m.family for i, m in enumerate(members)},
            "combine.weight_step": plan.step,
        }
    )
    tracker.log_params(counts_mod.split_sizes(plan.splits.sizes()))
    tracker.log_splits(plan.splits)
    tracker.set_tags(
        {
            **runtime.tags(),
            keys.KIND: "train",
            keys.FAMILY: combined.FAMILY,
            keys.COMBINED_MEMBERS: ",".join(m.run_id for m in members),
        }
    )
    began = time.perf_counter()
    aligned = {s: [_aligned(m.tables[s], members[0].tables[s]) for m in members] for s in SPLITS}
    standard = [combined.standardizer(t["logit"].to_numpy()) for t in aligned["val"]]
    centers, scales = [c for c, _ in standard], [s for _, s in standard]
    labels = members[0].tables["val"]["label"].to_numpy()
    grid = choose([t["logit"].to_numpy() for t in aligned["val"]], labels, centers, scales, plan.step)
    best = grid.iloc[0]
    weights = [float(best[f"weight_{i}"]) for i in range(len(members))]
    temperature = float(best["temperature"])
    tables = {s: _combined_table(aligned[s], weights, centers, scales, temperature) for s in SPLITS}
    tracker.log_table(grid, "tables/combination_weights")
    chosen = {f"combine/weight_{i}": w for i, w in enumerate(weights)}
    tracker.log_metrics({**chosen, "combine/search_seconds": time.perf_counter() - began}, step=1)
    facts = {
        "weights": weights,
        "centers": centers,
        "scales": scales,
        "temperature": temperature,
        "members": [{"run_id": m.run_id, "model_uri": m.model_uri, "family": m.family} for m in members],
    }
    folders = [tracking.fetch_model(m.model_uri, workdir)[0] for m in members]
    package = combined.save_package(folders, facts, config, workdir / "package_best")
    logged = tracker.log_model(package, name="model", step=1)
    tracker.log_metrics({"model/size_bytes": package_bytes(package)}, step=1, model_id=logged.model_id)
    tracker.log_metrics(_member_deltas(tables, aligned, config.seed), step=1)
    history = History(epochs=[], best_epoch=1, best_val_accuracy=float(best["val_accuracy"]))
    # predicting the test split costs what each member's prediction of it cost (the sum is negligible)
    calibrated = Calibrated(temperature, tables["val"], tables["test"], sum(m.test_seconds for m in members))
    trained = Trained(config, plan.splits, runtime.tags(), started)
    return publish_logged(trained, history, calibrated, tracker, logged, registry)


def _aligned(table: pd.DataFrame, order: pd.DataFrame) -> pd.DataFrame:
    """A member's table in the row order of the first member's."""
    return table.set_index("id").loc[order["id"]].reset_index()


def _combined_table(tables: list[pd.DataFrame], weights, centers, scales, temperature: float) -> pd.DataFrame:
    logit = combined.combine([t["logit"].to_numpy() for t in tables], weights, centers, scales)
    first = tables[0]
    return evaluate.margin_table(first, logit, first["n_tokens"].to_numpy(), first["truncated"].to_numpy(), temperature)


def _member_deltas(tables: dict[str, pd.DataFrame], aligned: dict, seed: int) -> dict[str, float]:
    """The combined model minus each member on the same reviews: accuracy with its paired 95%
    bootstrap interval and McNemar's p, on validation (where the weights were chosen: optimistic)
    and test."""
    out: dict[str, float] = {}
    for split in SPLITS:
        for i, member in enumerate(aligned[split]):
            found = compare([Paired.join(tables[split], member)], seed=seed)
            key = f"combine/member_{i}/{split}_delta_accuracy"
            out |= {
                key: found["delta_test_accuracy"],
                f"{key}_low": found["delta_test_accuracy_low"],
                f"{key}_high": found["delta_test_accuracy_high"],
                f"combine/member_{i}/{split}_p_value": found["p_value"],
            }
    return out
