"""Ablation grids: validation with line numbers, the statistics, and parent/child runs end to
end through the CLI against the real tracking server (tiny model, a grid written here)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from sklearn.metrics import f1_score

from sentiment.ablate import BASELINE, Paired, compare, holm, load_grid, macro_f1, mcnemar
from sentiment.errors import UserError
from tests.conftest import REPO, run_cli

SHIPPED = sorted((REPO / "experiments").glob("*.yaml"))


# ----------------------------------------------------------------------------- grid files


def test_every_grid_the_issue_names_is_shipped():
    assert {p.name for p in SHIPPED} >= {"seed_report.yaml", "architecture.yaml", "encoders.yaml", "truncation.yaml", "quick.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_grid_validates(path):
    grid = load_grid(path)
    assert grid.variants[0].name == BASELINE and len(grid.variants) > 1 and grid.seeds
    names = [v.name for v in grid.variants]
    assert len(names) == len(set(names))
    children = grid.children()
    assert len(children) == len(grid.variants) * len(grid.seeds)
    assert {c.config.seed for c in children} == set(grid.seeds)


def test_seed_report_grid_is_the_reports_baseline_and_seven_variants():
    grid = load_grid(REPO / "experiments" / "seed_report.yaml")
    assert len(grid.variants) == 8
    configs = {c.variant.name: c.config for c in grid.children() if c.seed == grid.seeds[0]}
    assert all(c.data.train_fraction == 0.1 and c.model.name == "distilbert-base-uncased" for c in configs.values())
    assert sorted(c.model.freeze_layers for c in configs.values()) == [0, 0, 0, 0, 0, 0, 2, 4]
    assert sorted(c.train.epochs for c in configs.values()) == [1, 2, 3, 3, 3, 3, 3, 5]
    assert sorted(c.train.batch_size for c in configs.values()) == [8, 16, 16, 16, 16, 16, 16, 32]


def test_architecture_grid_labels_from_scratch_and_covers_the_skipped_ablations():
    grid = load_grid(REPO / "experiments" / "architecture.yaml")
    models = {c.variant.name: c.config.model for c in grid.children() if c.seed == grid.seeds[0]}
    scratch = [m for m in models.values() if m.from_scratch]
    assert {m.num_heads for m in scratch} >= {4, 8, 16}
    assert {m.hidden_size for m in scratch} >= {384, 768, 1024}
    assert {m.num_layers for m in scratch} >= {2, 4, 6}
    assert all("scratch" in name for name, m in models.items() if m.from_scratch)
    assert {m.keep_heads for m in models.values()} >= {4, 8, 12}
    assert {m.keep_layers for m in models.values()} - {0}


GOOD = """\
name: broken
base:
  preset: quick
