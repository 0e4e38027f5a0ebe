"""`TrainRequest`: what one training run is asked to do beyond its config, in one object.

Whoever runs a training run (`sentiment train`, a grid child, a search trial, the benchmark) builds
one and hands it to `run_train` with the config and the tracker:

    run_train(config, tracker, TrainRequest(workdir=Path(".sentiment/runs") / tracker.run_id))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sentiment import promote as promote_mod
from sentiment.distributed import Dist
from sentiment.preflight import TrainInputs


def _never_stop() -> int:
    return 0


@dataclass(frozen=True)
class TrainRequest:
    """Where a run writes, whether it continues, how it registers, and its caller's hooks.

    Attributes:
        workdir: local folder for checkpoints and the packaged model.
        resume: continue the tracker's run from its latest checkpoint (local, else downloaded).
        registry: ``--register-as`` with its promotion rule, or None.
        should_stop: polled between steps; non-zero stops cleanly (a signal, `StopOnSignal`).
        dist: this process's rank under torchrun (one process by default).
        inputs: what `check_inputs` found before the run opened (checked in the run when None).
        after_epoch: sees each epoch's result once logged (`Hooks.after_epoch`); an exception it
            raises ends training there (a pruned `sentiment tune` trial).
    """

    workdir: Path
    resume: bool = False
    registry: promote_mod.RegisterRequest | None = None
    should_stop: Callable[[], int] = _never_stop
    dist: Dist = field(default_factory=Dist)
    inputs: TrainInputs | None = None
    after_epoch: Callable | None = None
