"""Plotting helpers shared by the reports: readable names, atomic PNG files, counts and learning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from simpsons.files import replacing  # noqa: E402


def pretty(name: str) -> str:
    """``charles_montgomery_burns`` -> ``Charles Montgomery Burns``."""
    return name.replace("_", " ").title()


def save_figure(figure: plt.Figure, path: str | Path) -> None:
    """Save a figure as PNG atomically (a temporary file renamed into place) and close it."""
    figure.tight_layout()
    try:
        with replacing(path) as partial:
            figure.savefig(partial, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)


CLASSIFIER_PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"))


def plot_learning_curve(history: list[dict[str, float]], path: str | Path, title: str,
                        panels: tuple[tuple[str, str], ...] = CLASSIFIER_PANELS) -> None:
    """One panel per ``(metric, title)`` of ``panels`` (loss and accuracy unless told), per epoch, training
    against validation."""
    epochs = [int(row["epoch"]) + 1 for row in history]
    figure, axes_row = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for axes, (metric, panel_title) in zip(axes_row[0], panels):
        axes.plot(epochs, [row.get(metric, np.nan) for row in history], label="training", color="tab:blue")
        axes.plot(epochs, [row.get(f"val_{metric}", np.nan) for row in history], label="validation (shot-aware)",
                  color="tab:orange")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.25 on a short run's axis
        axes.set_ylabel(metric.replace("_", " "))
        axes.grid(alpha=0.3)
        axes.legend()
        axes.set_title(panel_title)
    figure.suptitle(f"Learning curve: {title}")
    save_figure(figure, path)


def plot_counts(counts: dict[str, int], path: str | Path, title: str) -> None:
    """Horizontal bar chart of images per character (the article's distribution plot)."""
    ordered = sorted(counts.items(), key=lambda item: item[1])
    figure, axes = plt.subplots(figsize=(8, max(3, 0.28 * len(ordered) + 1)))
    axes.barh([pretty(name) for name, _ in ordered], [n for _, n in ordered], color="#f5c518", edgecolor="#333")
    for y, (_, n) in enumerate(ordered):
        axes.text(n, y, f" {n}", va="center", fontsize=8)
    axes.set_xlabel("images")
    axes.set_title(title)
    axes.tick_params(axis="y", labelsize=8)
    save_figure(figure, path)
