"""Matplotlib figures: data in, Figure out (no pyplot state, no I/O).

    python -c "import numpy as np; from sentiment.plots import confusion_matrix; \
confusion_matrix(np.array([[50, 5], [7, 48]])).savefig('/tmp/cm.png')"
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

CLASS_NAMES = ("negative", "positive")


def training_curves(history) -> Figure:
    """Loss, accuracy and learning rate over training (per-step loss/lr, per-epoch val)."""
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    epochs = [e.epoch for e in history.epochs]
    if history.steps:
        steps_per_epoch = history.epochs[0].step if history.epochs else 1
        ax_loss.plot(
            np.asarray(history.steps) / steps_per_epoch, history.step_loss, color="0.7", lw=1, label="train (per step)"
        )
    ax_loss.plot(epochs, [e.train_loss for e in history.epochs], "o-", label="train (epoch mean)")
    ax_loss.plot(epochs, [e.val_loss for e in history.epochs], "s-", label="validation")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * e.train_accuracy for e in history.epochs], "o-", label="train")
    ax_acc.plot(epochs, [100 * e.val_accuracy for e in history.epochs], "s-", label="validation")
    if history.best_epoch:
        ax_acc.axvline(history.best_epoch, color="0.5", ls="--", lw=1, label=f"best (epoch {history.best_epoch})")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    ax_acc.legend()
    if history.steps:
        ax_lr.plot(history.steps, history.step_lr)
        ax_lr.set_yscale("log")
    ax_lr.set(title="Learning rate (head)", xlabel="optimizer step", ylabel="learning rate")
    for ax in (ax_loss, ax_acc):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    ax_lr.grid(alpha=0.3)
    return fig


def confusion_matrix(counts: np.ndarray, title: str = "Confusion matrix") -> Figure:
    """Counts and row-normalised shares side by side."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    fig.suptitle(title)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    for ax, values, label in zip(fig.subplots(1, 2), (counts, shares), ("count", "share of true class")):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, label=label, shrink=0.8)
        for i in range(2):
            for j in range(2):
                text = f"{values[i, j]:,}" if values is counts else f"{values[i, j]:.1%}"
                dark = values[i, j] > values.max() / 2
                ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black", fontsize=12)
        ax.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=CLASS_NAMES,
            yticklabels=CLASS_NAMES,
            xlabel="predicted",
            ylabel="true",
        )
    return fig


