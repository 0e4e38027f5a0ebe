"""The MLflow tag keys this project writes and reads, one name each: the tag keys the MLflow UI, the
reports (`sentiment report`, `sentiment evidence render`) and `sentiment evidence` read. They are wire
names: change one and old runs (on a server, in experiments/evidence/) no longer match.

    from sentiment.tracking import keys
    tracker.set_tags({keys.KIND: "train"})

Not here: the ``sentiment.promotion.*`` tags a promotion writes on its run, built from
``promote.Decision.tags()`` (the model version's ``promotion.*`` tags, prefixed).
"""

from __future__ import annotations

# Every run: what it is (train, evaluate, analyze, ablation, tune, export), why it failed, how to resume
# it (tracking/runs.py, side_runs.py); a logged model's retention reason (runs.py).
KIND = "sentiment.kind"
ERROR = "sentiment.error"
RESUME = "sentiment.resume"
RETENTION = "sentiment.retention"

# The runtime a run computed with (device.device_tags).
DEVICE = "sentiment.device"
PRECISION = "sentiment.precision"
TORCH_VERSION = "sentiment.torch_version"
GPU_NAME = "sentiment.gpu_name"
CUDA_VERSION = "sentiment.cuda_version"
CPU_NATIVE_BF16 = "sentiment.cpu_native_bf16"

# Evaluate and analyze runs (evaluate.py, analyze/stage.py; promote.py's side run): what they read.
SPLIT = "sentiment.split"
MODEL_URI = "sentiment.model_uri"
MODEL_RUN_ID = "sentiment.model_run_id"
PREDICTIONS_RUN_ID = "sentiment.predictions_run_id"
PARTS = "sentiment.parts"

# Training runs (train/stage.py, loop.py, baseline.py, combine.py).
ATTENTION = "sentiment.attention"
BASELINE = "sentiment.baseline"
FAMILY = "sentiment.family"
LAUNCHER = "sentiment.launcher"
WORLD_SIZE = "sentiment.world_size"
RESUMED_FROM_STEP = "sentiment.resumed_from_step"
MICRO_BATCH_SIZE = "sentiment.micro_batch_size"
FAILED_STEP = "sentiment.failed_step"
FAILURE = "sentiment.failure"
PRUNED_CHECKPOINTS = "sentiment.pruned_checkpoints"
STATE = "sentiment.state"

# Ablation grids (ablate/): the parent run, then each child's cell.
GRID = "sentiment.grid"
GRID_FILE = "sentiment.grid_file"
ABLATION_ATTEMPT = "sentiment.ablation_attempt"
ABLATION_DATA = "sentiment.ablation_data"
VARIANT = "sentiment.variant"
GROUP = "sentiment.group"
SEED = "sentiment.seed"

# Tune (tune/): the parent run's search, its best and tested trial.
TUNE_STUDY = "sentiment.tune.study"
TUNE_STORAGE = "sentiment.tune.storage"
TUNE_SPACE = "sentiment.tune.space"
TUNE_SPACE_FILE = "sentiment.tune.space_file"
TUNE_DATA = "sentiment.tune.data"
TUNE_ATTEMPT = "sentiment.tune.attempt"
TUNE_TRIALS = "sentiment.tune.trials"
TUNE_OBJECTIVE = "sentiment.tune.objective"
TUNE_BEST_TRIAL = "sentiment.tune.best_trial"
TUNE_BEST_RUN = "sentiment.tune.best_run"
TUNE_BASELINE_TRIAL = "sentiment.tune.baseline_trial"
TUNE_BASELINE = "sentiment.tune.baseline"
TUNE_TESTED_BASELINE = "sentiment.tune.tested_baseline"
TUNE_TESTED_TRIAL = "sentiment.tune.tested_trial"
TUNE_TESTED_MODEL = "sentiment.tune.tested_model"
TUNE_TESTED_MODEL_ID = "sentiment.tune.tested_model_id"
# Tune: each trial's child run (tune/trial.py, study.py).
TRIAL = "sentiment.trial"
TRIAL_STATE = "sentiment.trial_state"
TRIAL_STUDY = "sentiment.tune_study"
TRIAL_WORKER = "sentiment.tune_worker"
TRIAL_EPOCHS = "sentiment.trial_epochs"
PRUNED_EPOCH = "sentiment.pruned_epoch"

# Registry, promotion and export (tracking/registry.py, promote.py, export.py).
REGISTERED_MODEL = "sentiment.registered_model"
REGISTERED_VERSION = "sentiment.registered_version"
REGISTRATION_TOKEN = "sentiment.registration_token"  # one per registration: a retried creation finds its version
PROMOTION_FOR_RUN = "sentiment.promotion_for_run"
PARENT_VERSION = "sentiment.parent_version"
PARENT_RUN_ID = "sentiment.parent_run_id"
QUANTIZATION = "sentiment.quantization"

# Combined models (train/combine.py): the member runs, which `sentiment evidence add` copies too.
COMBINED_MEMBERS = "sentiment.combined.members"

# Evidence and benchmarks (benchmarks/record.py, report/results.py): a benchmark command's run.
BENCHMARK = "sentiment.benchmark"
COMMAND = "sentiment.command"
