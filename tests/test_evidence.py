"""The evidence store: runs copied from a real tracking server keep their ids and everything a
report reads (and nothing it does not: no weights, no review text); documents rendered from the
store alone match those rendered from the server; `render --check` catches a hand edit and a run
id the store lacks; the store opens in a real `mlflow server` under the same ids. Also: the
committed documents match their render from the committed store (what `make results` guards)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from sentiment.tracking import evidence
from sentiment.tracking.evidence import PREDICTION_COLUMNS
from tests.ablate.test_execution import children_of, parent_of, tiny_grid
from tests.conftest import REPO, free_port, run_cli, stop_server, wait_healthy

pytestmark = pytest.mark.timeout(900)


def _artifact_paths(run_id: str) -> set[str]:
    def walk(path=None):
        out = set()
        for item in MlflowClient().list_artifacts(run_id, path):
            out |= walk(item.path) if item.is_dir else {item.path}
        return out

    return walk()


def _store_env(env: dict, store: Path) -> dict:
    return {**env, "MLFLOW_TRACKING_URI": str(store), "MLFLOW_ALLOW_FILE_STORE": "true"}


def test_published_runs_keep_ids_and_render_the_same_report(tracking_env, tiny_model, reviews_csv, tmp_path):
    grid = tiny_grid(
        "evidence",
        reviews_csv,
        tiny_model,
        [1],
        [
            {"name": "freezing", "variants": [{"name": "freeze_1", "options": {"freeze_layers": 1}}]},
        ],
    )
    grid["shared"].update({"test_size": 40, "split_seed": 0})
    (tmp_path / "evidence.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    result = run_cli(["ablate", "--grid", str(tmp_path / "evidence.yaml")], tracking_env)
    assert result.returncode == 0, [
        line for line in (result.stdout + result.stderr).splitlines() if "batches" not in line
    ][-40:]
    parent_id = parent_of(tracking_env["MLFLOW_EXPERIMENT_NAME"]).info.run_id
    children = children_of(parent_id, tracking_env["MLFLOW_EXPERIMENT_NAME"])
    child = next(c for c in children if c.data.params.get("seed") == "1" and "freeze_1" in c.info.run_name)
    base = next(
        c for c in children if c.data.params.get("seed") == "1" and c is not child and "baseline" in c.info.run_name
    )

    repo = tmp_path / "repo"
    store = repo / "experiments" / "evidence"
    result = run_cli(["evidence", "add", parent_id, "--store", str(store)], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"copied {1 + len(children)} run(s)" in result.stdout and result.stderr == ""

    # the same runs under the same ids, with what the server holds
    source = {r.info.run_id: r for r in [mlflow.get_run(parent_id), *children]}
    server_artifacts = _artifact_paths(child.info.run_id)
    server_history = MlflowClient().get_metric_history(child.info.run_id, "train/loss")
    server_predictions = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=child.info.run_id, artifact_path="predictions/test.parquet")
    )
    mlflow.set_tracking_uri(str(store))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        mp.setenv("MLFLOW_TRACKING_URI", str(store))
        client = MlflowClient(str(store))
        for run_id, run in source.items():
            copy = client.get_run(run_id)
            assert copy.data.params == run.data.params and copy.info.status == run.info.status
            assert copy.info.start_time == run.info.start_time and copy.info.end_time == run.info.end_time
            assert {k: v for k, v in copy.data.tags.items() if k != "mlflow.loggedModels"} == {
                k: v for k, v in run.data.tags.items() if k != "mlflow.loggedModels"
            }
            assert copy.data.metrics == run.data.metrics
            assert len(copy.inputs.dataset_inputs) == len(run.inputs.dataset_inputs)
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in history] == [(m.step, m.value) for m in server_history]
    kept = {
        p.relative_to(store / child.info.experiment_id / child.info.run_id / "artifacts").as_posix()
        for p in (store / child.info.experiment_id / child.info.run_id / "artifacts").rglob("*")
        if p.is_file()
    }
    # experiment ids are the source's (a fresh store), run folders carry the source's ids
    assert "predictions/test.parquet" in kept and "config.yaml" in kept
    assert kept == {p for p in server_artifacts if evidence.kept(p, top_level=False)}  # all a report reads, no more
    assert not any(p.startswith("checkpoints/") or p.endswith((".safetensors", ".bin", ".pt", "MLmodel")) for p in kept)
    assert not any(p.startswith("figures/") for p in kept)  # a child's figures are not read by any report
    stored = pd.read_parquet(
        store / child.info.experiment_id / child.info.run_id / "artifacts" / "predictions" / "test.parquet"
    )
    assert "text" in server_predictions.columns and list(stored.columns) == [
        c for c in server_predictions.columns if c in PREDICTION_COLUMNS
    ]
    pd.testing.assert_frame_equal(stored, server_predictions[list(stored.columns)], check_dtype=False, atol=1e-6)
    assert sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) < 2_000_000

    # a document rendered from the store alone is the server's report, line for line
    (repo / "experiments" / "results.yaml").write_text(
        yaml.safe_dump(
            {
                "documents": [{"output": "experiments/RESULTS.md", "title": "Tiny results", "runs": [parent_id]}],
                "readme": {
                    "README.md": {
                        "headline": [{"budget": "tiny", "runs": [child.info.run_id], "baseline": [base.info.run_id]}]
                    }
                },
            },
            sort_keys=False,
        )
    )
    (repo / "README.md").write_text(
        "# Tiny\n\n<!-- results:headline start: generated -->\nold\n<!-- results:headline end -->\n\nMore.\n"
    )
    on_server = tmp_path / "server" / "RESULTS.md"
    result = run_cli(
        ["report", "--run", parent_id, "--output", str(on_server), "--title", "Tiny results"], tracking_env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    offline = {**tracking_env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens there: no server is used
    result = run_cli(["evidence", "render", "--root", str(repo)], offline)
    assert result.returncode == 0, result.stderr[-3000:]
    rendered = (repo / "experiments" / "RESULTS.md").read_text()
    assert "Rendered by `make results`" in rendered
    assert rendered.split("\n", 3)[3] == on_server.read_text().split("\n", 3)[3]  # all but the first sentence
    readme = (repo / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| tiny |"))
    assert child.info.run_id in row and base.info.run_id in row and "old" not in readme and readme.endswith("More.\n")

    result = run_cli(["evidence", "render", "--check", "--root", str(repo)], offline)
    assert result.returncode == 0 and "match their render" in result.stdout, result.stderr
    (repo / "experiments" / "RESULTS.md").write_text(rendered.replace("Tiny results", "Tiny result"))
    (repo / "README.md").write_text(readme + "\nSee run 0123456789abcdef0123456789abcdef.\n")
    result = run_cli(["evidence", "render", "--check", "--root", str(repo)], offline)
    assert result.returncode != 0
    assert "experiments/RESULTS.md differs from its render" in result.stderr
    assert "README.md names run(s) the evidence store lacks: 0123456789abcdef0123456789abcdef" in result.stderr
    assert "Traceback" not in result.stderr

    # the MLflow UI opens the store under the same ids and serves its artifacts
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentiment", "evidence", "ui", "--store", str(store), "--port", str(port)],
        cwd=repo,
        env=tracking_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={child.info.run_id}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.load(response)["run"]["info"]["run_id"] == child.info.run_id
        url = f"http://127.0.0.1:{port}/get-artifact?path=predictions/test.parquet&run_uuid={child.info.run_id}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert (
                response.read()
                == (
                    store / child.info.experiment_id / child.info.run_id / "artifacts/predictions/test.parquet"
                ).read_bytes()
            )
    finally:
        stop_server(proc)


def test_bad_evidence_input_is_one_line(tracking_env, tmp_path):
    result = run_cli(["evidence", "add", "0" * 32, "--store", str(tmp_path / "store")], tracking_env)
    assert result.returncode != 0 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()
    result = run_cli(["evidence", "render", "--root", str(tmp_path)], tracking_env)
    assert (
        result.returncode != 0 and "results.yaml does not exist" in result.stderr and "Traceback" not in result.stderr
    )


def test_committed_documents_match_their_render_from_the_store():
    """What `make results` writes is what is committed: no hand edit, no stale number, no unknown run id."""
    result = subprocess.run(
        [sys.executable, "-m", "sentiment", "evidence", "render", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**_clean_env(), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def test_a_seed_group_pairs_its_rows_seed_by_seed_from_the_store(tmp_path):
    """The seed-group section reads the committed runs: a pair's difference is the accuracy
    difference of the two runs' predictions tables on the same reviews, and the rows name their runs."""
    from sentiment import tracking
    from sentiment.errors import UserError
    from sentiment.report.seeds import seed_group_section

    spec = yaml.safe_load((REPO / "experiments" / "results.yaml").read_text())
    group = next(g for doc in spec["documents"] for g in doc.get("seed_groups", []))
    tracking.use_store(REPO / spec["store"])
    section = seed_group_section(group)
    rows, pairs = section.blocks[-3], section.blocks[-1]
    assert list(rows["model"]) == [row["name"] for row in group["rows"]]
    first, second = group["pairs"][0]
    runs = {row["name"]: row["runs"] for row in group["rows"]}  # listed in the same seed order

    def accuracy(run_id: str) -> pd.Series:
        table = tracking.load_run_table(run_id, "predictions/test.parquet", columns=["id", "label", "prediction"])
        return (table["label"] == table["prediction"]).set_axis(table["id"])

    deltas = []
    for run_a, run_b in zip(runs[first], runs[second], strict=True):
        a, b = accuracy(run_a), accuracy(run_b)
        deltas.append(a.mean() - b.loc[a.index].mean())
    assert pairs["Δ mean"][0] == f"{100 * sum(deltas) / len(deltas):+.2f}"
    assert pairs["seeds paired"][0] == len(deltas)
    duplicate = {**group, "rows": [{"name": "x", "runs": [runs[first][0], runs[first][0]]}]}
    with pytest.raises(UserError, match="two runs of seed"):
        seed_group_section(duplicate)


