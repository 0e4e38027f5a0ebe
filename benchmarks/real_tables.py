"""The Markdown of the real corpus's section: its setup, tables, ratios, the time-to-accuracy comparison
and why a target was missed."""

from __future__ import annotations

import re

from benchmarks.ratios import TARGETS
from benchmarks.tables import (
    PADDING_NOTE,
    RATIO_HEADER,
    TRAIN_HEADER,
    _eval_ratio_rows,
    _mark,
    _mlflow_ratio_rows,
    _rates,
    _train_row,
    evaluation_table,
    training_intro,
    why_lines,
)


def _accuracy_cell(ratios: dict, name: str) -> str:
    accuracy, low, high = ratios["accuracy_ci"][name]
    return f"{accuracy:.4f} [{low:.4f}, {high:.4f}]"


def _points_cell(points: list[float] | None) -> str:
    return "not run" if points is None else f"{points[0]:+.2f} points [{points[1]:+.2f}, {points[2]:+.2f}]"


def real_setup(result: dict) -> str:
    """What the real corpus ran on: its source and sizes, and the `cpu` preset's settings (with
    any the command line or --tiny replaced)."""
    from sentiment.config import build_config

    spec, profile = result["spec"], result["profile"]
    config = build_config("cpu")
    preset = {
        "max_length": config.data.max_length,
        "batch_size": config.train.batch_size,
        "epochs": config.train.epochs,
        "lr": config.train.lr,
    }
    replaced = ", ".join(f"{k} {spec[k]} (preset {value})" for k, value in preset.items() if spec[k] != value)
    return (
        f"Source: {_file_name(result['source'])}. {profile['train_reviews']} training reviews, a stratified seeded "
        f"sample of the {profile['train_pool_reviews']} its train split keeps after {profile['val_reviews']} "
        f"are held out for validation; {profile['test_reviews']} test reviews, a stratified seeded sample of "
        f'its test split. Settings of the `cpu` preset, read from `PRESETS["cpu"]` at run time: max length '
        f"{spec['max_length']} ({spec['truncation']} truncation), batch {spec['batch_size']}, "
        f"{spec['epochs']} epoch(s), learning rate {spec['lr']} with {spec['warmup_ratio']:.0%} linear warmup "
        f"then linear decay, weight decay {spec['weight_decay']}, clipping {spec['max_grad_norm']}, dropout "
        f"{spec['dropout']}; layer decay {spec['layer_decay']} on our side only (Trainer has none); our "
        f"precision `{spec['precision']}`, which is {result['preset_precision']} on this machine"
        + (f"; replaced on the command line or by --tiny: {replaced}" if replaced else "")
        + ". Both sides train on the same token ids (`sentiment.tokens.encode`), so they differ only in "
        "batching, padding, the loop and the precision."
    )


def real_tables(result: dict, ratios: dict) -> str:
    """The real corpus's training table (four sides) and its evaluation table."""
    precision = result["preset_precision"]
    sides = [  # (row name, result key, ratios prefix, padding share)
        ("`sentiment train --precision fp32`", "sentiment", "ours", ratios["ours_padding_share"]),
        (f"`sentiment train`, `cpu` preset ({precision})", "sentiment_bf16", "bf16", ratios["ours_padding_share"]),
        ("`Trainer` + mlflow, its defaults (fp32)", "trainer", "trainer", ratios["trainer_padding_share"]),
        (
            f"`Trainer` + mlflow, `{precision}=True`",
            "trainer_bf16",
            "trainer_bf16",
            ratios.get("trainer_bf16_padding_share"),
        ),
    ]
    rows = [
        _train_row(
            name,
            result[key],
            _rates(ratios, prefix, padding),
            _accuracy_cell(ratios, key),
            ratios["ours_samples_per_s_with_validation"] if key == "sentiment" else None,
        )
        for name, key, prefix, padding in sides
        if result[key]
    ]
    note = "Test accuracy with its 95% bootstrap interval over the test reviews; every model predicted in fp32."
    return "\n".join([training_intro(result), "", TRAIN_HEADER, *rows, "", note, "", evaluation_table(result)])


def _file_name(source: str) -> str:
    """A local source by its file name: a document names the data, not the folder it sat in."""
    return re.sub(r"`(/[^`]*/)([^`/]+)`", r"`\2`", source)


