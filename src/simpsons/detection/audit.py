"""Checking a boxes file against a detector: which boxes it agrees with, and which look wrongly scaled.

Some boxes of a hand-made boxes file are wrong in a telling way: their corners were multiplied by a factor
below 1, as when a box drawn on a larger copy of the picture was written without its scale. Such a box sits up
and to the left of its character and is smaller. A trained detector still finds the character where it is
(most of its training boxes are right), so the box it finds, scaled about the picture's top-left corner,
lands on the written one. Those boxes are ``scaled``; dropping them from a training file (``clean_lines``)
spares a detector from learning them.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simpsons.boxes import Box
from simpsons.detection.detector import Detection, Detector
from simpsons.detection.evaluation import RIGHT_IOU, answer_boxes, iou

MIN_PROBABILITY = 0.05  # the detections a box is compared with
SCALED_IOU = 0.7  # a detected box scaled about the corner must overlap the written one this much ...
MAX_SCALE = 0.85  # ... with a factor at most this: a box a little smaller than the detector's is not scaled
VERDICTS = {
    "agrees": f"the detector's most probable box of its character overlaps it (IoU >= {RIGHT_IOU})",
    "scaled": "its corners look multiplied by a factor below 1: it sits up and left of its character, smaller",
    "elsewhere": "the detector's box of its character is elsewhere or of another size (a loose box, or a miss)",
    "not found": f"the detector finds no {MIN_PROBABILITY:.0%}-probable box of its character in the picture",
    "unknown": "its character is not one the detector knows",
}
REPORT_COLUMNS = ["path", "character", "x1", "y1", "x2", "y2", "verdict", "iou", "scale",
                  "detected_x1", "detected_y1", "detected_x2", "detected_y2", "probability"]


@dataclass(frozen=True)
class BoxCheck:
    """One box of the file and what the detector makes of it: ``verdict`` (a key of ``VERDICTS``), the
    detection compared (the most probable of its character), their IoU, and the factor that best maps the
    detected box onto the written one about the picture's corner."""

    box: Box
    verdict: str
    detection: Detection | None = None
    iou: float = 0.0
    scale: float = 1.0

    def report_row(self) -> list:
        detected = [round(value, 1) for value in self.detection.box] if self.detection else ["", "", "", ""]
        return [str(self.box.path), self.box.character, self.box.x1, self.box.y1, self.box.x2, self.box.y2,
                self.verdict, round(self.iou, 3), round(self.scale, 3), *detected,
                round(self.detection.probability, 3) if self.detection else ""]


def check_box(box: Box, corners: np.ndarray, detections: list[Detection]) -> BoxCheck:
    """The verdict on one box (``corners``: its ``x1, y1, x2, y2`` clipped to the picture) given the picture's
    detections, most probable first."""
    own = [found for found in detections if found.character == box.character and found.probability >= MIN_PROBABILITY]
    if not own:
        return BoxCheck(box, "not found")
    top = np.asarray(own[0].box, np.float64)
    overlap = float(iou(top, corners[None])[0])
    if overlap >= RIGHT_IOU:
        return BoxCheck(box, "agrees", own[0], overlap, 1.0)
    scale = float(np.dot(top, corners) / max(np.dot(top, top), 1e-12))  # least squares: corners ~ scale * top
    scaled = scale <= MAX_SCALE and iou(scale * top, corners[None])[0] >= SCALED_IOU
    return BoxCheck(box, "scaled" if scaled else "elsewhere", own[0], overlap, scale)


def check_boxes(detector: Detector, boxes: list[Box], progress: bool = False) -> list[BoxCheck]:
    """A ``BoxCheck`` of each of ``boxes``, in the file's order; a box on a picture that cannot be read is
    left out. ``progress`` draws a bar on a terminal."""
    answers = answer_boxes(detector, boxes, progress)
    known = set(detector.characters)
    checks = {id(box): BoxCheck(box, "unknown") for box in boxes if box.character not in known}
    for picture_boxes, truth, detections in zip(answers.boxes, answers.truths, answers.found):
        for box, corners in zip(picture_boxes, truth.boxes):
            checks[id(box)] = check_box(box, corners.astype(np.float64), detections)
    return [checks[id(box)] for box in boxes if id(box) in checks]


def summary_table(checks: list[BoxCheck]) -> str:
    """The number of boxes of each verdict, with what it means."""
    counts = Counter(check.verdict for check in checks)
    lines = [f"{verdict:<9}  {counts[verdict]:>6}  {meaning}" for verdict, meaning in VERDICTS.items()]
    scales = [check.scale for check in checks if check.verdict == "scaled"]
    if scales:
        lines[1] += f" (factors {min(scales):.2f} to {max(scales):.2f})"
    return "\n".join(lines)


def report_csv(checks: list[BoxCheck]) -> str:
    """Every box that does not agree, one CSV row each (``REPORT_COLUMNS``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    writer.writerows(check.report_row() for check in checks if check.verdict != "agrees")
    return buffer.getvalue()


def clean_lines(boxes: list[Box], checks: list[BoxCheck], folder: str | Path) -> str:
    """A boxes file of every one of ``boxes`` but those checked ``scaled``, its paths relative to ``folder``
    (where it is written)."""
    scaled = {id(check.box) for check in checks if check.verdict == "scaled"}
    return "".join(f"{os.path.relpath(box.path, folder)},{box.x1},{box.y1},{box.x2},{box.y2},{box.character}\n"
                   for box in boxes if id(box) not in scaled)
