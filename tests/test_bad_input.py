"""Bad input: a one-line message naming the problem, exit code 2, no traceback, and no MLflow
run left RUNNING (data, model and option-shape mistakes: tests/test_fail_fast.py)."""

from __future__ import annotations

import time

import mlflow
import pytest

from sentiment.cli import main
from tests.conftest import free_port


def run_main(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    err = capsys.readouterr().err
    return exited.value.code, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def runs_of(experiment: str):
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


CONFIG_ERRORS = [
    (["--batch-size", "0"], "train.batch_size must be > 0"),
    (["--epochs", "0"], "train.epochs must be > 0"),
    (["--lr", "-1e-5"], "train.lr must be > 0"),
    (["--val-fraction", "1.5"], "data.val_fraction must be in (0, 1]"),
    (["--train-fraction", "0"], "data.train_fraction must be in (0, 1]"),
    (["--max-length", "4"], "data.max_length must be between 8"),
    (["--preset", "fast"], "Invalid value for '--preset'"),
    (["--epochs", "two"], "'two' is not a valid integer"),
]


@pytest.mark.parametrize(("args", "fragment"), CONFIG_ERRORS)
def test_config_errors_open_no_run(args, fragment, tracking_env, capsys):
    code, err = run_main(["train", *args], capsys)
    assert code == 2
    assert fragment in error_line(err)
    assert runs_of(tracking_env["MLFLOW_EXPERIMENT_NAME"]) == []


# Data, model and option-shape mistakes: tests/test_fail_fast.py (each in a fresh process, no run created).


def test_unreachable_tracking_server_fails_fast(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    code, err = run_main(["train", "--preset", "quick"], capsys)
    assert code == 2 and time.monotonic() - started < 10
    assert "is not reachable" in error_line(err)


def test_bad_split_name(tracking_env, capsys):
    code, err = run_main(["evaluate", "--model-uri", "models:/x@champion", "--split", "dev"], capsys)
    assert code == 2 and "split must be one of train, val, test, all" in error_line(err)


def test_error_under_mlflow_run_marks_that_run_failed(tracking_env, monkeypatch, capsys):
    """`mlflow run` creates the run before our process starts; a bad option must end it."""
    experiment = mlflow.set_experiment(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    run = mlflow.MlflowClient().create_run(experiment.experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    code, err = run_main(["train", "--batch-size", "0"], capsys)
    assert code == 2 and "train.batch_size" in error_line(err)
    ended = mlflow.get_run(run.info.run_id)
    assert ended.info.status == "FAILED" and "train.batch_size" in ended.data.tags["sentiment.error"]


def test_served_model_input_errors_are_clear():
    from sentiment.tracking.serving import _texts_of

    assert _texts_of(["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="input 1 is int, not a string"):
        _texts_of(["a", 3])
    with pytest.raises(ValueError, match="input 0 is an empty text"):
        _texts_of([" "])


def test_serving_limits_apply_only_in_the_scoring_server(trained_in_memory, monkeypatch):
    from mlflow.exceptions import MlflowException

    from sentiment.tracking.serving import IN_SERVER, SentimentPyfunc, _check_request

    _check_request(["a"] * 1000, max_reviews=1000, max_review_chars=10)
    with pytest.raises(MlflowException, match="1,001 reviews, more than this server's limit of 1,000"):
        _check_request(["a"] * 1001, max_reviews=1000, max_review_chars=10)
    with pytest.raises(ValueError, match="input 1 has 11 characters"):  # also a ValueError for Python callers
        _check_request(["a", "b" * 11], max_reviews=1000, max_review_chars=10)
    with pytest.raises(MlflowException, match="no reviews"):
        _check_request([], max_reviews=1000, max_review_chars=10)

    class Context:
        artifacts = {"hf_model": str(trained_in_memory["package"])}
        model_config = {"max_reviews": 2}

    model = SentimentPyfunc()
    model.load_context(Context())
    assert len(model.predict(None, ["good", "bad", "fine"])) == 3  # Python / Spark callers: no limit
    monkeypatch.setenv(IN_SERVER, "true")
    with pytest.raises(MlflowException, match="3 reviews, more than this server's limit of 2"):
        model.predict(None, ["good", "bad", "fine"])
    assert len(model.predict(None, ["good", "bad"])) == 2
