"""torch.distributed for `torchrun` / `accelerate launch`: ranks, reductions, failures. Only
rank 0 talks to MLflow; the CLI gives the other ranks a `tracking.NullTracker`.

    torchrun --nproc_per_node 2 -m sentiment train --preset quick
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from sentiment.errors import TrainingError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per rank (the launcher's LOCAL_RANK); CPU ranks share the CPU."""
        if requested.type == "cuda" and self.enabled:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return requested

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum numbers over ranks (float64 on the process group's device)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def launcher_name() -> str:
    if any(k.startswith("ACCELERATE_") for k in os.environ):
        return "accelerate"
    if "TORCHELASTIC_RUN_ID" in os.environ or "TORCHELASTIC_RESTART_COUNT" in os.environ:
        return "torchrun"
    return "env"


def init() -> Dist:
    """Join the process group when launched with WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # A rank that dies must not leave the others waiting forever in a collective.
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    return Dist(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        launcher=launcher_name(),
    )


@contextlib.contextmanager
def rank_failures(dist: Dist):
    """A collective that fails because another rank died becomes one clear TrainingError."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed.DistError and gloo/NCCL failures are RuntimeErrors
        if not dist.enabled:
            raise
        reason = " ".join(str(exc).split())[:200]
        raise TrainingError(
            f"rank {dist.rank} of {dist.world_size}: another rank of the distributed job failed or left ({reason}); "
            "the whole job stops, see that rank's output"
        ) from None


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
