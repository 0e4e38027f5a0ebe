"""Where and how a process computes: its device, its autocast precision, its place in a job.

Picked once per stage (`pick_runtime`) and passed down, so the model, the loop, validation and
testing never disagree about it.

    python -c "from sentiment.device import pick_runtime; from sentiment.config import TrainConfig; \
print(pick_runtime(TrainConfig()))"
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from sentiment.distributed import Dist
from sentiment.errors import UserError


def pick_device(requested: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; `cuda` without a GPU is a user error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA GPU is visible; use --device auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass(frozen=True)
class Precision:
    name: str  # fp32, bf16 or fp16
    dtype: torch.dtype | None  # autocast dtype, None for fp32

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return torch.autocast(device_type=device.type, enabled=False)
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def pick_precision(requested: str, device: torch.device) -> Precision:
    """On CUDA: ``auto`` is bf16 where the GPU supports it, else fp16 (with a grad scaler).
    On CPU: ``auto`` is fp32, so numbers compare across machines; ``bf16`` autocasts matmuls to
    bfloat16 (fast on CPUs with AVX512-BF16 or AMX); ``native`` is bf16 where the CPU runs it
    natively and fp32 elsewhere (on CUDA it is ``auto``); fp16 needs a GPU."""
    if requested == "native":
        if device.type == "cuda":
            requested = "auto"
        else:
            requested = "bf16" if cpu_has_native_bf16() else "fp32"
    if requested == "fp32" or (device.type != "cuda" and requested == "auto"):
        return Precision("fp32", None)
    if device.type != "cuda":
        if requested == "fp16":
            raise UserError(
                f"precision fp16 needs a CUDA GPU and the device is {device.type}; use --precision bf16 or fp32"
            )
        return Precision("bf16", torch.bfloat16)
    if requested == "auto":
        requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Precision(requested, torch.bfloat16 if requested == "bf16" else torch.float16)


def cpu_has_native_bf16() -> bool:
    """Does this CPU run bf16 matmuls natively (AVX512-BF16 or AMX), i.e. faster than fp32?"""
    with contextlib.suppress(Exception):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def device_tags(device: torch.device, precision: Precision) -> dict[str, str]:
    from sentiment.tracking import keys  # late: importing the tracking package loads mlflow; importing device does not

    tags = {
        keys.DEVICE: device.type,
        keys.PRECISION: precision.name,
        keys.TORCH_VERSION: torch.__version__,
    }
    if device.type == "cuda":
        tags[keys.GPU_NAME] = torch.cuda.get_device_name(device)
        tags[keys.CUDA_VERSION] = str(torch.version.cuda)
    else:
        tags[keys.CPU_NATIVE_BF16] = str(cpu_has_native_bf16()).lower()
    return tags


@dataclass(frozen=True)
class Runtime:
    """The device and precision this process computes with, and its place in a distributed job."""

    device: torch.device
    precision: Precision
    dist: Dist = field(default_factory=Dist)

    def tags(self) -> dict[str, str]:
        """``sentiment.device``, ``sentiment.precision`` and the versions: what a run records."""
        return device_tags(self.device, self.precision)


def pick_runtime(train, dist: Dist | None = None) -> Runtime:
    """The runtime for ``train.device`` and ``train.precision`` (a TrainConfig); under torchrun
    each rank gets its own GPU (the launcher's LOCAL_RANK)."""
    dist = dist or Dist()
    device = dist.device(pick_device(train.device))
    return Runtime(device, pick_precision(train.precision, device), dist)
