"""The train stage (prepare -> fit -> publish) against the in-memory tracker: what a run records,
in seconds and without a server (the CLI and MLflow end to end are in test_e2e.py)."""

from __future__ import annotations

import pytest

from sentiment.config import to_flat_dict
from sentiment.train.checkpoint import STATE_FILE
from tests.conftest import tiny_config


def test_a_run_records_config_metrics_datasets_tags_and_the_model(trained_in_memory, tiny_model, reviews_csv):
    tracker, outcome = trained_in_memory["tracker"], trained_in_memory["outcome"]
    config = tiny_config(tiny_model, reviews_csv)
    counts = {
        "data.train_reviews",
        "data.val_reviews",
        "data.test_reviews",
        "model.parameters",
        "model.trainable_parameters",
    }
    config_params = {k: v for k, v in tracker.params.items() if k not in counts}
    assert config_params == {k: str(v) for k, v in to_flat_dict(config).items()} and counts <= set(tracker.params)
    assert {
        "train/loss",
        "train/lr",
        "train/accuracy",
        "train/epoch_loss",
        "val/loss",
        "val/accuracy",
        "val/f1_macro",
        "train/samples_per_s",
        "train/tokens_per_s",
        "train/epoch_seconds",
        "val/best_accuracy",
        "val/best_f1_macro",
        "train/best_epoch",
        "test/accuracy",
        "test/f1_macro",
        "test/ece",
        "test/seconds",
    } <= set(tracker.metrics)
    # the run's constants are params, so the MLflow UI's compare views open on what it measured
    assert not {k for k in tracker.metrics if k.startswith(("model/parameters", "model/trainable", "data/"))}
    assert int(tracker.params["model.parameters"]) >= int(tracker.params["model.trainable_parameters"]) > 0
    assert int(tracker.params["data.train_reviews"]) > 0
    assert int(tracker.params["data.test_reviews"]) == tracker.metric("test/examples")[0]
    assert [step for step, _, _ in tracker.metrics["val/accuracy"]] == [1, 2, 3, 4]
    steps = [step for step, _, _ in tracker.metrics["train/loss"]]
    assert steps == sorted(set(steps)) and steps[0] == 5
    assert tracker.metric("val/accuracy") == [e.val_accuracy for e in outcome.history.epochs]
    test_accuracy = outcome.test_metrics["test/accuracy"]
    assert tracker.metric("test/accuracy") == [test_accuracy] and test_accuracy > 0.7
    (name, step, folder) = tracker.models[0]
    assert (name, step) == ("model", outcome.history.best_epoch) and (folder / "sentiment_config.yaml").is_file()
    best_points = tracker.metrics["val/best_accuracy"]
    assert best_points == [
        (outcome.history.best_epoch, outcome.history.best_val_accuracy, "m-1")
    ]  # ranks the LoggedModel
    assert [split for split, _, _ in tracker.datasets] == ["train", "val", "test"]
    assert tracker.tags["sentiment.kind"] == "train" and tracker.tags["sentiment.device"] == "cpu"
    assert {
        "figures/training_curves.png",
        "tables/layerwise_lr.parquet",
        "predictions/test.parquet",
        "metrics/test.json",
        "figures/test_confusion_matrix.png",
        "model_card.md",
    } <= set(tracker.artifacts)
    # the resumable state was uploaded while training and deleted once the run succeeded (keep_state false)
    assert tracker.deleted_artifacts == ["checkpoints"] and not any(
        k.startswith("checkpoints/") for k in tracker.artifacts
    )
    assert (trained_in_memory["workdir"] / STATE_FILE).is_file()  # the local copy stays


def test_the_model_card_is_read_from_what_the_run_logged(trained_in_memory):
    tracker, outcome = trained_in_memory["tracker"], trained_in_memory["outcome"]
    card = tracker.artifacts["model_card.md"]
    assert tracker.model_files["m-1"]["model_card.md"] == card  # logged with the model too
    accuracy = outcome.test_metrics["test/accuracy"]
    low, high = outcome.test_metrics["test/accuracy_ci_low"], outcome.test_metrics["test/accuracy_ci_high"]
    assert f"| accuracy | {100 * accuracy:.2f}% (95% CI {100 * low:.2f}% to {100 * high:.2f}%) |" in card
    table = tracker.artifacts["predictions/test.parquet"]
    errors = int((table["label"] != table["prediction"]).sum())
    assert f"- {errors:,} errors in {len(table):,} test reviews" in card
    for split, _, rows in tracker.datasets:
        assert f"| {split} | {rows:,} | `" in card
    assert "max_length: 64" in card and "Reads at most 64 tokens per review" in card
    assert "Not registered." in card


