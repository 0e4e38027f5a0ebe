"""Promotion: a registered candidate becomes `champion` only if it beats the current champion on
the SAME reviews.

The champion is evaluated on the candidate's test reviews (same ids; each model with its own
max length and truncation) in an evaluate run of its own, linked to its version; the two
predictions tables are paired and the rule decides:

- ``better``: higher accuracy on the shared reviews;
- ``significant`` (default): higher accuracy and McNemar's exact test below ``alpha``;
- ``never``: the champion never moves (register only); ``always``: the candidate always takes it.

A champion that cannot be evaluated (artifacts gone, incompatible) cannot serve either: the
candidate takes it under every rule but ``never``, and the reason is logged. The decision (both
accuracies with 95% intervals, the delta with its paired bootstrap interval, McNemar's p) is
logged on the candidate's run, set as version tags and printed in one line.

    sentiment train --preset quick --register-as imdb-sentiment --promote-if significant
    sentiment promote --name imdb-sentiment --version 3 --compare-only
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from sentiment import combined, evaluate, tracking
from sentiment import device as device_mod
from sentiment.config import PROMOTION_RULES
from sentiment.errors import UserError
from sentiment.stats import Paired, compare
from sentiment.tracking import keys

RULES = PROMOTION_RULES
DEFAULT_RULE = "significant"
DEFAULT_ALPHA = 0.05
ROUNDS = 6  # evaluate, set, verify: rounds before giving up against concurrent registrations


@dataclass(frozen=True)
class RegisterRequest:
    """`--register-as NAME --promote-if RULE --promote-alpha ALPHA`."""

    name: str
    rule: str = DEFAULT_RULE
    alpha: float = DEFAULT_ALPHA


@dataclass(frozen=True)
class Side:
    """One model's accuracy on the shared reviews, with its 95% bootstrap interval."""

    version: str
    accuracy: float
    low: float
    high: float

    @classmethod
    def of(cls, version: str, table: pd.DataFrame, seed: int = 0) -> "Side":
        correct = (table["label"].to_numpy() == table["prediction"].to_numpy()).astype(float)
        low, high = evaluate.bootstrap_accuracy_ci(correct, seed)
        return cls(version, float(correct.mean()), low, high)

    def text(self) -> str:
        return f"{self.accuracy:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class Decision:
    """What the rule decided for a candidate against a champion, and why."""

    name: str
    candidate: str  # version
    rule: str
    alpha: float
    promoted: bool
    reason: str
    champion: str | None = None  # version compared against (None: there was no champion)
    reviews: int = 0
    sides: tuple[Side, Side] | None = None  # candidate, champion on the shared reviews
    stats: dict = field(default_factory=dict)  # delta, its interval, McNemar counts and p
    champion_run: str | None = None  # the champion's evaluate run

    def line(self) -> str:
        """The one line printed after registration."""
        verdict = "promoted to champion" if self.promoted else "champion unchanged"
        head = f"promotion ({self.rule}"
        head += f", alpha {self.alpha:g})" if self.rule == "significant" else ")"
        if self.sides is None:
            return f"{head}: v{self.candidate} {verdict}: {self.reason}"
        candidate, champion = self.sides
        s = self.stats
        return (
            f"{head}: v{self.candidate} {candidate.text()} vs champion v{champion.version} {champion.text()} on the "
            f"same {self.reviews:,} reviews; delta {100 * s['delta']:+.2f} points [{100 * s['delta_low']:+.2f}, "
            f"{100 * s['delta_high']:+.2f}], McNemar p={s['p_value']:.3g}: {verdict} ({self.reason})"
        )

    def metrics(self) -> dict[str, float]:
        """``promotion/*`` metrics for the candidate's run."""
        out = {"promotion/promoted": float(self.promoted)}
        if self.sides is not None:
            candidate, champion = self.sides
            out |= {
                "promotion/reviews": float(self.reviews),
                "promotion/candidate_accuracy": candidate.accuracy,
                "promotion/candidate_accuracy_ci_low": candidate.low,
                "promotion/candidate_accuracy_ci_high": candidate.high,
                "promotion/champion_accuracy": champion.accuracy,
                "promotion/champion_accuracy_ci_low": champion.low,
                "promotion/champion_accuracy_ci_high": champion.high,
                "promotion/delta_accuracy": self.stats["delta"],
                "promotion/delta_accuracy_ci_low": self.stats["delta_low"],
                "promotion/delta_accuracy_ci_high": self.stats["delta_high"],
                "promotion/p_value": self.stats["p_value"],
            }
        return out

    def tags(self) -> dict[str, str]:
        """``promotion.*`` tags, for the model version and (prefixed ``sentiment.``) the run."""
        out = {
            "promotion.decision": "promoted" if self.promoted else "not promoted",
            "promotion.rule": self.rule,
            "promotion.alpha": f"{self.alpha:g}",
            "promotion.against": f"v{self.champion}" if self.champion else "none",
            "promotion.reason": self.reason,
        }
        if self.sides is not None:
            candidate, champion = self.sides
            out |= {
                "promotion.reviews": str(self.reviews),
                "promotion.candidate_accuracy": f"{candidate.accuracy:.6f}",
                "promotion.champion_accuracy": f"{champion.accuracy:.6f}",
                "promotion.delta_accuracy": f"{self.stats['delta']:.6f}",
                "promotion.delta_accuracy_ci": f"[{self.stats['delta_low']:.6f}, {self.stats['delta_high']:.6f}]",
                "promotion.p_value": f"{self.stats['p_value']:.6g}",
            }
        if self.champion_run:
            out["promotion.champion_eval_run"] = self.champion_run
        return out