def roc_curve(fpr: np.ndarray, tpr: np.ndarray, auc: float, split: str) -> Figure:
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"ROC (AUC = {auc:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", label="chance")
    ax.set(
        title=f"ROC curve ({split})",
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def pr_curve(recall: np.ndarray, precision: np.ndarray, average_precision: float, split: str) -> Figure:
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(recall, precision, label=f"PR (AP = {average_precision:.4f})")
    ax.set(
        title=f"Precision-recall, positive class ({split})",
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- analyze

SPLIT_COLORS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
CLASS_COLORS = ("tab:red", "tab:blue")


def class_balance(counts: dict[str, tuple[int, int]]) -> Figure:
    """Reviews per class and split, each bar labelled with its count and share of the split."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(counts))
    for c, name in enumerate(CLASS_NAMES):
        values = np.array([counts[s][c] for s in counts])
        totals = np.array([max(sum(counts[s]), 1) for s in counts])
        bars = ax.bar(x + (c - 0.5) * 0.4, values, width=0.4, color=CLASS_COLORS[c], label=name)
        ax.bar_label(bars, [f"{v:,}\n({v / t:.1%})" for v, t in zip(values, totals)], fontsize=9)
    ax.set_xticks(x, [f"{s}\n(n={sum(counts[s]):,})" for s in counts])
    ax.set(title="Class balance per split", ylabel="reviews")
    ax.margins(y=0.2)
    ax.legend(title="label")
    ax.grid(axis="y", alpha=0.3)
    return fig


def length_histograms(
    words: dict[str, np.ndarray], tokens: dict[str, np.ndarray], max_length: int, truncated_share: dict[str, float]
) -> Figure:
    """Word and token counts per review, one outline per split (each split sums to 100%)."""
    fig = Figure(figsize=(13, 4.5), layout="constrained")
    fig.suptitle("Review length per split")
    for ax, values, unit in zip(fig.subplots(1, 2), (words, tokens), ("words", "tokens")):
        edges = np.histogram_bin_edges(np.concatenate(list(values.values())), bins=50)
        for split, v in values.items():
            label = f"{split} (n={len(v):,}, median {np.median(v):,.0f})"
            if unit == "tokens":
                label += f", {truncated_share[split]:.1%} > {max_length}"
            ax.hist(
                v,
                bins=edges,
                weights=np.full(len(v), 100 / max(len(v), 1)),
                histtype="step",
                lw=1.8,
                color=SPLIT_COLORS.get(split),
                label=label,
            )
        if unit == "tokens":
            ax.axvline(
                max_length,
                color="0.2",
                ls="--",
                lw=1.2,
                label=f"max_length = {max_length} (longer reviews are truncated)",
            )
            ax.set_xlabel("tokens per review (special tokens included, before truncation)")
        else:
            ax.set_xlabel("words per review (whitespace-separated)")
        ax.set(title=f"{unit.capitalize()} per review", ylabel="share of the split's reviews (%)")
        ax.legend(fontsize=9)
        ax.grid(alpha=0.3)
    return fig


def length_boxplot(words: dict[str, np.ndarray], tokens: dict[str, np.ndarray], max_length: int) -> Figure:
    """Box plots of words and tokens per review by split (box: quartiles, triangle: mean)."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    fig.suptitle("Review length by split (box: quartiles; whiskers: 1.5 IQR; triangle: mean)")
    for ax, values, unit in zip(fig.subplots(1, 2), (words, tokens), ("words", "tokens")):
        box = ax.boxplot(
            list(values.values()),
            tick_labels=list(values),
            showmeans=True,
            patch_artist=True,
            flierprops={"markersize": 2, "alpha": 0.4},
            medianprops={"color": "black", "lw": 1.5},
            meanprops={"marker": "^", "markerfacecolor": "white", "markeredgecolor": "black"},
        )
        for patch, split in zip(box["boxes"], values):
            patch.set(facecolor=SPLIT_COLORS.get(split, "0.8"), alpha=0.35)
        if unit == "tokens":
            ax.axhline(max_length, color="0.2", ls="--", lw=1.2, label=f"max_length = {max_length}")
            ax.legend(loc="best")
        ax.set(title=f"{unit.capitalize()} per review", xlabel="split", ylabel=f"{unit} per review")
        ax.grid(axis="y", alpha=0.3)
    return fig


def token_attention(
    tokens: list[str], last_layer: np.ndarray, per_layer: np.ndarray, rollout: np.ndarray, title: str, note: str = ""
) -> Figure:
    """Three panels over the same tokens (x): last-layer attention from the classification token
    (bars), the same per layer (heatmap, layers x tokens) and the attention rollout after each
    layer (heatmap). Special tokens are drawn in grey."""
    from matplotlib.colors import PowerNorm

    layers, k = per_layer.shape
    fig = Figure(figsize=(max(10, 0.24 * k + 3), 4.2 + 0.55 * layers), layout="constrained")
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=11)
    ax_bar, ax_layers, ax_roll = fig.subplots(3, 1, sharex=True, height_ratios=[1.4, layers * 0.3, layers * 0.3])
    special = np.array([t.startswith(("[", "<")) and t.endswith(("]", ">")) for t in tokens])
    ax_bar.bar(np.arange(k), last_layer, color=np.where(special, "0.65", "tab:orange"))
    ax_bar.set(ylabel="weight", title="Last layer: attention from the classification token (mean over heads)")
    ax_bar.grid(axis="y", alpha=0.3)
    # Colours span the words' weights: [CLS] attending to itself (and its residual share in the
    # rollout) would otherwise darken every word; special tokens beyond the scale are clipped.
    content = ~special if (~special).any() else np.ones(k, dtype=bool)
    vmax = max(float(per_layer[:, content].max()), float(rollout[:, content].max()), 1e-9)
    norm = PowerNorm(0.5, vmin=0, vmax=vmax)  # sqrt: small weights stay visible
    for ax, values, name in (
        (ax_layers, per_layer, "Attention from the classification token per layer"),
        (ax_roll, rollout, "Attention rollout after each layer"),
    ):
        image = ax.imshow(values, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
        ax.set_yticks(np.arange(layers), [f"layer {i + 1}" for i in range(layers)], fontsize=8)
        ax.set_title(name)
    clipped = max(float(per_layer.max()), float(rollout.max())) > vmax
    label = "attention weight (sqrt scale" + ("; special tokens clipped)" if clipped else ")")
    fig.colorbar(
        image,
        ax=[ax_bar, ax_layers, ax_roll],
        label=label,
        shrink=0.6,
        pad=0.01,
        extend="max" if clipped else "neither",
    )
    ax_roll.set_xticks(np.arange(k), tokens, rotation=90, fontsize=9 if k <= 40 else 8)
    ax_roll.set_xlabel("token (as the model saw it; ## = continues the previous word)")
    return fig


def error_rates(by_length: list[dict], by_cue: list[dict], overall: float, split: str) -> Figure:
    """Error rate by length bucket and with/without negation, contrast and truncation; each bar
    labelled errors/reviews."""
    fig = Figure(figsize=(13, 4.6), layout="constrained")
    fig.suptitle(f"Error rate by review property ({split}; dashed: overall {overall:.1%})")
    ax_len, ax_cue = fig.subplots(1, 2, width_ratios=[1, 1.2])

    def rates(rows):
        return np.array([100 * (r["error_rate"] or 0.0) for r in rows])

    bars = ax_len.bar(np.arange(len(by_length)), rates(by_length), color="tab:purple")
    ax_len.bar_label(bars, [f"{r['errors']}/{r['reviews']}" for r in by_length], fontsize=9)
    ax_len.set_xticks(
        np.arange(len(by_length)), [f"{r['low']}-{r['high']}" if "low" in r else r["group"] for r in by_length]
    )
    ax_len.set(
        title="By length (equal-count buckets of tokens)",
        xlabel="tokens per review (before truncation)",
        ylabel="error rate (%)",
    )
    colors = {"negation": "tab:red", "contrast": "tab:olive", "truncation": "tab:cyan"}
    y = np.arange(len(by_cue))[::-1]
    bars = ax_cue.barh(y, rates(by_cue), color=[colors.get(r["factor"], "0.5") for r in by_cue])
    ax_cue.bar_label(
        bars, [f" {r['errors']}/{r['reviews']}" if r["reviews"] else " no reviews" for r in by_cue], fontsize=9
    )
    ax_cue.set_yticks(y, [r["group"] for r in by_cue])
    ax_cue.set(title="With and without cues", xlabel="error rate (%)")
    top = max(5.0, 1.25 * max([*rates(by_length), *rates(by_cue), 100 * overall]))  # 0-5% at least: no zoom on noise
    ax_len.axhline(100 * overall, color="0.3", ls="--", lw=1)
    ax_len.set_ylim(0, top)
    ax_len.grid(axis="y", alpha=0.3)
    ax_cue.axvline(100 * overall, color="0.3", ls="--", lw=1)
    ax_cue.set_xlim(0, top * 1.1)
    ax_cue.grid(axis="x", alpha=0.3)
    return fig


def confidence_calibration(
    confidence: np.ndarray, correct: np.ndarray, reliability: list[dict], ece: float, split: str
) -> Figure:
    """Histogram of confidence for right and wrong predictions, and the reliability diagram
    (accuracy per confidence bin against the diagonal of perfect calibration)."""
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_hist, ax_rel = fig.subplots(1, 2)
    _draw_calibration(ax_hist, ax_rel, confidence, correct, reliability, ece, split)
    return fig


def calibration_before_after(panels: list[dict]) -> Figure:
    """`confidence_calibration`'s two plots once per row: ``panels`` holds the keywords label,
    confidence, correct, reliability and ece of each (e.g. before and after temperature scaling)."""
    fig = Figure(figsize=(12, 4.4 * len(panels)), layout="constrained")
    for (ax_hist, ax_rel), panel in zip(fig.subplots(len(panels), 2, squeeze=False), panels):
        confidence, correct = panel["confidence"], panel["correct"]
        _draw_calibration(ax_hist, ax_rel, confidence, correct, panel["reliability"], panel["ece"], panel["label"])
    return fig


def _draw_calibration(
    ax_hist, ax_rel, confidence: np.ndarray, correct: np.ndarray, reliability: list[dict], ece: float, label: str
) -> None:
    correct = np.asarray(correct, dtype=bool)
    low = reliability[0]["low"] if reliability else 0.5
    edges = (
        np.array([r["low"] for r in reliability] + [reliability[-1]["high"]])
        if reliability
        else np.linspace(0.5, 1, 16)
    )
    ax_hist.hist(
        [confidence[correct], confidence[~correct]],
        bins=edges,
        stacked=True,
        color=["tab:green", "tab:red"],
        label=[f"correct ({int(correct.sum()):,})", f"errors ({int((~correct).sum()):,})"],
    )
    ax_hist.set(
        title=f"Confidence of the predicted class ({label})",
        xlabel="confidence (probability of the predicted class)",
        ylabel="reviews",
        xlim=(low, 1),
    )
    ax_hist.legend()
    ax_hist.grid(alpha=0.3)
    filled = [r for r in reliability if r["reviews"]]
    centers = [(r["low"] + r["high"]) / 2 for r in filled]
    width = (reliability[0]["high"] - reliability[0]["low"]) * 0.9 if reliability else 0.03
    bars = ax_rel.bar(
        centers, [r["accuracy"] for r in filled], width=width, color="tab:blue", alpha=0.7, label="accuracy in bin"
    )
    ax_rel.bar_label(bars, [f"n={r['reviews']}" for r in filled], fontsize=7, rotation=90, padding=2)
    ax_rel.plot(
        [r["confidence"] for r in filled],
        [r["accuracy"] for r in filled],
        "o",
        color="tab:orange",
        ms=4,
        label="mean confidence in bin",
    )
    ax_rel.plot([low, 1], [low, 1], ls="--", color="0.4", label="perfect calibration")
    ax_rel.set(
        title=f"Reliability diagram (ECE = {ece:.4f}, {len(reliability)} bins)",
        xlabel="confidence",
        ylabel="accuracy",
        xlim=(low, 1),
        ylim=(0, 1.12),
    )
    ax_rel.legend(loc="lower right", fontsize=9)
    ax_rel.grid(alpha=0.3)


def ablation_bars(panels: list[dict], ylabel: str, title: str, baseline: float | None = None) -> Figure:
    """One panel per group of an ablation grid: a bar per variant with (asymmetric) error bars.

    Args:
        panels: ``{"title": str, "bars": [{"label", "value", "low", "high", "reference", "note"}]}``;
            ``low``/``high`` are distances below/above ``value``; the reference bar is hatched.
        baseline: the grid's baseline value, drawn as a dashed line in every panel.
    """
    import textwrap

    widths = [max(2, len(p["bars"])) for p in panels] or [2]
    width_in = max(6.0, 1.6 * sum(widths) + 1.5)
    fig = Figure(figsize=(width_in, 5.2), layout="constrained")
    fig.suptitle(
        textwrap.fill(title, int(width_in * 11), break_on_hyphens=False), fontsize=11
    )  # "Holm-adjusted" stays whole
    axes = fig.subplots(1, len(widths), sharey=True, squeeze=False, width_ratios=widths)[0]
    values = [b["value"] for p in panels for b in p["bars"] if np.isfinite(b["value"])]
    low = min([b["value"] - b["low"] for p in panels for b in p["bars"] if np.isfinite(b["value"])] or [0.0])
    high = max([b["value"] + b["high"] for p in panels for b in p["bars"] if np.isfinite(b["value"])] or [1.0])
    for ax, panel in zip(axes, panels):
        bars = panel["bars"]
        x = np.arange(len(bars))
        heights = [b["value"] if np.isfinite(b["value"]) else 0.0 for b in bars]
        errors = np.array([[b["low"] for b in bars], [b["high"] for b in bars]])
        colors = ["0.75" if b["reference"] else "tab:blue" for b in bars]
        drawn = ax.bar(x, heights, yerr=errors, capsize=4, color=colors, edgecolor="0.3")
        for patch, bar in zip(drawn, bars):
            if bar["reference"]:
                patch.set_hatch("//")
            if bar.get("note"):
                ax.annotate(
                    bar["note"],
                    (patch.get_x() + patch.get_width() / 2, bar["value"] + bar["high"]),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        if baseline is not None and np.isfinite(baseline):
            ax.axhline(baseline, color="0.3", ls="--", lw=1, label="baseline")
        ax.set_xticks(x, [b["label"] + (" (ref)" if b["reference"] else "") for b in bars], rotation=30, ha="right")
        ax.set_title(textwrap.fill(panel["title"], 13 * max(2, len(bars))), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    if values:
        axes[0].set_ylim(max(0.0, low - 0.05), high + 0.12)  # room for the notes above the bars
    if baseline is not None and np.isfinite(baseline):
        axes[0].legend(loc="lower left", fontsize=8)
    return fig


def learning_curve(points: list[dict], title: str) -> Figure:
    """Accuracy (with its 95% interval) against training reviews and against wall-clock minutes.

    Args:
        points: ``{"label", "reviews", "minutes", "accuracy", "low", "high"}`` per run; low/high
            are the interval's ends (not distances).
    """
    import textwrap

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    fig.suptitle(textwrap.fill(title, 130), fontsize=11)
    points = sorted(points, key=lambda p: p["reviews"])
    acc = np.array([100 * p["accuracy"] for p in points])
    err = np.array(
        [[100 * (p["accuracy"] - p["low"]) for p in points], [100 * (p["high"] - p["accuracy"]) for p in points]]
    )
    for ax, key, xlabel in zip(
        fig.subplots(1, 2),
        ("reviews", "minutes"),
        ("training reviews (log scale)", "wall-clock minutes of the run (log scale)"),
    ):
        x = np.array([p[key] for p in points], dtype=float)
        ax.errorbar(x, acc, yerr=err, fmt="o-", capsize=4)
        for xi, yi, p in zip(x, acc, points):
            ax.annotate(f"{p['label']}\n{yi:.1f}%", (xi, yi), xytext=(6, -16), textcoords="offset points", fontsize=8)
        ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel="test accuracy (%), 95% interval")
        ax.grid(alpha=0.3, which="both")
    return fig
