"""`sentiment report`: results documents rendered from a real tracking server's runs."""

from __future__ import annotations

import re

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from sentiment import evaluate
from sentiment.report.numbers import _points
from sentiment.stats import Paired, seed_interval, verdict, wider_interval
from tests.ablate.test_execution import children_of, parent_of, tiny_grid
from tests.conftest import TINY_TRAIN, run_cli

pytestmark = pytest.mark.timeout(900)


def _predictions(run_id: str) -> pd.DataFrame:
    return pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="predictions/test.parquet"))


def test_ablation_report_sets_published_numbers_beside_paired_results(tracking_env, tiny_model, reviews_csv, tmp_path):
    grid = tiny_grid(
        "reported",
        reviews_csv,
        tiny_model,
        [1, 2],
        [
            {
                "name": "freezing",
                "variants": [{"name": "freeze_1", "options": {"freeze_layers": 1}, "published": 0.70}],
            },
        ],
    )
    grid["published_source"] = "a paper's table 3"
    grid["published_setup"] = "a larger model, one seed, validation accuracy"
    grid["base"]["published"] = 0.80
    grid["shared"].update({"test_size": 40, "split_seed": 0})
    path = tmp_path / "reported.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    result = run_cli(["ablate", "--grid", str(path)], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tracking_env["MLFLOW_EXPERIMENT_NAME"]
    parent_id = parent_of(experiment).info.run_id
    children = children_of(parent_id, experiment)

    out = tmp_path / "out" / "RESULTS.md"
    result = run_cli(["report", "--run", parent_id, "--output", str(out), "--title", "Tiny results"], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Tiny results") and parent_id in text
    assert all(c.info.run_id in text for c in children)  # every number's run is named
    assert "All 4 tested children were tested on the same 40 reviews (checked: identical ids)" in text
    # the summary row is the parent's summary table, formatted
    summary = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="ablation/summary.parquet")
    )
    row = summary.set_index("variant").loc["freeze_1"]
    interval = (
        f"{_points(row['delta_test_accuracy'])} [{_points(row['delta_test_accuracy_low'])}, "
        f"{_points(row['delta_test_accuracy_high'])}]"
    )
    table_row = next(line for line in text.splitlines() if line.startswith("| freeze_1 |"))
    assert interval in table_row and "| 70.00% | -10.00 |" in table_row
    header = next(line for line in text.splitlines() if line.startswith("| variant | changed |"))
    assert (
        "| McNemar p (Holm, review-level) |" in header
        and "| published (a larger model, one seed, validation accuracy) |" in header
    )
    # the seed-level interval: Student-t over the per-seed deltas, recomputed here from the children's predictions
    tables = {
        (c.data.tags["sentiment.variant"], c.data.tags["sentiment.seed"]): _predictions(c.info.run_id) for c in children
    }
    deltas = [Paired.join(tables[("freeze_1", seed)], tables[("baseline", seed)]).accuracy_delta for seed in ("1", "2")]
    assert (row["seed_ci_low"], row["seed_ci_high"]) == pytest.approx(seed_interval(deltas))
    assert f"[{_points(row['seed_ci_low'])}, {_points(row['seed_ci_high'])}] over 2 seeds" in table_row
    # the verdict is the one the wider of the two intervals implies, and it names the published setup
    wider = wider_interval(
        (row["delta_test_accuracy_low"], row["delta_test_accuracy_high"]), (row["seed_ci_low"], row["seed_ci_high"])
    )
    assert (row["verdict_low"], row["verdict_high"], row["verdict_interval"]) == wider
    line = next(line for line in text.splitlines() if line.startswith("- `freeze_1`"))
    assert "published -10.00 points vs `baseline` (a larger model, one seed, validation accuracy); here" in line
    expected = verdict(0.70 - 0.80, wider[0], wider[1])
    assert f": {expected.word}, {expected.reason}." in line
    assert f"[{_points(wider[0])}, {_points(wider[1])}]" in line
    assert "Published numbers: a paper's table 3, measured as a larger model, one seed, validation accuracy" in text
    # figures beside the document, linked relatively; the grid as logged
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert linked and all((out.parent / link).is_file() for link in linked)
    assert "```yaml\n" in text and "name: reported" in text
    # logged to the parent run too
    artifacts = {a.path for a in MlflowClient().list_artifacts(parent_id)} | {
        a.path for a in MlflowClient().list_artifacts(parent_id, "report_figures")
    }
    assert "report.md" in artifacts and any(a.startswith("report_figures/") and a.endswith(".png") for a in artifacts)

    html_out = tmp_path / "out" / "results.html"
    result = run_cli(["report", "--run", parent_id, "--format", "html", "--output", str(html_out)], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    page = html_out.read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and interval in page
    assert "report.html" in {a.path for a in MlflowClient().list_artifacts(parent_id)}


# a training run trained and reported; tests/test_evidence.py's render check renders training-run sections (confusion
# matrix from the predictions table) in make test
@pytest.mark.extended
def test_training_run_report_counts_its_confusion_matrix_from_the_predictions(
    tracking_env, tiny_model, reviews_csv, tmp_path
):
    result = run_cli(["train", "--data", str(reviews_csv), "--model", tiny_model, *TINY_TRAIN], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = re.search(r"run id:\s+(\w+)", result.stdout).group(1)
    out = tmp_path / "run.md"
    result = run_cli(["report", "--run", run_id, "--output", str(out)], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert f"| test accuracy [95% bootstrap CI] | {100 * metrics['test/accuracy']:.2f}% [" in text
    table = _predictions(run_id)
    counts = evaluate.confusion(table)
    assert (
        f"| negative | {counts[0][0]} | {counts[0][1]} |" in text
        and f"| positive | {counts[1][0]} | {counts[1][1]} |" in text
    )
    assert f"| test reviews | {len(table):,} |" in text
    assert "training_curves.png" in text and "(1 of them training" not in text
    assert (
        "calibration_test.png" in text
        and f"| test expected calibration error, temperature applied | {metrics['test/ece_calibrated']:.4f} |" in text
    )
    assert (
        f"| temperature the model applies (fitted on the validation split) | {metrics['calibration/temperature']:.4f} |"
        in text
    )
    assert re.search(r"The run took \d+\.\d minutes, start to end \(\d+\.\d of them training, \d+\.\d testing\)", text)


# a learning-curve grid plus a run; the other report tests cross grids and extra runs in make test
@pytest.mark.extended
def test_learning_curve_scores_an_extra_run_on_the_grids_test_reviews(tracking_env, tiny_model, reviews_csv, tmp_path):
    grid = tiny_grid(
        "curve",
        reviews_csv,
        tiny_model,
        [1],
        [
            {"name": "size", "variants": [{"name": "train_60", "options": {"train_size": 60}}]},
        ],
    )
    grid["base"]["options"]["train_size"] = 120
    grid["shared"].update({"test_size": 30, "split_seed": 0})
    path = tmp_path / "curve.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    result = run_cli(["ablate", "--grid", str(path)], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    parent_id = parent_of(tracking_env["MLFLOW_EXPERIMENT_NAME"]).info.run_id
    # the full-data run: the same recipe on every training review, tested on the whole test split
    result = run_cli(
        [
            "train",
            "--data",
            str(reviews_csv),
            "--model",
            tiny_model,
            *TINY_TRAIN,
            "--epochs",
            "2",
            "--seed",
            "1",
            "--split-seed",
            "0",
            "--run-name",
            "all-reviews",
        ],
        tracking_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    full_id = re.search(r"run id:\s+(\w+)", result.stdout).group(1)

    out = tmp_path / "curve.md"
    result = run_cli(["report", "--run", parent_id, "--with-run", full_id, "--output", str(out)], tracking_env)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    # the extra run is scored on exactly the grid's 30 test reviews, not its whole test split
    child = next(
        c
        for c in children_of(parent_id, tracking_env["MLFLOW_EXPERIMENT_NAME"])
        if c.data.tags["sentiment.variant"] == "baseline"
    )
    ids = _predictions(child.info.run_id)["id"]
    full = _predictions(full_id).set_index("id").loc[ids]
    assert len(_predictions(full_id)) > len(ids) == 30
    accuracy = float((full["label"] == full["prediction"]).mean())
    low, high = evaluate.bootstrap_accuracy_ci((full["label"] == full["prediction"]).to_numpy().astype(float), seed=0)
    row = next(line for line in text.splitlines() if line.startswith(f"| all-reviews (`{full_id}`)"))
    assert f"{100 * accuracy:.2f}% [{100 * low:.2f}%, {100 * high:.2f}%]" in row
    # a child tested on exactly these reviews carries the interval it logged, in every table (one run, one interval)
    m = child.data.metrics
    logged = f"[{100 * m['test/accuracy_ci_low']:.2f}%, {100 * m['test/accuracy_ci_high']:.2f}%]"
    rows = [line for line in text.splitlines() if child.info.run_id in line and "%" in line]
    assert len(rows) >= 2 and all(logged in line for line in rows), rows
    assert "every point is scored on the same 30 test reviews" in text and "curve_learning_curve.png" in text
    assert (tmp_path / "curve_figures" / "curve_learning_curve.png").is_file()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "pass at least one --run"),
        (["--run", "0" * 32], "does not exist"),
        (["--run", "RUN", "--format", "pdf"], "Invalid value for '--format'"),
    ],
)
def test_bad_report_input_is_one_line(tracking_env, args, fragment):
    # The test's own experiment exists first; otherwise `sentiment report` creates it and MLflow
    # says so on stderr, a second line that is not ours.
    mlflow.set_experiment(tracking_env["MLFLOW_EXPERIMENT_NAME"])
    with mlflow.start_run() as run:
        pass
    args = [a.replace("RUN", run.info.run_id) for a in args]
    result = run_cli(["report", *args], tracking_env)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_report_refuses_runs_it_cannot_describe(tracking_env, tiny_model, reviews_csv):
    with mlflow.start_run() as run:
        pass
    result = run_cli(["report", "--run", run.info.run_id], tracking_env)
    assert result.returncode == 2 and "is neither an ablation or tune parent nor a train/evaluate run" in result.stderr
    with mlflow.start_run(tags={"sentiment.kind": "train"}) as train_run:
        pass
    result = run_cli(["report", "--run", train_run.info.run_id, "--with-run", train_run.info.run_id], tracking_env)
    assert result.returncode == 2 and "--with-run adds points to a learning curve" in result.stderr


@pytest.mark.parametrize(
    ("seed_deltas", "word", "interval"),
    [
        # -2, -0.5, -0.25 points: the bootstrap excludes 0, the wider Student-t interval does not
        ({42: -40, 43: -10, 44: -5}, "not confirmed", "95% Student-t interval over 3 seeds"),
        ({42: 20, 43: 30, 44: 40}, "contradicted", "95% Student-t interval over 3 seeds"),
        ({42: -46}, "confirmed", "95% bootstrap interval over the test reviews"),
    ],
)
def test_verdicts_rest_on_the_wider_interval_and_name_the_published_setup(seed_deltas, word, interval):
    from dataclasses import replace

    from sentiment.report.ablation import _summary_table, _verdict_rules, _verdicts
    from sentiment.stats import verdict
    from tests.ablate.test_summary import _summary

    summary, tables = _summary(seed_deltas)
    grid = replace(summary.grid, published_setup="DistilBERT, 512 tokens, one seed, validation accuracy")
    row = summary.table.set_index("variant").loc["freeze_2"]
    (line,) = _verdicts(summary.table, grid, tables)
    assert line.startswith(
        "`freeze_2` (freeze_layers=2): published -2.34 points vs `baseline` (DistilBERT, 512 tokens, one seed, "
        "validation accuracy); "
    )
    assert f": {word}, " in line and interval in line
    assert verdict(0.8923 - 0.9157, row["verdict_low"], row["verdict_high"]).word == word
    if len(seed_deltas) == 1:
        assert "no seed-level interval, the verdict rests on the bootstrap alone" in line
    else:
        bootstrap = verdict(0.8923 - 0.9157, row["delta_test_accuracy_low"], row["delta_test_accuracy_high"]).word
        assert row["verdict_interval"] == "seeds" and (bootstrap == "confirmed") == (word == "not confirmed")
    assert "Confirmed: the interval excludes 0 in the published direction" in _verdict_rules(grid)
    assert "measured as DistilBERT, 512 tokens, one seed, validation accuracy" in _verdict_rules(grid)
    assert "review-level evidence only" in _verdict_rules(grid)

    table = _summary_table(summary.table, grid).set_index("variant")
    assert {
        "McNemar p (Holm, review-level)",
        "published (DistilBERT, 512 tokens, one seed, validation accuracy)",
    } <= set(table.columns)
    cell = table.loc["freeze_2", "[95% Student-t CI over seeds]"]
    assert cell == (
        "n/a (1 seed)"
        if len(seed_deltas) == 1
        else f"[{_points(row['seed_ci_low'])}, {_points(row['seed_ci_high'])}] over 3 seeds"
    )
    assert (
        table.loc["freeze_2", "published Δ vs reference, points"] == "-2.34"
        and table.loc["baseline", "published Δ vs reference, points"] == ""
    )
    assert "published (setup not stated)" in _summary_table(summary.table, replace(grid, published_setup="")).columns


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest

    from sentiment.report import wilson_interval

    for k, n in ((860, 1000), (3, 10), (499, 500)):
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        low, high = wilson_interval(k / n, n)
        assert low == pytest.approx(expected.low, abs=1e-4) and high == pytest.approx(expected.high, abs=1e-4)
