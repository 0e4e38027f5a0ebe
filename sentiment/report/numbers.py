"""How the report writes numbers: percentages, points, mean ± std, and tolerant parsing."""

from __future__ import annotations

import math


def _pct(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _points(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.{digits}f}"


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return _pct(mean) if not math.isfinite(std) else f"{100 * mean:.2f} ± {100 * std:.2f}%"


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
