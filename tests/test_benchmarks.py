"""The benchmark package: the generated corpus has IMDB's length profile, and the benchmark and GPU
check commands run end to end at toy size (a smoke test; the measured numbers are in
benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from benchmarks import corpus
from tests.conftest import REPO


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_generated_corpus_has_imdb_length_profile(tiny_model):
    from sentiment.model import load_tokenizer

    frame = corpus.generate(1500, seed=0)
    profile = corpus.length_profile(frame["text"].tolist(), load_tokenizer(tiny_model))
    assert 205 <= profile["mean_words"] <= 255  # IMDB: about 230
    assert profile["median_words"] < profile["mean_words"]  # right-skewed, as log-normal
    assert 0.05 <= profile["over_limit_share"] <= 0.11  # IMDB: about 8% over 512 tokens
    assert abs(frame["label"].mean() - 0.5) < 0.01
    assert frame["text"].str.len().min() > 0


def test_generated_corpus_is_seeded():
    a, b, c = corpus.generate(20, seed=1), corpus.generate(20, seed=1), corpus.generate(20, seed=2)
    assert a.equals(b)
    assert not a["text"].equals(c["text"])


def test_lexicon_words_lean_the_right_way():
    lexicon = corpus.build_lexicon()
    negative, positive = lexicon.leaning
    assert not set(negative) & set(positive)
    assert "superb" in positive and "tedious" in negative
    assert np.isclose(lexicon.neutral_p.sum(), 1.0)


def test_benchmark_command_smoke(tiny_model, tmp_path):
    """benchmarks.run at toy size: both sides measured and logged to one store, and the benchmark's
    own run (benchmark.json) from which make results renders the very section --output wrote."""
    out, raw, work = tmp_path / "RESULTS.md", tmp_path / "results.json", tmp_path / "work"
    record_uri = f"sqlite:///{tmp_path / 'record.db'}"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--tiny",
        "--model",
        tiny_model,
        "--data",
        "generated",
        "--output",
        str(out),
        "--json",
        str(raw),
        "--workdir",
        str(work),
        "--record-uri",
        record_uri,
    ]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    _renders_from_the_store(tmp_path, record_uri, text, "run")
    for expected in (
        "## Machine",
        "## Corpus: generated",
        "`sentiment train`",
        "`Trainer` + mlflow",
        "transformers.pipeline",
        "pad every review to 512",
        "MLflow share of our training wall time",
        "## How it is measured",
    ):
        assert expected in text, expected
    result = json.loads(raw.read_text())["results"]["generated"]
    ratios, ours, theirs, evaluation = result["ratios"], result["sentiment"], result["trainer"], result["evaluation"]
    assert result["profile"]["train_reviews"] == 48 and evaluation["reviews"] == 32
    assert ratios["ours_padding_share"] < ratios["trainer_padding_share"]  # length grouping pads less
    assert ours["mlflow_s"] > 0 and theirs["mlflow_s"] > 0  # the clock saw both sides log
    assert ours["train_wall_s"] > 0 and theirs["train_wall_s"] > 0
    assert "other_cores" in ours and "other_cores" in theirs and "ms_per_1k_tokens" in evaluation
    for accuracy in (
        evaluation["sentiment_accuracy"],
        evaluation["trainer_accuracy"],
        *(r["accuracy"] for r in evaluation["rows"].values()),
    ):
        assert 0.0 <= accuracy <= 1.0
    rows = evaluation["rows"]
    assert rows["pad every review to 512"]["padded_tokens"] == 512 * 32
    assert rows["sentiment evaluate"]["padded_tokens"] <= rows["transformers.pipeline"]["padded_tokens"]
    assert {"sentiment evaluate --precision bf16", "transformers.pipeline, bf16 weights"} <= set(
        rows
    )  # CPU: bf16 on both sides
    assert rows["sentiment evaluate --precision bf16"]["padded_tokens"] == rows["sentiment evaluate"]["padded_tokens"]
    assert ratios["eval_bf16_vs_pipeline"] > 0 and ratios["eval_bf16_vs_pipeline_bf16"] > 0
    assert "sentiment evaluate --precision bf16 time" in text
    assert (
        "`sentiment train --precision bf16`" in text and ratios["train_bf16_vs_fp32"] > 0
    )  # CPU: a bf16 training side
    assert (
        0.0 <= evaluation["bf16_trained_accuracy"] <= 1.0 and result["sentiment_bf16"]["model_dir"] != ours["model_dir"]
    )
    assert set(ratios["met"]) == {
        "train_speedup",
        "accuracy_points",
        "eval_vs_pipeline",
        "eval_vs_pad512",
        "mlflow_share",
    }
    # Both sides logged to the one tracking store.
    with sqlite3.connect(work / "mlflow.db") as db:
        names = {row[0] for row in db.execute("select name from runs")}
        params = {row[0] for row in db.execute("select key from params")}
    assert {"bench-sentiment-generated", "bench-trainer-generated"} <= names
    assert {"train.lr", "learning_rate"} <= params


def _renders_from_the_store(tmp_path, record_uri: str, written: str, kind: str) -> None:
    """The benchmark's run, published into an evidence store, renders what the command wrote."""
    import mlflow
    import yaml

    from sentiment.report import results
    from sentiment.tracking import evidence

    client = mlflow.MlflowClient(tracking_uri=record_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("benchmark").experiment_id])
    assert run.data.tags["sentiment.benchmark"] == kind and run.data.tags["mlflow.source.git.commit"]
    assert run.data.metrics and "benchmark.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert f"MLflow run `{run.info.run_id}`" in written
    store, root = tmp_path / "store", tmp_path / "repo"
    (root / "experiments").mkdir(parents=True)
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(record_uri)
        evidence.publish([run.info.run_id], store)
        manifest = {
            "store": str(store),
            "documents": [
                {"output": "RESULTS.md", "renderer": "benchmarks.render:document", "runs": [run.info.run_id]}
            ],
        }
        (root / "experiments" / "results.yaml").write_text(yaml.safe_dump(manifest))
        (rendered,) = results.render(REPO, root / "experiments" / "results.yaml")
    finally:
        mlflow.set_tracking_uri(previous)
    body = written.removeprefix("# Benchmark results\n\n")
    assert rendered.text.startswith("# Benchmark results\n\nRendered by `make results`")
    if body.strip() not in rendered.text:
        import difflib

        diff = difflib.unified_diff(
            body.splitlines(), rendered.text.splitlines(), "written", "rendered", lineterm="", n=0
        )
        pytest.fail("the store renders a different section than the command wrote:\n" + "\n".join(list(diff)[:40]))


