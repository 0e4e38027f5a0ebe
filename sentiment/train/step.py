"""One optimizer step, readable in one screen: forward and backward (in micro-batches when
asked, or when CUDA runs out of memory), unscale, clip, step, schedule, zero; and the epoch's
running sums it feeds (`Sums`). The loop (loop.py) walks the batches and logs; nothing here logs.

    step = optimizer_step(parts, batch, max_grad_norm=1.0, scale=1 / len(batch["labels"]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sentiment.errors import TrainingError


@dataclass
class Sums:
    """The epoch's running sums, kept on the device (reading a value each step would be a
    host-device sync point): summed loss, correct predictions, the loss since the last logged
    point, and whether a gradient was ever non-finite."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    window_loss: torch.Tensor
    nonfinite: torch.Tensor

    @classmethod
    def of(cls, progress, device) -> "Sums":
        """From a `loop.Progress` (its sums so far: a resumed epoch continues them)."""

        def tensor(value):
            return torch.tensor(value, device=device, dtype=torch.float64)

        nonfinite = torch.zeros((), device=device, dtype=torch.bool)
        return cls(tensor(progress.loss_sum), tensor(progress.correct), tensor(progress.window_loss), nonfinite)

    def add(self, step: "StepResult", batch_reviews: int) -> None:
        self.loss_sum += step.loss_sum
        self.window_loss += step.loss_sum / batch_reviews
        self.correct += step.correct


@dataclass(frozen=True)
class StepResult:
    loss_sum: torch.Tensor  # summed cross-entropy of this rank's reviews (detached)
    correct: torch.Tensor
    grad_norm: torch.Tensor
    shrunk_micro_batch: bool  # CUDA ran out of memory and the micro-batch was halved


def optimizer_step(parts, batch: dict, max_grad_norm: float, scale: float) -> StepResult:
    """One optimizer step: forward and backward (in micro-batches if needed), unscale, clip,
    step, schedule, zero the gradients.

    The backward loss is ``scale`` times the summed example losses (1/batch in one process, so
    the mean). ``parts`` is the loop's `Parts` (model, optimizer, scheduler, scaler, runtime,
    micro-batch size). On CUDA out-of-memory the step is retried with half the micro-batch and gradient
    accumulation, so the effective batch size (and the result) stay the same.
    """
    shrunk = False
    while True:
        try:
            loss, correct = _forward_backward(parts, batch, scale)
            break
        except torch.OutOfMemoryError:
            parts.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            size = batch["labels"].shape[0] if not parts.micro_batch_size else parts.micro_batch_size
            if size <= 1:
                raise TrainingError(
                    "CUDA out of memory even with micro-batch 1; lower --max-length or use a smaller model"
                ) from None
            parts.micro_batch_size, shrunk = size // 2, True
    parts.scaler.unscale_(parts.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), max_grad_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, correct, grad_norm, shrunk)


def _forward_backward(parts, batch: dict, scale: float):
    n = batch["labels"].shape[0]
    size = parts.micro_batch_size or n
    loss_total = torch.zeros((), device=parts.device, dtype=torch.float64)
    correct = torch.zeros((), device=parts.device, dtype=torch.float64)
    for start in range(0, n, size):
        chunk = {k: v[start : start + size] for k, v in batch.items()}
        width = int(chunk["attention_mask"].sum(1).max()) if size < n else chunk["input_ids"].shape[1]
        with parts.runtime.precision.autocast(parts.device):
            logits = parts.model(
                input_ids=chunk["input_ids"][:, :width], attention_mask=chunk["attention_mask"][:, :width]
            ).logits
        # summed per chunk: micro-batches and ranks add up to the mean over the global batch
        loss = F.cross_entropy(logits.float(), chunk["labels"], reduction="sum")
        parts.scaler.scale(loss * scale).backward()
        loss_total += loss.detach()
        correct += (logits.argmax(-1) == chunk["labels"]).sum()
    return loss_total, correct
