"""The search-space language: what loads, and every mistake named with its line before anything
runs (no server, no training)."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from sentiment.errors import UserError
from sentiment.tune import load_space
from sentiment.tune.study import build_pruner, build_sampler, counted, create_study, redact, remaining
from tests.conftest import REPO

GOOD = """\
name: small
base:
  preset: quick
  options: {epochs: 2, max_length: 128}
search:
  lr: {log_uniform: [1e-5, 3e-4]}
  layer_decay: {uniform: [0.7, 1.0]}
  dropout: {choice: [0.1, 0.2, 0.3]}
  batch_size: {choice: [8, 16, 32]}
  freeze_layers: {int: [0, 3]}
  warmup_ratio: {uniform: [0.0, 0.2], step: 0.05}
objective: val/best_f1_macro
trials: 12
seed: 7
sampler: {name: tpe, seed: 3, n_startup_trials: 4}
pruner: {name: successive_halving, min_resource: 1, reduction_factor: 3}
enqueue:
  - {lr: 1.0e-4, batch_size: 16}
"""


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text: str) -> str:
    with pytest.raises(UserError) as caught:
        load_space(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_good_space_loads_with_numbers_and_its_settings(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert space.searched == ["lr", "layer_decay", "dropout", "batch_size", "freeze_layers", "warmup_ratio"]
    lr = space.dimensions[0]
    assert (lr.kind, lr.low, lr.high) == ("log_uniform", 1e-5, 3e-4)  # YAML reads 1e-5 as text; parsed here
    assert space.dimensions[3].choices == (8, 16, 32) and space.dimensions[4].kind == "int"
    assert (space.objective, space.direction, space.trials, space.seed) == ("val/best_f1_macro", "maximize", 12, 7)
    assert space.enqueue == ({"lr": 1e-4, "batch_size": 16},)
    config = space.config({"lr": 2e-4, "batch_size": 32})
    assert config.train.lr == 2e-4 and config.train.batch_size == 32 and config.train.epochs == 2 and config.seed == 7
    assert config.run_test is False and config.upload_state is False  # trials validate only
    assert isinstance(build_sampler(space, 5), optuna.samplers.TPESampler)
    assert isinstance(build_pruner(space), optuna.pruners.SuccessiveHalvingPruner)
    assert len(space.corner_configs()) == 2 + 2 + 3 + 3 + 2 + 2


def test_every_mistake_is_reported_at_once_with_its_line(tmp_path):
    message = problems(
        tmp_path,
        """\
        name: bad
        base:
          preset: quick
        search:
          lrr: {uniform: [0.1, 0.2]}
          layer_decay: {uniform: [0.9, 0.7]}
          dropout: {gaussian: [0.1, 0.2]}
          lr: {log_uniform: [0, 1e-3]}
          batch_size: {uniform: [8, 32]}
        pruner: {name: medain}
        """,
    )
    assert message.startswith("space ")
    assert "line 5: unknown option 'lrr' in search (did you mean 'lr'?)" in message
    assert "line 6: layer_decay: low 0.9 must be below high 0.7" in message
    assert "line 7: unknown key 'gaussian'" in message
    assert "line 8: lr: log_uniform needs low > 0" in message
    assert "line 9: batch_size is an integer option: use int, log_int, choice, not uniform" in message
    assert "line 10: unknown pruner 'medain' (did you mean 'median'?)" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "search: {dropout: {uniform: [0.5, 1.0]}}",
            "line 4: dropout = 1.0 gives an invalid config: model.dropout must be in [0, 1)",
        ),
        ("search: {lr: {choice: [1e-4, 1e-4]}}", "line 4: lr: duplicate choice 0.0001"),
        ("search: {lr: {uniform: [1e-4]}}", "line 4: lr: uniform takes [low, high]"),
        ("search: {run_test: {choice: [true]}}", "run_test is set by the search"),
        (
            "search: {lr: {uniform: [1e-5, 1e-4]}}\nobjective: test/accuracy",
            "line 5: objective 'test/accuracy': trials never see the test split",
        ),
        (
            "search: {lr: {uniform: [1e-5, 1e-4]}}\npruner: {name: median, patience: 2}",
            "pruner median has no setting 'patience'",
        ),
        (
            "search: {lr: {uniform: [1e-5, 1e-4]}}\npruner: {name: threshold}",
            "bad pruner settings: Either lower or upper must be specified",
        ),
        (
            "search: {lr: {uniform: [1e-5, 1e-4]}}\nenqueue: [{lr: 1.0}]",
            "line 5: enqueued lr = 1.0 is outside its distribution",
        ),
        ("search: {lr: {uniform: [1e-5, 1e-4]}}\ntrials: 0", "line 5: trials must be an integer >= 1"),
        ("search: {}", "line 4: search needs at least one option"),
    ],
)
def test_single_mistakes(tmp_path, text, expected):
    assert expected in problems(tmp_path, "name: s\nbase:\n  preset: quick\n" + text + "\n")


def test_an_option_cannot_be_both_fixed_and_searched(tmp_path):
    message = problems(
        tmp_path, "name: s\nbase:\n  preset: quick\n  options: {lr: 1.0e-4}\nsearch: {lr: {uniform: [1e-5, 1e-4]}}\n"
    )
    assert "line 5: lr is both fixed in base options (line 4) and searched" in message


def test_the_shipped_spaces_validate():
    paths = sorted((REPO / "experiments" / "search").glob("*.yaml"))
    assert paths
    for path in paths:
        space = load_space(path)
        assert space.base_config().run_test is False, path


def test_the_budget_counts_started_trials_but_not_replaced_failures_or_waiting_ones(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    study = create_study(optuna.storages.InMemoryStorage(), "parent", space)  # enqueues one trial (waiting)
    assert counted(study) == 0 and remaining(study, 3) == 3
    first = study.ask()
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # killed; its retry replaces it
    study.enqueue_trial(first.params, user_attrs={"retry_of": first.number})
    assert counted(study) == 0
    retry = study.ask()
    assert counted(study) == 1 and retry.user_attrs["retry_of"] == first.number  # the retry runs in its place
    assert redact("postgresql://me:secret@db:5432/optuna") == "postgresql://me:***@db:5432/optuna"


def test_heartbeat_variable_is_checked(monkeypatch, tmp_path):
    from sentiment.errors import UserError
    from sentiment.tune import study

    monkeypatch.setenv(study.HEARTBEAT_VARIABLE, "0")
    with pytest.raises(UserError, match="SENTIMENT_TUNE_HEARTBEAT_S='0': give whole seconds, at least 1"):
        study.open_storage(f"sqlite:///{tmp_path}/optuna.db")
    monkeypatch.setenv(study.HEARTBEAT_VARIABLE, "3")
    opened = study.open_storage(f"sqlite:///{tmp_path}/optuna.db")
    assert opened.heartbeat_interval == 3 and opened.grace_period == 18
