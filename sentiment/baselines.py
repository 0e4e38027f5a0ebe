"""The classical baselines as model families: `tfidf-logreg` (TF-IDF of word 1-2-grams + logistic
regression) and `minilm-logreg` (the frozen `offline-minilm` encoder's mean-pooled embeddings +
logistic regression), each one scikit-learn Pipeline from review texts to P(positive).

They take the encoders' path wherever it applies (train/baseline.py): the same splits, the one
predictions table (`evaluate.baseline_table`), temperature scaling fitted on the validation
split, the served pyfunc (`evaluate.load_classifier` answers with `load_classifier` here), the
registry and promotion. The temperature T is folded into the logistic regression's weights
(w / T, b / T), so the pipeline's own ``predict_proba`` is the calibrated probability the served
model returns; ``baseline.json`` keeps T, from which the logit before scaling is recovered.

A package (the logged model's ``hf_model`` folder) holds ``pipeline.skops`` (skops format: loaded
with an explicit list of trusted types, never by unpickling arbitrary objects), ``baseline.json``
(family, T, the types skops must trust) and ``sentiment_config.yaml``.

    sentiment train --model tfidf-logreg --data sample
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from sentiment import data as data_mod
from sentiment import model as model_mod
from sentiment import tokens
from sentiment.config import BASELINES, MINILM_LOGREG, TFIDF_LOGREG, Config, from_yaml, to_yaml
from sentiment.errors import UserError

FROZEN_ENCODER = model_mod.OFFLINE_MINILM  # minilm-logreg's encoder
# The logistic regression of both families: C = 8 (weak regularisation: IMDB's 1-2-gram TF-IDF
# has ~10^5-10^6 features and many reviews), lbfgs until converged.
LOGREG = {"C": 8.0, "max_iter": 5000}
TFIDF = {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 2, "max_df": 1.0}
# The non-scikit-learn types a pipeline may hold; the only ones skops is told to trust on load.
TRUSTED_TYPES = ["sentiment.baselines.MeanPooledEncoder"]


@dataclass(frozen=True)
class Scores:
    """A pipeline's answer for some texts: the logit before temperature scaling, and the reviews'
    lengths in its own tokens (words for TF-IDF, word pieces for MiniLM) and whether it cut them."""

    logit: np.ndarray  # (N,) log P(positive) / P(negative), before T
    n_tokens: np.ndarray  # (N,) int
    truncated: np.ndarray  # (N,) bool


@dataclass
class Baseline:
    """A fitted baseline: its pipeline (T folded in), family, temperature and run config."""

    pipeline: object  # sklearn.pipeline.Pipeline
    family: str
    temperature: float
    config: Config

    def scores(self, texts: list[str]) -> Scores:
        """The logit before T and the reviews' lengths in the pipeline's tokens, for cleaned texts."""
        return score(self.pipeline, texts, self.temperature)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """P(positive) per text, T applied (the served model's `probability`), texts cleaned as in training."""
        return self.pipeline.predict_proba([data_mod.clean_text(t) for t in texts])[:, 1]


class MeanPooledEncoder(BaseEstimator, TransformerMixin):
    """Texts -> the frozen encoder's last hidden states, mean-pooled over the review's tokens and
    L2-normalised (as sentence-transformers pools all-MiniLM-L6-v2): (N, hidden) float32.

    The reviews are tokenized by the project's one path (`tokens.encode_cached`: truncation
    ``head`` or ``head_tail`` to ``max_length``); the encoder's weights are loaded once per
    process and never stored in the pipeline (``encoder`` names them: `offline-minilm`).
    """

    def __init__(
        self,
        encoder: str = FROZEN_ENCODER,
        max_length: int = 256,
        truncation: str = "head",
        batch_size: int = 64,
        device: str = "cpu",
    ):
        self.encoder = encoder
        self.max_length = max_length
        self.truncation = truncation
        self.batch_size = batch_size
        self.device = device

    def fit(self, texts, labels=None) -> "MeanPooledEncoder":
        return self  # frozen: nothing to fit

    def transform(self, texts) -> np.ndarray:
        return self.encode(list(texts))[0]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, tokens.Encoded]:
        """The embeddings and the encoding they were computed from."""
        net, tokenizer = _frozen_encoder(self.encoder, self.device)
        encoded = tokens.encode_cached(texts, tokenizer, self.max_length, self.truncation)
        return _mean_pooled(net, encoded, tokenizer.pad_token_id, self.batch_size), encoded


