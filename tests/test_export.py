"""`sentiment export`: an int8 sibling of a registered version, registered under the same name,
loaded and served through the same pyfunc, carrying its measured delta and speed-up (a real
server, a real tiny model trained and registered first)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import TINY_TRAIN, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.extended
def test_int8_sibling_is_registered_loads_and_carries_its_measurements(tracking_env, tiny_model, reviews_csv, tmp_path):
    trained = run_cli(
        ["train", "--model", tiny_model, "--data", str(reviews_csv), *TINY_TRAIN, "--register-as", "exported"],
        tracking_env,
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    result = run_cli(
        ["export", "--name", "exported", "--version", "1", "--promote-if", "never"], tracking_env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "registered exported v2 (int8-per-channel of v1)" in result.stdout, result.stdout

    client = MlflowClient()
    version = client.get_model_version("exported", "2")
    assert (
        version.tags["sentiment.parent_version"] == "1" and version.tags["sentiment.quantization"] == "int8-per-channel"
    )
    assert client.get_model_version_by_alias("exported", "champion").version == "1"  # rule never
    run = mlflow.get_run(version.run_id)
    metrics = run.data.metrics
    assert (
        run.data.tags["sentiment.kind"] == "export" and metrics["export/reviews"] == 48.0
    )  # the parent's test reviews
    assert metrics["export/delta_low"] <= metrics["export/delta"] <= metrics["export/delta_high"]
    assert metrics["export/speedup"] > 0 and float(version.tags["export.speedup"]) == pytest.approx(
        metrics["export/speedup"], rel=1e-5
    )
    from sentiment.device import cpu_has_native_bf16

    # on a CPU with native bf16 the parent is also timed with bf16 autocast (the other fast option)
    assert ("export/parent_bf16_reviews_per_s" in metrics) == cpu_has_native_bf16()
    if cpu_has_native_bf16():
        assert metrics["export/speedup_vs_bf16"] == pytest.approx(
            metrics["export/reviews_per_s"] / metrics["export/parent_bf16_reviews_per_s"]
        )
        assert "the parent with bf16 autocast" in result.stdout

    # the same reviews as the parent's own test table, and accuracies computed from those tables
    parent_run = client.get_model_version("exported", "1").run_id
    parent_table = pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{parent_run}/predictions/test.parquet"))
    table = pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{version.run_id}/predictions/test.parquet"))
    assert sorted(table["id"]) == sorted(parent_table["id"])
    assert metrics["export/accuracy"] == pytest.approx((table["label"] == table["prediction"]).mean())
    assert metrics["export/parent_accuracy"] == pytest.approx(
        (parent_table["label"] == parent_table["prediction"]).mean()
    )

    # loads through the registry as an int8 model, same interface, answers close to the parent's
    sibling = mlflow.pyfunc.load_model("models:/exported/2")
    parent = mlflow.pyfunc.load_model("models:/exported/1")
    texts = parent_table["text"].head(20).tolist()
    ours, theirs = sibling.predict(texts), parent.predict(texts)
    assert list(ours.columns) == ["label", "score", "probability"]
    assert np.abs(ours["probability"] - theirs["probability"]).max() < 0.1


@pytest.mark.parametrize("kind", ["int8", "int8-per-channel"])
def test_quantized_package_loads_quantized(trained_in_memory, tmp_path, kind):
    import shutil

    import torch

    from sentiment import model as model_mod

    package = tmp_path / "pkg"
    shutil.copytree(trained_in_memory["package"], package)
    model_mod.mark_quantized(package, kind)
    model = model_mod.load_trained(package)
    linears = [m for m in model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    scheme = torch.per_channel_affine if kind == "int8-per-channel" else torch.per_tensor_affine
    assert linears and all(m.weight().qscheme() == scheme for m in linears)
    plain = model_mod.load_trained(trained_in_memory["package"])
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in plain.modules())
