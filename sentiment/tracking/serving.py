"""The served model: a models-from-code pyfunc that takes review texts and returns a label
(`negative`/`positive`) with its probability, and how it is logged.

    mlflow models serve -m models:/imdb-sentiment@champion --env-manager local --port 5001
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from pathlib import Path

import mlflow
import pandas as pd

from sentiment.tracking.tracker import LoggedModelRef

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the `sentiment` package, shipped with every model
MODEL_ARTIFACT = "hf_model"  # the folder inside a logged model that holds weights + tokenizer
# What the served model predicts with: a stage function (folder -> texts -> P(positive)), named
# here as text and imported when a model loads (like a console-script entry point), so this
# package imports no stage module.
CLASSIFIER = "sentiment.evaluate:load_classifier"
# The same entry file for every model, before and after the tracking package was split: an
# older model's copy of it loads with this package too.
_SERVING_ENTRY = '''"""Models-from-code entry point of a sentiment model (written by sentiment.tracking)."""
import mlflow

from sentiment.tracking import SentimentPyfunc

mlflow.models.set_model(SentimentPyfunc())
'''
INPUT_EXAMPLE = ["A moving, beautifully acted film.", "Two hours I will never get back."]

# MLflow suggests type hints on predict; our explicit signature already validates inputs.
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")


class SentimentPyfunc(mlflow.pyfunc.PythonModel):
    """The served model: texts in, a label (`negative`/`positive`) and its probability out.

    Loads on CPU unless ``SENTIMENT_DEVICE=cuda``; rejects non-string or empty texts with a
    clear error; truncates over-long texts to the training max length.
    """

    def load_context(self, context) -> None:
        module, name = CLASSIFIER.split(":")
        load_classifier = getattr(importlib.import_module(module), name)
        self.classify = load_classifier(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # (the logged signature validates inputs; this hint only tells MLflow not to infer one)
        probability = self.classify(_texts_of(model_input))
        positive = probability >= 0.5
        return pd.DataFrame(
            {
                "label": ["positive" if p else "negative" for p in positive],
                "score": [float(p if pos else 1 - p) for p, pos in zip(probability, positive)],
            }
        )


def _texts_of(model_input) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        values = model_input[column].tolist()
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        values = list(model_input)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"input {i} is {type(value).__name__}, not a string: send a list of review texts")
        if not value.strip():
            raise ValueError(f"input {i} is an empty text: send non-empty review texts")
    return values


def log_pyfunc_model(folder: Path, name: str, step: int, tmp: Path) -> LoggedModelRef:
    """Log a packaged model folder (weights, tokenizer, sentiment_config.yaml) to the active run
    as a servable pyfunc LoggedModel, with the package's code, a signature and an input example."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    entry = tmp / "sentiment_pyfunc.py"
    entry.write_text(_SERVING_ENTRY)
    signature = ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
    )
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(entry),
        artifacts={MODEL_ARTIFACT: str(folder)},
        code_paths=[str(PACKAGE_DIR)],
        signature=signature,
        input_example=INPUT_EXAMPLE,
        pip_requirements=_pip_requirements(),
        step=step,
    )
    return LoggedModelRef(model_id=info.model_id, model_uri=info.model_uri)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    names = ("torch", "transformers", "mlflow", "pandas", "numpy", "scikit-learn", "pyyaml", "tqdm", "click", "matplotlib", "safetensors")
    out = []
    for name in names:
        with contextlib.suppress(Exception):
            out.append(f"{name}=={version(name).split('+')[0]}")
    return out