@functools.cache
def _frozen_encoder(name: str, device: str):
    from transformers import AutoModel

    net = AutoModel.from_pretrained(model_mod.resolve_source(name)).to(device).eval()
    return net, model_mod.load_tokenizer(name)


def _mean_pooled(net, encoded: tokens.Encoded, pad_id: int, batch_size: int) -> np.ndarray:
    import torch

    collate = data_mod.make_collate(pad_id)
    device = next(net.parameters()).device
    out = np.empty((len(encoded.input_ids), net.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for batch_index in data_mod.sorted_batches(encoded.lengths, batch_size):  # longest first: little padding
            batch = collate([(encoded.input_ids[i], -1) for i in batch_index])
            mask = batch["attention_mask"].to(device)
            hidden = net(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state  # (B, L, H)
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            out[batch_index] = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
    return out


# ----------------------------------------------------------------------------- pipelines


def build_pipeline(config: Config, device: str = "cpu"):
    """The unfitted pipeline of ``config.model.name`` (a family of `config.BASELINES`)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    family = config.model.name
    logreg = LogisticRegression(**LOGREG, random_state=config.seed)
    if family == TFIDF_LOGREG:
        return Pipeline([("tfidf", TfidfVectorizer(**TFIDF)), ("logreg", logreg)])
    if family == MINILM_LOGREG:
        d = config.data
        embed = MeanPooledEncoder(FROZEN_ENCODER, d.max_length, d.truncation, config.train.eval_batch_size, device)
        return Pipeline([("embed", embed), ("logreg", logreg)])
    raise UserError(f"model {family!r} is not a baseline; baselines: {', '.join(BASELINES)}")


def featurize(pipeline, texts: list[str], fit: bool = False) -> tuple[object, Scores]:
    """The features the logistic regression reads (fitting the feature step when ``fit``) and,
    with a zero logit, the reviews' lengths (`Scores`): one pass over the texts."""
    first = pipeline[0]
    if isinstance(first, MeanPooledEncoder):
        features, encoded = first.encode(texts)
        lengths = encoded.full_lengths
        return features, Scores(np.zeros(len(texts)), lengths, lengths > first.max_length)
    features = pipeline[:-1].fit_transform(texts) if fit else pipeline[:-1].transform(texts)
    words = first.build_tokenizer()
    preprocess = first.build_preprocessor()
    lengths = np.fromiter((len(words(preprocess(t))) for t in texts), dtype=np.int64, count=len(texts))
    return features, Scores(np.zeros(len(texts)), lengths, np.zeros(len(texts), dtype=bool))  # TF-IDF reads every word


def score(pipeline, texts: list[str], temperature: float = 1.0) -> Scores:
    """`Scores` of a pipeline whose weights carry ``temperature`` (the logit is restored to
    before scaling: decision_function x T)."""
    features, scores = featurize(pipeline, texts)
    return Scores(pipeline[-1].decision_function(features) * temperature, scores.n_tokens, scores.truncated)


def fold_temperature(pipeline, temperature: float) -> None:
    """Divide the logistic regression's weights and intercept by T, in place: its predict_proba
    is then sigmoid(logit / T), and its predictions are unchanged (T > 0)."""
    logreg = pipeline[-1]
    logreg.coef_ = logreg.coef_ / temperature
    logreg.intercept_ = logreg.intercept_ / temperature


def parameters(pipeline) -> dict[str, int]:
    """Total and trainable parameters: the logistic regression's weights and bias are trained;
    the frozen encoder's weights count in the total only."""
    logreg = pipeline[-1]
    trainable = int(logreg.coef_.size + logreg.intercept_.size)
    first = pipeline[0]
    frozen = 0
    if isinstance(first, MeanPooledEncoder):
        frozen = sum(p.numel() for p in _frozen_encoder(first.encoder, first.device)[0].parameters())
    return {"total": trainable + frozen, "trainable": trainable}


def hyperparameters(pipeline) -> dict[str, str]:
    """The pipeline's settings as params (``baseline.logreg.C``, ``baseline.tfidf.ngram_range``, ...)."""
    simple = (int, float, str, bool, tuple, type(None))
    return {
        f"baseline.{key.replace('__', '.')}": str(value)
        for key, value in pipeline.get_params(deep=True).items()
        if "__" in key and isinstance(value, simple) and key.split("__")[1] not in ("device", "verbose", "n_jobs")
    }


# ----------------------------------------------------------------------------- packages


def save_package(pipeline, config: Config, temperature: float, parent: Path) -> Path:
    """The pipeline (T folded in), ``baseline.json`` and the run's config in ``parent/hf_model``."""
    import shutil

    import skops.io

    from sentiment import tracking

    out = parent / tracking.MODEL_ARTIFACT
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if hasattr(pipeline[0], "stop_words_"):  # (older scikit-learn) every n-gram min_df pruned, for introspection only
        del pipeline[0].stop_words_
    # skops writes the TF-IDF vocabulary as JSON: 250 MB for IMDB's 390k 1-2-grams, 11 MB deflated
    skops.io.dump(pipeline, out / tracking.SKLEARN_PIPELINE, compression=zipfile.ZIP_DEFLATED)
    untrusted = skops.io.get_untrusted_types(file=out / tracking.SKLEARN_PIPELINE)
    if set(untrusted) - set(TRUSTED_TYPES):  # a new step type: add it to TRUSTED_TYPES, knowingly
        raise RuntimeError(
            f"the pipeline holds types skops does not trust: {sorted(set(untrusted) - set(TRUSTED_TYPES))}"
        )
    import sklearn

    facts = {
        "family": config.model.name,
        "temperature": float(temperature),
        "skops_trusted_types": sorted(untrusted),
        "sklearn_version": sklearn.__version__,
    }
    (out / tracking.BASELINE_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    (out / "sentiment_config.yaml").write_text(to_yaml(config))
    return out


def encoder_bytes(pipeline) -> int:
    """Bytes on disk of the frozen encoder a pipeline needs besides its package (0 for TF-IDF)."""
    first = pipeline[0]
    if not isinstance(first, MeanPooledEncoder):
        return 0
    return sum(p.stat().st_size for p in Path(model_mod.resolve_source(first.encoder)).rglob("*") if p.is_file())


def is_package(folder: Path) -> bool:
    from sentiment import tracking

    return (Path(folder) / tracking.BASELINE_FILE).is_file()


def load_folder(folder: Path) -> Baseline:
    """A baseline package; only `TRUSTED_TYPES` (and skops's own safe types) are loaded."""
    import skops.io

    from sentiment import tracking

    folder = Path(folder)
    facts = json.loads((folder / tracking.BASELINE_FILE).read_text())
    pipeline = skops.io.load(folder / tracking.SKLEARN_PIPELINE, trusted=TRUSTED_TYPES)
    if isinstance(pipeline[0], MeanPooledEncoder):  # serving: CPU unless SENTIMENT_DEVICE=cuda
        pipeline[0].set_params(device=os.environ.get("SENTIMENT_DEVICE", "cpu"))
    config = from_yaml((folder / "sentiment_config.yaml").read_text())
    return Baseline(pipeline, facts["family"], float(facts["temperature"]), config)


def load_package(uri: str, tracker=None) -> model_mod.LoadedPackage:
    """A logged model of any family, from an MLflow model URI or a packaged folder: a baseline
    as a `Baseline` (tokenizer None), an encoder (or a Hub id) through `model.load_package`. A
    LoggedModel is recorded as an input of ``tracker``'s run."""
    from sentiment import tracking

    if not tracking.is_model_uri(uri) and not is_package(Path(uri)):
        return model_mod.load_package(uri, tracker)  # an encoder's folder, a Hub id
    folder, model_id = tracking.fetch_model(uri) if tracking.is_model_uri(uri) else (Path(uri), None)
    if not is_package(folder):
        loaded = model_mod.load_package(str(folder))
        loaded.model_id = model_id
    else:
        baseline = load_folder(folder)
        loaded = model_mod.LoadedPackage(baseline, None, baseline.config, model_id)
    if model_id and tracker is not None:
        tracker.link_model(model_id)
    return loaded


def load_classifier(folder: Path) -> Callable[[list[str]], np.ndarray]:
    """What the served model predicts with, for a baseline package: texts -> P(positive), T applied."""
    return load_folder(folder).probabilities
