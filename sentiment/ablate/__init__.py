"""Ablation grids: one parent run, one child run per variant and seed, compared side by side.

- grid.py       the grid language: load and validate experiments/*.yaml into variants and children
- execution.py  `run_ablation`: run the children (in process, subprocesses or a Projects backend)
- summary.py    read the children back, compare each variant with its reference, log the summary

    sentiment ablate --grid experiments/quick.yaml
"""

from sentiment.ablate.execution import Execution, check_children, check_resumable, run_ablation
from sentiment.ablate.grid import BASELINE, Child, Grid, Variant, load_grid
from sentiment.ablate.summary import Summary, format_summary, summarise, with_seed_columns
from sentiment.stats import Paired, compare, holm, macro_f1, mcnemar

__all__ = [
    "BASELINE",
    "Child",
    "Execution",
    "Grid",
    "Paired",
    "Summary",
    "Variant",
    "check_children",
    "check_resumable",
    "compare",
    "format_summary",
    "holm",
    "load_grid",
    "macro_f1",
    "mcnemar",
    "run_ablation",
    "summarise",
    "with_seed_columns",
]