seeds: [1]
groups:
  - name: g
    variants:
      - name: a
        options: {freeze_layers: 1}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ("{freeze_layers: 1}", "{freez_layers: 1}", ["line 9", "unknown option 'freez_layers'", "did you mean 'freeze_layers'"]),
        ("{freeze_layers: 1}", "{epochs: three}", ["line 9", "bad value for 'epochs'", "must be an integer"]),
        ("{freeze_layers: 1}", "{freeze_layers: -1}", ["line 9", "variant 'a'", "model.freeze_layers must be >= 0"]),
        ("{freeze_layers: 1}", "{num_heads: 2}", ["line 9", "only apply with model.from_scratch true"]),
        ("{freeze_layers: 1}", "{freeze_layers: 1}\n      - name: a\n        options: {epochs: 1}", ["line 10", "duplicate variant name 'a' (first at line 8)"]),
        ("preset: quick", "preset: fast", ["line 3", "unknown preset 'fast'"]),
        ("seeds: [1]", "seeds: [1, 1]", ["line 4", "duplicate seed 1"]),
        ("seeds: [1]", "seeds: [1]\nseed: 3", ["line 5", "unknown key 'seed'", "did you mean 'seeds'"]),
        ("    variants:", "    baseline: nope\n    variants:", ["line 7", "baseline 'nope' of group 'g' is not a variant"]),
        ("{freeze_layers: 1}", "{seed: 3}", ["line 9", "seed is set by the grid's seeds list"]),
        ("- name: a", "- name: a b", ["line 8", "may only use letters"]),
        ("    variants:", "    variants: [", ["not valid YAML"]),
    ],
)
def test_broken_grids_name_file_and_line(tmp_path, old, new, fragments):
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(UserError) as caught:
        load_grid(path)
    message = str(caught.value)
    assert message.startswith(f"grid {path}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_all_problems_are_reported_together(tmp_path):
    text = GOOD.replace("{freeze_layers: 1}", "{freez_layers: 1, epochs: three}")
    with pytest.raises(UserError) as caught:
        load_grid(_write(tmp_path, text))
    assert "freez_layers" in str(caught.value) and "'epochs'" in str(caught.value)


def test_missing_and_empty_grid_files(tmp_path):
    with pytest.raises(UserError, match="cannot read it"):
        load_grid(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="the file is empty"):
        load_grid(_write(tmp_path, ""))


def test_group_options_and_references(tmp_path):
    text = GOOD + """\
  - name: scratch
    baseline: s4
    options: {from_scratch: true, num_layers: 2, hidden_size: 64}
    variants:
      - {name: s4, options: {num_heads: 4}}
      - {name: s2, options: {num_heads: 2}}
"""
    grid = load_grid(_write(tmp_path, text))
    by_name = {v.name: v for v in grid.variants}
    assert by_name["s2"].reference == "s4" and by_name["s4"].reference == BASELINE and by_name["a"].reference == BASELINE
    assert by_name["s2"].changed == "num_heads=2, from_scratch=true, num_layers=2, hidden_size=64"
    assert by_name["s2"].merged["hidden_size"] == 64
    assert grid.groups[1] == ("scratch", "", "s4")


# ----------------------------------------------------------------------------- statistics


def test_data_option_replaces_every_childs_source_but_is_no_change():
    grid = load_grid(REPO / "experiments" / "cpu_search.yaml", data="/copies/imdb.parquet")
    assert grid.data == "/copies/imdb.parquet"
    assert {c.config.data.source for c in grid.children()} == {"/copies/imdb.parquet"}
    assert all("data=" not in v.changed for v in grid.variants)
    assert {c.config.data.source for c in load_grid(REPO / "experiments" / "cpu_search.yaml").children()} == {"imdb"}


def test_mcnemar_is_the_exact_binomial_test():
    variant = np.array([True] * 10 + [False] * 2 + [True] * 50)
    reference = np.array([False] * 10 + [True] * 2 + [True] * 50)
    b, c, p = mcnemar(variant, reference)
    assert (b, c) == (10, 2)
    assert p == pytest.approx(2 * sum(__import__("math").comb(12, k) for k in range(3)) / 2**12)
    assert mcnemar(reference, reference)[2] == 1.0


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))
    assert macro_f1(np.array([1, 1]), np.array([1, 1])) == pytest.approx(0.5)  # zero_division=0 like sklearn


def test_holm_adjusts_and_keeps_nan():
    assert holm([0.01, float("nan"), 0.04, 0.03]) == pytest.approx([0.03, float("nan"), 0.06, 0.06], nan_ok=True)


def test_compare_identical_and_better_variants():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    reference = np.where(rng.random(400) < 0.7, labels, 1 - labels)
    same = compare([Paired(labels, reference, reference)] * 2)
    assert same["delta_test_accuracy"] == 0 and same["p_value"] == 1.0
    assert same["delta_test_accuracy_low"] == same["delta_test_accuracy_high"] == 0
    better = np.where(rng.random(400) < 0.95, labels, 1 - labels)
    stats = compare([Paired(labels, better, reference)])
    assert stats["delta_test_accuracy"] == pytest.approx(np.mean(better == labels) - np.mean(reference == labels))
    assert 0 < stats["delta_test_accuracy_low"] < stats["delta_test_accuracy"] < stats["delta_test_accuracy_high"]
    assert stats["p_value"] < 1e-6 and stats["paired_reviews"] == 400


def test_paired_join_uses_the_same_reviews():
    variant = pd.DataFrame({"id": ["a", "b", "c"], "label": [1, 0, 1], "prediction": [1, 1, 1]})
    reference = pd.DataFrame({"id": ["c", "a", "z"], "label": [1, 1, 0], "prediction": [0, 1, 0]})
    pair = Paired.join(variant, reference)
    assert list(pair.labels) == [1, 1] and list(pair.variant) == [1, 1] and list(pair.reference) == [1, 0]


# ----------------------------------------------------------------------------- end to end


