"""The served model under load (benchmarks/serving.py, smoke size): `mlflow models serve` of a
registered model answers concurrent clients without errors, answers every malformed payload 4xx
with its reason, and keeps serving after each."""

from __future__ import annotations

import json

import pytest

from benchmarks import serving
from tests.conftest import TINY_TRAIN, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.scale]


def test_served_model_under_load_and_malformed_payloads(tracking_env, tiny_model, reviews_csv, tmp_path):
    trained = run_cli(
        ["train", "--model", tiny_model, "--data", str(reviews_csv), *TINY_TRAIN, "--register-as", "served"],
        tracking_env,
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = tmp_path / "load.json"
    args = [
        "--model-uri",
        "models:/served@champion",
        "--data",
        str(reviews_csv),
        "--clients",
        "3",
        "--requests",
        "30",
        "--duration",
        "120",
        "--compare",
        "models:/served/1,2,1",  # two workers of one torch thread each, under the same load
    ]
    report = serving.main([*args, "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))

    load = report["load"]
    assert load["requests"] == 30 and load["errors"] == 0, load
    assert 30 <= load["reviews"] <= 30 * 8 and load["p50_ms"] <= load["p95_ms"] <= load["p99_ms"]

    answers = {row["payload"]: row for row in report["malformed"]}
    assert set(answers) == set(serving.MALFORMED)
    for row in answers.values():
        assert 400 <= row["status"] < 500 and row["message"], row
        assert row["next_good_request"] == 200, row
    assert "more than this server's limit of 1,000" in answers["10,000 reviews in one request"]["message"]
    assert "characters, more than this server's limit of 100,000" in answers["a 5 MB review"]["message"]
    assert "missing inputs" in answers["empty list"]["message"]  # MLflow answers this one itself
    assert "input 1 is missing (null)" in answers["a null review"]["message"]
    assert "input 0 is int, not a string" in answers["non-string reviews"]["message"]
    assert report["alive_after"]
    first, second = report["configs"]
    assert (first["workers"], first["threads"], second["workers"], second["threads"]) == (1, 0, 2, 1)
    assert second["requests"] == 30 and second["errors"] == 0 and first["reviews"] == load["reviews"]
    section = serving.markdown(report)
    assert "| `models:/served/1` | 2 | 1 |" in section and "ratio" in section
    # the benchmark's run on the server: what it measured, the version the alias pointed at
    import mlflow

    assert report["model_uri"] == "models:/served/1"
    runs = mlflow.search_runs(experiment_names=["benchmark"], output_format="list")
    (run,) = [r for r in runs if r.data.tags.get("sentiment.benchmark") == "serving"]
    assert run.data.metrics["requests"] == 30 and run.data.metrics["errors"] == 0
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/benchmark.json")) == report
    assert f"MLflow run `{run.info.run_id}`" in serving.markdown(report, run.info.run_id)
