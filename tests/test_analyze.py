"""analyze: failure statistics on a hand-made table, attention extraction and rollout on real
architectures, and the whole stage through the CLI against the real tracking server."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import subprocess
import sys
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from sentiment import analyze, data as data_mod, evaluate, model as model_mod, tokens
from sentiment.cli import main
from sentiment.config import DataConfig, ModelConfig
from sentiment.errors import UserError
from tests.conftest import REPO, TINY_TRAIN, run_cli

# ----------------------------------------------------------------------------- failure statistics

# id, text, label, prediction, P(positive), tokens, truncated
ROWS = [
    ("r1", "a great film", 1, 1, 0.95, 10, False),
    ("r2", "not good at all", 0, 1, 0.90, 20, False),  # false positive, negation
    ("r3", "boring but the cast was fine", 0, 0, 0.20, 30, False),  # contrast
    ("r4", "I didn't hate it", 1, 0, 0.30, 40, False),  # false negative, negation (n't)
    ("r5", "wonderful", 1, 1, 0.80, 50, False),
    ("r6", "dull", 0, 0, 0.10, 60, False),
    ("r7", "loved it, however long", 1, 0, 0.45, 600, True),  # false negative, contrast, truncated
    ("r8", "terrible", 0, 0, 0.05, 70, False),
    ("r9", "superb", 1, 1, 0.99, 80, False),
    ("r10", "awful", 0, 0, 0.40, 700, True),
]


@pytest.fixture
def table() -> pd.DataFrame:
    frame = pd.DataFrame(ROWS, columns=["id", "text", "label", "prediction", "probability", "n_tokens", "truncated"])
    frame["confidence"] = np.maximum(frame["probability"], 1 - frame["probability"])
    p_true = np.where(frame["label"] == 1, frame["probability"], 1 - frame["probability"])
    frame["loss"] = -np.log(p_true)
    return frame


def by_group(stats: dict) -> dict[str, dict]:
    return {row["group"]: row for row in stats["by_cue"]}


def test_failure_counts_match_the_confusion_matrix_and_cues(table):
    stats = analyze.failure_stats(table)
    counts = evaluate.confusion(table)
    assert (stats["errors"], stats["false_positives"], stats["false_negatives"]) == (3, 1, 2)
    assert stats["false_positives"] == counts[0, 1] and stats["false_negatives"] == counts[1, 0]
    assert stats["confusion_matrix"] == counts.tolist()
    cues = by_group(stats)
    assert (cues["with negation"]["reviews"], cues["with negation"]["errors"]) == (2, 2)
    assert cues["without negation"]["error_rate"] == pytest.approx(1 / 8)
    assert (cues["with contrast marker"]["reviews"], cues["with contrast marker"]["errors"]) == (2, 1)
    assert (cues["truncated"]["reviews"], cues["truncated"]["errors"]) == (2, 1)
    assert cues["not truncated"]["error_rate"] == pytest.approx(2 / 8)
    buckets = stats["by_length"]
    assert len(buckets) == 4 and sum(b["reviews"] for b in buckets) == 10 and sum(b["errors"] for b in buckets) == 3
    assert [b["low"] for b in buckets] == sorted(b["low"] for b in buckets)


def test_reliability_bins_give_the_evaluate_ece(table):
    stats = analyze.failure_stats(table)
    assert stats["ece"] == pytest.approx(evaluate.compute_metrics(table, "test")["test/ece"])
    rows = [r for r in stats["reliability"] if r["reviews"]]
    assert sum(r["reviews"] for r in rows) == 10
    ece = sum(abs(r["accuracy"] - r["confidence"]) * r["reviews"] / 10 for r in rows)
    assert ece == pytest.approx(stats["ece"])


def test_summary_and_tables_come_from_the_stats(table):
    stats = analyze.failure_stats(table)
    top = analyze.most_confident_errors(table)
    assert list(top["id"]) == ["r2", "r4", "r7"]  # errors, surest first
    assert list(top["negation"]) == [True, True, False] and list(top["contrast"]) == [False, False, True]
    text = analyze.failure_summary(stats, "test", top)
    assert "3 errors in 10 reviews (error rate 30.0%, accuracy 70.0%)" in text
    assert "1 false positives" in text and "2 false negatives" in text
    assert "- Negation: with negation 100.0% errors (2 of 2); without negation 12.5% (1 of 8)." in text
    assert "- Truncation: truncated 50.0% errors (1 of 2); not truncated 25.0% (2 of 8)." in text
    assert f"ECE {stats['ece']:.4f}" in text
    metrics = analyze.failure_metrics(stats)
    assert metrics["failures/false_negatives"] == 2 and metrics["failures/error_rate_with_negation"] == 1.0


def test_examples_are_chosen_from_the_table(table):
    chosen = analyze.select_examples(table, per_group=1)
    assert dict(zip(chosen["group"], chosen["id"])) == {
        "correct_positive": "r9", "correct_negative": "r8", "false_positive": "r2", "false_negative": "r4", "least_confident": "r7",
    }  # fmt: skip
    assert chosen["id"].is_unique


def test_parts_and_texts_are_checked(tmp_path):
    assert analyze.parse_parts("") == analyze.PARTS
    assert analyze.parse_parts("failures, EDA") == ("eda", "failures")
    with pytest.raises(UserError, match="unknown: heads"):
        analyze.parse_parts("eda,heads")
    with pytest.raises(UserError, match="does not exist"):
        analyze.read_texts(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(UserError, match="has no reviews"):
        analyze.read_texts(str(tmp_path / "empty.txt"))
    (tmp_path / "two.txt").write_text("Great film!<br />Loved it.\n\nDull.\n")
    assert analyze.read_texts(str(tmp_path / "two.txt")) == ["Great film! Loved it.", "Dull."]


# ----------------------------------------------------------------------------- attention


def _roberta_folder(folder) -> str:
    """A tiny random RoBERTa with a byte-level BPE tokenizer trained here on the sample corpus."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    texts = data_mod.load_source("sample")["text"].tolist()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=600, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")  # fmt: skip
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(vocab_size=600, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, max_position_embeddings=130, pad_token_id=1)
    RobertaModel(config).save_pretrained(folder)
    return str(folder)


