"""Ablation grids: load and validate an experiments/*.yaml grid, run one child run per variant
and seed under a parent run, and summarise the children side by side against the baseline.

A grid names a base recipe (preset + options), options shared by every child, the seeds, and
groups of variants (name + option overrides). Options are the `sentiment train` CLI options
under the same names (``freeze_layers: 2``, ``train_fraction: 0.1``). Every child is a normal
training run (same metric names, same predictions table); the summary pairs each variant with
its reference on the same test reviews (McNemar, bootstrap intervals over reviews and seeds).

    sentiment ablate --grid experiments/quick.yaml
"""

from __future__ import annotations

import difflib
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sentiment import plots
from sentiment.config import PRESETS, Config, apply_overrides, build_config, options
from sentiment.errors import UserError

BASELINE = "baseline"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_GRID_KEYS = ("name", "description", "base", "shared", "seeds", "groups", "published_source")
_BASE_KEYS = ("preset", "options", "description", "published")
_GROUP_KEYS = ("name", "description", "baseline", "options", "variants")
_VARIANT_KEYS = ("name", "description", "options", "published")
PROJECT_DIR = Path(__file__).resolve().parents[1]  # where MLproject lives in a checkout
BOOTSTRAP_RESAMPLES = 1000
LEVEL = 0.95


# ----------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Variant:
    name: str
    group: str
    description: str
    options: dict[str, Any]
    """Its group's and its own overrides (CLI option names): what it changes against the base."""
    merged: dict[str, Any]
    """Base options, shared options and the variant's, in that order of precedence."""
    reference: str
    """The variant it is compared with: the grid's baseline, or its group's `baseline` variant."""
    published: float | None = None
    """An accuracy published elsewhere for this variant (the grid's `published_source`), which
    reports set side by side with the measured one."""

    @property
    def changed(self) -> str:
        if not self.options:
            return "the base recipe"
        return ", ".join(f"{k}={_show(v)}" for k, v in self.options.items())


@dataclass(frozen=True)
class Child:
    variant: Variant
    seed: int
    config: Config

    @property
    def run_name(self) -> str:
        return f"{self.variant.name}-seed{self.seed}"

    @property
    def key(self) -> tuple[str, int]:
        return self.variant.name, self.seed

    def tags(self, grid: "Grid") -> dict[str, str]:
        return {
            "sentiment.variant": self.variant.name,
            "sentiment.group": self.variant.group,
            "sentiment.seed": str(self.seed),
            "sentiment.grid": grid.name,
        }

    def cli_options(self, preset: str) -> dict[str, str]:
        """The `sentiment train` options (and MLproject parameters) that reproduce this child."""
        options = {**CHILD_DEFAULTS, **self.variant.merged}
        return {"preset": preset, **{k: _show(v) for k, v in options.items()}, "seed": str(self.seed)}


@dataclass(frozen=True)
class Grid:
    name: str
    path: Path
    text: str
    description: str
    preset: str
    seeds: tuple[int, ...]
    variants: tuple[Variant, ...]  # the baseline first, then the groups' variants in file order
    groups: tuple[tuple[str, str, str], ...]  # (name, description, reference variant) in file order
    data: str = ""  # `--data`: the data source every child uses instead of the grid's ("" = the grid's)
    published_source: str = ""  # where the variants' `published` accuracies come from

    def children(self) -> list[Child]:
        """Variant x seed, variant-major: every seed of the baseline first."""
        return [Child(v, seed, child_config(self, v, seed)) for v in self.variants for seed in self.seeds]

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


# A child that did not finish is re-run from its start (`--resume PARENT`), never resumed from its
# state, so uploading that state (a few hundred MB per epoch) would only cost time and disk. A grid
# may still set `upload_state: true`.
CHILD_DEFAULTS: dict[str, Any] = {"upload_state": False}


def child_config(grid: Grid, variant: Variant, seed: int) -> Config:
    return build_config(grid.preset, {**option_fields({**CHILD_DEFAULTS, **variant.merged}), "seed": seed})


def option_fields(options: dict[str, Any]) -> dict[str, Any]:
    """CLI option names -> flat config fields (``freeze_layers`` -> ``model.freeze_layers``)."""
    known = _known_options()
    return {known[name]: value for name, value in options.items()}


