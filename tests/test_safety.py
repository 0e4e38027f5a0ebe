"""Secrets stay out of MLflow, authenticated servers work, concurrent registrations both land."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, TINY_TRAIN, free_port, run_cli, start_server, stop_server, wait_healthy

SECRET = "hf_planted_secret_7f3a9c21"


def test_secrets_never_reach_params_tags_or_artifacts(tracking_env, tiny_model, reviews_csv, tmp_path):
    env = {**tracking_env, "HF_TOKEN": SECRET, "MLFLOW_TRACKING_TOKEN_UNUSED": SECRET, "SOME_API_KEY": SECRET}
    result = run_cli(
        ["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--register-as", "secret-scan"],
        env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")[0]
    texts = [*run.data.params.values(), *run.data.tags.values()]
    version = MlflowClient().get_model_version_by_alias("secret-scan", "champion")
    texts += list(version.tags.values())
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "run-artifacts")))
    model_dir = Path(
        mlflow.artifacts.download_artifacts("models:/secret-scan@champion", dst_path=str(tmp_path / "model"))
    )
    files = [p for root in (local, model_dir) for p in root.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        texts.append(path.read_bytes().decode("utf-8", errors="ignore"))
    assert not any(SECRET in text for text in texts)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-Pa55word", "MLFLOW_FLASK_SERVER_SECRET_KEY": "tests-only"}
    proc = start_server(root, port, extra=["--app-name", "basic-auth"], env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(uri, proc, timeout_s=180)
        yield uri
    finally:
        stop_server(proc)


# a second server, with basic auth, for this one test; test_secrets_never_reach_params_tags_or_artifacts keeps
# credentials out of runs in make test
@pytest.mark.extended
def test_basic_auth_server_good_and_bad_credentials(auth_server, tiny_model, reviews_csv, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MLFLOW_TRACKING_URI": auth_server,
        "MLFLOW_EXPERIMENT_NAME": "auth-test",
        "MLFLOW_TRACKING_USERNAME": "admin",
    }
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    bad = run_cli(
        ["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN],
        {**env, "MLFLOW_TRACKING_PASSWORD": "wrong"},
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "rejected the credentials" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_cli(
        ["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN],
        {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_USERNAME"},
        cwd=tmp_path,
    )
    assert missing.returncode == 2 and "rejected the credentials" in missing.stderr
    good = run_cli(
        ["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--epochs", "1"],
        {**env, "MLFLOW_TRACKING_PASSWORD": "admin-Pa55word"},
        cwd=tmp_path,
    )
    assert good.returncode == 0, good.stderr[-2000:]
    assert "test accuracy" in good.stdout


# two registrations at once; the PostgreSQL tier's test_concurrent_registrations_of_one_name races them harder, and
# tests/tracking/test_registration.py crosses registration in make test
@pytest.mark.extended
def test_concurrent_registrations_both_land_and_the_better_is_champion(tracking_env, tiny_model, reviews_csv, tmp_path):
    name = "raced"
    base = [
        sys.executable,
        "-m",
        "sentiment",
        "train",
        "--data",
        str(reviews_csv),
        "--model",
        tiny_model,
        *TINY_TRAIN,
        "--register-as",
        name,
    ]
    good = subprocess.Popen(
        base, env=tracking_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    poor = subprocess.Popen(
        [*base, "--epochs", "1", "--lr", "1e-7"],
        env=tracking_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for proc in (good, poor):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(v.version for v in versions) == ["1", "2"]
    scores = {v.version: float(v.tags["test_accuracy"]) for v in versions}
    champion = client.get_model_version_by_alias(name, "champion").version
    assert scores[champion] == max(scores.values())


def test_remote_code_stays_off_unless_asked(tmp_path):
    """A model folder whose config points at its own Python code does not load by default."""
    import json

    from sentiment.config import ModelConfig
    from sentiment.errors import UserError
    from sentiment.model import build_model

    folder = tmp_path / "custom-model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "sneaky", "auto_map": {"AutoConfig": "configuration_sneaky.SneakyConfig"}})
    )
    (folder / "configuration_sneaky.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(UserError, match="ships its own Python code; pass --trust-remote-code true"):
        build_model(ModelConfig(name=str(folder)))


def test_our_checkpoints_are_safetensors(tiny_model, tmp_path):
    from sentiment.config import ModelConfig
    from sentiment.model import build_model
    from sentiment.train import save_model

    save_model(build_model(ModelConfig(name=tiny_model)), tmp_path / "best")
    names = {p.name for p in (tmp_path / "best").iterdir()}
    assert "model.safetensors" in names and not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
