"""Presets, overrides and validation of the frozen config."""

from __future__ import annotations

import dataclasses

import pytest

from sentiment.config import PRESETS, Config, build_config, from_yaml, to_flat_dict, to_yaml
from sentiment.errors import UserError


def test_seed_preset_is_the_reference_recipe():
    config = build_config("seed")
    assert config.model.name == "distilbert-base-uncased" and config.data.source == "imdb"
    assert (config.data.max_length, config.model.dropout, config.train.lr, config.train.layer_decay) == (
        512,
        0.3,
        2e-5,
        0.95,
    )
    assert (config.train.batch_size, config.train.epochs, config.data.val_fraction) == (16, 3, 0.25)


def test_quick_preset_is_offline_and_explicit_options_win():
    config = build_config("quick", {"train.epochs": 2, "data.max_length": None})
    assert config.model.name == "offline-minilm" and config.data.source == "sample"
    assert config.train.epochs == 2  # explicit option
    assert config.data.max_length == PRESETS["quick"]["data.max_length"]  # None keeps the preset's
    assert config.preset == "quick"


def test_config_is_frozen_and_round_trips_through_yaml():
    config = build_config("quick", {"seed": 7, "train.lr": 3e-4})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    assert from_yaml(to_yaml(config)) == config
    flat = to_flat_dict(config)
    assert flat["train.lr"] == 3e-4 and flat["seed"] == 7 and flat["data.source"] == "sample"


def test_string_values_are_coerced_like_mlproject_passes_them():
    config = build_config("seed", {"train.epochs": "2", "train.lr": "1e-4", "run_test": "false"})
    assert config.train.epochs == 2 and config.train.lr == 1e-4 and config.run_test is False


def test_validation_reports_every_problem_at_once():
    with pytest.raises(UserError) as caught:
        build_config("seed", {"train.batch_size": 0, "train.epochs": -1, "data.val_fraction": 1.5, "train.lr": 0})
    message = str(caught.value)
    for fragment in (
        "train.batch_size must be > 0",
        "train.epochs must be > 0",
        "data.val_fraction must be in (0, 1]",
        "train.lr must be > 0",
    ):
        assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"nope.x": 1}, "unknown option 'nope.x'"),
        ({"train.epochs": "three"}, "train.epochs must be an integer"),
        ({"data.max_length": 4}, "data.max_length must be between 8"),
        ({"data.truncation": "middle"}, "data.truncation must be one of head, head_tail"),
        ({"data.train_fraction": 0}, "data.train_fraction must be in (0, 1]"),
        ({"model.freeze_layers": -1}, "model.freeze_layers must be >= 0"),
        ({"data.test_size": 3}, "data.test_size must be 0 (all) or at least 4 reviews"),
        ({"data.train_size": -5}, "data.train_size must be 0 (all) or at least 4 reviews"),
        ({"data.split_seed": -2}, "data.split_seed must be -1 (the run's seed) or >= 0"),
        ({"train.precision": "fast"}, "train.precision must be one of auto, native, fp32, bf16, fp16"),
    ],
)
def test_bad_values_name_the_field(overrides, fragment):
    with pytest.raises(UserError, match=None) as caught:
        build_config("seed", overrides)
    assert fragment in str(caught.value)


def test_cpu_preset_is_offline_minilm_on_real_imdb_with_native_bf16():
    config = build_config("cpu")
    assert config.model.name == "offline-minilm" and config.data.source == "imdb"
    assert config.data.truncation == "head_tail" and config.train.precision == "native"
    assert build_config("cpu", {"data.source": "reviews.parquet"}).data.source == "reviews.parquet"


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown preset 'fast'"):
        build_config("fast")


def test_defaults_equal_seed_preset():
    assert build_config("seed") == Config()


def test_default_run_names_say_what_ran_on_what():
    from sentiment.config import default_run_name, short_name

    assert [
        short_name(s)
        for s in (
            "offline-minilm",
            "distilbert-base-uncased",
            "models:/imdb-sentiment@champion",
            "/data/reviews.csv",
            "imdb",
        )
    ] == [
        "minilm",
        "distilbert",
        "imdb-sentiment",
        "reviews",
        "imdb",
    ]
    name = default_run_name("cpu", "minilm", "imdb")
    assert (
        name.startswith("cpu-minilm-imdb-")
        and len(name.rsplit("-", 1)[1]) == 4
        and name != default_run_name("cpu", "minilm", "imdb")
    )


def test_min_steps_gives_a_small_training_split_more_epochs():
    from sentiment.config import build_config, scale_epochs

    config = build_config("cpu", {"train.min_steps": 600})  # batch 16, 1 epoch
    assert scale_epochs(config, 500).train.epochs == 19  # 32 steps an epoch: 19 epochs reach 600 steps
    assert scale_epochs(config, 21_595) is config  # 1,350 steps in its one epoch already
    assert scale_epochs(build_config("cpu", {}), 500).train.epochs == 1  # min_steps 0: epochs as set
    scaled = scale_epochs(config, 500)
    assert scale_epochs(scaled, 500) is scaled  # a resumed run's logged config stays as it was
