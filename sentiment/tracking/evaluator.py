"""`mlflow.models.evaluate(..., evaluators="sentiment")`: MLflow's own classifier evaluation of a
sentiment model in one call, registered as an MLflow evaluator plugin (entry point
``mlflow.model_evaluator``, pyproject.toml).

MLflow's built-in classifier evaluator takes a model's whole output as the predicted class and
reads probabilities only from scikit-learn-style models. A sentiment model answers with three
columns (label, score, probability), so this evaluator is MLflow's classifier evaluator with one
step changed: the predicted classes are the model's labels written the way the targets are
(``negative``/``positive``, or 0/1 as IMDB stores them), and the class probabilities are
``1 - probability`` and ``probability``. Everything else is MLflow's: accuracy, precision,
recall, F1, log loss, ROC AUC, precision-recall AUC, the confusion matrix and the ROC,
precision-recall, calibration and lift curves; it adds the expected calibration error and the
Brier score of the model as served (the run's ``test/ece_calibrated`` and ``test/brier_calibrated``).

    mlflow.models.evaluate("models:/imdb-sentiment@champion", data, targets="label",
                           model_type="classifier", evaluators="sentiment")

For any other model it steps aside (MLflow runs every registered evaluator when ``evaluators`` is
not given), so installing this package changes no other model's evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.evaluation.default_evaluator import _get_aggregate_metrics_values
from mlflow.models.evaluation.evaluators.classifier import ClassifierEvaluator
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from sentiment.tracking.serving import PROBABILITY_SCORES, SentimentPyfunc, _import

LABELS = ("negative", "positive")


class SentimentEvaluator(ClassifierEvaluator):
    name = "sentiment"

    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type == "classifier"

    def _evaluate(self, model, extra_metrics, custom_artifacts=None, **kwargs):
        if model is None or not is_sentiment_model(model):
            return None  # not ours: MLflow's own evaluators handle it
        return super()._evaluate(model, extra_metrics, custom_artifacts, **kwargs)

    def _generate_model_predictions(self, model, input_df):
        answer = model.predict(input_df)
        probability = answer["probability"].to_numpy(dtype=np.float64)
        positive = probability > 0.5
        self.y_true = _targets(self.y_true)
        y_pred = _like(positive, self.y_true)
        self._served_probability = probability
        return y_pred, np.column_stack([1 - probability, probability])  # columns in sorted label order

    def _compute_builtin_metrics(self, model):
        super()._compute_builtin_metrics(model)
        positive = (np.asarray(self.y_true) == self.pos_label).astype(int)
        scores = _import(PROBABILITY_SCORES)(positive, self._served_probability)
        served = {"expected_calibration_error": scores["ece"], "brier_score": scores["brier"]}
        self.metrics_values.update(_get_aggregate_metrics_values(served))


def is_sentiment_model(model) -> bool:
    """A pyfunc model whose Python model is the sentiment pyfunc (any family)."""
    try:
        return isinstance(model.unwrap_python_model(), SentimentPyfunc)
    except Exception:
        return False


def _targets(values) -> np.ndarray:
    """The targets as given, checked: two classes, written as negative/positive or 0/1."""
    values = np.asarray(values)
    as_text = set(pd.Series(values).astype(str).str.lower())
    if as_text <= set(LABELS):
        return np.char.lower(values.astype(str))
    if as_text <= {"0", "1", "true", "false", "0.0", "1.0"}:
        return np.isin(pd.Series(values).astype(str).str.lower(), ("1", "true", "1.0")).astype(int)
    raise MlflowException(
        f"the targets hold {sorted(as_text)[:5]}; the sentiment evaluator takes labels negative/positive or 0/1",
        error_code=INVALID_PARAMETER_VALUE,
    )


def _like(positive: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Predicted classes written as the targets are."""
    if targets.dtype.kind in "US":
        return np.where(positive, LABELS[1], LABELS[0])
    return positive.astype(int)
