"""ablate.grid: shipped grids validate; broken grids name file and line; group references."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiment.ablate import BASELINE, load_grid
from sentiment.errors import UserError
from tests.conftest import REPO

# Every grid in experiments/; results.yaml there is the manifest of `make results`, not a grid.
SHIPPED = sorted(p for p in (REPO / "experiments").glob("*.yaml") if p.name != "results.yaml")


def test_every_grid_the_issue_names_is_shipped():
    assert {p.name for p in SHIPPED} >= {
        "seed_report.yaml",
        "architecture.yaml",
        "encoders.yaml",
        "truncation.yaml",
        "quick.yaml",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_grid_validates(path):
    grid = load_grid(path)
    assert grid.variants[0].name == BASELINE and len(grid.variants) > 1 and grid.seeds
    names = [v.name for v in grid.variants]
    assert len(names) == len(set(names))
    children = grid.children()
    assert len(children) == len(grid.variants) * len(grid.seeds)
    assert {c.config.seed for c in children} == set(grid.seeds)


def test_seed_report_grid_is_the_reports_baseline_and_seven_variants():
    grid = load_grid(REPO / "experiments" / "seed_report.yaml")
    assert len(grid.variants) == 8
    configs = {c.variant.name: c.config for c in grid.children() if c.seed == grid.seeds[0]}
    assert all(c.data.train_fraction == 0.1 and c.model.name == "distilbert-base-uncased" for c in configs.values())
    assert sorted(c.model.freeze_layers for c in configs.values()) == [0, 0, 0, 0, 0, 0, 2, 4]
    assert sorted(c.train.epochs for c in configs.values()) == [1, 2, 3, 3, 3, 3, 3, 5]
    assert sorted(c.train.batch_size for c in configs.values()) == [8, 16, 16, 16, 16, 16, 16, 32]


@pytest.mark.parametrize("name", ["seed_report.yaml", "seed_report_cpu.yaml"])
def test_published_numbers_state_their_setup(name):
    # the reference report's numbers are one DistilBERT run's validation accuracies: a report must say so
    grid = load_grid(REPO / "experiments" / name)
    published = {v.name: v.published for v in grid.variants if v.published is not None}
    assert published["baseline"] == 0.9157 and published["freeze_2"] == 0.8923 and len(published) == 7
    assert grid.published_source and all(
        word in grid.published_setup for word in ("DistilBERT", "512 tokens", "one seed", "validation")
    )


def test_architecture_grid_labels_from_scratch_and_covers_the_skipped_ablations():
    grid = load_grid(REPO / "experiments" / "architecture.yaml")
    models = {c.variant.name: c.config.model for c in grid.children() if c.seed == grid.seeds[0]}
    scratch = [m for m in models.values() if m.from_scratch]
    assert {m.num_heads for m in scratch} >= {4, 8, 16}
    assert {m.hidden_size for m in scratch} >= {384, 768, 1024}
    assert {m.num_layers for m in scratch} >= {2, 4, 6}
    assert all("scratch" in name for name, m in models.items() if m.from_scratch)
    assert {m.keep_heads for m in models.values()} >= {4, 8, 12}
    assert {m.keep_layers for m in models.values()} - {0}


GOOD = """\
name: broken
base:
  preset: quick
seeds: [1]
groups:
  - name: g
    variants:
      - name: a
        options: {freeze_layers: 1}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        (
            "{freeze_layers: 1}",
            "{freez_layers: 1}",
            ["line 9", "unknown option 'freez_layers'", "did you mean 'freeze_layers'"],
        ),
        ("{freeze_layers: 1}", "{epochs: three}", ["line 9", "bad value for 'epochs'", "must be an integer"]),
        ("{freeze_layers: 1}", "{freeze_layers: -1}", ["line 9", "variant 'a'", "model.freeze_layers must be >= 0"]),
        ("{freeze_layers: 1}", "{num_heads: 2}", ["line 9", "only apply with model.from_scratch true"]),
        (
            "{freeze_layers: 1}",
            "{freeze_layers: 1}\n      - name: a\n        options: {epochs: 1}",
            ["line 10", "duplicate variant name 'a' (first at line 8)"],
        ),
        ("preset: quick", "preset: fast", ["line 3", "unknown preset 'fast'"]),
        ("seeds: [1]", "seeds: [1, 1]", ["line 4", "duplicate seed 1"]),
        ("seeds: [1]", "seeds: [1]\nseed: 3", ["line 5", "unknown key 'seed'", "did you mean 'seeds'"]),
        ("seeds: [1]", "seeds: [1]\npublished_setup: ''", ["line 5", "published_setup must be a non-empty string"]),
        (
            "    variants:",
            "    baseline: nope\n    variants:",
            ["line 7", "baseline 'nope' of group 'g' is not a variant"],
        ),
        ("{freeze_layers: 1}", "{seed: 3}", ["line 9", "seed is set by the grid's seeds list"]),
        ("- name: a", "- name: a b", ["line 8", "may only use letters"]),
        ("    variants:", "    variants: [", ["not valid YAML"]),
    ],
)
def test_broken_grids_name_file_and_line(tmp_path, old, new, fragments):
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(UserError) as caught:
        load_grid(path)
    message = str(caught.value)
    assert message.startswith(f"grid {path}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_all_problems_are_reported_together(tmp_path):
    text = GOOD.replace("{freeze_layers: 1}", "{freez_layers: 1, epochs: three}")
    with pytest.raises(UserError) as caught:
        load_grid(_write(tmp_path, text))
    assert "freez_layers" in str(caught.value) and "'epochs'" in str(caught.value)


def test_missing_and_empty_grid_files(tmp_path):
    with pytest.raises(UserError, match="cannot read it"):
        load_grid(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="the file is empty"):
        load_grid(_write(tmp_path, ""))


def test_group_options_and_references(tmp_path):
    text = (
        GOOD
        + """\
  - name: scratch
    baseline: s4
    options: {from_scratch: true, num_layers: 2, hidden_size: 64}
    variants:
      - {name: s4, options: {num_heads: 4}}
      - {name: s2, options: {num_heads: 2}}
"""
    )
    grid = load_grid(_write(tmp_path, text))
    by_name = {v.name: v for v in grid.variants}
    assert (
        by_name["s2"].reference == "s4" and by_name["s4"].reference == BASELINE and by_name["a"].reference == BASELINE
    )
    assert by_name["s2"].changed == "num_heads=2, from_scratch=true, num_layers=2, hidden_size=64"
    assert by_name["s2"].merged["hidden_size"] == 64
    assert grid.groups[1] == ("scratch", "", "s4")


def test_data_option_replaces_every_childs_source_but_is_no_change():
    grid = load_grid(REPO / "experiments" / "cpu_search.yaml", data="/copies/imdb.parquet")
    assert grid.data == "/copies/imdb.parquet"
    assert {c.config.data.source for c in grid.children()} == {"/copies/imdb.parquet"}
    assert all("data=" not in v.changed for v in grid.variants)
    assert {c.config.data.source for c in load_grid(REPO / "experiments" / "cpu_search.yaml").children()} == {"imdb"}
