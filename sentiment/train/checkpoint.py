"""Resumable training state: writing it atomically (and uploading it to the run), reading it back
on `--resume`, the random-number-generator states it carries, and the stop signal that saves one.

    sentiment train --resume RUN_ID
"""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import torch

from sentiment.errors import Interrupted, UserError

STATE_FILE = "state.pt"


class Checkpointer:
    """Writes the training state atomically to ``folder/state.pt`` and uploads it to the run's
    ``checkpoints/`` (with the best epoch's model), so `--resume` works from any machine."""

    def __init__(self, folder: Path, tracker, upload: bool = True) -> None:
        self.folder = folder
        self.tracker = tracker
        self.upload = upload  # False: the state stays on local disk (e.g. ablation children)
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, state: dict, upload: bool) -> Path:
        # Everything logged so far reaches the server before the state that follows it exists.
        self.tracker.flush()
        path = self.folder / STATE_FILE
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a crash leaves the previous state whole
        if upload and self.upload:
            self.tracker.log_artifact(path, "checkpoints")
        return path

    def upload_best(self, best_dir: Path) -> None:
        if self.upload:
            self.tracker.log_artifact(best_dir, f"checkpoints/{best_dir.name}")

    @staticmethod
    def load(path: Path) -> dict:
        # weights_only: a checkpoint is data, never code
        return torch.load(path, map_location="cpu", weights_only=True)


def load_resume_state(run_id: str, workdir: Path, uploaded: bool = True) -> dict:
    """The latest training state of a run: the local copy if there is one, else the uploaded one.

    Raises:
        UserError: the state is nowhere to be found, or the best model checkpoint is missing.
    """
    from sentiment import tracking

    path = workdir / STATE_FILE
    if not path.is_file() and not uploaded:
        raise UserError(
            f"run {run_id} kept its training state on local disk (upload_state false) and {path} does not exist; "
            "resume it on the machine that trained it, with the same --output-dir"
        )
    if not path.is_file():
        tracking.download_checkpoints(run_id, workdir)
    if not path.is_file():
        raise UserError(
            f"run {run_id} has no training checkpoint to resume from (no {STATE_FILE} locally or in its artifacts)"
        )
    state = Checkpointer.load(path)
    if not (workdir / "best").is_dir() and state["progress"]["epoch"] > 1:
        raise UserError(f"run {run_id} has a state but no best model checkpoint; it cannot be resumed")
    return state


def save_model(model: torch.nn.Module, folder: Path) -> None:
    """Write the model to ``folder`` atomically (temp folder + rename), as safetensors."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def rng_state() -> dict:
    """The Python, NumPy, torch (and CUDA) random states, as tensors and lists torch.save keeps."""
    numpy_state = np.random.get_state()
    rng = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict) -> None:
    random.setstate(_tuples(rng["python"]))
    numpy_state = rng["numpy"]
    np.random.set_state((numpy_state[0], numpy_state[1].numpy(), *numpy_state[2:]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _tuples(value):
    """torch.load gives lists back where random.setstate wants tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class StopOnSignal:
    """SIGINT/SIGTERM set a flag the loop checks after each step (it then saves and stops);
    a second signal stops at once."""

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self) -> int:
        return self.signum

    def install(self) -> "StopOnSignal":
        def handler(signum, frame):
            if self.signum:
                raise Interrupted(signum)
            self.signum = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
        return self
