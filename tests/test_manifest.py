"""The project's manifests agree with the code: MLproject <-> CLI, conda.yaml <-> pyproject."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import yaml

from sentiment.cli import CONFIG_OPTIONS, cli
from sentiment.config import flat_fields

REPO = Path(__file__).resolve().parents[1]


def _mlproject() -> dict:
    return yaml.safe_load((REPO / "MLproject").read_text())


def test_every_mlproject_parameter_is_a_cli_option_with_the_same_default():
    entry_points = _mlproject()["entry_points"]
    assert set(entry_points) >= {"train", "evaluate", "ablate", "analyze"}
    for name, entry in entry_points.items():
        command = cli.commands[name.removesuffix("_distributed")]
        options = {p.name: p for p in command.params if p.name != "help" and p.param_type_name == "option"}
        parameters = dict(entry["parameters"])
        if name.endswith("_distributed"):  # torchrun's process count, and no --resume under torchrun
            assert parameters.pop("nproc")["type"] == "int"
            options.pop("resume")
            assert entry["command"].startswith("python -m torch.distributed.run --standalone --nproc_per_node {nproc}")
        assert set(parameters) == set(options), name
        for param, spec in parameters.items():
            default = options[param].default
            expected = "" if default is None else default
            assert str(spec.get("default", "")) == str(expected), (name, param)
            # the command passes it through under the same option name
            assert f"--{param.replace('_', '-')} {{{param}}}" in entry["command"], (name, param)
        assert f"-m sentiment {name.removesuffix('_distributed')}" in entry["command"]


def test_cli_config_options_cover_real_config_fields():
    fields = flat_fields()
    assert {field for field, _, _ in CONFIG_OPTIONS.values()} <= set(fields)


def _requirement_names(requirements: list[str]) -> dict[str, str]:
    return {re.split(r"[<>=!~ ]", r, maxsplit=1)[0].lower(): r.replace(" ", "") for r in requirements}


def test_conda_yaml_and_pyproject_pin_the_same_dependencies():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_deps = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert _requirement_names(pyproject) == _requirement_names(pip_deps)


def test_ci_pins_the_cpu_torch_wheel_and_runs_the_readme_test_command():
    assert "torch==" in (REPO / ".ci" / "constraints.txt").read_text()
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in readme and "make demo" in readme


def test_only_tracking_imports_mlflow():
    for path in (REPO / "sentiment").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        } | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        if path.name != "tracking.py":
            assert "mlflow" not in imported, path.name