def write_real_reviews(path, train: int = 160, test: int = 64):
    """A small parquet in the shared real file's format: id, text, label, rating, split train/test."""
    frame = corpus.generate(train + test, seed=3, mean_words=60.0)
    frame["split"] = ["train"] * train + ["test"] * test
    frame["id"] = [f"{split}/{i}" for i, split in enumerate(frame["split"])]
    frame["rating"] = np.where(frame["label"] == 1, 8, 2)
    frame[["id", "text", "label", "rating", "split"]].to_parquet(path, index=False)
    return path


def test_trainer_gets_our_head_tail_ids(tiny_model, tmp_path):
    from benchmarks.run import write_real
    from benchmarks.sides import Spec, _trainer_dataset, load_splits
    from sentiment.model import load_tokenizer
    from sentiment.tokens import encode

    data = tmp_path / "real.parquet"
    pool = write_real(data, str(write_real_reviews(tmp_path / "source.parquet")), test_size=32, seed=0)
    spec = Spec(
        model=tiny_model,
        data_path=str(data),
        val_fraction=16 / pool,
        max_length=24,
        batch_size=8,
        eval_batch_size=16,
        epochs=1,
        lr=1e-4,
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_grad_norm=1.0,
        dropout=0.1,
        seed=0,
        threads=1,
        device="cpu",
        tracking_uri="",
        experiment="",
        workdir=str(tmp_path),
        label="real",
        preset="cpu",
        truncation="head_tail",
        train_size=48,
        trainer_ids="encode",
    )
    splits = load_splits(spec)
    assert pool == 160 and (len(splits.train), len(splits.val), len(splits.test)) == (48, 16, 32)
    tokenizer = load_tokenizer(tiny_model)
    ours = encode(splits.train["text"].tolist(), tokenizer, 24, "head_tail").input_ids
    theirs = _trainer_dataset(spec, splits.train, tokenizer)
    assert theirs["input_ids"] == ours and any(len(ids) == 24 for ids in ours)  # truncated head+tail, as ours
    assert theirs["label"] == splits.train["label"].tolist()


def test_time_budget_fills_trainer_time_at_our_rate():
    from benchmarks.run import time_budget

    class Spec:
        epochs, batch_size = 1, 16

    profile = {"train_reviews": 2000, "train_pool_reviews": 23494}
    ours = {"train_wall_s": 410.0, "validation_s": 10.0}  # 5 samples/s
    budget = time_budget(profile, Spec, ours, {"train_wall_s": 810.0})
    assert budget["budget_samples_per_s"] == 5.0 and budget["train_reviews"] == 4000  # (810 - 10) s x 5/s
    capped = time_budget({**profile, "train_pool_reviews": 3000}, Spec, ours, {"train_wall_s": 810.0})
    assert capped["train_reviews"] == 3000 and capped["fits_reviews"] == 4000