def _row(*cells: str) -> str:
    """A Markdown table row; empty cells stay empty."""
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


# long function: the rows of one Markdown table, in order
def real_ratio_lines(result: dict, ratios: dict) -> str:
    """The real corpus's ratio table: the headline against its targets, which change bought what,
    then evaluation and MLflow as on the other corpora."""
    # the precision rows name bf16 even where it did not run (they say "not run"); the headline names what ran
    p = result["preset_precision"] if result["preset_precision"] != "fp32" else "bf16"
    not_run = "not run: the preset trains in fp32 here (no native bf16)"

    def times(key: str) -> str:
        return f"{ratios[key]:.2f}x" if key in ratios else not_run

    change = "which change bought what:"
    return "\n".join(
        [
            RATIO_HEADER,
            _row(
                f"headline: training samples/s, sentiment at the `cpu` preset ({result['preset_precision']}) "
                "/ Trainer with its defaults (fp32)",
                times("headline_speedup"),
                "",
                ">= 1.5x",
                _mark(ratios, "headline_speedup"),
            ),
            _row(
                "headline test accuracy, sentiment at the preset - Trainer with its defaults (paired 95% interval)",
                _points_cell(ratios["headline_accuracy_points"]),
                "",
                ">= -1 point",
                _mark(ratios, "headline_accuracy"),
            ),
            _row(
                "the headline with our validation time included", times("headline_speedup_with_validation"), "", "", ""
            ),
            _row(
                f"{change} length grouping, dynamic padding and our loop, both fp32: sentiment fp32 / Trainer fp32",
                times("train_speedup"),
                times("train_padding_bound"),
                "",
                "",
            ),
            _row(
                f"{change} {p} autocast in our loop: sentiment {p} / sentiment fp32",
                times("train_bf16_vs_fp32"),
                "",
                "",
                "",
            ),
            _row(
                f"{change} {p} autocast in Trainer (`{p}=True`): Trainer {p} / Trainer fp32",
                times("trainer_bf16_vs_fp32"),
                "",
                "",
                "",
            ),
            _row(f"{p} on both sides: sentiment {p} / Trainer {p}", times("preset_vs_trainer_bf16"), "", "", ""),
            _row(
                "test accuracy, sentiment fp32 - Trainer fp32 (paired 95% interval)",
                _points_cell(ratios["fp32_accuracy_points"]),
                "",
                "",
                "",
            ),
            _row(
                f"test accuracy, sentiment {p} - sentiment fp32",
                _points_cell(ratios["preset_accuracy_points"]),
                "",
                "",
                "",
            ),
            _row(
                f"test accuracy, Trainer {p} - Trainer fp32",
                _points_cell(ratios.get("trainer_bf16_accuracy_points")),
                "",
                "",
                "",
            ),
            *_eval_ratio_rows(ratios),
            *_mlflow_ratio_rows(ratios),
            "",
            PADDING_NOTE,
        ]
    )


def real_why(result: dict, ratios: dict) -> str:
    """The headline taken apart into the changes that make it up, in measured numbers."""
    p, profile, spec = result["preset_precision"], result["profile"], result["spec"]
    loop = (
        f"{ratios['train_speedup']:.2f}x from length grouping, dynamic padding and our loop (fp32 against "
        f"fp32; padding alone allows {ratios['train_padding_bound']:.2f}x: Trainer's random batches pad to "
        f"their longest review, ours group reviews by length, and {profile['truncated_share']:.0%} of the "
        f"training reviews are cut at {spec['max_length']} tokens, which caps the padding there is to save)"
    )
    if "train_bf16_vs_fp32" in ratios:
        text = (
            f"Which change bought what: the headline {ratios['headline_speedup']:.2f}x is {loop} times "
            f"{ratios['train_bf16_vs_fp32']:.2f}x from {p} autocast "
            f"({_points_cell(ratios['preset_accuracy_points'])} of test accuracy against our fp32 model)."
        )
    else:
        text = f"Which change bought what: the preset trains in fp32 here, so the headline is {loop}."
    if "trainer_bf16_vs_fp32" in ratios:
        text += (
            f" Trainer's own `{p}=True` gives it {ratios['trainer_bf16_vs_fp32']:.2f}x its fp32 samples/s; with "
            f"{p} on both sides ours is {ratios['preset_vs_trainer_bf16']:.2f}x Trainer's."
        )
    met = ratios["met"]["headline_speedup"] and ratios["met"]["headline_accuracy"]
    target = f"(>= {TARGETS['train_speedup']}x at equal or better accuracy, within 1 point)"
    return text + f" The target {target} is {'met' if met else 'NOT met'}."


