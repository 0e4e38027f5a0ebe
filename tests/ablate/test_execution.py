"""Ablations end to end through the CLI against the real tracking server (tiny model, grids
written here): parent and children, failures and resume, a Projects backend, the shipped grid."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from sentiment.ablate import load_grid
from tests.conftest import REPO, run_cli


def tiny_grid(name: str, reviews_csv: Path, tiny_model: str, seeds: list[int], groups: list[dict]) -> dict:
    return {
        "name": name,
        "base": {"preset": "seed", "options": {"data": str(reviews_csv), "model": tiny_model}},
        "shared": {
            "epochs": 2,
            "batch_size": 8,
            "lr": 3e-3,
            "max_length": 64,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
            "layer_decay": 1.0,
            "log_every_steps": 5,
        },
        "seeds": seeds,
        "groups": groups,
    }


def children_of(parent_id: str, experiment: str):
    return mlflow.search_runs(
        experiment_names=[experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", output_format="list"
    )


def parent_of(experiment: str):
    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string="tags.`sentiment.kind` = 'ablation'", output_format="list"
    )
    assert len(runs) == 1
    return runs[0]


def test_ablate_parent_and_children_end_to_end(tracking_env, tiny_model, reviews_csv, tmp_path):
    groups = [
        {"name": "depth", "variants": [{"name": "keep_layers_1", "options": {"keep_layers": 1}}]},
        {"name": "heads", "variants": [{"name": "keep_heads_1", "options": {"keep_heads": 1}}]},
    ]
    grid = tmp_path / "tiny.yaml"
    grid.write_text(yaml.safe_dump(tiny_grid("tiny", reviews_csv, tiny_model, [1, 2], groups), sort_keys=False))
    result = run_cli(["ablate", "--grid", str(grid)], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    parent = parent_of(experiment)
    assert parent.info.status == "FINISHED" and parent.data.tags["sentiment.grid"] == "tiny"
    assert parent.info.run_id in result.stdout and "keep_layers_1" in result.stdout

    # children: one per variant and seed, nested, tagged, with the same metric keys
    children = children_of(parent.info.run_id, experiment)
    assert sorted((c.data.tags["sentiment.variant"], c.data.tags["sentiment.seed"]) for c in children) == [
        ("baseline", "1"),
        ("baseline", "2"),
        ("keep_heads_1", "1"),
        ("keep_heads_1", "2"),
        ("keep_layers_1", "1"),
        ("keep_layers_1", "2"),
    ]
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["sentiment.group"] for c in children} == {"baseline", "depth", "heads"}
    keys = {
        frozenset(k for k in c.data.metrics if not k.startswith("system/")) for c in children
    }  # system: sampled, timing-dependent
    assert len(keys) == 1, [sorted(k) for k in keys]
    assert {"test/accuracy", "val/accuracy", "train/loss", "test/f1_macro"} <= set(next(iter(keys)))
    params = {c.data.tags["sentiment.variant"]: c.data.params for c in children}
    assert params["keep_layers_1"]["model.keep_layers"] == "1" and params["baseline"]["model.keep_layers"] == "0"
    trainable = {c.data.tags["sentiment.variant"]: int(c.data.params["model.trainable_parameters"]) for c in children}
    assert trainable["keep_layers_1"] < trainable["keep_heads_1"] < trainable["baseline"]
    # children are re-run from scratch, never resumed: their state is not uploaded, their model is
    assert all(c.data.params["upload_state"] == "False" for c in children)
    client = MlflowClient()
    assert all(client.list_artifacts(c.info.run_id, "checkpoints") == [] for c in children)

    # the parent: summary table (MLflow table, Parquet, CSV), metrics, figure, grid file
    client = MlflowClient()
    run_id = parent.info.run_id
    summary = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="ablation/summary.parquet")
    )
    assert list(summary["variant"]) == ["baseline", "keep_layers_1", "keep_heads_1"]
    assert (summary["seeds"] == 2).all()
    assert summary.loc[0, "reference"] == "" and list(summary["reference"][1:]) == ["baseline", "baseline"]
    for column in (
        "test_accuracy_mean",
        "test_accuracy_std",
        "val_accuracy_mean",
        "val_f1_macro_mean",
        "test_f1_macro_mean",
        "train_seconds_mean",
    ):
        assert summary[column].notna().all(), column
    row = summary.iloc[1]
    assert row["delta_test_accuracy_low"] <= row["delta_test_accuracy"] <= row["delta_test_accuracy_high"]
    assert 0 <= row["p_value"] <= row["p_value_holm"] <= 1 and row["paired_seeds"] == 2
    # 2 seeds: the Student-t interval over the per-seed deltas is logged beside the bootstrap's, verdicts use the wider
    assert row["seed_ci_low"] <= row["delta_test_accuracy"] <= row["seed_ci_high"]
    assert row["verdict_interval"] in ("seeds", "bootstrap") and row["verdict_high"] - row[
        "verdict_low"
    ] == pytest.approx(
        max(row["seed_ci_high"] - row["seed_ci_low"], row["delta_test_accuracy_high"] - row["delta_test_accuracy_low"])
    )
    table = mlflow.load_table("ablation/summary.json", run_ids=[run_id])
    assert len(table) == 3
    csv = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="ablation/summary.csv"))
    assert list(csv["variant"]) == list(summary["variant"])
    metrics = client.get_run(run_id).data.metrics
    assert metrics["ablation/keep_layers_1/delta_test_accuracy"] == pytest.approx(row["delta_test_accuracy"])
    assert metrics["ablation/keep_layers_1/seed_ci_low"] == pytest.approx(row["seed_ci_low"])
    assert metrics["ablation/children_failed"] == 0 and metrics["ablation/children_finished"] == 6
    artifacts = {a.path for folder in ("figures", "grid", "ablation") for a in client.list_artifacts(run_id, folder)}
    assert {"figures/ablation_test_accuracy.png", "grid/tiny.yaml", "ablation/summary.csv"} <= artifacts
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/grid/tiny.yaml") == grid.read_text()

    # the per-child table agrees with each child's own metrics
    per_child = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="ablation/children.parquet")
    )
    by_run = {c.info.run_id: c.data.metrics["test/accuracy"] for c in children}
    assert all(by_run[r] == pytest.approx(a) for r, a in zip(per_child["run_id"], per_child["test_accuracy"]))


@pytest.mark.extended  # a grid run twice; test_ablate_parent_and_children_end_to_end crosses the grid in make test
def test_failed_child_is_reported_and_resume_reruns_only_it(tracking_env, tiny_model, reviews_csv, tmp_path):
    def groups(lr: float) -> list[dict]:
        return [
            {
                "name": "freezing",
                "variants": [
                    {"name": "freeze_1", "options": {"freeze_layers": 1}},
                    {"name": "freeze_bad", "options": {"freeze_layers": 1, "lr": lr, "max_grad_norm": 1.0e30}},
                ],
            }
        ]

    grid = tmp_path / "resume.yaml"
    grid.write_text(yaml.safe_dump(tiny_grid("resume", reviews_csv, tiny_model, [3], groups(1.0e30)), sort_keys=False))
    # children as subprocesses (the --max-parallel path); a child that diverges fails while it
    # runs (mistakes known up front, such as freezing more layers than the model has, stop the
    # grid before its parent exists: tests/test_fail_fast.py)
    result = run_cli(["ablate", "--grid", str(grid), "--max-parallel", "2", "--data", str(reviews_csv)], tracking_env)
    assert result.returncode == 1, result.stderr[-3000:]
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    parent = parent_of(experiment)
    parent_id = parent.info.run_id
    assert parent.info.status == "FAILED"
    assert f"--resume {parent_id}" in result.stderr and "1 of 3 children failed (freeze_bad/seed 3)" in result.stderr
    children = {c.data.tags["sentiment.variant"]: c for c in children_of(parent_id, experiment)}
    assert children["freeze_bad"].info.status == "FAILED"
    assert children["freeze_bad"].data.tags["sentiment.failure"] == "non-finite"
    assert children["baseline"].info.status == children["freeze_1"].info.status == "FINISHED"
    summary = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="ablation/summary.parquet")
    )
    assert dict(zip(summary["variant"], summary["seeds"])) == {"baseline": 1, "freeze_1": 1, "freeze_bad": 0}

    # fix the grid and resume: only the failed child runs again, in the same parent
    grid.write_text(yaml.safe_dump(tiny_grid("resume", reviews_csv, tiny_model, [3], groups(3.0e-3)), sort_keys=False))
    result = run_cli(
        ["ablate", "--grid", str(grid), "--resume", parent_id], tracking_env
    )  # without the first attempt's --data
    assert result.returncode == 2 and f"pass --data {reviews_csv} so every child sees the same reviews" in result.stderr
    result = run_cli(["ablate", "--grid", str(grid), "--resume", parent_id, "--data", str(reviews_csv)], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 children run, 2 already finished" in result.stdout
    after = children_of(parent_id, experiment)
    assert sorted((c.data.tags["sentiment.variant"], c.info.status) for c in after) == [
        ("baseline", "FINISHED"),
        ("freeze_1", "FINISHED"),
        ("freeze_bad", "FAILED"),
        ("freeze_bad", "FINISHED"),
    ]
    assert {c.info.run_id for c in after} >= {children["baseline"].info.run_id, children["freeze_1"].info.run_id}
    parent = MlflowClient().get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["sentiment.ablation_attempt"] == "2"
    assert "sentiment.error" not in parent.data.tags
    summary = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="ablation/summary.parquet")
    )
    assert (summary["seeds"] == 1).all() and summary["test_accuracy_mean"].notna().all()
    assert parent.data.metrics["ablation/children_failed"] == 0


def test_resume_refuses_another_grid_or_a_non_ablation_run(tracking_env, tiny_model, reviews_csv, tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        yaml.safe_dump(tiny_grid("g", reviews_csv, tiny_model, [1], [{"name": "x", "variants": [{"name": "v"}]}]))
    )
    with mlflow.start_run() as run:
        pass
    result = run_cli(["ablate", "--grid", str(grid), "--resume", run.info.run_id], tracking_env)
    assert result.returncode == 2 and "is not an ablation parent" in result.stderr
    result = run_cli(["ablate", "--grid", str(grid), "--resume", "0" * 32], tracking_env)
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = run_cli(["ablate", "--grid", str(grid), "--max-parallel", "0"], tracking_env)
    assert result.returncode == 2 and "--max-parallel must be >= 1" in result.stderr
    result = run_cli(["ablate", "--grid", str(grid), "--backend-config", str(grid)], tracking_env)
    assert result.returncode == 2 and "--backend-config needs --backend" in result.stderr


# each child through `mlflow run`; test_e2e's test_mlflow_run_reuses_the_project_run crosses MLflow Projects in make
# test
@pytest.mark.extended
def test_backend_local_runs_each_child_through_mlflow_projects(tracking_env, tiny_model, reviews_csv, tmp_path):
    """The --backend path with the one backend this machine has (kubernetes needs a cluster)."""
    groups = [{"name": "depth", "variants": [{"name": "keep_layers_1", "options": {"keep_layers": 1}}]}]
    grid = tmp_path / "backend.yaml"
    grid.write_text(yaml.safe_dump(tiny_grid("backend", reviews_csv, tiny_model, [1], groups), sort_keys=False))
    result = run_cli(["ablate", "--grid", str(grid), "--backend", "local", "--max-parallel", "2"], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    parent = parent_of(experiment)
    children = children_of(parent.info.run_id, experiment)
    assert sorted(c.data.tags["sentiment.variant"] for c in children) == ["baseline", "keep_layers_1"]
    for child in children:
        assert child.info.status == "FINISHED" and "test/accuracy" in child.data.metrics
        assert (
            child.data.tags["mlflow.project.backend"] == "local"
            and child.data.tags["mlflow.project.entryPoint"] == "train"
        )
        assert child.data.tags["sentiment.seed"] == "1" and child.data.tags["sentiment.group"] in ("baseline", "depth")
    assert {c.data.params["model.keep_layers"] for c in children} == {"0", "1"}


@pytest.mark.slow  # trains the real MiniLM: `make test-fast` skips it
@pytest.mark.grid  # the whole shipped grid: `make test` skips it too, `make test-all` runs it
@pytest.mark.timeout(3600)  # 10 children; about 8 minutes on 2 otherwise idle-ish cores, much more under load
def test_shipped_quick_grid_end_to_end(tracking_env):
    result = run_cli(["ablate", "--grid", str(REPO / "experiments" / "quick.yaml")], tracking_env, timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    parent = parent_of(experiment)
    grid = load_grid(REPO / "experiments" / "quick.yaml")
    assert len(children_of(parent.info.run_id, experiment)) == len(grid.children())
    summary = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="ablation/summary.parquet")
    )
    assert len(summary) == len(grid.variants) and (summary["seeds"] == len(grid.seeds)).all()
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/ablation/summary.json"))["columns"]
