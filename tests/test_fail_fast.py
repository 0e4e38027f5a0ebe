"""Mistaken invocations, as a new user makes them, each in a fresh `sentiment` process: exit
code 2, exactly one line on stderr and it starts with `error:`, no run created (the
experiment's run count is unchanged). How long a mistake takes to report is not asserted here
(a timed test measures the machine it runs on); that no run is created is."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import run_cli, write_reviews


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory, tiny_model):
    """The files the invocations point at."""
    root = tmp_path_factory.mktemp("mistakes")

    def write(name: str, content: str | bytes) -> str:
        path = root / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return str(path)

    files = {
        "good": str(write_reviews(root / "good.csv", n=40)),
        "empty": write("empty.csv", ""),
        "headerless": write("headerless.csv", "a great film,positive\nan awful film,negative\n"),
        "binary": write("binary.parquet", bytes(range(256)) * 8),
        "no_text": write("no_text.csv", "title,label\nGreat,1\nAwful,0\n"),
        "three": write("three.csv", "text,label\ngreat,positive\nawful,negative\nmeh,neutral\n"),
        "one_class": write("one_class.csv", "text,label\ngreat,positive\nsuperb,positive\n"),
        "empty_text": write("empty_text.csv", 'text,label\ngreat,1\n"",0\nawful,0\n'),
        "bad_jsonl": write("bad.jsonl", '{"text": "great", "label": 1}\n{"text": "awful", "label": 0\n'),
        "texts_empty": write("texts_empty.txt", "\n\n"),
        "bad_yaml": write("bad_yaml.yaml", "name: g\nbase: {preset: seed\nseeds: [1]\n"),
        "no_config_model": str(root / "not_a_model"),
    }
    (root / "not_a_model").mkdir()
    (root / "not_a_model" / "README.md").write_text("weights went missing\n")
    (root / "not_imdb").mkdir()
    (root / "not_imdb" / "notes.txt").write_text("not an aclImdb folder\n")
    files["not_imdb"] = str(root / "not_imdb")
    base = {"preset": "seed", "options": {"data": files["good"], "model": tiny_model}}
    grid = {
        "name": "g",
        "base": base,
        "seeds": [1],
        "groups": [{"name": "x", "variants": [{"name": "deep", "options": {"freeze_layers": 5}}]}],
    }
    files["deep_grid"] = write("deep_grid.yaml", yaml.safe_dump(grid, sort_keys=False))
    unknown = {**grid, "groups": [{"name": "x", "variants": [{"name": "v", "options": {"learning_rate": 1e-3}}]}]}
    files["unknown_grid"] = write("unknown_grid.yaml", yaml.safe_dump(unknown, sort_keys=False))
    files["tiny"] = tiny_model
    return files


TRAIN = ["train", "--device", "cpu", "--val-fraction", "0.2", "--test-fraction", "0.2", "--model", "{tiny}"]
# (invocation, a fragment of the one error line)
INVOCATIONS = {
    # data
    "missing data file": ([*TRAIN, "--data", "missing.csv"], "is neither 'imdb', 'sample'"),
    "empty data file": ([*TRAIN, "--data", "{empty}"], "cannot read"),
    "headerless csv": ([*TRAIN, "--data", "{headerless}"], "has no"),
    "binary parquet": ([*TRAIN, "--data", "{binary}"], "cannot read"),
    "no text column": ([*TRAIN, "--data", "{no_text}"], "has no text column"),
    "three label values": ([*TRAIN, "--data", "{three}"], "labels must be two classes"),
    "one class": ([*TRAIN, "--data", "{one_class}"], "only one class"),
    "an empty text": ([*TRAIN, "--data", "{empty_text}"], "row 2 has an empty text"),
    "broken jsonl": ([*TRAIN, "--data", "{bad_jsonl}"], "line 2 is not valid JSON"),
    "folder not aclImdb": ([*TRAIN, "--data", "{not_imdb}"], "aclImdb"),
    "train size above the split": ([*TRAIN, "--data", "{good}", "--train-size", "5000"], "data.train_size is 5000"),
    # model and options that need its shape
    "missing model folder": ([*TRAIN, "--data", "{good}", "--model", "/no/such/model/dir"], "does not exist"),
    "folder without config.json": ([*TRAIN, "--data", "{good}", "--model", "{no_config_model}"], "cannot load model"),
    "unknown Hub model, no internet": (
        [*TRAIN, "--data", "{good}", "--model", "no-such-org/no-such-model-anywhere"],
        "no-such-model-anywhere",
    ),
    "freeze above depth": ([*TRAIN, "--data", "{good}", "--freeze-layers", "5"], "above the model's depth (2 layers)"),
    "keep layers above depth": ([*TRAIN, "--data", "{good}", "--keep-layers", "3"], "model.keep_layers 3 is above"),
    "keep heads above heads": (
        [*TRAIN, "--data", "{good}", "--keep-heads", "3"],
        "model.keep_heads 3 is above the model's 2 heads",
    ),
    "max length above positions": ([*TRAIN, "--data", "{good}", "--max-length", "1024"], "above the limit of model"),
    "fp16 on a cpu": ([*TRAIN, "--data", "{good}", "--precision", "fp16"], "precision fp16 needs a CUDA GPU"),
    "batch size zero": ([*TRAIN, "--data", "{good}", "--batch-size", "0"], "train.batch_size must be > 0"),
    "resume unknown run": (["train", "--resume", "0123456789abcdef0123456789abcdef"], "does not exist"),
    # URIs
    "unregistered model": (
        ["evaluate", "--model-uri", "models:/no-such-model@champion", "--data", "{good}"],
        "does not exist",
    ),
    "unknown run's model": (
        ["evaluate", "--model-uri", "runs:/0123456789abcdef0123456789abcdef/model", "--data", "{good}"],
        "does not exist",
    ),
    "unknown split": (
        ["evaluate", "--model-uri", "{tiny}", "--data", "{good}", "--split", "dev"],
        "split must be one of",
    ),
    # texts files and analyze options
    "missing texts file": (
        ["analyze", "--model-uri", "{tiny}", "--data", "{good}", "--texts", "missing.txt"],
        "does not exist",
    ),
    "empty texts file": (
        ["analyze", "--model-uri", "{tiny}", "--data", "{good}", "--texts", "{texts_empty}"],
        "has no reviews",
    ),
    "unknown part": (["analyze", "--data", "{good}", "--only", "eda,bogus"], "unknown: bogus"),
    "attention without a model": (["analyze", "--data", "{good}", "--only", "attention"], "need --model-uri"),
    # grids
    "missing grid": (["ablate", "--grid", "missing.yaml"], "cannot read it"),
    "grid not YAML": (["ablate", "--grid", "{bad_yaml}"], "not valid YAML"),
    "grid unknown option": (["ablate", "--grid", "{unknown_grid}"], "learning_rate"),
    "grid child too deep": (["ablate", "--grid", "{deep_grid}"], "above the model's depth (2 layers)"),
}


# One mistake of each kind runs in make test; the others (each a CLI start-up of several seconds)
# run in the extended tier.
EVERY_KIND = {
    "missing data file",
    "three label values",
    "unknown Hub model, no internet",
    "freeze above depth",
    "fp16 on a cpu",
    "resume unknown run",
    "unregistered model",
    "empty texts file",
    "attention without a model",
    "grid unknown option",
}


@pytest.mark.parametrize(
    "name", [n if n in EVERY_KIND else pytest.param(n, marks=pytest.mark.extended) for n in INVOCATIONS]
)
def test_mistake_fails_in_one_line_before_any_run(name, mistakes, tracking_env, tmp_path):
    args, fragment = INVOCATIONS[name]
    args = [a.format(**mistakes) if "{" in a else a for a in args]
    env = {**tracking_env, "HF_HUB_OFFLINE": ""}  # the Hub is probed as a user's machine would
    before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    result = run_cli(args, env, cwd=tmp_path, timeout=60)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == before, "a run was created"


def test_verbose_brings_third_party_logging_back(mistakes, tracking_env, tmp_path):
    """-v: MLflow's and the libraries' INFO lines are there again (the error line still last)."""
    quiet = run_cli(
        [*[a.format(**mistakes) for a in TRAIN], "--data", mistakes["good"], "--epochs", "1", "--max-length", "32"],
        tracking_env,
        cwd=tmp_path,
    )
    verbose = run_cli(
        [
            "-v",
            *[a.format(**mistakes) for a in TRAIN],
            "--data",
            mistakes["good"],
            "--epochs",
            "1",
            "--max-length",
            "32",
        ],
        tracking_env,
        cwd=tmp_path,
    )
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert " INFO " not in quiet.stderr and "View run" not in quiet.stdout, quiet.stderr
    assert " INFO mlflow" in verbose.stderr, verbose.stderr
    # quiet: the epoch's plain progress lines and its one summary line, nothing else on stderr
    # (and ours: 26 training reviews are too few steps to learn from, which the run says in one line)
    lines = quiet.stderr.splitlines()
    assert lines[0].startswith("warning: 26 training reviews give 2 optimizer steps"), quiet.stderr
    assert all(line.startswith("epoch 1/1") for line in lines[1:]), quiet.stderr
    assert re.match(r"run seed-[a-z0-9-]+-good-[0-9a-f]{4} \([0-9a-f]{32}\): http://", quiet.stdout), quiet.stdout


def test_hub_unreachable_is_one_line_after_one_probe(tracking_env, tmp_path):
    """No internet: one probe, not a minute of retries. HF_ENDPOINT points at a local listener
    that hangs up on every connection, as a machine without a route to the Hub would; it counts
    the connections the command made."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    connections = []
    stop = threading.Event()

    def hang_up() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(conn.getpeername())
            conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    env = {**tracking_env, "HF_ENDPOINT": f"http://127.0.0.1:{listener.getsockname()[1]}", "HF_HUB_OFFLINE": ""}
    env["HF_HOME"] = str(tmp_path / "hf-cache")  # an empty cache: nothing to fall back on
    try:
        result = run_cli(
            ["train", "--model", "distilbert-base-uncased", "--data", "sample"], env, cwd=tmp_path, timeout=60
        )
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        "error: model 'distilbert-base-uncased' is not in the local Hugging Face cache and the Hub"
    )
    assert "offline-minilm" in result.stderr and len(result.stderr.splitlines()) == 1
    assert len(connections) == 1, f"{len(connections)} connections to the Hub: retries"


def test_cached_hub_model_loads_without_the_hub(tmp_path, monkeypatch, tiny_model):
    """A Hub id already in the local cache resolves to its cached folder when the Hub is away."""
    from huggingface_hub import constants

    from sentiment import hub

    repo = "sentiment-tests/tiny-bert"
    cache = tmp_path / "hub"
    entry = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(tiny_model, entry / "snapshots" / ("0" * 40))
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.unreachable.cache_clear()
    try:
        folder = hub.resolve_model(repo)
        assert Path(folder).name == "0" * 40 and (Path(folder) / "config.json").is_file()
        with pytest.raises(Exception, match="is not in the local Hugging Face cache"):
            hub.resolve_model("sentiment-tests/not-cached")
    finally:
        hub.unreachable.cache_clear()
