"""The search-space language: read and validate an experiments/search/*.yaml file, written in the
style of the ablation grids (same base recipe, same option names, same line-numbered errors).

A space names a base recipe (preset + fixed options), a distribution per searched option, the
objective, the number of trials, the sampler and the pruner:

    name: cpu
    base: {preset: cpu, options: {train_size: 1500, epochs: 3}}
    search:
      lr: {log_uniform: [1.0e-5, 3.0e-4]}
      layer_decay: {uniform: [0.7, 1.0]}
      freeze_layers: {int: [0, 3]}
      batch_size: {choice: [8, 16, 32]}
    objective: val/best_accuracy
    pruner: {name: median, n_warmup_steps: 1}

Every problem is reported at once, each with its line, before anything runs.

    python -c "from sentiment.tune import load_space; print(load_space('experiments/search/cpu.yaml').searched)"
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sentiment.ablate.grid import Reader, compose, known_options, option_fields, strip_prefix, suggest_name
from sentiment.config import PRESETS, Config, build_config
from sentiment.errors import UserError
from sentiment.options import options

EXAMPLE = "experiments/search/cpu.yaml"
_SPACE_KEYS = (
    "name",
    "description",
    "base",
    "search",
    "objective",
    "direction",
    "trials",
    "seed",
    "sampler",
    "pruner",
    "enqueue",
)
_BASE_KEYS = ("preset", "options", "description")
KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")
_KINDS_BY_TYPE = {
    float: ("uniform", "log_uniform", "choice"),
    int: ("int", "log_int", "choice"),
    bool: ("choice",),
    str: ("choice",),
}
# objective -> (the EpochResult field a trial reports to the pruner after every epoch, default direction)
OBJECTIVES = {
    "val/best_accuracy": ("val_accuracy", "maximize"),
    "val/best_f1_macro": ("val_f1_macro", "maximize"),
    "val/accuracy": ("val_accuracy", "maximize"),
    "val/f1_macro": ("val_f1_macro", "maximize"),
    "val/loss": ("val_loss", "minimize"),
}
DIRECTIONS = ("maximize", "minimize")
SAMPLERS = {"tpe": ("seed", "n_startup_trials", "multivariate", "constant_liar"), "random": ("seed",)}
PRUNERS = {
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    "successive_halving": ("min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"),
    "threshold": ("lower", "upper", "n_warmup_steps", "interval_steps"),
    "none": (),
}
DEFAULT_TRIALS = 20
# Every trial validates only (the best one is tested once, at the end), and a trial that did not
# finish is re-run from its start, never resumed, so its state need not be uploaded.
TRIAL_DEFAULTS: dict[str, Any] = {"run_test": False, "upload_state": False}
_SET_BY_THE_SEARCH = {"run_test": "trials never see the test split: the best trial's model is tested once, at the end"}


@dataclass(frozen=True)
class Dimension:
    """One searched option and its distribution."""

    option: str  # the `sentiment train` option name, e.g. lr
    kind: str  # uniform, log_uniform, int, log_int or choice
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The trial's value (sampled, or fixed when the trial was enqueued with it)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.option, list(self.choices))
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.option, self.low, self.high, step=self.step or 1, log=self.kind == "log_int")
        return trial.suggest_float(self.option, self.low, self.high, step=self.step, log=self.kind == "log_uniform")

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return self.low <= value <= self.high

    def extremes(self) -> list[Any]:
        """The values a check of every trial's config needs: the bounds, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.option} in {{{', '.join(map(str, self.choices))}}}"
        return f"{self.option} {self.kind} [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Space:
    name: str
    path: Path
    text: str
    description: str
    preset: str
    base: dict[str, Any]  # fixed options by CLI name (TRIAL_DEFAULTS first, then the file's)
    dimensions: tuple[Dimension, ...]
    objective: str = "val/best_accuracy"
    direction: str = "maximize"
    trials: int = DEFAULT_TRIALS
    seed: int | None = None  # the training seed of every trial (None: the preset's)
    sampler: tuple[str, dict] = ("tpe", {})
    pruner: tuple[str, dict] = ("median", {})
    enqueue: tuple[dict, ...] = ()  # trials to run first, with these values
    data: str = ""  # `--data`: replaces the base data source ("" = the file's)
    lines: dict[str, int] = field(default_factory=dict, compare=False)  # option -> line of its distribution

    @property
    def searched(self) -> list[str]:
        return [d.option for d in self.dimensions]

    @property
    def reported(self) -> str:
        """The EpochResult field each epoch reports to the pruner."""
        return OBJECTIVES[self.objective][0]

    def config(self, values: dict[str, Any]) -> Config:
        """A trial's config: the base recipe with the trial's values."""
        seed = {} if self.seed is None else {"seed": self.seed}
        return build_config(self.preset, {**option_fields({**self.base, **values}), **seed})

    def base_config(self) -> Config:
        return self.config({})

    def corner_configs(self) -> list[Config]:
        """The base with each searched option at each of its extremes, one at a time."""
        return [self.config({d.option: value}) for d in self.dimensions for value in d.extremes()]


