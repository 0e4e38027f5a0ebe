"""Temperature scaling (Guo et al. 2017): one scalar T > 0 that divides a classifier's logits,
fitted to minimise the negative log-likelihood of a held-out split. T > 0 never changes which
class wins, so accuracy, F1 and ROC AUC stay as they were; only the confidence moves (T > 1
softens an over-confident model, T < 1 sharpens an under-confident one).

Binary models need only the logit margin z = z_positive - z_negative: softmax([z0, z1] / T)
gives P(positive) = sigmoid(z / T).

    python -c "import numpy as np; from sentiment.calibration import fit_temperature; \
print(fit_temperature(np.array([4.0, -3.0, 2.0, -1.0]), np.array([1, 0, 0, 1])))"
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# The range T is fitted in. A split the model separates perfectly has its NLL minimum at T -> 0
# (certainty), one it gets all wrong at T -> infinity (probabilities 1/2): the bounds keep such
# fits finite (the first usually stops earlier, once the NLL is flat at ~1e-12).
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0


def temperature_nll(logit: np.ndarray, label: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of 0/1 ``label`` under P(positive) = sigmoid(logit / T)."""
    z = torch.tensor(np.asarray(logit, dtype=np.float64)) / temperature
    y = torch.tensor(np.asarray(label, dtype=np.float64))
    return float(F.binary_cross_entropy_with_logits(z, y))


def fit_temperature(logit: np.ndarray, label: np.ndarray, max_iter: int = 200) -> float:
    """The temperature that minimises the NLL of ``label`` given ``logit``, by L-BFGS on log T.

    Args:
        logit: (N,) logit margins z1 - z0 of the model before any temperature (float).
        label: (N,) true classes, 0 or 1.
        max_iter: L-BFGS iterations (the problem is one-dimensional and convex in 1/T, so a
            few dozen suffice).
    Returns:
        T in [MIN_TEMPERATURE, MAX_TEMPERATURE]; 1.0 for an empty split or all-zero logits.
        Its NLL is never above the NLL at T = 1 (L-BFGS starts there and only accepts descent).
    """
    z = torch.tensor(np.asarray(logit, dtype=np.float64))  # (a copy: table columns may be read-only)
    y = torch.tensor(np.asarray(label, dtype=np.float64))
    if z.numel() == 0 or not bool(z.abs().max() > 0):
        return 1.0
    bounds = (math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = 1: the model as trained
    optimizer = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        # clamped: past a bound the gradient is zero and L-BFGS stops there
        loss = F.binary_cross_entropy_with_logits(z / log_t.clamp(*bounds).exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().clamp(*bounds).exp())
    if temperature_nll(logit, label, temperature) > temperature_nll(logit, label, 1.0):
        return 1.0  # (not seen; a guard that the fit never makes the model worse)
    return temperature
