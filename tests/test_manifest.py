"""The project's manifests agree with the code: MLproject <-> CLI <-> config option table,
conda.yaml <-> pyproject. (The import rules live in test_architecture.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import mlflow
import yaml

from sentiment.cli import cli
from sentiment.config import DataConfig, flat_fields
from sentiment.options import NOT_OPTIONS, field_docs, options

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
            if default is None or default is getattr(click.core, "UNSET", None):  # a required option
                assert "default" not in spec and options[param].required, (name, param)
            else:
                assert str(spec.get("default", "")) == str(default), (name, param)
            # the command passes it through under the same option name
            assert f"--{param.replace('_', '-')} {{{param}}}" in entry["command"], (name, param)
        assert f"-m sentiment {name.removesuffix('_distributed')}" in entry["command"]


def test_option_table_is_generated_from_the_config_fields_and_their_docstrings():
    table = options()
    fields = [f for f in flat_fields() if f not in NOT_OPTIONS]
    assert [o.field for o in table.values()] == fields  # every field but the preset, in field order
    assert table["data"].field == "data.source" and table["model"].field == "model.name"
    expected = "Tokens per review after truncation, special tokens included."
    assert table["max_length"].help == field_docs(DataConfig)["max_length"] == expected
    train = {p.name: p for p in cli.commands["train"].params}
    for name, option in table.items():  # the train command has every option, help written once
        assert train[name].help == option.help.replace("`", ""), name
        assert option.help and not option.help.endswith(" "), name


def test_grids_take_the_option_table_and_ablate_does_not_import_the_cli():
    source = (REPO / "sentiment" / "ablate" / "grid.py").read_text()
    assert "sentiment.cli" not in source and "options()" in source


def test_evaluate_without_a_model_uri_is_refused_by_mlflow_run(tracking_env):
    """`model_uri` has no default in MLproject: MLflow itself refuses to start, no run is made."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(REPO),
        "-e",
        "evaluate",
        "--env-manager",
        "local",
        "--experiment-name",
        tracking_env["MLFLOW_EXPERIMENT_NAME"],
    ]
    result = subprocess.run(cmd, env=tracking_env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "No value given for missing parameters: 'model_uri'" in result.stderr, result.stderr[-2000:]
    assert "Sentinel" not in result.stderr
    experiment = mlflow.get_experiment_by_name(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    assert experiment is None or mlflow.search_runs([experiment.experiment_id], output_format="list") == []


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