def _known_options() -> dict[str, str]:
    # The config's option table is the one source of option names: the CLI's, and the grids'.
    return {name: option.field for name, option in options().items() if name != "seed"}


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class _Reader:
    """Walks the YAML node tree so every problem can name its line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        self._constructor = yaml.SafeLoader("")

    def problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append(f"line {node.start_mark.line + 1}: {message}")

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping (key: value)")
            return {}
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(self.value(key_node))
            if key in out:
                self.problem(key_node, f"duplicate key {key!r} in {what}")
            elif allowed and key not in allowed:
                self.problem(key_node, f"unknown key {key!r} in {what}{_suggest(key, allowed)} (allowed: {', '.join(allowed)})")
            else:
                out[key] = value_node
        for key in required:
            if key not in out:
                self.problem(node, f"{what} needs {key!r}")
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.problem(node, f"{what} must be a non-empty list")
            return []
        return list(node.value)

    def text(self, node: yaml.Node | None, what: str, default: str = "") -> str:
        if node is None:
            return default
        value = self.value(node)
        if not isinstance(value, str) or not value.strip():
            self.problem(node, f"{what} must be a non-empty string")
            return default
        return value.strip()

    def name(self, node: yaml.Node | None, what: str) -> str:
        name = self.text(node, what)
        if node is not None and name and not _NAME.match(name):
            self.problem(node, f"{what} {name!r} may only use letters, digits, '_', '-' and '.' (it names runs and metrics)")
        return name

    def options(self, node: yaml.Node | None, what: str) -> dict[str, tuple[Any, yaml.Node]]:
        """Option overrides, each checked for a known name and a value of the right type."""
        if node is None:
            return {}
        known = _known_options()
        out: dict[str, tuple[Any, yaml.Node]] = {}
        for name, value_node in self.mapping(node, what, ()).items():
            if name == "seed":
                self.problem(value_node, f"seed is set by the grid's seeds list, not in {what}")
                continue
            if name not in known:
                self.problem(value_node, f"unknown option {name!r} in {what}{_suggest(name, tuple(known))}")
                continue
            value = self.value(value_node)
            if value is None or isinstance(value, (list, dict)):
                self.problem(value_node, f"option {name!r} in {what} needs a single value, got {value!r}")
                continue
            try:
                apply_overrides(Config(), {known[name]: value})  # the type; ranges are checked per variant
            except UserError as exc:
                self.problem(value_node, f"bad value for {name!r} in {what}: {_strip_prefix(str(exc))}")
                continue
            out[name] = (value, value_node)
        return out

    def accuracy(self, node: yaml.Node | None, what: str) -> float | None:
        if node is None:
            return None
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            self.problem(node, f"{what} must be an accuracy between 0 and 1, got {value!r}")
            return None
        return float(value)

    def fail_if_problems(self) -> None:
        if self.problems:
            raise UserError(f"grid {self.path}: " + "; ".join(self.problems))


def _suggest(name: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _strip_prefix(message: str) -> str:
    return message.removeprefix("invalid configuration: ")


def load_grid(path: str | Path, data: str | None = None) -> Grid:
    """Read and validate a grid file; every problem names its line.

    ``data`` (``sentiment ablate --data``) replaces the data source of every child, e.g. a local
    copy of IMDB for a grid written for the Hub's ``imdb``.

    Raises:
        UserError: a missing file, bad YAML, unknown keys or options, bad values, duplicate
            variant names, or a variant whose whole config does not validate.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"grid {path}: cannot read it ({exc.strerror or exc}); pass a file such as experiments/quick.yaml") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise UserError(f"grid {path}: {where}not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if root is None:
        raise UserError(f"grid {path}: the file is empty; see experiments/quick.yaml for the format")
    reader = _Reader(path)
    top = reader.mapping(root, "the grid", _GRID_KEYS, required=("name", "base", "seeds", "groups"))
    reader.fail_if_problems()
    name = reader.name(top["name"], "grid name")
    description = reader.text(top.get("description"), "description", "")
    seeds = _seeds(reader, top["seeds"])
    base = reader.mapping(top["base"], "base", _BASE_KEYS, required=("preset",))
    preset = reader.text(base.get("preset"), "base preset", "seed")
    if "preset" in base and preset not in PRESETS:
        reader.problem(base["preset"], f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    base_options = reader.options(base.get("options"), "base options")
    shared = reader.options(top.get("shared"), "shared options")
    common = {**base_options, **shared}
    baseline = Variant(
        BASELINE, BASELINE, reader.text(base.get("description"), "base description", "the base recipe"), {}, _values(common), BASELINE,
        reader.accuracy(base.get("published"), "published accuracy of the base"),
    )  # fmt: skip
    published_source = reader.text(top.get("published_source"), "published_source", "")
    variants, groups = [baseline], []
    nodes: dict[str, dict[str, yaml.Node]] = {BASELINE: {"": top["base"], **{k: n for k, (_, n) in common.items()}}}
    for group_node in reader.sequence(top["groups"], "groups"):
        group = _group(reader, group_node, common, variants, nodes)
        if group:
            groups.append(group)
    reader.fail_if_problems()
    variants = _resolve_references(reader, variants, groups, top["groups"])
    reader.fail_if_problems()
    if data:
        variants = [replace(v, merged={**v.merged, "data": data}) for v in variants]
    _check_configs(reader, preset, seeds[0], variants, nodes)
    reader.fail_if_problems()
    if any(v.published is not None for v in variants) and not published_source:
        reader.problem(root, "variants have published accuracies but the grid has no published_source saying where they come from")
        reader.fail_if_problems()
    return Grid(name, path, text, description, preset, tuple(seeds), tuple(variants), tuple(groups), data or "", published_source)


def _seeds(reader: _Reader, node: yaml.Node) -> list[int]:
    seeds: list[int] = []
    for item in reader.sequence(node, "seeds"):
        value = reader.value(item)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            reader.problem(item, f"seeds must be non-negative integers, got {value!r}")
        elif value in seeds:
            reader.problem(item, f"duplicate seed {value}")
        else:
            seeds.append(value)
    return seeds or [0]


def _group(reader: _Reader, node: yaml.Node, common: dict, variants: list[Variant], nodes: dict) -> tuple[str, str, str] | None:
    """Parse one group; its variants are appended to ``variants``, their nodes kept in ``nodes``."""
    fields_ = reader.mapping(node, "a group", _GROUP_KEYS, required=("name", "variants"))
    if "name" not in fields_ or "variants" not in fields_:
        return None
    group = reader.name(fields_["name"], "group name")
    if group == BASELINE or group in {v.group for v in variants}:
        reader.problem(fields_["name"], f"duplicate group name {group!r}")
    reference = reader.name(fields_.get("baseline"), f"baseline of group {group!r}") if "baseline" in fields_ else BASELINE
    shared = reader.options(fields_.get("options"), f"options of group {group!r}")
    for variant_node in reader.sequence(fields_["variants"], f"variants of group {group!r}"):
        spec = reader.mapping(variant_node, f"a variant of group {group!r}", _VARIANT_KEYS, required=("name",))
        if "name" not in spec:
            continue
        name = reader.name(spec["name"], "variant name")
        if name in nodes:
            reader.problem(spec["name"], f"duplicate variant name {name!r} (first at line {nodes[name][''].start_mark.line + 1})")
            continue
        mine = reader.options(spec.get("options"), f"variant {name!r}")
        own = {**mine, **{k: v for k, v in shared.items() if k not in mine}}  # its own first: what "changed" shows
        nodes[name] = {"": spec["name"], **{k: n for k, (_, n) in own.items()}}
        description = reader.text(spec.get("description"), f"description of {name!r}", "")
        published = reader.accuracy(spec.get("published"), f"published accuracy of {name!r}")
        variants.append(Variant(name, group, description, _values(own), _values({**common, **own}), reference, published))
    return group, reader.text(fields_.get("description"), f"description of group {group!r}", ""), reference


def _resolve_references(reader: _Reader, variants: list[Variant], groups: list, groups_node: yaml.Node) -> list[Variant]:
    """A group's `baseline` may name any variant of the grid. Its members are compared with it;
    the named variant itself, when it is a member, is compared with the grid's baseline."""
    names = {v.name for v in variants}
    for (group, _, reference), node in zip(groups, groups_node.value):
        if reference not in names:
            baseline_node = next(value for key, value in node.value if reader.value(key) == "baseline")
            reader.problem(baseline_node, f"baseline {reference!r} of group {group!r} is not a variant of this grid")
    return [replace(v, reference=BASELINE) if v.name == v.reference else v for v in variants]


def _values(options: dict[str, tuple[Any, yaml.Node]]) -> dict[str, Any]:
    return {name: value for name, (value, _) in options.items()}


def _check_configs(reader: _Reader, preset: str, seed: int, variants: list[Variant], nodes: dict) -> None:
    """Each variant's whole config must validate; a problem points at the option that caused it."""
    known = _known_options()
    for variant in variants:
        try:
            build_config(preset, {**option_fields(variant.merged), "seed": seed})
        except UserError as exc:
            message = _strip_prefix(str(exc))
            own, common = nodes[variant.name], nodes[BASELINE]
            culprit = next((n for n in variant.options if known[n] in message), None)
            node = own[culprit] if culprit else next((common[n] for n in variant.merged if n in common and known[n] in message), own[""])
            where = f"variant {variant.name!r}" if variant.name != BASELINE else "the base recipe"
            reader.problem(node, f"{where}: {message}")


# ----------------------------------------------------------------------------- running children


@dataclass(frozen=True)
class Execution:
    """How children run: in this process one after another, as subprocesses, or on a backend."""

    max_parallel: int = 1
    backend: str | None = None
    backend_config: str | None = None
    workdir: Path = Path(".sentiment/ablations")

    def __post_init__(self) -> None:
        if self.max_parallel < 1:
            raise UserError(f"--max-parallel must be >= 1, got {self.max_parallel}")
        if self.backend_config and not self.backend:
            raise UserError("--backend-config needs --backend (e.g. --backend kubernetes)")
        if self.backend_config and not Path(self.backend_config).is_file():
            raise UserError(f"--backend-config {self.backend_config!r} is not a file")
        if self.backend and not (PROJECT_DIR / "MLproject").is_file():
            raise UserError(f"--backend runs the MLflow project, but {PROJECT_DIR} has no MLproject; run from a checkout of the project")


@dataclass(frozen=True)
class ChildOutcome:
    child: Child
    run_id: str | None
    status: str  # FINISHED or FAILED
    error: str | None = None


@dataclass
class Summary:
    grid: Grid
    parent_run_id: str
    table: pd.DataFrame
    children: pd.DataFrame
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # (variant, seed, error)
    ran: int = 0
    skipped: int = 0


Report = Callable[[str], None]


def run_ablation(grid: Grid, parent, execution: Execution = Execution(), resume: bool = False, report: Report = lambda line: None) -> Summary:
    """The ablate stage: every child of the grid under the open parent run, then the summary.

    Args:
        grid: a loaded grid.
        parent: the tracker of the open parent run.
        execution: in process (max_parallel 1), subprocesses, or an MLflow Projects backend.
        resume: the parent existed already: skip children that FINISHED under it.
        report: receives one line per child as it ends.
    Returns:
        The summary, also logged on the parent (table, CSV, metrics, figure, grid file).
    """
    from sentiment import tracking

    attempt = _start_parent(grid, parent, resume)
    children = grid.children()
    earlier = tracking.child_runs(parent.run_id) if resume else []
    for run in earlier:
        if run.status in ("RUNNING", "SCHEDULED"):  # left over from a crashed attempt
            tracking.fail_run(run.run_id, "did not finish; re-run when the ablation was resumed", "KILLED")
    done = _finished(earlier)
    todo = [c for c in children if c.key not in done]
    report(f"parent run {parent.run_id}: {len(children)} children ({len(grid.variants)} variants x {len(grid.seeds)} seeds), {len(todo)} to run")
    outcomes = _run_children(todo, grid, parent.run_id, execution, report)
    summary = summarise(grid, parent.run_id)
    summary.ran, summary.skipped = len(outcomes), len(children) - len(todo)
    log_summary(summary, parent, attempt)
    return summary


def _start_parent(grid: Grid, parent, resume: bool) -> int:
    from sentiment import tracking

    if resume:
        attempt = int(tracking.get_run(parent.run_id).tags.get("sentiment.ablation_attempt", "1")) + 1
        parent.log_text(grid.text, f"grid/resumed/{grid.path.name}")
        tracking.delete_tag(parent.run_id, "sentiment.error")  # the previous attempt's
    else:
        attempt = 1
        parent.log_params({"ablation.grid": grid.name, "ablation.preset": grid.preset, "ablation.seeds": ",".join(map(str, grid.seeds)),
                           "ablation.variants": len(grid.variants), "ablation.children": len(grid.variants) * len(grid.seeds)})  # fmt: skip
        parent.log_text(grid.text, f"grid/{grid.path.name}")
    tags = {"sentiment.kind": "ablation", "sentiment.grid": grid.name, "sentiment.grid_file": str(grid.path), "sentiment.ablation_attempt": attempt}
    if grid.data:
        tags["sentiment.ablation_data"] = grid.data
    parent.set_tags(tags)
    return attempt


def check_resumable(parent_run_id: str, grid: Grid) -> None:
    """The run to resume must be an ablation parent of the same grid, in the active experiment."""
    from sentiment import tracking

    tracking.connect()
    tracking.check_same_experiment(parent_run_id)
    run = tracking.get_run(parent_run_id)
    if run.tags.get("sentiment.kind") != "ablation":
        raise UserError(f"run {parent_run_id} is not an ablation parent (tag sentiment.kind is {run.tags.get('sentiment.kind')!r})")
    if run.tags.get("sentiment.grid") != grid.name:
        raise UserError(f"run {parent_run_id} ran grid {run.tags.get('sentiment.grid')!r}, not {grid.name!r}; pass --grid {run.tags.get('sentiment.grid_file', 'its grid file')}")
    before = run.tags.get("sentiment.ablation_data", "")
    if before != grid.data:
        hint = f"pass --data {before}" if before else "drop --data"
        raise UserError(f"run {parent_run_id} ran its children on data {before or 'of the grid file'!r}, not {grid.data or 'of the grid file'!r}; {hint} so every child sees the same reviews")


def _finished(runs) -> dict[tuple[str, int], Any]:
    """(variant, seed) -> the latest FINISHED child run."""
    out = {}
    for run in runs:
        variant, seed = run.tags.get("sentiment.variant"), run.tags.get("sentiment.seed", "")
        if run.status == "FINISHED" and variant and seed.isdigit():
            out[(variant, int(seed))] = run
    return out


def _run_children(todo: list[Child], grid: Grid, parent_run_id: str, execution: Execution, report: Report) -> list[ChildOutcome]:
    workdir = execution.workdir / parent_run_id
    total = len(todo)
    outcomes: list[ChildOutcome] = []

    def done(outcome: ChildOutcome) -> None:
        outcomes.append(outcome)
        state = outcome.status if outcome.status == "FINISHED" else f"FAILED: {outcome.error}"
        report(f"[{len(outcomes)}/{total}] {outcome.child.run_name} ({outcome.run_id}): {state}")

    if execution.backend is None and execution.max_parallel == 1:
        for child in todo:
            done(_run_in_process(child, grid, parent_run_id, workdir))
        return outcomes
    slots: queue.Queue = queue.Queue()
    for slot in _device_slots(execution.max_parallel):
        slots.put(slot)

    def run_one(child: Child) -> ChildOutcome:
        gpu = slots.get()  # a worker holds its GPU for the whole child
        try:
            if execution.backend:
                return _run_on_backend(child, grid, parent_run_id, execution)
            return _run_subprocess(child, grid, parent_run_id, workdir, gpu)
        except Exception as exc:  # e.g. the tracking server refused to create the run
            return ChildOutcome(child, None, "FAILED", " ".join(str(exc).split())[:500] or type(exc).__name__)
        finally:
            slots.put(gpu)

    with ThreadPoolExecutor(max_workers=execution.max_parallel) as pool:
        for future in as_completed([pool.submit(run_one, child) for child in todo]):
            done(future.result())
    return outcomes


def _device_slots(n: int) -> list[str | None]:
    """One CUDA_VISIBLE_DEVICES value per worker, round-robin over the visible GPUs (None: no GPU)."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(torch.cuda.device_count())]
    return [ids[i % len(ids)] if ids else None for i in range(n)]


def _run_in_process(child: Child, grid: Grid, parent_run_id: str, workdir: Path) -> ChildOutcome:
    from sentiment import tracking
    from sentiment.train import run_train

    run_id = None
    try:
        with tracking.open_run(run_name=child.run_name, tags=child.tags(grid), system_metrics=True, parent_run_id=parent_run_id) as tracker:
            run_id = tracker.run_id
            try:
                run_train(child.config, tracker, workdir / run_id)
            finally:
                shutil.rmtree(workdir / run_id, ignore_errors=True)  # the run holds the model
    except Exception as exc:  # one child failing must not stop the others; open_run marked it FAILED
        return ChildOutcome(child, run_id, "FAILED", tracking.one_line(exc))
    return ChildOutcome(child, run_id, "FINISHED")


def _run_subprocess(child: Child, grid: Grid, parent_run_id: str, workdir: Path, gpu: str | None) -> ChildOutcome:
    """`python -m sentiment train` in a fresh process that reuses a pre-created child run."""
    from sentiment import tracking

    run_id = tracking.create_child_run(parent_run_id, child.run_name, child.tags(grid))
    env = {**os.environ, "MLFLOW_RUN_ID": run_id}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    args = [a for name, value in child.cli_options(grid.preset).items() for a in (f"--{name.replace('_', '-')}", value)]
    cmd = [sys.executable, "-m", "sentiment", "train", *args, "--run-name", child.run_name, "--output-dir", str(workdir)]
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        shutil.rmtree(workdir / run_id, ignore_errors=True)
    if result.returncode == 0:
        return ChildOutcome(child, run_id, "FINISHED")
    error = _error_line(result.stderr) or f"exited with {result.returncode}"
    tracking.end_run_if_open(run_id, error)  # a crash (e.g. out of memory) cannot mark its own run
    return ChildOutcome(child, run_id, "FAILED", error)


def _error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    return (errors[-1].removeprefix("error: ") if errors else (lines[-1] if lines else ""))[:500]


def _run_on_backend(child: Child, grid: Grid, parent_run_id: str, execution: Execution) -> ChildOutcome:
    """The project's `train` entry point on an MLflow Projects backend (local, databricks, kubernetes)."""
    from sentiment import tracking

    try:
        submitted = tracking.submit_project_run(
            PROJECT_DIR, child.cli_options(grid.preset), execution.backend, execution.backend_config,
            parent_run_id, child.run_name, child.tags(grid),
        )  # fmt: skip
        ok = submitted.wait()
    except Exception as exc:
        return ChildOutcome(child, None, "FAILED", tracking.one_line(exc))
    if ok:
        return ChildOutcome(child, submitted.run_id, "FINISHED")
    error = tracking.get_run(submitted.run_id).tags.get("sentiment.error", f"failed on backend {execution.backend}")
    tracking.end_run_if_open(submitted.run_id, error)
    return ChildOutcome(child, submitted.run_id, "FAILED", error)


# ----------------------------------------------------------------------------- statistics


def mcnemar(variant_correct: np.ndarray, reference_correct: np.ndarray) -> tuple[int, int, float]:
    """Exact (binomial) McNemar test on paired outcomes of the same reviews.

    Returns:
        (b, c, p): b = reviews only the variant gets right, c = only the reference; two-sided p.
    """
    from scipy.stats import binomtest  # scipy comes with scikit-learn

    b = int(np.sum(variant_correct & ~reference_correct))
    c = int(np.sum(~variant_correct & reference_correct))
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return b, c, p


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Macro F1 of two classes along the last axis (works on (resamples, reviews) arrays)."""
    scores = []
    for cls in (0, 1):
        tp = np.sum((predictions == cls) & (labels == cls), axis=-1)
        fp = np.sum((predictions == cls) & (labels != cls), axis=-1)
        fn = np.sum((predictions != cls) & (labels == cls), axis=-1)
        denominator = 2 * tp + fp + fn
        scores.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
    return np.mean(scores, axis=0)


@dataclass(frozen=True)
class Paired:
    """One seed's variant and reference predictions on the same test reviews."""

    labels: np.ndarray
    variant: np.ndarray
    reference: np.ndarray

    @classmethod
    def join(cls, variant: pd.DataFrame, reference: pd.DataFrame) -> "Paired":
        both = variant[["id", "label", "prediction"]].merge(reference[["id", "prediction"]], on="id", suffixes=("", "_ref"))
        return cls(both["label"].to_numpy(), both["prediction"].to_numpy(), both["prediction_ref"].to_numpy())


def compare(pairs: list[Paired], seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """Delta (variant - reference) of accuracy and macro F1 with 95% intervals, and McNemar.

    The interval is a two-level percentile bootstrap: seeds are resampled (when there are
    several), then reviews within each seed, paired, so it reflects both seed-to-seed and
    test-set variation. With one seed it covers the test set only. McNemar pools the discordant
    reviews of all seeds.
    """
    pairs = [p for p in pairs if len(p.labels)]
    if not pairs:
        return {}
    rng = np.random.default_rng(seed)
    draws = np.stack([_review_bootstrap(p, rng, resamples) for p in pairs])  # (seeds, 2, resamples)
    if len(pairs) > 1:
        pick = rng.integers(0, len(pairs), size=(resamples, len(pairs)))
        draws = draws[pick, :, np.arange(resamples)[:, None]].mean(axis=1).T  # (2, resamples)
    else:
        draws = draws[0]
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(draws, tail, axis=1), np.quantile(draws, 1 - tail, axis=1)
    accuracy = np.mean([np.mean(p.variant == p.labels) - np.mean(p.reference == p.labels) for p in pairs])
    f1 = np.mean([macro_f1(p.labels, p.variant) - macro_f1(p.labels, p.reference) for p in pairs])
    b, c, p_value = mcnemar(
        np.concatenate([p.variant == p.labels for p in pairs]), np.concatenate([p.reference == p.labels for p in pairs])
    )
    return {
        "delta_test_accuracy": float(accuracy), "delta_test_accuracy_low": float(low[0]), "delta_test_accuracy_high": float(high[0]),
        "delta_test_f1_macro": float(f1), "delta_test_f1_macro_low": float(low[1]), "delta_test_f1_macro_high": float(high[1]),
        "mcnemar_variant_only": b, "mcnemar_reference_only": c, "p_value": p_value, "paired_reviews": int(sum(len(p.labels) for p in pairs)),
    }  # fmt: skip


def _review_bootstrap(pair: Paired, rng: np.random.Generator, resamples: int, chunk: int = 100) -> np.ndarray:
    """(2, resamples): accuracy and macro-F1 differences over reviews resampled with replacement."""
    n = len(pair.labels)
    out = np.empty((2, resamples))
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)  # chunked: (chunk, n) at a time
        y, v, r = pair.labels[idx], pair.variant[idx], pair.reference[idx]
        out[0, start:stop] = (v == y).mean(axis=1) - (r == y).mean(axis=1)
        out[1, start:stop] = macro_f1(y, v) - macro_f1(y, r)
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    values = np.asarray(p_values, dtype=float)
    order = [i for i in np.argsort(values) if not math.isnan(values[i])]
    adjusted = np.full(len(values), np.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * values[i]))
        adjusted[i] = running
    return adjusted.tolist()


# ----------------------------------------------------------------------------- the summary


def summarise(grid: Grid, parent_run_id: str) -> Summary:
    """Read every child back from the tracking server and compare each variant with its reference."""
    from sentiment import tracking

    runs = tracking.child_runs(parent_run_id)
    finished = _finished(runs)
    tables = {  # without the review texts: 25,000 IMDB reviews are ~30 MB per child
        key: tracking.load_run_table(run.run_id, "predictions/test.parquet", columns=["id", "label", "prediction"])
        for key, run in finished.items()
        if "test/accuracy" in run.metrics
    }
    failed = []
    last = {(r.tags.get("sentiment.variant"), r.tags.get("sentiment.seed")): r for r in runs}
    for child in grid.children():
        if child.key not in finished:
            run = last.get((child.variant.name, str(child.seed)))
            failed.append((child.variant.name, child.seed, run.tags.get("sentiment.error", run.status) if run else "never started"))
    per_child = _children_frame(grid, finished)
    rows = [_variant_row(grid, variant, per_child, tables) for variant in grid.variants]
    table = pd.DataFrame(rows)
    table["p_value_holm"] = holm(table["p_value"].tolist())
    return Summary(grid, parent_run_id, table, per_child, failed)


def _children_frame(grid: Grid, finished: dict) -> pd.DataFrame:
    from sentiment import tracking

    rows = []
    for child in grid.children():
        run = finished.get(child.key)
        if run is None:
            continue
        m = run.metrics
        rows.append({
            "variant": child.variant.name, "group": child.variant.group, "seed": child.seed, "run_id": run.run_id,
            "val_accuracy": m.get("val/best_accuracy", np.nan), "val_f1_macro": m.get("val/best_f1_macro", np.nan), "test_accuracy": m.get("test/accuracy", np.nan),
            "test_accuracy_low": m.get("test/accuracy_ci_low", np.nan), "test_accuracy_high": m.get("test/accuracy_ci_high", np.nan),
            "test_f1_macro": m.get("test/f1_macro", np.nan), "trainable_parameters": m.get("model/trainable_parameters", np.nan),
            "train_seconds": sum(tracking.metric_values(run.run_id, "train/epoch_seconds")),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=["variant", "group", "seed", "run_id", "val_accuracy", "val_f1_macro", "test_accuracy", "test_accuracy_low",
                                       "test_accuracy_high", "test_f1_macro", "trainable_parameters", "train_seconds"])  # fmt: skip


def _variant_row(grid: Grid, variant: Variant, per_child: pd.DataFrame, tables: dict) -> dict[str, Any]:
    mine = per_child[per_child["variant"] == variant.name]
    row: dict[str, Any] = {
        "group": variant.group, "variant": variant.name, "changed": variant.changed, "description": variant.description,
        "reference": "" if variant.name == variant.reference else variant.reference,
        "seeds": len(mine), "seeds_planned": len(grid.seeds),
        "trainable_parameters": float(mine["trainable_parameters"].mean()) if len(mine) else np.nan,
    }  # fmt: skip
    for column in ("val_accuracy", "val_f1_macro", "test_accuracy", "test_f1_macro", "train_seconds"):
        row[f"{column}_mean"] = float(mine[column].mean()) if len(mine) else np.nan
        row[f"{column}_std"] = float(mine[column].std(ddof=1)) if len(mine) > 1 else np.nan
    pairs = [
        Paired.join(tables[(variant.name, seed)], tables[(variant.reference, seed)])
        for seed in grid.seeds
        if variant.name != variant.reference and (variant.name, seed) in tables and (variant.reference, seed) in tables
    ]
    stats = compare(pairs, seed=grid.seeds[0]) if pairs else {}
    for key in ("delta_test_accuracy", "delta_test_accuracy_low", "delta_test_accuracy_high", "delta_test_f1_macro",
                "delta_test_f1_macro_low", "delta_test_f1_macro_high", "p_value"):  # fmt: skip
        row[key] = stats.get(key, np.nan)
    row["paired_seeds"] = len(pairs)
    row["mcnemar_variant_only"] = stats.get("mcnemar_variant_only", np.nan)
    row["mcnemar_reference_only"] = stats.get("mcnemar_reference_only", np.nan)
    return row


def log_summary(summary: Summary, parent, attempt: int = 1) -> None:
    """Table (MLflow table + Parquet + CSV), per-variant metrics and the comparison figure."""
    table = summary.table.assign(attempt=attempt)  # the MLflow table appends on resume: one block per attempt
    parent.log_table(table, "ablation/summary")
    parent.log_table(summary.children, "ablation/children")
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "summary.csv"
        summary.table.to_csv(csv, index=False)
        parent.log_artifact(csv, "ablation")
    metrics: dict[str, float] = {"ablation/children_finished": float(len(summary.children)), "ablation/children_failed": float(len(summary.failed))}
    for row in summary.table.to_dict("records"):
        for key in ("test_accuracy_mean", "test_accuracy_std", "val_accuracy_mean", "val_f1_macro_mean", "test_f1_macro_mean", "delta_test_accuracy",
                    "delta_test_accuracy_low", "delta_test_accuracy_high", "p_value", "p_value_holm", "trainable_parameters"):  # fmt: skip
            value = row.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                metrics[f"ablation/{row['variant']}/{key}"] = float(value)
    parent.log_metrics(metrics, step=attempt)
    parent.log_figure(comparison_figure(summary), "figures/ablation_test_accuracy.png")


def comparison_figure(summary: Summary):
    """One panel per group: test accuracy per variant, the group's reference hatched, the baseline dashed."""
    table = summary.table.set_index("variant")
    several = len(summary.grid.seeds) > 1
    panels = []
    for group, description, reference in summary.grid.groups:
        names = [reference] + [v.name for v in summary.grid.variants if v.group == group and v.name != reference]
        bars = []
        for name in names:
            row = table.loc[name]
            low, high = _error(summary.children, name, row, several)
            note = ""
            if not math.isnan(row["delta_test_accuracy"]):  # a group's own reference: against its reference
                note = f"{row['delta_test_accuracy']:+.3f}" + (f" vs {row['reference']}" if name == reference else "") + f"\np={row['p_value']:.2g}"
            bars.append({"label": name, "value": row["test_accuracy_mean"], "low": low, "high": high, "reference": name == reference, "note": note})
        panels.append({"title": f"{group}: {description}" if description else group, "bars": bars})
    spread = "±1 std over seeds" if several else "95% bootstrap CI over test reviews"
    title = f"Ablation {summary.grid.name}: test accuracy, {len(summary.grid.seeds)} seed(s); error bars {spread}; above the bars: delta and McNemar p against the hatched reference"
    return plots.ablation_bars(panels, ylabel="test accuracy", title=title, baseline=table.loc[BASELINE, "test_accuracy_mean"])


def _error(children: pd.DataFrame, name: str, row, several: bool) -> tuple[float, float]:
    mean = row["test_accuracy_mean"]
    if math.isnan(mean):
        return 0.0, 0.0
    if several:
        std = row["test_accuracy_std"]
        return (0.0, 0.0) if math.isnan(std) else (std, std)
    mine = children[children["variant"] == name]
    return float(mean - mine["test_accuracy_low"].mean()), float(mine["test_accuracy_high"].mean() - mean)


def format_summary(summary: Summary) -> str:
    """The summary as text for the terminal."""
    lines = [f"{'variant':<22}{'changed':<34}{'seeds':>6}  {'val acc':>15}  {'test acc':>15}  {'macro F1':>15}  {'delta acc [95% CI]':>26}  {'p (Holm)':>9}"]
    for row in summary.table.to_dict("records"):
        delta = "reference" if not row["reference"] else (
            "n/a" if math.isnan(row["delta_test_accuracy"]) else
            f"{row['delta_test_accuracy']:+.4f} [{row['delta_test_accuracy_low']:+.4f}, {row['delta_test_accuracy_high']:+.4f}]"
        )  # fmt: skip
        p = "" if math.isnan(row["p_value_holm"]) else f"{row['p_value_holm']:.3g}"
        lines.append(
            f"{row['variant']:<22}{row['changed'][:33]:<34}{row['seeds']:>3}/{row['seeds_planned']:<2}  "
            f"{_pm(row, 'val_accuracy'):>15}  {_pm(row, 'test_accuracy'):>15}  {_pm(row, 'test_f1_macro'):>15}  {delta:>26}  {p:>9}"
        )
    for variant, seed, error in summary.failed:
        lines.append(f"FAILED {variant} seed {seed}: {error}")
    return "\n".join(lines)


def _pm(row: dict, column: str) -> str:
    mean, std = row[f"{column}_mean"], row[f"{column}_std"]
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f}±{std:.4f}"