def check_rule(rule: str, alpha: float) -> None:
    if rule not in RULES:
        raise UserError(f"--promote-if must be one of {', '.join(RULES)}, got {rule!r}")
    if not 0 < alpha < 1:
        raise UserError(f"--promote-alpha must be between 0 and 1 (e.g. 0.05), got {alpha}")


def decide(
    name: str, candidate: str, champion: str, rule: str, alpha: float, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> Decision:
    """Apply ``rule`` to the candidate's and the champion's predictions on the same reviews."""
    paired = Paired.join(*tables)
    if len(paired.labels) == 0:
        raise UserError(f"v{candidate} and v{champion} share no reviews: nothing to compare on")
    shared = tables[0][tables[0]["id"].isin(tables[1]["id"])]
    other = tables[1].set_index("id").loc[shared["id"]].reset_index()
    sides = (Side.of(candidate, shared), Side.of(champion, other))
    result = compare([paired])
    stats = {
        "delta": result["delta_test_accuracy"],
        "delta_low": result["delta_test_accuracy_low"],
        "delta_high": result["delta_test_accuracy_high"],
        "p_value": result["p_value"],
        "candidate_only": result["mcnemar_variant_only"],
        "champion_only": result["mcnemar_reference_only"],
    }
    higher = stats["delta"] > 0
    if rule == "always":
        promoted, reason = True, "rule always"
    elif rule == "never":
        promoted, reason = False, "rule never"
    elif rule == "better":
        promoted, reason = higher, "higher accuracy" if higher else "not higher accuracy"
    else:
        significant = stats["p_value"] < alpha
        promoted = higher and significant
        if promoted:
            reason = f"higher accuracy, significant (p < {alpha:g})"
        elif higher:
            reason = f"higher accuracy but not significant (p >= {alpha:g}); more test reviews or --promote-if better"
        else:
            reason = "not higher accuracy"
    return Decision(name, candidate, rule, alpha, promoted, reason, champion, len(paired.labels), sides, stats)


def evaluate_version(
    name: str, version: str, reviews: pd.DataFrame, experiment_id: str, for_run: str
) -> tuple[pd.DataFrame, str]:
    """The version's predictions table on ``reviews`` (id, text, label), each model with its own
    max length and truncation (any family: a classical baseline reads them its own way), logged as an evaluate run
    linked to the version."""
    uri = f"models:/{name}/{version}"
    tags = {
        keys.KIND: "evaluate",
        keys.MODEL_URI: uri,
        keys.SPLIT: "test",
        keys.PROMOTION_FOR_RUN: for_run,
        keys.REGISTERED_MODEL: name,
        keys.REGISTERED_VERSION: version,
    }
    with tracking.side_run(experiment_id, f"promotion-eval-{name}-v{version}", tags) as tracker:
        loaded = combined.load_package(uri, tracker)  # any family: an encoder, a classical baseline, a combination
        config = loaded.config
        runtime = device_mod.pick_runtime(config.train)
        tracker.set_tags(runtime.tags())
        tracker.log_config(config)
        table = evaluate.predict_split(loaded, reviews[["id", "text", "label"]], config, runtime)
        evaluate.log_evaluation(table, "test", tracker, seed=config.seed)
        return table, tracker.run_id


def promote(
    name: str,
    candidate: str,
    candidate_table: pd.DataFrame,
    run_id: str,
    rule: str = DEFAULT_RULE,
    alpha: float = DEFAULT_ALPHA,
    against: str | None = None,
    compare_only: bool = False,
) -> Decision:
    """Compare the candidate version with the champion (or version ``against``) on the
    candidate's reviews and move `champion` when the rule says so.

    Safe against concurrent registrations: after setting the alias, it is read back; if another
    version took it in between, the candidate is compared with that one too (up to ``ROUNDS``).
    Returns the decision, also logged on ``run_id`` and as version tags.
    """
    check_rule(rule, alpha)
    experiment_id = tracking.get_run(run_id).experiment_id
    evaluated: dict[str, tuple[pd.DataFrame, str] | Exception] = {}
    decision = None
    for _ in range(ROUNDS):
        champion = against or tracking.champion_version(name)
        if champion == candidate:
            break
        decision = _decide_against(
            name, candidate, champion, candidate_table, rule, alpha, experiment_id, run_id, evaluated
        )
        if compare_only or against or not decision.promoted:
            break
        if tracking.champion_version(name) != champion:  # someone moved it while we evaluated
            continue
        tracking.set_champion(name, candidate)
        tracking.settle_pause()
        if tracking.champion_version(name) == candidate:
            break
    if decision is None:
        decision = Decision(name, candidate, rule, alpha, True, "already champion")
    record(decision, run_id)
    return decision


def _decide_against(
    name, candidate, champion, candidate_table, rule, alpha, experiment_id, run_id, evaluated
) -> Decision:
    """The decision against one champion version (None: there is none); evaluations are cached."""
    if champion is None:
        promoted = rule != "never"
        return Decision(
            name, candidate, rule, alpha, promoted, "no champion yet" if promoted else "rule never; no champion yet"
        )
    if champion not in evaluated:
        try:
            evaluated[champion] = evaluate_version(name, champion, candidate_table, experiment_id, run_id)
        except Exception as exc:  # its artifacts are gone, it does not load, it does not predict
            evaluated[champion] = exc
    result = evaluated[champion]
    if isinstance(result, Exception):
        why = " ".join(str(result).split())[:200] or type(result).__name__
        promoted = rule != "never"
        reason = f"champion v{champion} could not be evaluated ({why}); " + (
            "it cannot serve either" if promoted else "rule never"
        )
        return Decision(name, candidate, rule, alpha, promoted, reason, champion)
    table, champion_run = result
    decision = decide(name, candidate, champion, rule, alpha, (candidate_table, table))
    return Decision(**{**decision.__dict__, "champion_run": champion_run})


def record(decision: Decision, run_id: str) -> None:
    """The decision on the candidate's run (metrics, ``sentiment.promotion.*`` tags) and version."""
    tracking.set_version_tags(decision.name, decision.candidate, decision.tags())
    tracking.log_to_run(
        run_id, metrics=decision.metrics(), tags={f"sentiment.{k}": v for k, v in decision.tags().items()}
    )


def register(
    request: RegisterRequest, tracker, logged, table: pd.DataFrame | None, test_metrics: dict
) -> tracking.Registration:
    """Register the run's model (alias `candidate`) and decide on `champion` by the rule,
    comparing with the champion on this run's test reviews. Without a test table (``run_test``
    false) there is nothing to compare on: only rules ``always`` / ``never`` apply, else the
    champion stays."""
    score = test_metrics.get("test/accuracy", float("nan"))
    version = tracking.register_version(tracker, logged.model_uri, request.name, score)
    if table is None:
        champion = tracking.champion_version(request.name)
        promoted = request.rule == "always" or (champion is None and request.rule != "never")
        decision = Decision(
            request.name, version, request.rule, request.alpha, promoted, "no test predictions to compare on", champion
        )
        if promoted:
            tracking.set_champion(request.name, version)
        record(decision, tracker.run_id)
    else:
        decision = promote(request.name, version, table, tracker.run_id, request.rule, request.alpha)
    champion = tracking.champion_version(request.name) == version
    return tracking.Registration(request.name, version, champion, f"models:/{request.name}/{version}", decision)


def candidate_reviews(name: str, version: str) -> tuple[pd.DataFrame, str]:
    """A registered version's own test predictions table (from its training run) and run id."""
    info = tracking.version_info(name, version)
    if not info.run_id:
        raise UserError(
            f"version {version} of {name!r} has no source run: register models with sentiment train --register-as"
        )
    hint = "the version's run has no test predictions (trained with --run-test false?); nothing to compare on"
    table = tracking.load_run_table(info.run_id, "predictions/test.parquet", hint=hint)
    return table, info.run_id


def run_promote(name: str, version: str, rule: str, alpha: float, against: str | None, compare_only: bool) -> Decision:
    """`sentiment promote`: the registration-time comparison, by hand. Against the champion the
    rule moves it (unless ``compare_only``); against another version (``against``) it only
    compares and records."""
    check_rule(rule, alpha)
    tracking.connect()
    table, run_id = candidate_reviews(name, version)
    if against is not None:
        tracking.version_info(name, against)  # exists
    elif (champion := tracking.champion_version(name)) is None and compare_only:
        raise UserError(f"{name!r} has no champion to compare with; pass --against VERSION")
    elif champion == str(version):
        raise UserError(
            f"version {version} is the champion of {name!r}: nothing to compare it with; pass --against VERSION"
        )
    return promote(name, str(version), table, run_id, rule, alpha, against=against, compare_only=compare_only)
