"""The combined family: several trained models of any family (a fine-tuned encoder, a classical
baseline) answering as one. Each member's logit (before its own temperature) is standardized with
the mean and standard deviation of its logits on the validation split, the combined logit is their
weighted sum (weights >= 0 summing to 1, chosen on the validation split: train/combine.py), and one
temperature, fitted on the validation split too, calibrates it.

A package (the logged model's ``hf_model`` folder) holds ``combined.json`` (weights, centers,
scales, temperature, the members' runs and models), the run's ``sentiment_config.yaml`` (the
first member's) and each member's own package in ``member_0/``, ``member_1/``, ...: it serves,
scores, evaluates and is promoted like any model, and its members load by their own family's code.

    sentiment combine RUN_ENCODER RUN_TFIDF --register-as imdb-sentiment
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit

from sentiment import baselines, inference, tracking
from sentiment import data as data_mod
from sentiment import model as model_mod
from sentiment.config import Config, from_yaml, to_yaml

FAMILY = "combined"


@dataclass
class Member:
    """One member as loaded from its package: a `baselines.Baseline`, or an encoder with its
    tokenizer and config; ``center`` and ``scale`` standardize its logit."""

    model: object
    tokenizer: object | None
    config: Config
    center: float
    scale: float

    def logits(self, texts: list[str]) -> baselines.Scores:
        """The member's logit before its own temperature, with the reviews' lengths in its tokens."""
        if isinstance(self.model, baselines.Baseline):
            return self.model.scores(texts)
        d = self.config.data
        margin, encoded = inference.encoder_logits(
            self.model, self.tokenizer, texts, d.max_length, d.truncation, self.config.train.eval_batch_size
        )
        return baselines.Scores(margin, encoded.full_lengths, encoded.full_lengths > d.max_length)


@dataclass
class Combined:
    """A combined model (see the module docstring): members, weights and one temperature."""

    members: list[Member]
    weights: np.ndarray
    temperature: float
    config: Config
    family: str = FAMILY

    def scores(self, texts: list[str]) -> baselines.Scores:
        """The combined logit before temperature scaling; lengths as the first member reads them."""
        texts = [data_mod.clean_text(t) for t in texts]
        answers = [m.logits(texts) for m in self.members]
        logit = combine(
            [a.logit for a in answers], self.weights, [m.center for m in self.members], [m.scale for m in self.members]
        )
        return baselines.Scores(logit, answers[0].n_tokens, answers[0].truncated)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """P(positive) per text, the combined temperature applied (the served model's `probability`)."""
        return expit(self.scores(texts).logit / self.temperature)


def combine(logits: list[np.ndarray], weights, centers, scales) -> np.ndarray:
    """The weighted sum of the members' standardized logits (the combined logit before T)."""
    out = np.zeros(len(logits[0]), dtype=np.float64)
    for logit, weight, center, scale in zip(logits, weights, centers, scales):
        out += float(weight) * (np.asarray(logit, dtype=np.float64) - center) / scale
    return out


def standardizer(val_logit: np.ndarray) -> tuple[float, float]:
    """Center and scale of a member's logits on the validation split (scale 1 for constant logits)."""
    scale = float(np.std(val_logit))
    return float(np.mean(val_logit)), scale if scale > 0 else 1.0


# ----------------------------------------------------------------------------- packages


def save_package(member_folders: list[Path], facts: dict, config: Config, parent: Path) -> Path:
    """The members' packages, ``combined.json`` (``facts``: weights, centers, scales, temperature,
    members) and the run's config in ``parent/hf_model``."""
    out = parent / tracking.MODEL_ARTIFACT
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for index, folder in enumerate(member_folders):
        shutil.copytree(folder, out / f"member_{index}")
    (out / tracking.COMBINED_FILE).write_text(json.dumps({"family": FAMILY, **facts}, indent=2) + "\n")
    (out / "sentiment_config.yaml").write_text(to_yaml(config))
    return out


def is_package(folder: Path) -> bool:
    return (Path(folder) / tracking.COMBINED_FILE).is_file()


def load_member(folder: Path) -> tuple[object, object | None, Config]:
    """A member package of any family but combined: (model, tokenizer or None, config)."""
    if baselines.is_package(folder):
        baseline = baselines.load_folder(folder)
        return baseline, None, baseline.config
    loaded = model_mod.load_package(str(folder))
    return loaded.model.eval(), loaded.tokenizer, loaded.config


def load_folder(folder: Path) -> Combined:
    folder = Path(folder)
    facts = json.loads((folder / tracking.COMBINED_FILE).read_text())
    members = []
    for index, (center, scale) in enumerate(zip(facts["centers"], facts["scales"])):
        model, tokenizer, config = load_member(folder / f"member_{index}")
        members.append(Member(model, tokenizer, config, float(center), float(scale)))
    config = from_yaml((folder / "sentiment_config.yaml").read_text())
    return Combined(members, np.asarray(facts["weights"], dtype=np.float64), float(facts["temperature"]), config)


def load_package(uri: str, tracker=None) -> model_mod.LoadedPackage:
    """A logged model of any family, from an MLflow model URI or a packaged folder: a combined
    model as a `Combined`, the others through `baselines.load_package`. A LoggedModel is recorded
    as an input of ``tracker``'s run."""
    if not tracking.is_model_uri(uri) and not is_package(Path(uri)):
        return baselines.load_package(uri, tracker)
    folder, model_id = tracking.fetch_model(uri) if tracking.is_model_uri(uri) else (Path(uri), None)
    if is_package(folder):
        model = load_folder(folder)
        loaded = model_mod.LoadedPackage(model, None, model.config, model_id)
    else:
        loaded = baselines.load_package(str(folder))
        loaded.model_id = model_id
    if model_id and tracker is not None:
        tracker.link_model(model_id)
    return loaded


def load_classifier(folder: Path) -> Callable[[list[str]], np.ndarray]:
    """What the served model predicts with, for a combined package: texts -> P(positive), T applied."""
    return load_folder(folder).probabilities