def _distilbert_folder(folder) -> str:
    """A tiny random DistilBERT with the real uncased WordPiece tokenizer (DistilBERT's vocabulary)."""
    from transformers import DistilBertConfig, DistilBertModel

    tokenizer = model_mod.load_tokenizer("offline-minilm")
    DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), n_layers=2, dim=32, n_heads=4, hidden_dim=64, max_position_embeddings=128)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=["bert", "distilbert", "roberta", "offline-minilm"])
def encoder(request, tiny_model, tmp_path_factory):
    """(model in its default attention implementation, tokenizer) for each architecture."""
    import torch

    torch.manual_seed(0)
    folder = {
        "bert": lambda: tiny_model,
        "distilbert": lambda: _distilbert_folder(tmp_path_factory.mktemp("distilbert")),
        "roberta": lambda: _roberta_folder(tmp_path_factory.mktemp("roberta")),
        "offline-minilm": lambda: "offline-minilm",
    }[request.param]()
    return model_mod.build_model(ModelConfig(name=folder, dropout=0.1)).eval(), model_mod.load_tokenizer(folder)


LONG = " ".join(["The unwatchable opening drags, but the second half is wonderful."] * 12)


@pytest.mark.parametrize("truncation", ["head", "head_tail"])
def test_attention_rows_are_distributions_and_rollout_has_the_right_shape(encoder, truncation):
    model, tokenizer = encoder
    amap = analyze.extract_attention(model, tokenizer, LONG, max_length=48, truncation=truncation)
    layers, heads = len(model_mod.encoder_layers(model)), model.config.num_attention_heads
    length = len(amap.tokens)
    assert length == 48 and amap.truncated
    assert amap.attentions.shape == (layers, heads, length, length)
    np.testing.assert_allclose(amap.attentions.sum(-1), 1.0, atol=1e-5)  # every layer, head and query: sums to 1 over tokens
    rollout = analyze.attention_rollout(amap.attentions)
    assert rollout.shape == (layers, length, length)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-5)
    assert amap.last_layer.shape == (length,) and amap.per_layer.shape == (layers, length) and amap.rollout.shape == (layers, length)
    # the tokens are the ones training and evaluation feed the model, and so is the prediction
    encoded = tokens.encode([LONG], tokenizer, 48, truncation)
    spans = tokens.encode_with_spans(LONG, tokenizer, 48, truncation)
    assert spans.ids == encoded.input_ids[0] and spans.tokens == amap.tokens
    assert amap.full_length == encoded.full_lengths[0]
    probability, _ = evaluate.predict_probabilities(model, tokenizer, [LONG], 48, truncation)
    assert amap.probability == pytest.approx(float(probability[0]), abs=1e-4)
    assert model.config._attn_implementation == "eager"