def load_space(path: str | Path, data: str | None = None, text: str | None = None) -> Space:
    """Read and validate a search space; every problem names its line.

    Args:
        path: the file (or, with ``text``, the name of the copy a tune parent logged).
        data: ``--data``, replacing the base data source (e.g. a local copy of IMDB).
        text: the file's content, when it comes from a run instead of the disk.
    Raises:
        UserError: one line listing every problem (unknown keys or options, bad distributions,
            low > high, an unknown objective, sampler or pruner, a config that does not validate).
    """
    path = Path(path)
    text, root = compose(path, "space", EXAMPLE, text)
    reader = Reader(path, kind="space", seed_rule="the space's seed key")
    top = reader.mapping(root, "the space", _SPACE_KEYS, required=("name", "base", "search"))
    reader.fail_if_problems()
    base = reader.mapping(top["base"], "base", _BASE_KEYS, required=("preset",))
    preset = reader.text(base.get("preset"), "base preset", "seed")
    if "preset" in base and preset not in PRESETS:
        reader.problem(base["preset"], f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    fixed = reader.options(base.get("options"), "base options")
    if data:
        fixed["data"] = (data, top["base"])
    dimensions, nodes = _dimensions(reader, top["search"], fixed)
    objective, direction = _objective(reader, top)
    space = Space(
        name=reader.name(top["name"], "space name"),
        path=path,
        text=text,
        description=reader.text(top.get("description"), "description", ""),
        preset=preset,
        base={**TRIAL_DEFAULTS, **{k: v for k, (v, _) in fixed.items()}},
        dimensions=tuple(dimensions),
        objective=objective,
        direction=direction,
        trials=_count(reader, top.get("trials"), "trials", 1, DEFAULT_TRIALS),
        seed=_count(reader, top.get("seed"), "seed", 0, None),
        sampler=_named(reader, top.get("sampler"), "sampler", SAMPLERS, "tpe"),
        pruner=_named(reader, top.get("pruner"), "pruner", PRUNERS, "median"),
        data=data or "",
        lines={name: node.start_mark.line + 1 for name, node in nodes.items()},
    )
    for name, reason in _SET_BY_THE_SEARCH.items():
        if name in fixed:
            reader.problem(fixed[name][1], f"{name} is set by the search: {reason}")
    reader.fail_if_problems()
    _check_configs(reader, space, fixed, nodes, top["base"])
    _check_sampler_and_pruner(reader, space, top)
    space = _with_enqueued(reader, space, top.get("enqueue"))
    reader.fail_if_problems()
    return space


def _dimensions(reader: Reader, node: yaml.Node, fixed: dict) -> tuple[list[Dimension], dict[str, yaml.Node]]:
    """The ``search`` mapping: option -> distribution."""
    table, known = options(), known_options()
    dimensions: list[Dimension] = []
    nodes: dict[str, yaml.Node] = {}
    mapping = reader.mapping(node, "search", ())
    if isinstance(node, yaml.MappingNode) and not mapping:
        reader.problem(
            node, "search needs at least one option with a distribution, e.g. lr: {log_uniform: [1.0e-5, 3.0e-4]}"
        )
    for name, value_node in mapping.items():
        if name not in known:
            reader.problem(value_node, f"unknown option {name!r} in search{suggest_name(name, tuple(known))}")
            continue
        if name in _SET_BY_THE_SEARCH:
            reader.problem(value_node, f"{name} is set by the search: {_SET_BY_THE_SEARCH[name]}")
            continue
        if name in fixed:
            reader.problem(
                value_node,
                f"{name} is both fixed in base options (line {fixed[name][1].start_mark.line + 1}) and searched",
            )
            continue
        dimension = _distribution(reader, value_node, name, table[name].kind)
        if dimension is not None:
            dimensions.append(dimension)
            nodes[name] = value_node
    return dimensions, nodes


def _distribution(reader: Reader, node: yaml.Node, option: str, kind: type) -> Dimension | None:
    """``{log_uniform: [low, high]}``, ``{int: [low, high], step: 2}``, ``{choice: [a, b]}``."""
    allowed = _KINDS_BY_TYPE[kind]
    spec = reader.mapping(node, f"the distribution of {option!r}", (*KINDS, "step"))
    named = [k for k in spec if k in KINDS]
    if len(named) != 1:
        example = "{choice: [...]}" if kind in (bool, str) else f"{{{allowed[0]}: [low, high]}} or {{choice: [...]}}"
        reader.problem(node, f"{option}: give exactly one distribution of {', '.join(allowed)}, e.g. {example}")
        return None
    how = named[0]
    if how not in allowed:
        reader.problem(
            spec[how],
            f"{option} is {'an integer' if kind is int else kind.__name__} option: use {', '.join(allowed)}, not {how}",
        )
        return None
    if how == "choice":
        return _choice(reader, spec, option, kind)
    bounds = [reader.value(n) for n in reader.sequence(spec[how], f"the bounds of {option!r}")]
    if len(bounds) != 2:
        if bounds:
            reader.problem(spec[how], f"{option}: {how} takes [low, high], got {bounds!r}")
        return None
    low, high = (_number(v, kind) for v in bounds)
    step = _number(reader.value(spec["step"]), kind) if "step" in spec else None
    if low is None or high is None or ("step" in spec and (step is None or step <= 0)):
        reader.problem(
            spec[how],
            f"{option}: {how} needs {'integer' if kind is int else 'numeric'} bounds (and a step > 0), got {bounds!r}",
        )
    elif low >= high:
        reader.problem(spec[how], f"{option}: low {low:g} must be below high {high:g}")
    elif how.startswith("log") and low <= 0:
        reader.problem(spec[how], f"{option}: {how} needs low > 0, got {low:g}")
    elif how.startswith("log") and step is not None:
        reader.problem(spec["step"], f"{option}: {how} takes no step")
    else:
        return Dimension(option, how, low, high, step)
    return None


def _choice(reader: Reader, spec: dict[str, yaml.Node], option: str, kind: type) -> Dimension | None:
    if "step" in spec:
        reader.problem(spec["step"], f"{option}: choice takes no step")
    values = []
    for item in reader.sequence(spec["choice"], f"the choices of {option!r}"):
        value = _typed(reader.value(item), kind)
        if value is None:
            reader.problem(
                item,
                f"{option}: choice {reader.value(item)!r} is not "
                f"{'an integer' if kind is int else 'a ' + kind.__name__}",
            )
        elif value in values:
            reader.problem(item, f"{option}: duplicate choice {value!r}")
        else:
            values.append(value)
    return Dimension(option, "choice", choices=tuple(values)) if values else None


def _number(value: Any, kind: type) -> float | int | None:
    """YAML reads 1e-5 (no dot) as text: numbers are parsed here; None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    if kind is int:
        return int(number) if number == int(number) else None
    return number


def _typed(value: Any, kind: type) -> Any:
    """A choice as the option's type (None when it is not of it)."""
    if kind in (int, float):
        return _number(value, kind)
    if kind is bool:
        return value if isinstance(value, bool) else None
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None


def _objective(reader: Reader, top: dict[str, yaml.Node]) -> tuple[str, str]:
    objective = reader.text(top.get("objective"), "objective", "val/best_accuracy")
    if objective not in OBJECTIVES:
        why = "trials never see the test split; " if objective.startswith("test/") else ""
        reader.problem(top["objective"], f"objective {objective!r}: {why}choose one of {', '.join(OBJECTIVES)}")
        objective = "val/best_accuracy"
    direction = reader.text(top.get("direction"), "direction", OBJECTIVES[objective][1])
    if direction not in DIRECTIONS:
        reader.problem(top["direction"], f"direction must be maximize or minimize, got {direction!r}")
    return objective, direction


def _count(reader: Reader, node: yaml.Node | None, what: str, minimum: int, default: int | None) -> int | None:
    if node is None:
        return default
    value = reader.value(node)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        reader.problem(node, f"{what} must be an integer >= {minimum}, got {value!r}")
        return default
    return value


def _named(
    reader: Reader, node: yaml.Node | None, what: str, known: dict[str, tuple], default: str
) -> tuple[str, dict]:
    """``{name: median, n_warmup_steps: 1}`` -> ("median", {"n_warmup_steps": 1}); a bare name too."""
    if node is None:
        return default, {}
    if isinstance(node, yaml.ScalarNode):
        fields_ = {"name": node}
    else:
        fields_ = reader.mapping(node, what, (), required=("name",))  # settings are checked against the name below
    name = reader.text(fields_.get("name"), f"{what} name", default)
    if "name" in fields_ and name not in known:
        reader.problem(
            fields_["name"],
            f"unknown {what} {name!r}{suggest_name(name, tuple(known))}: choose one of {', '.join(known)}",
        )
        return default, {}
    settings = {}
    for key, value_node in fields_.items():
        if key == "name":
            continue
        if key not in known[name]:
            allowed = ", ".join(known[name]) or "none"
            reader.problem(value_node, f"{what} {name} has no setting {key!r} (its settings: {allowed})")
        else:
            settings[key] = reader.value(value_node)
    return name, settings


def _check_sampler_and_pruner(reader: Reader, space: Space, top: dict[str, yaml.Node]) -> None:
    """Build both once: Optuna's own checks of their settings, reported at their lines."""
    from sentiment.tune.study import build_pruner, build_sampler

    for what, build in (("sampler", lambda: build_sampler(space, 0)), ("pruner", lambda: build_pruner(space))):
        try:
            build()
        except (TypeError, ValueError) as exc:
            node = top.get(what) or top["name"]
            reader.problem(node, f"bad {what} settings: {' '.join(str(exc).split())[:200]}")


def _check_configs(reader: Reader, space: Space, fixed: dict, nodes: dict[str, yaml.Node], base: yaml.Node) -> None:
    """The base config, and the base with each searched option at each extreme, must validate."""
    try:
        space.base_config()
    except UserError as exc:
        message = strip_prefix(str(exc))
        known = known_options()
        culprit = next((n for n in fixed if n in known and known[n] in message), None)
        reader.problem(fixed[culprit][1] if culprit else base, f"the base recipe: {message}")
        return
    for dimension in space.dimensions:
        for value in dimension.extremes():
            try:
                space.config({dimension.option: value})
            except UserError as exc:
                reader.problem(
                    nodes[dimension.option],
                    f"{dimension.option} = {value!r} gives an invalid config: {strip_prefix(str(exc))}",
                )
                break


def _with_enqueued(reader: Reader, space: Space, node: yaml.Node | None) -> Space:
    """``enqueue``: trials to run first with the values given (the others sampled), e.g. the
    preset's own recipe, so the search starts from a known point."""
    if node is None:
        return space
    by_name = {d.option: d for d in space.dimensions}
    table = options()
    trials = []
    for item in reader.sequence(node, "enqueue"):
        values = {}
        for name, value_node in reader.mapping(item, "an enqueued trial", ()).items():
            if name not in by_name:
                reader.problem(
                    value_node, f"enqueued {name!r} is not a searched option (searched: {', '.join(by_name)})"
                )
                continue
            value = _typed(reader.value(value_node), table[name].kind)
            if value is None or not by_name[name].contains(value):
                reader.problem(
                    value_node,
                    f"enqueued {name} = {reader.value(value_node)!r} is outside its distribution "
                    f"({by_name[name].describe()})",
                )
                continue
            values[name] = value
        trials.append(values)
    if len(trials) > space.trials:
        reader.problem(node, f"{len(trials)} enqueued trials but only {space.trials} trials")
    return replace(space, enqueue=tuple(trials))
