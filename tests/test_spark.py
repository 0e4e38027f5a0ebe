"""The registered model as a Spark UDF: `mlflow.pyfunc.spark_udf` in local mode returns the same
label, score and probability per review as the pyfunc (a real server, a real tiny model trained
and registered first, a real local Spark with a Java runtime)."""

from __future__ import annotations

import os
import shutil
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY_TRAIN, run_cli, write_reviews

pytestmark = [pytest.mark.slow, pytest.mark.scale]
pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[test]'")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("no Java runtime for Spark: install a headless JRE 17+ (.ci/run installs one)", allow_module_level=True)


@pytest.fixture
def spark(monkeypatch):
    from pyspark.sql import SparkSession

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # the workers run this interpreter
    session = (
        SparkSession.builder.master("local[2]")
        .appName("sentiment-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")  # several batches per partition
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_udf_equals_the_pyfunc(tracking_env, tiny_model, reviews_csv, spark, tmp_path):
    trained = run_cli(
        ["train", "--model", tiny_model, "--data", str(reviews_csv), *TINY_TRAIN, "--register-as", "sparked"],
        tracking_env,
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    uri = "models:/sparked@champion"
    frame = pd.read_csv(write_reviews(tmp_path / "score.csv", n=300, seed=7)).reset_index(names="id")

    udf = mlflow.pyfunc.spark_udf(
        spark, uri, result_type="label string, score double, probability double", env_manager="local"
    )
    scored = spark.createDataFrame(frame[["id", "review"]]).repartition(3).withColumn("out", udf("review"))
    got = scored.select("id", "out.*").toPandas().sort_values("id").reset_index(drop=True)

    expected = mlflow.pyfunc.load_model(uri).predict(frame["review"].tolist())
    assert len(got) == 300 and got["id"].tolist() == list(range(300))
    assert (got["label"] == expected["label"]).all()
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-5, atol=1e-6)
    assert set(got["label"]) == {"positive", "negative"}