def test_the_failure_findings_set_published_figures_beside_the_analysis_runs():
    from sentiment import tracking
    from sentiment.report.seeds import findings_section

    spec = yaml.safe_load((REPO / "experiments" / "results.yaml").read_text())
    findings = next(doc["findings"] for doc in spec["documents"] if doc.get("findings"))
    tracking.use_store(REPO / spec["store"])
    table = findings_section(findings).blocks[-1]
    assert len(table) == 3 * len(findings["models"])
    first = findings["models"][0]
    metrics = [tracking.get_run(run_id).metrics for run_id in first["runs"]]
    words = table[(table["model"] == first["name"]) & table["finding"].str.startswith("misclassified")].iloc[0]
    assert words["ours per seed"].startswith(f"{metrics[0]['failures/words_difference']:+.1f}")
    level = table[(table["model"] == first["name"]) & table["finding"].str.startswith("share of errors")].iloc[0]
    low, high = (float(x.rstrip("%]")) / 100 for x in level["ours [95%]"].split("[")[1].split(", "))
    published = findings["published"]["negation_share_errors"]
    assert level["verdict"].startswith("consistent" if low <= published <= high else "contradicted")


def test_run_ids_in_documents_are_run_ids_not_logged_model_ids():
    """A document may name a LoggedModel (`models:/m-` + 32 hex digits) without the store holding a run of that id."""
    from sentiment.report.results import RUN_ID

    run, model = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
    assert RUN_ID.findall(f"model `models:/m-{model}` of run `{run}`") == [run]
