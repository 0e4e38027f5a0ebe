"""A real-data check in CI: the cpu preset's recipe on a few hundred REAL IMDB reviews, tested on
1,000 real test reviews, must clear an accuracy floor. Skipped, with the reason, where the shared
copy of the dataset is absent (the product never needs it: users pass --data imdb or a file)."""

from __future__ import annotations

import mlflow
import pytest

from tests.conftest import REPO, run_cli

REAL_DATA = REPO.parent / "shared" / "data" / "imdb_reviews.parquet"
# Measured: 0.787 on these 1,000 test reviews after training on these 400 (this test on this
# project's 2-core machine, bf16 native); the floor leaves 3.7 points for other CPUs' bf16/fp32
# rounding and library versions, and still fails a pipeline that learnt little (chance is 0.5).
ACCURACY_FLOOR = 0.75

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not REAL_DATA.is_file(), reason=f"real IMDB reviews not found at {REAL_DATA} (the shared data folder is absent)"
    ),
]


# the cpu recipe on real reviews (minutes); the recipe's code paths run in make test on the tiny model
@pytest.mark.extended
def test_cpu_recipe_on_real_reviews_clears_the_floor(tracking_env):
    result = run_cli(
        [
            "train",
            "--preset",
            "cpu",
            "--data",
            str(REAL_DATA),
            "--train-size",
            "400",
            "--val-size",
            "200",
            "--test-size",
            "1000",
            "--split-seed",
            "0",
            "--max-length",
            "128",
            "--epochs",
            "2",
            "--run-name",
            "real-data-floor",
        ],
        tracking_env,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = mlflow.search_runs(experiment_names=[tracking_env["MLFLOW_EXPERIMENT_NAME"]], output_format="list")[0]
    metrics = run.data.metrics
    assert run.data.params["model.name"] == "offline-minilm" and run.data.params["data.source"] == str(REAL_DATA)
    assert (
        run.data.params["data.train_reviews"] == "400"
        and run.data.params["data.test_reviews"] == "1000"
        and metrics["test/examples"] == 1000
    )
    assert metrics["test/accuracy"] >= ACCURACY_FLOOR, metrics["test/accuracy"]
    assert metrics["test/accuracy_ci_low"] < metrics["test/accuracy"] < metrics["test/accuracy_ci_high"]
