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
        ax_loss.plot(np.asarray(history.steps) / steps_per_epoch, history.step_loss, color="0.7", lw=1, label="train (per step)")
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
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES, xlabel="predicted", ylabel="true")
    return fig


def roc_curve(fpr: np.ndarray, tpr: np.ndarray, auc: float, split: str) -> Figure:
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"ROC (AUC = {auc:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", label="chance")
    ax.set(title=f"ROC curve ({split})", xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def pr_curve(recall: np.ndarray, precision: np.ndarray, average_precision: float, split: str) -> Figure:
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot(recall, precision, label=f"PR (AP = {average_precision:.4f})")
    ax.set(title=f"Precision-recall, positive class ({split})", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return fig


def ablation_bars(panels: list[dict], ylabel: str, title: str, baseline: float | None = None) -> Figure:
    """One panel per group of an ablation grid: a bar per variant with (asymmetric) error bars.

    Args:
        panels: ``{"title": str, "bars": [{"label", "value", "low", "high", "reference", "note"}]}``;
            ``low``/``high`` are distances below/above ``value``; the reference bar is hatched.
        baseline: the grid's baseline value, drawn as a dashed line in every panel.
    """
    widths = [max(2, len(p["bars"])) for p in panels] or [2]
    fig = Figure(figsize=(max(6.0, 1.3 * sum(widths) + 1.5), 4.8), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(1, len(widths), sharey=True, squeeze=False, width_ratios=widths)[0]
    values = [b["value"] for p in panels for b in p["bars"] if np.isfinite(b["value"])]
    low = min([b["value"] - b["low"] for p in panels for b in p["bars"] if np.isfinite(b["value"])] or [0.0])
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
                ax.annotate(bar["note"], (patch.get_x() + patch.get_width() / 2, bar["value"] + bar["high"]),
                            xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=8)  # fmt: skip
        if baseline is not None and np.isfinite(baseline):
            ax.axhline(baseline, color="0.3", ls="--", lw=1, label="baseline")
        ax.set_xticks(x, [b["label"] + (" (ref)" if b["reference"] else "") for b in bars], rotation=30, ha="right")
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    if values:
        axes[0].set_ylim(max(0.0, low - 0.05), min(1.0, max(values)) + 0.08)
    if baseline is not None:
        axes[0].legend(loc="lower left", fontsize=8)
    return fig
