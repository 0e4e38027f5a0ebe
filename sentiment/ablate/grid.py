"""The grid language: read and validate an experiments/*.yaml grid into variants and children.

A grid names a base recipe (preset + options), options shared by every child, the seeds, and
groups of variants (name + option overrides). Options are the `sentiment train` options under
the same names (``freeze_layers: 2``, ``train_fraction: 0.1``), taken from the config's option
table. Every problem is reported at once, each with its line.

    python -c "from sentiment.ablate import load_grid; print(len(load_grid('experiments/quick.yaml').children()))"
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from sentiment.config import PRESETS, Config, apply_overrides, build_config
from sentiment.errors import UserError
from sentiment.options import options
from sentiment.tracking import keys

BASELINE = "baseline"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_GRID_KEYS = ("name", "description", "base", "shared", "seeds", "groups", "published_source", "published_setup")
_BASE_KEYS = ("preset", "options", "description", "published")
_GROUP_KEYS = ("name", "description", "baseline", "options", "variants")
_VARIANT_KEYS = ("name", "description", "options", "published")


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
            keys.VARIANT: self.variant.name,
            keys.GROUP: self.variant.group,
            keys.SEED: str(self.seed),
            keys.GRID: grid.name,
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
    published_setup: str = ""
    """How the published accuracies were measured (model, max length, data, seeds, validation or
    test), e.g. "DistilBERT, 512 tokens, one seed, validation accuracy"; reports print it beside
    every published number so a different setup is never compared silently ("" = not stated)."""

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
    known = known_options()
    return {known[name]: value for name, value in options.items()}


def known_options() -> dict[str, str]:
    # The config's option table is the one source of option names: the CLI's, and the grids'.
    return {name: option.field for name, option in options().items() if name != "seed"}


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class Reader:
    """Walks the YAML node tree so every problem can name its line (grids, and the search spaces
    of `sentiment tune`, which are written in the same style).

    Args:
        path: the file, named in the one-line error.
        kind: what the file is (``grid``, ``space``), the error's first word.
        seed_rule: where the file sets the training seed instead of in options.
    """

    def __init__(self, path: Path, kind: str = "grid", seed_rule: str = "the grid's seeds list") -> None:
        self.path = path
        self.kind = kind
        self.seed_rule = seed_rule
        self.problems: list[str] = []
        self._constructor = yaml.SafeLoader("")

    def problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append(f"line {node.start_mark.line + 1}: {message}")

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(
        self, node: yaml.Node, what: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping (key: value)")
            return {}
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(self.value(key_node))
            if key in out:
                self.problem(key_node, f"duplicate key {key!r} in {what}")
            elif allowed and key not in allowed:
                self.problem(
                    key_node,
                    f"unknown key {key!r} in {what}{suggest_name(key, allowed)} (allowed: {', '.join(allowed)})",
                )
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
            self.problem(
                node, f"{what} {name!r} may only use letters, digits, '_', '-' and '.' (it names runs and metrics)"
            )
        return name

    def options(self, node: yaml.Node | None, what: str) -> dict[str, tuple[Any, yaml.Node]]:
        """Option overrides, each checked for a known name and a value of the right type."""
        if node is None:
            return {}
        known = known_options()
        out: dict[str, tuple[Any, yaml.Node]] = {}
        for name, value_node in self.mapping(node, what, ()).items():
            if name == "seed":
                self.problem(value_node, f"seed is set by {self.seed_rule}, not in {what}")
                continue
            if name not in known:
                self.problem(value_node, f"unknown option {name!r} in {what}{suggest_name(name, tuple(known))}")
                continue
            value = self.value(value_node)
            if value is None or isinstance(value, (list, dict)):
                self.problem(value_node, f"option {name!r} in {what} needs a single value, got {value!r}")
                continue
            try:
                apply_overrides(Config(), {known[name]: value})  # the type; ranges are checked per variant
            except UserError as exc:
                self.problem(value_node, f"bad value for {name!r} in {what}: {strip_prefix(str(exc))}")
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
            raise UserError(f"{self.kind} {self.path}: " + "; ".join(self.problems))


def suggest_name(name: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def strip_prefix(message: str) -> str:
    return message.removeprefix("invalid configuration: ")


def compose(path: Path, kind: str, example: str, text: str | None = None) -> tuple[str, yaml.Node]:
    """The file's text (``text`` when given: a copy a run logged) and YAML node tree (nodes keep
    their lines).

    Raises:
        UserError: the file cannot be read, is not YAML, or is empty; ``example`` shows the format.
    """
    try:
        text = path.read_text() if text is None else text
    except OSError as exc:
        raise UserError(
            f"{kind} {path}: cannot read it ({exc.strerror or exc}); pass a file such as {example}"
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise UserError(f"{kind} {path}: {where}not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if root is None:
        raise UserError(f"{kind} {path}: the file is empty; see {example} for the format")
    return text, root


# long function: one pass over the grid file collecting every problem, with its line, to raise them together
def load_grid(path: str | Path, data: str | None = None) -> Grid:
    """Read and validate a grid file; every problem names its line.

    ``data`` (``sentiment ablate --data``) replaces the data source of every child, e.g. a local
    copy of IMDB for a grid written for the Hub's ``imdb``.

    Raises:
        UserError: a missing file, bad YAML, unknown keys or options, bad values, duplicate
            variant names, or a variant whose whole config does not validate.
    """
    path = Path(path)
    text, root = compose(path, "grid", "experiments/quick.yaml")
    reader = Reader(path)
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
        BASELINE,
        BASELINE,
        reader.text(base.get("description"), "base description", "the base recipe"),
        {},
        _values(common),
        BASELINE,
        reader.accuracy(base.get("published"), "published accuracy of the base"),
    )
    published_source = reader.text(top.get("published_source"), "published_source", "")
    published_setup = reader.text(top.get("published_setup"), "published_setup", "")
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
        reader.problem(
            root, "variants have published accuracies but the grid has no published_source saying where they come from"
        )
        reader.fail_if_problems()
    return Grid(
        name,
        path,
        text,
        description,
        preset,
        tuple(seeds),
        tuple(variants),
        tuple(groups),
        data or "",
        published_source,
        published_setup,
    )


def _seeds(reader: Reader, node: yaml.Node) -> list[int]:
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


def _group(
    reader: Reader, node: yaml.Node, common: dict, variants: list[Variant], nodes: dict
) -> tuple[str, str, str] | None:
    """Parse one group; its variants are appended to ``variants``, their nodes kept in ``nodes``."""
    fields_ = reader.mapping(node, "a group", _GROUP_KEYS, required=("name", "variants"))
    if "name" not in fields_ or "variants" not in fields_:
        return None
    group = reader.name(fields_["name"], "group name")
    if group == BASELINE or group in {v.group for v in variants}:
        reader.problem(fields_["name"], f"duplicate group name {group!r}")
    reference = (
        reader.name(fields_.get("baseline"), f"baseline of group {group!r}") if "baseline" in fields_ else BASELINE
    )
    shared = reader.options(fields_.get("options"), f"options of group {group!r}")
    for variant_node in reader.sequence(fields_["variants"], f"variants of group {group!r}"):
        spec = reader.mapping(variant_node, f"a variant of group {group!r}", _VARIANT_KEYS, required=("name",))
        if "name" not in spec:
            continue
        name = reader.name(spec["name"], "variant name")
        if name in nodes:
            reader.problem(
                spec["name"], f"duplicate variant name {name!r} (first at line {nodes[name][''].start_mark.line + 1})"
            )
            continue
        mine = reader.options(spec.get("options"), f"variant {name!r}")
        own = {**mine, **{k: v for k, v in shared.items() if k not in mine}}  # its own first: what "changed" shows
        nodes[name] = {"": spec["name"], **{k: n for k, (_, n) in own.items()}}
        description = reader.text(spec.get("description"), f"description of {name!r}", "")
        published = reader.accuracy(spec.get("published"), f"published accuracy of {name!r}")
        variants.append(
            Variant(name, group, description, _values(own), _values({**common, **own}), reference, published)
        )
    return group, reader.text(fields_.get("description"), f"description of group {group!r}", ""), reference


def _resolve_references(reader: Reader, variants: list[Variant], groups: list, groups_node: yaml.Node) -> list[Variant]:
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


def _check_configs(reader: Reader, preset: str, seed: int, variants: list[Variant], nodes: dict) -> None:
    """Each variant's whole config must validate; a problem points at the option that caused it."""
    known = known_options()
    for variant in variants:
        try:
            build_config(preset, {**option_fields(variant.merged), "seed": seed})
        except UserError as exc:
            message = strip_prefix(str(exc))
            own, common = nodes[variant.name], nodes[BASELINE]
            culprit = next((n for n in variant.options if known[n] in message), None)
            node = (
                own[culprit]
                if culprit
                else next((common[n] for n in variant.merged if n in common and known[n] in message), own[""])
            )
            where = f"variant {variant.name!r}" if variant.name != BASELINE else "the base recipe"
            reader.problem(node, f"{where}: {message}")