# the same command as test_benchmark_command_smoke on a real-corpus file; that test crosses it in make test
@pytest.mark.extended
def test_benchmark_real_corpus_smoke(tiny_model, tmp_path):
    out, raw, work = tmp_path / "RESULTS.md", tmp_path / "results.json", tmp_path / "work"
    data = write_real_reviews(tmp_path / "imdb_reviews.parquet")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--tiny",
        "--model",
        tiny_model,
        "--data",
        "real",
        "--real-data",
        str(data),
        "--output",
        str(out),
        "--json",
        str(raw),
        "--workdir",
        str(work),
        "--record-uri",
        f"sqlite:///{tmp_path / 'record.db'}",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    _renders_from_the_store(tmp_path, f"sqlite:///{tmp_path / 'record.db'}", text, "run")
    for expected in (
        "## Corpus: real",
        f"Source: `{data.name}`",
        "`cpu` preset",
        "`Trainer` + mlflow, its defaults (fp32)",
        "headline: training samples/s",
        "which change bought what",
        "### Time to accuracy",
        "time-to-accuracy row: sentiment - Trainer at the same wall-clock budget",
        "evaluation, pipeline time / sentiment evaluate time",
        "## How it is measured",
    ):
        assert expected in text, expected
    assert "## Corpus: generated" not in text
    result = json.loads(raw.read_text())["results"]["real"]
    ratios, profile, spec, evaluation = result["ratios"], result["profile"], result["spec"], result["evaluation"]
    assert (profile["train_reviews"], profile["val_reviews"], evaluation["reviews"]) == (48, 16, 32)
    assert profile["train_pool_reviews"] == 160 - 16
    assert (spec["preset"], spec["truncation"], spec["trainer_ids"]) == ("cpu", "head_tail", "encode")
    assert ratios["headline_speedup"] > 0 and ratios["train_speedup"] > 0
    budget = result["time_budget"]
    assert 8 <= budget["train_reviews"] <= profile["train_pool_reviews"]
    assert budget["budget_s"] == result["trainer"]["train_wall_s"]
    tta = ratios["time_to_accuracy"]
    for accuracy, low, high in (tta["trainer_accuracy"], tta["ours_accuracy"], *ratios["accuracy_ci"].values()):
        assert 0.0 <= low <= accuracy <= high <= 1.0
    assert len(evaluation["correct"]["time_budget"]) == 32
    names = {"bench-sentiment-real-fp32", "bench-trainer-real", "bench-sentiment-real-native-time-budget"}
    if result["preset_precision"] == "bf16":  # a CPU with native bf16: the preset's side and Trainer's bf16=True
        names |= {"bench-sentiment-real-native", "bench-trainer-real-bf16"}
        assert ratios["train_bf16_vs_fp32"] > 0 and ratios["trainer_bf16_vs_fp32"] > 0
        assert result["trainer_bf16"]["precision"] == "bf16"
    with sqlite3.connect(work / "mlflow.db") as db:
        runs = {row[0] for row in db.execute("select name from runs")}
    assert names <= runs, runs


def test_gpu_check_dry_run_on_cpu(tiny_model, tmp_path):
    out = tmp_path / "GPU_CHECK.md"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.gpu_check",
        "--device",
        "cpu",
        "--model",
        tiny_model,
        "--reviews",
        "32",
        "--val-reviews",
        "16",
        "--max-length",
        "64",
        "--batch-size",
        "8",
        "--eval-batch-size",
        "16",
        "--output",
        str(out),
    ]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "| eager | fp32 | sdpa |" in text
    runs = json.loads(done.stdout[done.stdout.index("\n[") :])
    assert runs[0]["samples_per_s"] > 0 and runs[0]["non_embedding_params"] > 0


def test_gpu_check_script_refuses_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the script would run the real check")
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stderr


