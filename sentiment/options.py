"""The option table, generated from the config dataclasses (sentiment.config) and their field docstrings: the
`sentiment train` options, the MLproject parameters and the keys of ablation grids, one entry per overridable field.

    python -c "from sentiment.options import options; print(list(options()))"
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from dataclasses import dataclass

from sentiment.config import _SECTIONS, CHECKPOINT_POLICIES, DEVICES, PRECISIONS, TRUNCATIONS, Config, flat_fields

# The option name of a flat field is the field's own name, except these two (`--data`, `--model`).
OPTION_NAMES = {"data.source": "data", "model.name": "model"}
NOT_OPTIONS = ("preset",)  # chosen with --preset, never overridden field by field
CHOICES = {
    "data.truncation": TRUNCATIONS,
    "train.precision": PRECISIONS,
    "train.device": DEVICES,
    "log_checkpoints": CHECKPOINT_POLICIES,
}


@dataclass(frozen=True)
class Option:
    """One config field as a `sentiment train` option, an MLproject parameter and a grid key."""

    name: str  # e.g. max_length (--max-length on the command line)
    field: str  # the flat config field, e.g. data.max_length
    kind: type  # int, float, bool or str
    choices: tuple[str, ...] | None
    help: str  # the field's docstring


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass, whitespace squeezed.

    Python keeps no attribute docstrings at runtime, so they are read from the class's source.
    """
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # installed without sources: options keep their names, lose their help
        return {}
    body = ast.parse(textwrap.dedent(source)).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        is_doc = (
            isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
        )
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@functools.cache
def options() -> dict[str, Option]:
    """Every overridable config field by option name, in field order (sections first, then the
    top-level fields); the help text of each is its field's docstring."""
    docs = {f"{section}.{k}": v for section, cls in _SECTIONS.items() for k, v in field_docs(cls).items()}
    docs.update(field_docs(Config))
    out = {}
    for flat, kind in flat_fields().items():
        if flat in NOT_OPTIONS:
            continue
        name = OPTION_NAMES.get(flat, flat.split(".")[-1])
        out[name] = Option(name, flat, kind, CHOICES.get(flat), docs.get(flat, ""))
    return out
