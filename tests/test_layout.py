"""The architecture, enforced (ARCHITECTURE.md states the same rules): who may import whom, the
stages in ARCHITECTURE.md's order, no import cycles, only the tracking package imports mlflow, module
and function sizes (sentiment/ and benchmarks/, counted on the code as ruff formats it), the tag keys
named only in sentiment/tracking/keys.py, and the tree formatted and linted by ruff.

Imports are read from the source (every `import`, at module level or inside a function), so a
late import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sentiment"
# The module and function sizes hold here too.
SIZED = (PACKAGE, REPO / "benchmarks")

# The layers, bottom up. A module may import its own layer's modules and those below; the
# infrastructure imports no stage; the tracking package imports only the base.
BASE = {"sentiment.errors", "sentiment.config", "sentiment.options"}
INFRASTRUCTURE = {
    "sentiment.tracking",
    "sentiment.distributed",
    "sentiment.device",
    "sentiment.plots",
    "sentiment.tokens",
    "sentiment.data",
    "sentiment.stats",
    "sentiment.hub",
    "sentiment.logs",
}


def _stage_order() -> list[str]:
    """The stages row of ARCHITECTURE.md's layer table, in its order (`train/` -> sentiment.train)."""
    row = next(line for line in (REPO / "ARCHITECTURE.md").read_text().splitlines() if line.startswith("| stages |"))
    modules = row.split("|")[2]
    return [f"sentiment.{name.rstrip('/')}" for name in re.findall(r"`([a-z_]+/?)`", modules)]


# Each stage may import the stages listed before it in ARCHITECTURE.md, never one after it.
STAGE_ORDER = _stage_order()
STAGES = set(STAGE_ORDER)
ENTRY = {
    "sentiment.cli",
    "sentiment.cli_options",
    "sentiment.cli_train",
    "sentiment.cli_study",
    "sentiment.cli_registry",
    "sentiment.cli_evidence",
    "sentiment.__main__",
}

MAX_MODULE_LINES = 450
# Modules allowed past MAX_MODULE_LINES, each with its reason.
LONG_MODULES: dict[str, str] = {}
MAX_FUNCTION_LINES = 60
LONG_FUNCTION_MARK = "# long function:"  # on the line above the def (or its decorators), then the reason
# A `# fmt: skip` (or `# fmt: off`) says why after it on the same line: `# fmt: skip  # a table: one row a line`.
FMT_SKIP = re.compile(r"#\s*fmt:\s*(skip|off)\b(?P<rest>.*)$")


def _ruff() -> str:
    """The ruff of this environment (the `test` extra installs it)."""
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if not found:
        pytest.fail("ruff is not installed: pip install -e '.[test]' (make install)")
    return found


_FORMATTED: dict[Path, list[str]] = {}


def _formatted_lines(path: Path) -> list[str]:
    """The file's lines as `ruff format` writes them (the tree is kept formatted; counted the same either way)."""
    if path not in _FORMATTED:
        text = path.read_text()
        result = subprocess.run(
            [_ruff(), "format", "--stdin-filename", str(path), "-"],
            input=text,
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        _FORMATTED[path] = result.stdout.splitlines()
    return _FORMATTED[path]


def _sized_files() -> list[Path]:
    return [path for root in SIZED for path in sorted(root.rglob("*.py"))]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The sentiment modules a file imports (``from sentiment import tracking`` -> sentiment.tracking)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.startswith("sentiment")}
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sentiment") and not node.level
        ):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    return {name.split(".")[0] for name in names}


