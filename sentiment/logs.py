"""Quiet by default: a command prints its own lines and nothing else. MLflow's system-metrics,
experiment and "View run" lines, the Hugging Face libraries' info, warnings and progress bars,
and Python warnings from third-party code carry no action for the user; `-v` (INFO) / `-vv`
(DEBUG) or `SENTIMENT_LOG_LEVEL=INFO` bring them back. Set before MLflow, transformers or
datasets is imported (they read their levels then), and exported, so the processes a command
starts (ablation children, `mlflow run`) are as quiet or as verbose as it.

    SENTIMENT_LOG_LEVEL=INFO sentiment train --preset quick
"""

from __future__ import annotations

import logging
import os
import warnings

LEVEL_VARIABLE = "SENTIMENT_LOG_LEVEL"
# Read by the libraries at import time; a value the user set wins (setdefault).
QUIET_ENVIRONMENT = {
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # our start line says where to look
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "DATASETS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",  # else a warning at every fork (data loaders, children)
}
THIRD_PARTY = (
    "mlflow",
    "transformers",
    "huggingface_hub",
    "datasets",
    "urllib3",
    "alembic",
    "filelock",
    "fsspec",
    "httpx",
    "torch",
)


def level(verbosity: int = 0) -> int:
    """-v -> INFO, -vv -> DEBUG; else SENTIMENT_LOG_LEVEL (a name such as INFO), else WARNING."""
    if verbosity >= 2:
        return logging.DEBUG
    if verbosity == 1:
        return logging.INFO
    name = os.environ.get(LEVEL_VARIABLE, "WARNING").upper()
    value = logging.getLevelName(name)
    return value if isinstance(value, int) else logging.WARNING


def configure(verbosity: int = 0) -> int:
    """Set this process's (and its children's) logging for ``verbosity``; returns the level."""
    chosen = level(verbosity)
    name = logging.getLevelName(chosen)
    os.environ[LEVEL_VARIABLE] = name
    if chosen >= logging.WARNING:
        for variable, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(variable, value)
        warnings.simplefilter("ignore")  # third-party deprecation and advice; ours are errors
        library_level = logging.ERROR
    else:
        os.environ["MLFLOW_LOGGING_LEVEL"] = name
        os.environ["TRANSFORMERS_VERBOSITY"] = name.lower()
        logging.basicConfig(level=chosen, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        library_level = chosen
    for logger in THIRD_PARTY:
        logging.getLogger(logger).setLevel(library_level)
    return chosen
