"""Fine-tune a classifier: the train stage and its parts.

- stage.py       `run_train`: prepare -> fit -> publish (what `sentiment train` runs in its run)
- loop.py        `fit`: the epochs, validation through the one prediction path, the best epoch
- step.py        `optimizer_step`: one step in one screen (forward, backward, clip, step, schedule)
- publish.py     what every family publishes once its model is logged (test, calibration, registry, card)
- baseline.py    `run_baseline`: the classical baselines' fit -> calibrate_and_test -> publish
- combine.py     `plan_combine` / `run_combine`: trained runs combined into one model (`sentiment combine`)
- request.py     `TrainRequest`: what a run is asked beyond its config (workdir, resume, registry, hooks)
- checkpoint.py  the resumable state, atomic model saves, the stop signal

    sentiment train --preset quick
"""

from sentiment.train.baseline import run_baseline
from sentiment.train.checkpoint import Checkpointer, StopOnSignal, load_resume_state, save_model
from sentiment.train.loop import EpochResult, History, Hooks, fit, setup
from sentiment.train.publish import TrainOutcome
from sentiment.train.request import TrainRequest
from sentiment.train.stage import Prepared, TrainInputs, check_inputs, package_model, prepare, publish, run_train

__all__ = [
    "Checkpointer",
    "EpochResult",
    "History",
    "Hooks",
    "Prepared",
    "StopOnSignal",
    "TrainInputs",
    "TrainOutcome",
    "TrainRequest",
    "check_inputs",
    "fit",
    "load_resume_state",
    "package_model",
    "prepare",
    "publish",
    "run_baseline",
    "run_train",
    "save_model",
    "setup",
]
