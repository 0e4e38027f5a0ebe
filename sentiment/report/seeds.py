"""A seed group: one recipe per family run with several seeds on the same test reviews (e.g. the
cpu preset's encoder, TF-IDF + logistic regression and the two combined, seeds 42-44), as
experiments/results.yaml lists it under a document's ``seed_groups``:

    seed_groups:
      - title: The cpu recipe on every test review, 3 seeds
        command: sentiment train --preset cpu --seed S ...   (how the runs were made)
        rows:                      # one row per family: its runs, one per seed
          - {name: fine-tuned MiniLM, runs: [RUN_ID, ...]}
        pairs:                     # row names, first minus second, paired seed by seed
          - [combined, fine-tuned MiniLM]

Each row: accuracy per seed, the mean with a Student-t interval over the seeds, minutes per run (a
combined run's members' minutes included: what the model costs from scratch). Each pair: the
mean paired difference, the two-level bootstrap over seeds and reviews, the t interval over the
per-seed deltas, the wider of the two (what a conclusion rests on) and McNemar's p pooled over
the seeds' reviews (review-level evidence only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sentiment import stats
from sentiment.errors import UserError
from sentiment.report.document import Section
from sentiment.report.numbers import _pct, _points
from sentiment.tracking import keys


def seed_group_section(spec: dict) -> Section:
    """The section of one ``seed_groups`` entry (see the module docstring)."""
    rows = {row["name"]: _row(row) for row in spec["rows"]}
    section = Section(spec["title"])
    if spec.get("what"):
        section.blocks.append(spec["what"])
    if spec.get("command"):
        section.blocks.append(f"Made with `{spec['command']}` (one run per seed and family).")
    section.blocks.append(pd.DataFrame([_row_cells(name, row) for name, row in rows.items()]))
    pairs = spec.get("pairs", [])
    if pairs:
        section.blocks.append(
            "Paired differences, seed by seed on the same test reviews: the two-level bootstrap (seeds, then "
            "reviews), the Student-t interval over the per-seed deltas, and the wider of the two, on which a "
            "conclusion rests. McNemar's p (raw, not adjusted) pools the seeds' reviews: review-level evidence only."
        )
        section.blocks.append(pd.DataFrame([_pair_cells(rows, a, b) for a, b in pairs]))
    return section


def _row(spec: dict) -> dict:
    from sentiment import tracking

    runs = [tracking.get_run(run_id) for run_id in spec["runs"]]
    by_seed = {}
    for run in runs:
        seed = run.params.get("seed", "?")
        if seed in by_seed:
            raise UserError(f"experiments/results.yaml: row {spec['name']!r} has two runs of seed {seed}")
        table = tracking.load_run_table(run.run_id, "predictions/test.parquet", columns=["id", "label", "prediction"])
        by_seed[seed] = (run, table)
    return {"by_seed": by_seed, "minutes": [minutes_from_scratch(run) for run in runs]}


def minutes_from_scratch(run) -> float | None:
    """A run's wall-clock minutes, plus its members' for a combined model."""
    from sentiment import tracking

    members = [m for m in run.tags.get(keys.COMBINED_MEMBERS, "").split(",") if m]
    parts = [run.minutes, *(tracking.get_run(m).minutes for m in members)]
    return sum(parts) if all(p is not None for p in parts) else None


def _row_cells(name: str, row: dict) -> dict:
    seeds = sorted(row["by_seed"], key=lambda s: int(s) if s.isdigit() else 0)
    values = [row["by_seed"][s][0].metrics["test/accuracy"] for s in seeds]
    low, high = stats.seed_interval(values)
    mean = float(np.mean(values))
    interval = f"[{_pct(low)}, {_pct(high)}]" if len(values) > 1 else "(one seed)"
    minutes = [m for m in row["minutes"] if m is not None]
    return {
        "model": name,
        "seeds": ", ".join(seeds),
        "test accuracy per seed": ", ".join(_pct(v) for v in values),
        "mean [95% t interval over seeds]": f"{_pct(mean)} {interval}",
        "minutes per run, mean (range)": f"{np.mean(minutes):.1f} ({min(minutes):.1f}-{max(minutes):.1f})"
        if minutes
        else "?",
        "test reviews": f"{len(row['by_seed'][seeds[0]][1]):,}",
        "runs": ", ".join(f"`{row['by_seed'][s][0].run_id}`" for s in seeds),
    }


def _pair_cells(rows: dict, a: str, b: str) -> dict:
    for name in (a, b):
        if name not in rows:
            raise UserError(f"experiments/results.yaml: pair names row {name!r}, which the group does not have")
    seeds = sorted(set(rows[a]["by_seed"]) & set(rows[b]["by_seed"]))
    if not seeds:
        raise UserError(f"experiments/results.yaml: rows {a!r} and {b!r} share no seed to pair")
    pairs = [stats.Paired.join(rows[a]["by_seed"][s][1], rows[b]["by_seed"][s][1]) for s in seeds]
    found = stats.compare(pairs)
    boot = (found["delta_test_accuracy_low"], found["delta_test_accuracy_high"])
    t_interval = stats.seed_interval([p.accuracy_delta for p in pairs])
    low, high, which = stats.wider_interval(boot, t_interval)
    verdict = "no: the interval includes 0" if low <= 0 <= high else ("better" if low > 0 else "worse")
    return {
        "difference (points)": f"{a} − {b}",
        "seeds paired": len(pairs),
        "Δ mean": _points(found["delta_test_accuracy"]),
        "bootstrap [95%]": f"[{_points(boot[0])}, {_points(boot[1])}]",
        "t over seeds [95%]": f"[{_points(t_interval[0])}, {_points(t_interval[1])}]" if len(pairs) > 1 else "-",
        "wider (used)": f"[{_points(low)}, {_points(high)}] ({which})",
        "McNemar p, pooled (raw)": f"{found['p_value']:.2g}",
        "differs?": verdict,
    }


# ----------------------------------------------------------------------------- the reference report's failure findings


def findings_section(spec: dict) -> Section:
    """A document's ``findings``: the reference report's failure findings (words per misclassified
    and per correct review, share of errors with a negation word) against ours, per model, from
    `sentiment analyze --only failures` runs (one per seed), each with a verdict (stats.verdict)."""
    from sentiment import tracking

    published = spec["published"]
    section = Section(spec["title"])
    section.blocks.append(
        f"Published figures are from another setup ({published['setup']}); ours are from the runs named, made with "
        f"`{spec['command']}`. With one seed the interval is the review-level bootstrap the analysis logged; with "
        "several, the wider of that and the Student-t interval over the seeds."
    )
    rows = []
    for model in spec["models"]:
        runs = [tracking.get_run(run_id) for run_id in model["runs"]]
        cells = {"model": model["name"], "analysis runs": ", ".join(f"`{r.run_id}`" for r in runs)}
        rows += [
            {"finding": row.pop("finding"), "model": cells["model"], **row, "analysis runs": cells["analysis runs"]}
            for row in _finding_rows([r.metrics for r in runs], published)
        ]
    section.blocks.append(pd.DataFrame(rows))
    return section


def _finding_rows(m: list[dict], published: dict) -> list[dict]:
    """The three findings of one model: its analysis runs' metrics against the published figures."""
    words = _finding(m, "words_difference", 1.0)
    change = float(published["words_errors"]) - float(published["words_correct"])
    share = float(np.mean([x["failures/negation_share_errors"] for x in m]))
    low, high = stats.wilson_interval(share, int(np.mean([x["failures/errors"] for x in m])))
    level = float(published["negation_share_errors"])
    diff = _finding(m, "negation_share_difference", 100.0)
    per_seed_words = ", ".join(
        f"{x['failures/words_difference']:+.1f} ({x['failures/words_mean_errors']:.0f} vs "
        f"{x['failures/words_mean_correct']:.0f})"
        for x in m
    )
    return [
        {
            "finding": "misclassified reviews are longer (words, errors − correct)",
            "published": f"{change:+.0f} ({published['words_errors']} vs {published['words_correct']})",
            "ours per seed": per_seed_words,
            "ours [95%]": f"{words[0]:+.1f} [{words[1]:+.1f}, {words[2]:+.1f}]",
            "verdict": _verdict_words(stats.verdict(change, words[1], words[2])),
        },
        {
            "finding": "share of errors with a negation word",
            "published": _pct(level),
            "ours per seed": ", ".join(_pct(x["failures/negation_share_errors"]) for x in m),
            "ours [95%]": f"{_pct(share)} [{_pct(low)}, {_pct(high)}]",
            "verdict": "consistent" if low <= level <= high else "contradicted: the published share lies outside",
        },
        {
            "finding": "negation makes errors likelier (share of errors − share of correct, points)",
            "published": "not stated (no share for correct reviews)",
            "ours per seed": ", ".join(f"{100 * x['failures/negation_share_difference']:+.2f}" for x in m),
            "ours [95%]": f"{diff[0]:+.2f} [{diff[1]:+.2f}, {diff[2]:+.2f}]",
            "verdict": "no: the interval includes 0" if diff[1] <= 0 <= diff[2] else "yes",
        },
    ]


def _finding(metrics: list[dict], name: str, scale: float) -> tuple[float, float, float]:
    """Mean over seeds and the interval: the review bootstrap with one seed, else the wider of
    the widest review bootstrap and the t interval over the seeds."""
    values = [scale * x[f"failures/{name}"] for x in metrics]
    lows = [scale * x[f"failures/{name}_low"] for x in metrics]
    highs = [scale * x[f"failures/{name}_high"] for x in metrics]
    mean = float(np.mean(values))
    if len(values) == 1:
        return mean, lows[0], highs[0]
    widest = max(zip(lows, highs), key=lambda pair: pair[1] - pair[0])
    boot = (mean - (widest[1] - widest[0]) / 2, mean + (widest[1] - widest[0]) / 2)
    low, high, _ = stats.wider_interval(boot, stats.seed_interval(values))
    return mean, low, high


def _verdict_words(verdict: stats.Verdict) -> str:
    """The verdict, and for a confirmed direction whose size differs, which way."""
    for size in ("smaller", "larger"):
        if f"{size} than published" in verdict.reason:
            return f"{verdict.word} in direction, {size} than published"
    return verdict.word
