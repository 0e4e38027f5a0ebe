"""Every bad input: a one-line message naming the problem, exit code 2, no traceback,
and no MLflow run left RUNNING."""

from __future__ import annotations

import time

import mlflow
import pytest

from sentiment.cli import main
from tests.conftest import free_port, write_reviews


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


@pytest.fixture
def bad_files(tmp_path):
    files = {}
    files["malformed"] = tmp_path / "malformed.csv"
    files["malformed"].write_text('review,sentiment\n"good film",positive\n"bad film",negative,extra,"cols"\n')
    files["no_label"] = tmp_path / "no_label.csv"
    files["no_label"].write_text("review,stars\ngreat,5\nawful,1\n")
    files["three"] = tmp_path / "three.csv"
    files["three"].write_text("text,label\ngreat,positive\nawful,negative\nmeh,neutral\n")
    files["empty_text"] = tmp_path / "empty_text.csv"
    files["empty_text"].write_text('text,label\ngreat,1\n"",0\nawful,0\n')
    files["bad_jsonl"] = tmp_path / "bad.jsonl"
    files["bad_jsonl"].write_text('{"text": "great", "label": 1}\n{"text": "awful", "label": 0\n')
    files["good"] = write_reviews(tmp_path / "good.csv", n=40)
    return files


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


DATA_AND_MODEL_ERRORS = [
    (["--data", "missing.csv"], "data source 'missing.csv' is neither"),
    (["--data", "{malformed}"], "cannot read"),
    (["--data", "{no_label}"], "has no label column"),
    (["--data", "{three}"], "labels must be two classes"),
    (["--data", "{empty_text}"], "row 2 has an empty text"),
    (["--data", "{bad_jsonl}"], "line 2 is not valid JSON"),
    (["--data", "{good}", "--max-length", "1024"], "above the limit of model"),
    (["--data", "{good}", "--freeze-layers", "5"], "above the model's depth (2 layers)"),
    (["--data", "{good}", "--model", "/no/such/model/dir"], "model folder '/no/such/model/dir' does not exist"),
    (["--data", "{good}", "--device", "cpu", "--precision", "fp16"], "precision fp16 needs a CUDA GPU and the device is cpu"),
]


@pytest.mark.parametrize(("args", "fragment"), DATA_AND_MODEL_ERRORS)
def test_data_and_model_errors_fail_the_run(args, fragment, tracking_env, tiny_model, bad_files, capsys):
    args = [a.format(**bad_files) if a.startswith("{") else a for a in args]
    if "--model" not in args:
        args += ["--model", tiny_model]
    code, err = run_main(["train", "--test-fraction", "0.2", "--val-fraction", "0.2", *args], capsys)
    assert code == 2
    line = error_line(err)
    assert fragment in line, line
    runs = runs_of(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert fragment in runs[0].data.tags["sentiment.error"]


def test_unreachable_tracking_server_fails_fast(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    code, err = run_main(["train", "--preset", "quick"], capsys)
    assert code == 2 and time.monotonic() - started < 10
    assert "is not reachable" in error_line(err)


def test_missing_model_uri_fails_the_evaluate_run(tracking_env, capsys):
    code, err = run_main(["evaluate", "--model-uri", "models:/no-such-model@champion", "--data", "sample"], capsys)
    assert code == 2
    assert "does not exist" in error_line(err)
    assert [r.info.status for r in runs_of(tracking_env["MLFLOW_EXPERIMENT_NAME"])] == ["FAILED"]


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