def tiny_grid(name: str, reviews_csv: Path, tiny_model: str, seeds: list[int], groups: list[dict]) -> dict:
    return {
        "name": name,
        "base": {"preset": "seed", "options": {"data": str(reviews_csv), "model": tiny_model}},
        "shared": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "max_length": 64, "val_fraction": 0.2, "test_fraction": 0.2,
                   "layer_decay": 1.0, "log_every_steps": 5},  # fmt: skip
        "seeds": seeds,
        "groups": groups,
    }


def children_of(parent_id: str, experiment: str):
    return mlflow.search_runs(
        experiment_names=[experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", output_format="list"
    )


def parent_of(experiment: str):
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.`sentiment.kind` = 'ablation'", output_format="list")
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
        ("baseline", "1"), ("baseline", "2"), ("keep_heads_1", "1"), ("keep_heads_1", "2"), ("keep_layers_1", "1"), ("keep_layers_1", "2"),
    ]  # fmt: skip
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["sentiment.group"] for c in children} == {"baseline", "depth", "heads"}
    keys = {frozenset(k for k in c.data.metrics if not k.startswith("system/")) for c in children}  # system: sampled, timing-dependent
    assert len(keys) == 1, [sorted(k) for k in keys]
    assert {"test/accuracy", "val/accuracy", "train/loss", "test/f1_macro", "model/trainable_parameters"} <= set(next(iter(keys)))
    params = {c.data.tags["sentiment.variant"]: c.data.params for c in children}
    assert params["keep_layers_1"]["model.keep_layers"] == "1" and params["baseline"]["model.keep_layers"] == "0"
    trainable = {c.data.tags["sentiment.variant"]: c.data.metrics["model/trainable_parameters"] for c in children}
    assert trainable["keep_layers_1"] < trainable["keep_heads_1"] < trainable["baseline"]
    # children are re-run from scratch, never resumed: their state is not uploaded, their model is
    assert all(c.data.params["upload_state"] == "False" for c in children)
    client = MlflowClient()
    assert all(client.list_artifacts(c.info.run_id, "checkpoints") == [] for c in children)

    # the parent: summary table (MLflow table, Parquet, CSV), metrics, figure, grid file
    client = MlflowClient()
    run_id = parent.info.run_id
    summary = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="ablation/summary.parquet"))
    assert list(summary["variant"]) == ["baseline", "keep_layers_1", "keep_heads_1"]
    assert (summary["seeds"] == 2).all()
    assert summary.loc[0, "reference"] == "" and list(summary["reference"][1:]) == ["baseline", "baseline"]
    for column in ("test_accuracy_mean", "test_accuracy_std", "val_accuracy_mean", "val_f1_macro_mean", "test_f1_macro_mean", "train_seconds_mean"):
        assert summary[column].notna().all(), column
    row = summary.iloc[1]
    assert row["delta_test_accuracy_low"] <= row["delta_test_accuracy"] <= row["delta_test_accuracy_high"]
    assert 0 <= row["p_value"] <= row["p_value_holm"] <= 1 and row["paired_seeds"] == 2
    table = mlflow.load_table("ablation/summary.json", run_ids=[run_id])
    assert len(table) == 3
    csv = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="ablation/summary.csv"))
    assert list(csv["variant"]) == list(summary["variant"])
    metrics = client.get_run(run_id).data.metrics
    assert metrics["ablation/keep_layers_1/delta_test_accuracy"] == pytest.approx(row["delta_test_accuracy"])
    assert metrics["ablation/children_failed"] == 0 and metrics["ablation/children_finished"] == 6
    artifacts = {a.path for folder in ("figures", "grid", "ablation") for a in client.list_artifacts(run_id, folder)}
    assert {"figures/ablation_test_accuracy.png", "grid/tiny.yaml", "ablation/summary.csv"} <= artifacts
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/grid/tiny.yaml") == grid.read_text()

    # the per-child table agrees with each child's own metrics
    per_child = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="ablation/children.parquet"))
    by_run = {c.info.run_id: c.data.metrics["test/accuracy"] for c in children}
    assert all(by_run[r] == pytest.approx(a) for r, a in zip(per_child["run_id"], per_child["test_accuracy"]))


