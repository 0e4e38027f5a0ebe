"""The offline quick preset for real: MiniLM fine-tuned on the sample corpus, registered,
loaded back and served over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

from tests.conftest import free_port, run_cli

pytestmark = pytest.mark.slow


# the quick preset end to end on the sample corpus; test_e2e crosses train, register and serve on the tiny model
@pytest.mark.extended
def test_quick_preset_learns_registers_and_serves(tracking_env, tmp_path):
    name = "quick-sentiment"
    result = run_cli(["train", "--preset", "quick", "--register-as", name], tracking_env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    run = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")[0]
    assert run.data.params["model.name"] == "offline-minilm" and run.data.params["data.source"] == "sample"
    assert run.data.metrics["test/examples"] == 78
    assert run.data.metrics["test/accuracy"] >= 0.80, run.data.metrics["test/accuracy"]

    texts = [
        "An absolute delight from start to finish, funny and moving.",
        "Dull, clumsy and far too long. I want my money back.",
    ]
    predicted = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(texts)
    assert list(predicted["label"]) == ["positive", "negative"]

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{name}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=tracking_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = json.dumps({"inputs": texts}).encode()
        deadline, answer = time.time() + 180, None
        while time.time() < deadline and answer is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
            except OSError:
                assert server.poll() is None, "mlflow models serve exited"
                time.sleep(1)
        assert answer is not None, "no answer from mlflow models serve"
        assert [row["label"] for row in answer["predictions"]] == ["positive", "negative"]
        assert all(0.5 <= row["score"] <= 1 for row in answer["predictions"])
    finally:
        server.terminate()
        server.wait(timeout=30)
