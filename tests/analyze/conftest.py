"""A hand-made predictions table shared by the failure and attention tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# id, text, label, prediction, P(positive), tokens, truncated
ROWS = [
    ("r1", "a great film", 1, 1, 0.95, 10, False),
    ("r2", "not good at all", 0, 1, 0.90, 20, False),  # false positive, negation
    ("r3", "boring but the cast was fine", 0, 0, 0.20, 30, False),  # contrast
    ("r4", "I didn't hate it", 1, 0, 0.30, 40, False),  # false negative, negation (n't)
    ("r5", "wonderful", 1, 1, 0.80, 50, False),
    ("r6", "dull", 0, 0, 0.10, 60, False),
    ("r7", "loved it, however long", 1, 0, 0.45, 600, True),  # false negative, contrast, truncated
    ("r8", "terrible", 0, 0, 0.05, 70, False),
    ("r9", "superb", 1, 1, 0.99, 80, False),
    ("r10", "awful", 0, 0, 0.40, 700, True),
]


@pytest.fixture
def table() -> pd.DataFrame:
    frame = pd.DataFrame(ROWS, columns=["id", "text", "label", "prediction", "probability", "n_tokens", "truncated"])
    frame["confidence"] = np.maximum(frame["probability"], 1 - frame["probability"])
    p_true = np.where(frame["label"] == 1, frame["probability"], 1 - frame["probability"])
    frame["loss"] = -np.log(p_true)
    return frame
