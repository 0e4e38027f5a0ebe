"""Hyperparameter search on Optuna: one parent run (tag ``sentiment.kind=tune``), one child run
per trial (an ordinary train run, validation only), pruning after each epoch, resume, and
parallel trials sharing the study's storage.

- space.py      the search-space language: read and validate experiments/search/*.yaml
- study.py      Optuna: storage, sampler, pruner, the trial budget, recovery of killed trials
- trial.py      one trial: a child run through `run_train`, reporting each epoch to the pruner
- execution.py  `plan_tune` (before any run), `run_tune` (the parent's process), `join_study` (workers)
- summary.py    the parent at the end: trials table, counts, minutes, figures, best trial tested once

    sentiment tune --space experiments/search/cpu.yaml --trials 30
"""

from sentiment.tune.execution import TunePlan, join_study, plan_tune, run_tune
from sentiment.tune.space import Dimension, Space, load_space
from sentiment.tune.study import configure_logging
from sentiment.tune.summary import TuneResult, report_lines

__all__ = [
    "Dimension",
    "Space",
    "TunePlan",
    "TuneResult",
    "configure_logging",
    "join_study",
    "load_space",
    "plan_tune",
    "report_lines",
    "run_tune",
]