def test_scoring_benchmark_smoke(trained_in_memory, tmp_path):
    """benchmarks.scoring end to end at toy size: both sides measured, memory rows, its section."""
    from tests.test_score import reviews

    package = trained_in_memory["package"]
    data = tmp_path / "reviews.parquet"
    reviews(200).rename(columns={"review": "text"}).to_parquet(data)
    out = tmp_path / "RESULTS.md"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scoring",
        "--model",
        str(package),
        "--data",
        str(data),
        "--reviews",
        "64",
        "--rows",
        "300,600",
        "--batch-size",
        "16",
        "--output",
        str(out),
        "--json",
        str(tmp_path / "s.json"),
    ]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "s.json").read_text())
    throughput = result["throughput"]
    assert throughput["ours_reviews_per_s"] > 0 and throughput["pipeline_reviews_per_s"] > 0
    assert throughput["ratio"] == pytest.approx(throughput["ours_reviews_per_s"] / throughput["pipeline_reviews_per_s"])
    assert [m["rows"] for m in result["memory"]] == [300, 600] and all(m["peak_rss_mib"] > 50 for m in result["memory"])
    text = out.read_text()
    assert text.startswith("## Scoring files") and "| 600 |" in text and "python -m benchmarks.scoring --model" in text
    assert "benchmark not recorded: set MLFLOW_TRACKING_URI" in done.stdout  # no server given: said, not silently lost


def test_inference_benchmark_smoke(trained_in_memory, tmp_path):
    """benchmarks.inference end to end at toy size: every path on the same reviews, ONNX Runtime fp32
    reproducing PyTorch's predictions, int8 models smaller, the run recorded and its section rendered
    from the stored payload."""
    from tests.test_score import reviews

    data = tmp_path / "reviews.parquet"
    table = reviews(40).rename(columns={"review": "text"})
    table.assign(id=[f"r{i:03d}" for i in range(len(table))], label=table.index % 2, split="test").to_parquet(data)
    store = tmp_path / "bench.db"
    cmd = [sys.executable, "-m", "benchmarks.inference", "--model", str(trained_in_memory["package"])]
    cmd += ["--data", str(data), "--reviews", "40", "--latency-reviews", "5", "--json", str(tmp_path / "i.json")]
    cmd += ["--output", str(tmp_path / "section.md"), "--record-uri", f"sqlite:///{store}"]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "i.json").read_text())
    paths = {p["path"]: p for p in result["paths"]}
    assert set(paths) >= {
        "PyTorch fp32 (sentiment evaluate, score, serve)",
        "PyTorch dynamic int8, per matrix (--quantize int8)",
        "PyTorch dynamic int8, per channel (sentiment export's default)",
        "ONNX Runtime fp32",
        "ONNX Runtime dynamic int8, per channel",
    }
    fp32 = paths["PyTorch fp32 (sentiment evaluate, score, serve)"]
    assert paths["ONNX Runtime fp32"]["agreement"] == 1.0 and paths["ONNX Runtime fp32"]["delta_points"] == 0.0
    assert all(p["size_mb"] < fp32["size_mb"] for p in result["paths"] if p["int8"])
    assert all(p["reviews_per_s"] > 0 and p["batch1_p99_ms"] >= p["batch1_p50_ms"] > 0 for p in result["paths"])
    assert result["gflop_per_review"] > 0 and result["ceiling_gflops"]["fp32"] > 0
    assert fp32["gflops"] == pytest.approx(fp32["reviews_per_s"] * result["gflop_per_review"])
    run_id = re.search(r"recorded as run (\w+)", done.stdout)[1]
    stored = mlflow.MlflowClient(f"sqlite:///{store}").download_artifacts(run_id, "benchmark.json", str(tmp_path))
    from benchmarks import inference

    section = (tmp_path / "section.md").read_text()
    assert inference.markdown(json.loads(Path(stored).read_text()), run_id) == section
    assert section.startswith("## Inference paths") and "The rule (ONNX Runtime within half a point" in section


def test_inference_rule_counts_only_paths_within_half_a_point():
    """ONNX Runtime is offered only when a path within half a point of PyTorch fp32 is >= 1.3x our
    fastest such path: a faster path that loses more than half a point does not count, on either side."""
    from benchmarks.inference import decide

    def row(path, family, speed, delta):
        return {
            "path": path,
            "family": family,
            "reviews_per_s": speed,
            "batch1_reviews_per_s": speed,
            "delta_points": delta,
        }

    ours = [row("torch fp32", "torch", 20, 0.0), row("torch int8", "torch", 40, -0.8)]
    assert decide([*ours, row("ort int8", "onnxruntime", 27, -0.2)])["offer_onnx"] is True  # 1.35x fp32
    assert decide([*ours, row("ort int8", "onnxruntime", 50, -0.6)])["theirs"] == ""  # too lossy to count
    rule = decide([*ours[:1], row("torch int8c", "torch", 25, -0.3), row("ort int8", "onnxruntime", 30, -0.1)])
    assert rule["ours"] == "torch int8c" and rule["ratio"] == pytest.approx(1.2) and rule["offer_onnx"] is False