def test_failed_child_is_reported_and_resume_reruns_only_it(tracking_env, tiny_model, reviews_csv, tmp_path):
    def groups(freeze: int) -> list[dict]:
        return [{"name": "freezing", "variants": [
            {"name": "freeze_1", "options": {"freeze_layers": 1}},
            {"name": "freeze_bad", "options": {"freeze_layers": freeze}},
        ]}]  # fmt: skip

    grid = tmp_path / "resume.yaml"
    grid.write_text(yaml.safe_dump(tiny_grid("resume", reviews_csv, tiny_model, [3], groups(5)), sort_keys=False))
    # children as subprocesses (the --max-parallel path); the tiny model has 2 layers, so freeze 5 fails
    result = run_cli(["ablate", "--grid", str(grid), "--max-parallel", "2", "--data", str(reviews_csv)], tracking_env)
    assert result.returncode == 1, result.stderr[-3000:]
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    parent = parent_of(experiment)
    parent_id = parent.info.run_id
    assert parent.info.status == "FAILED"
    assert f"--resume {parent_id}" in result.stderr and "1 of 3 children failed (freeze_bad/seed 3)" in result.stderr
    children = {c.data.tags["sentiment.variant"]: c for c in children_of(parent_id, experiment)}
    assert children["freeze_bad"].info.status == "FAILED"
    assert "above the model's depth" in children["freeze_bad"].data.tags["sentiment.error"]
    assert children["baseline"].info.status == children["freeze_1"].info.status == "FINISHED"
    summary = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="ablation/summary.parquet"))
    assert dict(zip(summary["variant"], summary["seeds"])) == {"baseline": 1, "freeze_1": 1, "freeze_bad": 0}

    # fix the grid and resume: only the failed child runs again, in the same parent
    grid.write_text(yaml.safe_dump(tiny_grid("resume", reviews_csv, tiny_model, [3], groups(2)), sort_keys=False))
    result = run_cli(["ablate", "--grid", str(grid), "--resume", parent_id], tracking_env)  # without the first attempt's --data
    assert result.returncode == 2 and f"pass --data {reviews_csv} so every child sees the same reviews" in result.stderr
    result = run_cli(["ablate", "--grid", str(grid), "--resume", parent_id, "--data", str(reviews_csv)], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 children run, 2 already finished" in result.stdout
    after = children_of(parent_id, experiment)
    assert sorted((c.data.tags["sentiment.variant"], c.info.status) for c in after) == [
        ("baseline", "FINISHED"), ("freeze_1", "FINISHED"), ("freeze_bad", "FAILED"), ("freeze_bad", "FINISHED"),
    ]  # fmt: skip
    assert {c.info.run_id for c in after} >= {children["baseline"].info.run_id, children["freeze_1"].info.run_id}
    parent = MlflowClient().get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["sentiment.ablation_attempt"] == "2"
    assert "sentiment.error" not in parent.data.tags
    summary = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="ablation/summary.parquet"))
    assert (summary["seeds"] == 1).all() and summary["test_accuracy_mean"].notna().all()
    assert parent.data.metrics["ablation/children_failed"] == 0


def test_resume_refuses_another_grid_or_a_non_ablation_run(tracking_env, tiny_model, reviews_csv, tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump(tiny_grid("g", reviews_csv, tiny_model, [1], [{"name": "x", "variants": [{"name": "v"}]}])))
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
        assert child.data.tags["mlflow.project.backend"] == "local" and child.data.tags["mlflow.project.entryPoint"] == "train"
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
    summary = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="ablation/summary.parquet"))
    assert len(summary) == len(grid.variants) and (summary["seeds"] == len(grid.seeds)).all()
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/ablation/summary.json"))["columns"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # mlflow's schema hints about the toy frame
def test_sibling_runs_log_the_same_dataset_at_once(tracking_env):
    """Children of a grid start together and log the same splits: the server's get-or-create of
    a dataset races, and no child may fail for it."""
    import threading

    import mlflow
    import pandas as pd

    from sentiment.tracking import _log_input

    frame = pd.DataFrame({"id": ["a", "b"], "text": ["good", "bad"], "label": [1, 0]})
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    errors: list[BaseException] = []
    run_ids: list[str] = []
    for round_ in range(3):  # a fresh dataset each round, so every round starts with the race
        data = frame.assign(text=frame.text + str(round_))
        barrier = threading.Barrier(8)

        def child() -> None:
            try:
                with mlflow.start_run(experiment_id=experiment_id) as run:
                    run_ids.append(run.info.run_id)
                    dataset = mlflow.data.from_pandas(data, source="reviews.csv", targets="label", name="reviews.csv-train")
                    barrier.wait()
                    _log_input(dataset, "training")
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=child) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert len(run_ids) == 24
    assert all(len(client.get_run(r).inputs.dataset_inputs) == 1 for r in run_ids)
