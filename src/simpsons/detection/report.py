"""A detector's evaluation report (``evaluate --boxes --report-dir``): its precision-recall curves, and the
pictures it gets most wrong, drawn and listed."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simpsons.data import open_rgb
from simpsons.detection.detector import Detection
from simpsons.detection.drawing import draw_boxes, labelled
from simpsons.detection.evaluation import (
    EVALUATION_MIN_PROBABILITY,
    RECALL_POINTS,
    RIGHT_IOU,
    BoxedAnswers,
    DetectionScores,
    TopBox,
    TrueBoxes,
    judge_top_box,
)
from simpsons.files import write_json
from simpsons.plots import plt, pretty, save_figure

WORST_COUNT = 12
DRAWN_DETECTIONS = 3  # the detector's most probable boxes drawn on each of the worst pictures
TRUTH_COLOUR, FOUND_COLOUR = "#27ae60", "#eb5757"
REPORT_FILES = ("scores.json", "precision_recall.png", "worst_misses.png", "worst_misses.json")


@dataclass(frozen=True)
class Miss:
    """A picture whose most probable box is wrong: its true boxes, its detections and the top box's verdict."""

    path: Path
    truth: TrueBoxes
    detections: list[Detection]  # most probable first
    top: TopBox

    def why(self) -> str:
        """What went wrong, in words."""
        found = self.top.detection
        if found is None:
            return f"nothing found (no box of probability {EVALUATION_MIN_PROBABILITY} or more)"
        named = f"{pretty(found.character)} {found.probability:.2f}"
        if self.top.kind == "wrongly named":
            truth = pretty(self.truth.characters[self.top.truth])
            return f"wrongly named: {named} on {truth} (IoU {self.top.iou:.2f})"
        if self.top.kind == "badly placed":
            return f"badly placed: {named}, IoU {self.top.iou:.2f} with the true box (< {RIGHT_IOU})"
        return f"missed: the top box ({named}) lies off the true boxes (best IoU {self.top.iou:.2f})"

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path),
                "truth": [{"character": name, "box": [round(float(value), 1) for value in box]}
                          for box, name in zip(self.truth.boxes, self.truth.characters)],
                "top": None if self.top.detection is None else self.top.detection.as_dict(),
                "iou": round(self.top.iou, 3), "kind": self.top.kind, "why": self.why()}


def worst_misses(answers: BoxedAnswers, count: int = WORST_COUNT) -> list[Miss]:
    """Up to ``count`` pictures whose most probable box is wrong, worst first: nothing found at all, then the
    most confident wrong top box (the least overlap first among equals)."""
    misses = [Miss(path, truth, detections, verdict)
              for path, truth, detections in zip(answers.paths, answers.truths, answers.found)
              if not (verdict := judge_top_box(truth, detections)).right]
    return sorted(misses, key=_severity)[:count]


def _severity(miss: Miss) -> tuple[float, float, str]:
    """The sort key of a miss: the worst first."""
    confidence = 2.0 if miss.top.detection is None else miss.top.detection.probability
    return -confidence, miss.top.iou, str(miss.path)


def write_report(answers: BoxedAnswers, scores: DetectionScores, summary: dict[str, Any], folder: Path) -> None:
    """``scores.json`` (``summary``), ``precision_recall.png``, ``worst_misses.png`` and ``worst_misses.json``
    in ``folder``, each written atomically."""
    misses = worst_misses(answers)
    write_json(summary, folder / "scores.json")
    plot_precision_recall(scores, folder / "precision_recall.png")
    plot_worst_misses(misses, folder / "worst_misses.png")
    write_json([miss.as_dict() for miss in misses], folder / "worst_misses.json")


def plot_precision_recall(scores: DetectionScores, path: Path) -> None:
    """COCO's precision-recall curve at IoU 0.5 of each character with true boxes, and their mean in bold."""
    figure, axes = plt.subplots(figsize=(8.5, 6))
    curves = scores.precision_50
    colours = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors
    for number, (name, precision) in enumerate(sorted(curves.items(), key=lambda item: -scores.ap_50[item[0]])):
        axes.plot(RECALL_POINTS, precision, color=colours[number % len(colours)], linewidth=1.3, alpha=0.9,
                  label=f"{pretty(name)} (AP {scores.ap_50[name]:.2f}, {scores.true_boxes[name]} boxes)")
    if curves:
        axes.plot(RECALL_POINTS, np.mean(list(curves.values()), axis=0), color="black", linewidth=3.2,
                  label=f"all characters (mAP {scores.map_50:.2f})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    axes.set_title(f"Precision-recall at IoU {RIGHT_IOU} ({scores.pictures} pictures, "
                   f"{sum(scores.true_boxes.values())} true boxes)")
    save_figure(figure, path)


def plot_worst_misses(misses: list[Miss], path: Path, columns: int = 4) -> None:
    """A grid of the pictures: the true boxes in green, the detector's most probable boxes in red, each titled
    with what went wrong."""
    rows = max(1, int(np.ceil(len(misses) / columns)))
    figure, axes_grid = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.7 * rows), squeeze=False)
    for axes, miss in zip(np.ravel(axes_grid), misses):
        axes.imshow(drawn(miss))
        axes.set_title("\n".join(textwrap.wrap(miss.why(), 38) + [miss.path.name]), fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
    for axes in np.ravel(axes_grid)[len(misses):]:
        axes.axis("off")
    if not misses:
        np.ravel(axes_grid)[0].text(0.5, 0.5, "every picture's most probable box is right", ha="center")
    figure.suptitle("Worst misses: true boxes in green, the detector's most probable boxes in red")
    save_figure(figure, path)


def drawn(miss: Miss) -> Image.Image:
    """The missed picture with its true boxes (names below them) and the detector's most probable boxes on top."""
    truth = [(tuple(float(value) for value in box), f"true: {pretty(name)}", TRUTH_COLOUR)
             for box, name in zip(miss.truth.boxes, miss.truth.characters)]
    found = [labelled(detection, FOUND_COLOUR) for detection in miss.detections[:DRAWN_DETECTIONS]]
    return draw_boxes(draw_boxes(open_rgb(miss.path), truth, labels_below=True), found)