def time_to_accuracy_lines(result: dict, ratios: dict) -> str:
    """The time-to-accuracy paragraph and table: the same wall-clock budget, the same test reviews."""
    tta, budget = ratios["time_to_accuracy"], result["time_budget"]
    p, reviews = result["preset_precision"], result["evaluation"]["reviews"]

    def cell(values: list[float]) -> str:
        return f"{values[0]:.4f} [{values[1]:.4f}, {values[2]:.4f}]"

    capped = budget["train_reviews"] < budget["fits_reviews"]
    capped = " (capped: that is every review available)" if capped else ""
    return "\n".join(
        [
            f"The same wall-clock budget: Trainer with its defaults (fp32) trained on {tta['trainer_reviews']} reviews "
            f"for {tta['trainer_epochs']} epoch(s) in {tta['trainer_s']:.1f} s. Our side then trained at the `cpu` "
            f"preset ({p}) for 1 epoch on {tta['ours_reviews']} reviews, a stratified seeded sample of the "
            f"{budget['available_reviews']} available: the number that fit in that time at its measured "
            f"{budget['budget_samples_per_s']:.2f} samples/s after one {budget['budget_validation_s']:.1f} s "
            f"validation pass{capped}. Both were tested on the same {reviews} reviews (predicted in fp32); intervals "
            "are 95% percentile bootstrap over them, the difference paired review by review. Wall time as in the "
            "training table (our validation included).",
            "",
            "| time to accuracy | training reviews | training wall s | test accuracy [95% interval] |",
            "|---|---:|---:|---:|",
            _row(
                f"`Trainer`, its defaults (fp32), {tta['trainer_epochs']} epoch(s)",
                str(tta["trainer_reviews"]),
                f"{tta['trainer_s']:.1f}",
                cell(tta["trainer_accuracy"]),
            ),
            _row(
                f"`sentiment train`, `cpu` preset ({p}), 1 epoch in the same time",
                str(tta["ours_reviews"]),
                f"{tta['ours_s']:.1f}",
                cell(tta["ours_accuracy"]),
            ),
            _row(
                "time-to-accuracy row: sentiment - Trainer at the same wall-clock budget",
                f"{tta['ours_reviews'] - tta['trainer_reviews']:+d}",
                f"{tta['ours_s'] - tta['trainer_s']:+.1f}",
                _points_cell(tta["points"]),
            ),
        ]
    )


def real_section(result: dict) -> list[str]:
    """The "Corpus: real" section of RESULTS.md."""
    profile, ratios = result["profile"], result["ratios"]
    return [
        "## Corpus: real",
        "",
        real_setup(result),
        "",
        f"{profile['reviews']:.0f} reviews (train + test) with mean {profile['mean_words']:.0f} words (median "
        f"{profile['median_words']:.0f}, p90 {profile['p90_words']:.0f}), mean {profile['mean_tokens']:.0f} tokens, "
        f"{profile['over_limit_share']:.1%} over 512 tokens; {profile['truncated_share']:.1%} of the training reviews "
        f"are longer than {result['spec']['max_length']} tokens and are cut. Attention implementation: "
        f"{result['sentiment']['attention']}.",
        "",
        real_tables(result, ratios),
        "",
        "### Ratios",
        "",
        real_ratio_lines(result, ratios),
        "",
        real_why(result, ratios),
        "",
        why_lines(result, ratios, training=False),
        "",
        "### Time to accuracy",
        "",
        time_to_accuracy_lines(result, ratios),
        "",
        f"MLflow time by function, ours (fp32): {result['sentiment']['mlflow_top']}; Trainer: "
        f"{result['trainer']['mlflow_top'] or 'none'}.",
        "",
    ]