def test_word_pieces_keep_their_words_and_the_page_shows_the_whole_review(encoder):
    model, tokenizer = encoder
    text = "An unwatchable, overlong mess; still, the score is gorgeous. " * 3
    for truncation in ("head", "head_tail"):
        amap = analyze.extract_attention(model, tokenizer, text, max_length=24, truncation=truncation)
        page = analyze.attention_html(amap, "title", {"review": "r"})
        review = re.search(r"<p class='review'>(.*?)</p>", page).group(1)
        shown = html.unescape(re.sub(r"<span class='special'[^>]*>[^<]*</span>", "", review))
        assert re.sub(r"<[^>]+>", "", shown) == data_mod.clean_text(text)  # every character, in order, none twice
        assert "class='cut'" in review  # what truncation removed is marked
        pieces = [t for t in amap.tokens if t.startswith("##")]
        words = set(data_mod.clean_text(text).replace(",", " ").replace(";", " ").replace(".", " ").split())
        assert all(any(p[2:] in w for w in words) for p in pieces)


def test_long_reviews_show_the_most_attended_tokens(encoder):
    model, tokenizer = encoder
    amap = analyze.extract_attention(model, tokenizer, LONG, max_length=120)
    columns = analyze.display_columns(amap, limit=40)
    assert len(columns) == 40 and list(columns) == sorted(columns)
    assert int(np.argmax(amap.last_layer)) in columns


def test_exploration_streams_token_counts(tiny_model):
    tokenizer = model_mod.load_tokenizer(tiny_model)
    splits = data_mod.load_splits(DataConfig(source="sample", test_fraction=0.2, val_fraction=0.2), seed=42)
    eda = analyze.explore(splits, tokenizer, max_length=128, tokenizer_name="tiny")
    encoded = tokens.encode(splits.test["text"].tolist(), tokenizer, 128)
    np.testing.assert_array_equal(eda.splits["test"].tokens, encoded.full_lengths)
    chunked, _, _ = tokens.count_tokens(splits.test["text"].tolist(), tokenizer, chunk=7)
    np.testing.assert_array_equal(chunked, encoded.full_lengths)
    rows = {r["split"]: r for r in eda.summary_rows()}
    assert rows["all"]["examples"] == 390 and rows["test"]["positive_share"] == 0.5
    assert rows["test"]["truncated_share"] == pytest.approx((encoded.full_lengths > 128).mean())
    assert eda.tokenizer["vocab_size"] == 30522 and eda.tokenizer["special_tokens"]["cls_token"] == "[CLS]"
    assert eda.tokenizer["example_tokens"][0] == "[CLS]" and eda.vocabulary_size > 1000


# ----------------------------------------------------------------------------- through the CLI