def _group(module: str) -> str:
    """The layer entry a module belongs to: itself, or the package it is part of."""
    for name in sorted(BASE | INFRASTRUCTURE | STAGES | ENTRY, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return module


def test_every_module_has_a_layer():
    unplaced = {m for m in MODULES if m != "sentiment" and _group(m) not in BASE | INFRASTRUCTURE | STAGES | ENTRY}
    assert not unplaced, f"add these to a layer in tests/test_layout.py and ARCHITECTURE.md: {sorted(unplaced)}"


def test_only_the_tracking_package_imports_mlflow():
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "tracking" in path.parents:
            continue
        assert "mlflow" not in _imported_roots(path), path.relative_to(REPO)


def test_tracking_imports_no_stage_only_the_base():
    for module, path in MODULES.items():
        if _group(module) == "sentiment.tracking":
            outside = {m for m in _imports(path) if _group(m) != "sentiment.tracking"}
            assert outside <= BASE, (module, sorted(outside - BASE))


def test_infrastructure_imports_no_stage_and_nothing_imports_the_cli():
    for module, path in MODULES.items():
        imported = {_group(m) for m in _imports(path)}
        if _group(module) in BASE | INFRASTRUCTURE:
            assert not imported & (STAGES | ENTRY), (module, sorted(imported & (STAGES | ENTRY)))
        if _group(module) != "sentiment.__main__":
            assert "sentiment.cli" not in imported or _group(module) == "sentiment.cli", module
    for module in BASE:
        assert {_group(m) for m in _imports(MODULES[module])} <= BASE, module


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> list[str] | None:
        if module in trail:
            return trail[trail.index(module) :] + [module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported, [*trail, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    return next((cycle for module in sorted(graph) if (cycle := visit(module, []))), None)


def test_no_import_cycles():
    graph = {module: _imports(path) & set(MODULES) for module, path in MODULES.items()}
    assert "sentiment.evaluate" in graph["sentiment.train.loop"]  # the graph is the real one
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_is_too_long_without_a_reason():
    for path in _sized_files():
        name = str(path.relative_to(REPO))
        lines = len(_formatted_lines(path))
        if name in LONG_MODULES:
            assert lines > MAX_MODULE_LINES, f"{name} is short again: drop it from LONG_MODULES"
            continue
        limit = MAX_MODULE_LINES
        assert lines <= limit, f"{name} has {lines} lines (limit {limit}): split it, or add it to LONG_MODULES with why"


def test_no_function_is_too_long_without_a_reason():
    for path in _sized_files():
        source = _formatted_lines(path)
        for node in ast.walk(ast.parse("\n".join(source))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - start + 1
                reason = source[start - 2].strip() if start >= 2 else ""
                if length > MAX_FUNCTION_LINES:
                    where = f"{path.relative_to(REPO)}:{node.lineno} {node.name}"
                    explained = reason.startswith(LONG_FUNCTION_MARK) and len(reason) > len(LONG_FUNCTION_MARK) + 10
                    limit = MAX_FUNCTION_LINES
                    assert explained, (
                        f"{where} has {length} lines (limit {limit}): split it, or say why above it "
                        f"({LONG_FUNCTION_MARK} ...)"
                    )


def test_stages_import_only_the_stages_before_them_in_architecture_md():
    assert (
        STAGE_ORDER[:3] == ["sentiment.model", "sentiment.inference", "sentiment.preflight"]
        and len(STAGE_ORDER) == len(STAGES) > 10
    )
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    for module, path in MODULES.items():
        if _group(module) not in rank:
            continue
        later = {_group(m) for m in _imports(path) if rank.get(_group(m), -1) > rank[_group(module)]}
        assert not later, f"{module} imports {sorted(later)}, listed after {_group(module)} in ARCHITECTURE.md"


def test_the_tree_is_formatted_and_linted_by_ruff():
    """`make lint`: `ruff format --check` and `ruff check` (pyproject.toml's [tool.ruff]) pass."""
    for command in (["format", "--check"], ["check"]):
        result = subprocess.run([_ruff(), *command, "."], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, f"ruff {' '.join(command)}:\n{result.stdout[-3000:]}{result.stderr[-1000:]}"


def test_no_fmt_skip_without_a_reason():
    for path in [*_sized_files(), *sorted((REPO / "tests").rglob("*.py"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = FMT_SKIP.search(line)
            if match and path != Path(__file__).resolve():
                reason = match["rest"].strip()
                assert reason.startswith("#") and len(reason) > 10, (
                    f"{path.relative_to(REPO)}:{number}: say why after it (# fmt: skip  # reason)"
                )


def test_the_checks_see_late_imports_and_cycles(tmp_path):
    """Not vacuous: an import inside a function counts, and a cycle is found."""
    late = tmp_path / "late.py"
    late.write_text("from sentiment import evaluate\n\n\ndef f():\n    from sentiment.train import loop\n")
    assert _imports(late) == {"sentiment.evaluate", "sentiment.train.loop"}
    assert (
        _group("sentiment.train.loop") == "sentiment.train"
        and _group("sentiment.tracking.runs") == "sentiment.tracking"
    )
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


# The tag keys (`sentiment.kind`, ...) are named once, in sentiment/tracking/keys.py; elsewhere code says `keys.KIND`.
KEYS_MODULE = PACKAGE / "tracking" / "keys.py"
TAG_KEY = re.compile(r"^sentiment\.[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")  # digits too: sentiment.cpu_native_bf16
# Strings of that shape that are not tag keys, each with its reason. None today: the module paths the code
# names as text (`sentiment.evaluate:load_classifier`, `sentiment.baselines.MeanPooledEncoder`) have another shape.
NOT_TAG_KEYS: dict[str, str] = {}


def _tag_key_literals(source: str) -> list[tuple[int, str]]:
    """(line, value) of each string constant shaped like a tag key, f-strings' expressions included."""
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and TAG_KEY.match(node.value)
        and node.value not in NOT_TAG_KEYS
    ]


def _keys_constants() -> dict[str, object]:
    """keys.py's module-level constants, read from the source (importing it would load the tracking package)."""
    out: dict[str, object] = {}
    for node in ast.parse(KEYS_MODULE.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def test_tag_keys_are_named_only_in_tracking_keys():
    found = [
        f"{path.relative_to(REPO)}:{line}: {value!r}"
        for path in _sized_files()
        if path != KEYS_MODULE
        for line, value in _tag_key_literals(path.read_text())
    ]
    assert not found, "use the constant of sentiment/tracking/keys.py (keys.KIND, ...):\n" + "\n".join(found)


def test_tag_keys_are_unique_and_prefixed():
    constants = _keys_constants()
    assert len(constants) > 50 and "KIND" in constants  # the real module
    for name, value in constants.items():
        assert name.isupper() and isinstance(value, str) and TAG_KEY.match(value), (name, value)
    values = list(constants.values())
    assert len(set(values)) == len(values), sorted({v for v in values if values.count(v) > 1})
    assert not set(values) & set(NOT_TAG_KEYS)


def test_the_tag_key_check_sees_dict_keys_and_f_strings():
    """Not vacuous: a literal in a dict, a call and an f-string's expression is found; a module path is not."""
    source = (
        'tags = {"sentiment.kind": "train"}\n'
        'x = tags.get("sentiment.tune.trials")\n'
        "y = f\"{tags.get('sentiment.cpu_native_bf16')}\"\n"
        'z = "sentiment.evaluate:load_classifier"\n'
    )
    assert [value for _, value in sorted(_tag_key_literals(source))] == [
        "sentiment.kind",
        "sentiment.tune.trials",
        "sentiment.cpu_native_bf16",
    ]