def test_keep_state_and_keep_checkpoints(tiny_model, reviews_csv, tmp_path):
    """keep_state true keeps the uploaded state; keep_checkpoints 2 of 4 prunes the two worst epochs."""
    from sentiment.tracking import InMemoryTracker
    from sentiment.train import TrainRequest, run_train

    tracker = InMemoryTracker("retention")
    config = tiny_config(
        tiny_model,
        reviews_csv,
        **{"keep_state": True, "log_checkpoints": "all", "keep_checkpoints": 2, "run_test": False},
    )
    outcome = run_train(config, tracker, TrainRequest(tmp_path))
    assert not tracker.deleted_artifacts and "checkpoints/state.pt" in tracker.artifacts
    scores = {e.epoch: e.val_accuracy for e in outcome.history.epochs}
    kept = sorted(scores, key=lambda e: (-scores[e], e))[:2]
    assert sorted(tracker.pruned_epochs) == sorted(set(scores) - set(kept)) and len(tracker.pruned_epochs) == 2
    assert tracker.tags["sentiment.pruned_checkpoints"] == ",".join(map(str, sorted(tracker.pruned_epochs)))


def test_validation_metrics_come_from_the_predictions_table(trained_in_memory):
    """val/accuracy, val/loss and val/f1_macro are evaluate's numbers for the validation table."""
    from sentiment import data as data_mod
    from sentiment import evaluate, tokens
    from sentiment import model as model_mod
    from sentiment.device import pick_runtime

    outcome = trained_in_memory["outcome"]
    best = outcome.history.epochs[outcome.history.best_epoch - 1]  # the packaged model is the best epoch's
    loaded = model_mod.load_package(str(trained_in_memory["package"]))
    config = loaded.config
    val = data_mod.load_splits(config.data, config.seed).val
    reviews = tokens.encode_reviews(val, loaded.tokenizer, config.data.max_length, config.data.truncation)
    table = evaluate.predict_table(loaded.model, reviews, pick_runtime(config.train), config.train.eval_batch_size)
    scores = evaluate.validation_metrics(table)
    assert scores["accuracy"] == best.val_accuracy and scores["f1_macro"] == best.val_f1_macro
    assert scores["loss"] == pytest.approx(best.val_loss, rel=1e-5)


def test_min_steps_trains_a_small_split_longer_and_logs_the_epochs_it_ran(tiny_model, reviews_csv, tmp_path, capsys):
    from sentiment.tracking import InMemoryTracker
    from sentiment.train import TrainRequest, run_train

    tracker = InMemoryTracker("min-steps")
    config = tiny_config(tiny_model, reviews_csv, **{"train.epochs": 1, "train.min_steps": 50})
    outcome = run_train(config, tracker, TrainRequest(tmp_path))
    # 154 training reviews in batches of 8: 20 steps an epoch, so 3 epochs reach 50 steps
    assert [e.epoch for e in outcome.history.epochs] == [1, 2, 3]
    assert tracker.params["train.epochs"] == "3" and tracker.params["train.min_steps"] == "50"
    err = capsys.readouterr().err
    assert "3 epochs, so that training takes at least train.min_steps = 50 steps" in err
    assert "too few for fine-tuning to learn much" in err  # 60 steps


def test_the_few_steps_warning_spares_the_demo_and_warns_a_one_epoch_small_set(capsys):
    from sentiment.config import build_config
    from sentiment.distributed import Dist
    from sentiment.train.stage import _warn_if_few_steps

    _warn_if_few_steps(build_config("quick", {}), 250, Dist())  # make demo: 5 epochs of 16 batches
    assert capsys.readouterr().err == ""
    _warn_if_few_steps(build_config("cpu", {}), 500, Dist())  # one epoch of 32 batches: stays at loss 0.69
    assert "500 training reviews give 32 optimizer steps" in capsys.readouterr().err
