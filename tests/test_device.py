"""Unit tests for sentiment.device: device, precision and the runtime picked once."""

from __future__ import annotations

import pytest
import torch

from sentiment.config import TrainConfig
from sentiment.device import cpu_has_native_bf16, device_tags, pick_device, pick_precision, pick_runtime
from sentiment.distributed import Dist
from sentiment.errors import UserError


@pytest.mark.parametrize("requested", ["auto", "fp32"])
def test_pick_precision_defaults_to_fp32_on_cpu(requested):
    precision = pick_precision(requested, torch.device("cpu"))
    assert precision.name == "fp32"
    assert precision.dtype is None
    with precision.autocast(torch.device("cpu")):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32


def test_bf16_on_cpu_autocasts_matmuls_and_is_tagged():
    cpu = torch.device("cpu")
    precision = pick_precision("bf16", cpu)
    assert precision.name == "bf16"
    with precision.autocast(cpu):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.bfloat16
    tags = device_tags(cpu, precision)
    assert tags["sentiment.precision"] == "bf16" and tags["sentiment.cpu_native_bf16"] in ("true", "false")
    # on CPU the tag is there whatever the precision: it says what `native` would pick
    assert (
        device_tags(cpu, pick_precision("auto", cpu))["sentiment.cpu_native_bf16"] == tags["sentiment.cpu_native_bf16"]
    )


def test_native_precision_is_bf16_exactly_where_the_cpu_runs_it_natively():
    cpu = torch.device("cpu")
    precision = pick_precision("native", cpu)
    assert precision.name == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert device_tags(cpu, precision)["sentiment.cpu_native_bf16"] == str(cpu_has_native_bf16()).lower()


def test_fp16_on_cpu_is_refused():
    with pytest.raises(
        UserError, match="precision fp16 needs a CUDA GPU and the device is cpu; use --precision bf16 or fp32"
    ):
        pick_precision("fp16", torch.device("cpu"))


def test_pick_device_cpu_and_auto():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_pick_device_cuda_without_gpu():
    with pytest.raises(UserError, match="no CUDA GPU"):
        pick_device("cuda")


def test_runtime_is_picked_once_from_the_train_config():
    runtime = pick_runtime(TrainConfig(device="cpu", precision="bf16"))
    assert runtime.device == torch.device("cpu") and runtime.precision.name == "bf16"
    assert runtime.dist == Dist() and runtime.tags() == device_tags(runtime.device, runtime.precision)