def _flip_some_labels(source, target) -> None:
    """The review file with every 7th label flipped: a model that learned the file errs both ways."""
    with open(source, newline="") as handle:
        rows = list(csv.reader(handle))
    for i, row in enumerate(rows[1:]):
        if i % 7 == 0:
            row[1] = "negative" if row[1] == "positive" else "positive"
    with open(target, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _parquet(run_id: str, path: str) -> pd.DataFrame:
    return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


def _run_id(stdout: str) -> str:
    return re.search(r"run id:\s+(\w+)", stdout).group(1)


@pytest.fixture(scope="module")
def evaluated(mlflow_server, tiny_model, reviews_csv, tmp_path_factory):
    """A tiny model trained and registered once, then evaluated on a noisy copy of its data."""
    folder = tmp_path_factory.mktemp("analyze")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env.update({"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": f"analyze-{uuid.uuid4().hex[:8]}", "PYTHONPATH": str(REPO)})
    name = f"analyze-{uuid.uuid4().hex[:6]}"
    result = run_cli(["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN, "--run-test", "false", "--register-as", name], env, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    noisy = folder / "noisy.csv"
    _flip_some_labels(reviews_csv, noisy)
    result = run_cli(["evaluate", "--model-uri", f"models:/{name}@champion", "--data", str(noisy), "--split", "all"], env, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(mlflow_server)
    return {"env": env, "cwd": folder, "model_uri": f"models:/{name}@champion", "data": str(noisy), "run_id": _run_id(result.stdout)}


def test_analyze_reuses_the_evaluate_predictions(evaluated, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("wonderful brilliant film, loved it\nnot boring at all, but the plot was dull\n")
    args = ["analyze", "--model-uri", evaluated["model_uri"], "--data", evaluated["data"], "--predictions-run", evaluated["run_id"], "--texts", str(texts)]
    result = run_cli(args, evaluated["env"], cwd=evaluated["cwd"])
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient()
    run = client.get_run(_run_id(result.stdout))
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["sentiment.kind"] == "analyze" and tags["sentiment.predictions_run_id"] == evaluated["run_id"]
    assert tags["sentiment.split"] == "all"  # the evaluate run's split
    train_run = client.get_run(tags["sentiment.model_run_id"])  # linked to the run that logged the model
    assert train_run.data.tags["sentiment.kind"] == "train"

    artifacts = {a.path for folder in ("eda", "failures", "attention") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"eda/class_balance.png", "eda/length_histograms.png", "eda/length_boxplot.png", "eda/summary.json", "eda/exploration.json"} <= artifacts
    assert {"failures/confusion_matrix.png", "failures/error_rates.png", "failures/confidence.png", "failures/summary.md",
            "failures/most_confident_errors.json", "failures/error_rates.json", "failures/stats.json"} <= artifacts  # fmt: skip
    pages = sorted(p for p in artifacts if p.endswith(".html"))
    groups = [re.sub(r"attention/\d+_(.*)\.html", r"\1", p) for p in pages]
    assert groups == ["correct_positive", "correct_negative", "false_positive", "false_negative", "least_confident", "user", "user"]
    assert all(p.replace(".html", ".png") in artifacts for p in pages)

    # failures agree with the evaluate run's confusion matrix, by construction
    metrics = run.data.metrics
    evaluation = json.loads(mlflow.artifacts.load_text(f"runs:/{evaluated['run_id']}/metrics/all.json"))
    (tn, fp), (fn, tp) = evaluation["confusion_matrix"]
    assert fp > 0 and fn > 0
    assert (metrics["failures/false_positives"], metrics["failures/false_negatives"], metrics["failures/errors"]) == (fp, fn, fp + fn)
    assert metrics["failures/ece"] == pytest.approx(client.get_run(evaluated["run_id"]).data.metrics["all/ece"])
    summary = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/failures/summary.md")
    assert f"{fp + fn} errors in {tn + fp + fn + tp} reviews" in summary and f"{fp} false positives" in summary
    top = _parquet(run.info.run_id, "failures/most_confident_errors.parquet")
    assert len(top) == min(fp + fn, analyze.TOP_ERRORS) and (top["label"] != top["prediction"]).all()

    # exploration metrics
    assert metrics["eda/all/examples"] == 240 and metrics["eda/max_length"] == 64
    assert {"eda/train/tokens_mean", "eda/test/truncated_share", "eda/vocabulary_size", "eda/tokenizer_vocab_size"} <= set(metrics)

    # attention weights of the user's texts, as logged
    weights = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/attention/06_user.json"))
    assert weights["tokens"][0] == "[CLS]" and "wonderful" in weights["tokens"]
    assert sum(weights["rollout"]) == pytest.approx(1.0, abs=1e-5)
    examples = _parquet(run.info.run_id, "attention/examples.parquet")
    assert len(examples) == 7


def test_analyze_predicts_again_with_the_same_counts(evaluated, tracking_env):
    from sentiment import tracking

    with tracking.open_run() as tracker:
        outcome = analyze.run_analyze(tracker, model_uri=evaluated["model_uri"], data_source=evaluated["data"], parts=("failures",), split="all")
    evaluation = json.loads(mlflow.artifacts.load_text(f"runs:/{evaluated['run_id']}/metrics/all.json"))
    assert outcome.failures["confusion_matrix"] == evaluation["confusion_matrix"]
    assert mlflow.get_run(tracker.run_id).data.metrics["all/accuracy"] == pytest.approx(outcome.failures["accuracy"])


def test_exploration_without_a_model_through_mlflow_run(tracking_env):
    cmd = [
        sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "analyze", "--env-manager", "local",
        "--experiment-name", tracking_env["MLFLOW_EXPERIMENT_NAME"], "-P", "data=sample", "-P", "only=eda",
    ]  # fmt: skip
    result = subprocess.run(cmd, env=tracking_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the project's run, reused
    metrics = runs[0].data.metrics
    assert metrics["eda/all/examples"] == 390 and metrics["eda/train/positive_share"] == pytest.approx(0.5, abs=0.01)
    assert metrics["eda/tokenizer_vocab_size"] == 30522 and not any(k.startswith("failures/") for k in metrics)
    assert runs[0].data.params["model.name"] == "offline-minilm"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--texts", "missing.txt"], "--texts file 'missing.txt' does not exist"),
        (["--texts", "empty.txt"], "--texts file 'empty.txt' has no reviews"),
        (["--only", "eda,heads"], "unknown: heads"),
    ],
)
def test_bad_analyze_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--model-uri", "models:/nothing@champion", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_analyze_without_a_model_asks_for_one(tracking_env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--data", "sample"])
    assert exit_info.value.code == 2
    assert "need --model-uri" in capsys.readouterr().err
    run = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")[0]
    assert run.info.status == "FAILED" and "need --model-uri" in run.data.tags["sentiment.error"]
