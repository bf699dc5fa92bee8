"""Measuring a detector: COCO's mean average precision (pycocotools), its precision-recall curves, and how
often the top box is right (and, when not, why)."""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simpsons.boxes import Box, read_boxes
from simpsons.detection.detector import Detection, Detector
from simpsons.detection.placement import Placement
from simpsons.errors import SimpsonsError

EVALUATION_MIN_PROBABILITY = 0.01  # the detections COCO's precision-recall curves are drawn from
RIGHT_IOU = 0.5
NEAR_IOU = 0.1  # a wrong top box overlapping a true box of its name less than this is elsewhere: the truth is missed
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # where COCO reads each precision-recall curve


@dataclass(frozen=True)
class TrueBoxes:
    """The true boxes of one picture: ``(n, 4)`` corners in its pixels and their character names."""

    boxes: np.ndarray
    characters: list[str]


@dataclass
class DetectionScores:
    """A detector's scores on pictures with true boxes."""

    characters: list[str]
    map_50: float  # COCO mAP at IoU 0.5, over the characters with true boxes
    map_50_95: float  # COCO mAP averaged over IoU 0.5, 0.55, ..., 0.95
    ap_50: dict[str, float]  # per character with true boxes
    ap_50_95: dict[str, float]
    true_boxes: dict[str, int]
    top_box_right: float  # share of the pictures whose most probable box has a true box's name and IoU >= 0.5
    pictures: int
    skipped: dict[str, str] = field(default_factory=dict)  # picture -> why it was not counted
    precision_50: dict[str, np.ndarray] = field(default_factory=dict)  # at IoU 0.5, per RECALL_POINTS

    def as_dict(self) -> dict:
        return {"map_50": self.map_50, "map_50_95": self.map_50_95, "top_box_right": self.top_box_right,
                "pictures": self.pictures, "boxes": sum(self.true_boxes.values()),
                "per_character": {name: {"boxes": self.true_boxes[name], "ap_50": self.ap_50[name],
                                         "ap_50_95": self.ap_50_95[name]} for name in self.ap_50},
                "skipped": self.skipped}

    def table(self) -> str:
        """AP per character, then the summary line."""
        width = max([len(name) for name in self.ap_50] + [9])
        lines = [f"{'character':<{width}}  boxes  AP@0.5  AP@0.5:0.95"]
        lines += [f"{name:<{width}}  {self.true_boxes[name]:>5}  {self.ap_50[name]:>6.3f}  {self.ap_50_95[name]:>11.3f}"
                  for name in self.ap_50]
        lines.append(f"mAP@0.5 {self.map_50:.3f}, mAP@0.5:0.95 {self.map_50_95:.3f}; the most probable box is right "
                     f"(name and IoU >= {RIGHT_IOU}) in {self.top_box_right:.1%} of {self.pictures} pictures")
        return "\n".join(lines)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box ``x1, y1, x2, y2`` with each of ``(n, 4)`` boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum((box[2] - box[0]) * (box[3] - box[1]) + areas - inter, 1e-12)


@dataclass(frozen=True)
class TopBox:
    """How a picture's most probable box fares against its true boxes.

    ``kind``, checked in this order: ``right`` (IoU >= ``RIGHT_IOU`` with a true box of its name), ``wrongly
    named`` (IoU >= ``RIGHT_IOU`` with a true box of another character), ``badly placed`` (IoU >= ``NEAR_IOU``
    with a true box of its name), ``missed`` (off the true boxes: they are missed), or ``nothing found``.
    ``iou`` and ``truth``: its IoU with the true box its kind names (the nearest of its name when right or
    badly placed, else the nearest of any), and that box's index (``None`` without a top box)."""

    detection: Detection | None
    kind: str
    iou: float
    truth: int | None

    @property
    def right(self) -> bool:
        return self.kind == "right"


def judge_top_box(truth: TrueBoxes, detections: list[Detection]) -> TopBox:
    """The verdict on the most probable of ``detections`` against one picture's true boxes."""
    if not detections:
        return TopBox(None, "nothing found", 0.0, None)
    top = max(detections, key=lambda detection: detection.probability)
    if not truth.characters:
        return TopBox(top, "missed", 0.0, None)
    overlaps = iou(np.asarray(top.box), truth.boxes)
    own = [index for index, name in enumerate(truth.characters) if name == top.character]
    nearest_own = max(own, key=lambda index: overlaps[index]) if own else None
    nearest = int(np.argmax(overlaps))
    if nearest_own is not None and overlaps[nearest_own] >= RIGHT_IOU:
        return TopBox(top, "right", float(overlaps[nearest_own]), nearest_own)
    if overlaps[nearest] >= RIGHT_IOU:
        return TopBox(top, "wrongly named", float(overlaps[nearest]), nearest)
    if nearest_own is not None and overlaps[nearest_own] >= NEAR_IOU:
        return TopBox(top, "badly placed", float(overlaps[nearest_own]), nearest_own)
    return TopBox(top, "missed", float(overlaps[nearest]), nearest)


def score_detections(truths: list[TrueBoxes], found: list[list[Detection]], characters: list[str]) -> DetectionScores:
    """COCO mAP and the top box's share of right answers of ``found[i]`` against ``truths[i]``."""
    ap_50, ap_50_95, precision_50 = _coco_average_precision(truths, found, characters)
    counted = defaultdict(int)
    for truth in truths:
        for name in truth.characters:
            counted[name] += 1
    present = [name for name in characters if counted[name]]
    right = [judge_top_box(truth, detections).right for truth, detections in zip(truths, found)]
    return DetectionScores(
        characters=characters,
        map_50=float(np.mean([ap_50[name] for name in present])) if present else float("nan"),
        map_50_95=float(np.mean([ap_50_95[name] for name in present])) if present else float("nan"),
        ap_50={name: ap_50[name] for name in present}, ap_50_95={name: ap_50_95[name] for name in present},
        true_boxes={name: counted[name] for name in present},
        top_box_right=float(np.mean(right)) if right else float("nan"), pictures=len(truths),
        precision_50={name: precision_50[name] for name in present})


def _coco_average_precision(truths: list[TrueBoxes], found: list[list[Detection]], characters: list[str]
                            ) -> tuple[dict[str, float], dict[str, float], dict[str, np.ndarray]]:
    """AP at IoU 0.5 and AP over IoU 0.5:0.95 per character, by pycocotools' ``COCOeval`` (0 for a character
    with true boxes and no detection; NaN for one without true boxes), and the precision-recall curve at IoU
    0.5 of each character with true boxes (precision at ``RECALL_POINTS``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    index = {name: number for number, name in enumerate(characters, start=1)}
    annotations = []
    for image, truth in enumerate(truths, start=1):
        for box, name in zip(truth.boxes, truth.characters):
            corner_x, corner_y, width, height = _xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": index[name],
                                "bbox": [corner_x, corner_y, width, height], "area": width * height, "iscrowd": 0})
    results = [{"image_id": image, "category_id": index[detection.character], "bbox": _xywh(detection.box),
                "score": detection.probability}
               for image, detections in enumerate(found, start=1) for detection in detections]
    nothing = {name: float("nan") for name in characters}
    if not annotations:
        return nothing, dict(nothing), {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground = COCO()
        ground.dataset = {"images": [{"id": image} for image in range(1, len(truths) + 1)], "annotations": annotations,
                         "categories": [{"id": number, "name": name} for name, number in index.items()]}
        ground.createIndex()
        if not results:
            present = {annotation["category_id"] for annotation in annotations}
            zero = {name: 0.0 if index[name] in present else float("nan") for name in characters}
            return zero, dict(zero), {name: np.zeros(len(RECALL_POINTS)) for name in characters if zero[name] == 0}
        evaluation = COCOeval(ground, ground.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # IoU x recall x character, all areas, 100 boxes
    ap_50, ap_50_95, precision_50 = {}, {}, {}
    for name, number in index.items():
        curves = precision[:, :, number - 1]
        per_iou = [float(np.mean(curve[curve > -1])) if np.any(curve > -1) else float("nan") for curve in curves]
        ap_50[name], ap_50_95[name] = per_iou[0], float(np.mean(per_iou))
        if np.all(curves[0] > -1):
            precision_50[name] = curves[0].astype(np.float64)
    return ap_50, ap_50_95, precision_50


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(value) for value in box)
    return [x1, y1, x2 - x1, y2 - y1]


@dataclass
class BoxedAnswers:
    """A detector's answers on boxed pictures: per picture counted, its path, its lines of the boxes file, true
    boxes (clipped to it) and detections (at or above ``EVALUATION_MIN_PROBABILITY``, most probable first); and
    the pictures not counted, with why."""

    characters: list[str]
    paths: list[Path] = field(default_factory=list)
    boxes: list[list[Box]] = field(default_factory=list)
    truths: list[TrueBoxes] = field(default_factory=list)
    found: list[list[Detection]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def scores(self) -> DetectionScores:
        scores = score_detections(self.truths, self.found, self.characters)
        scores.skipped = self.skipped
        return scores


def evaluate_on_boxes(detector: Detector, boxes: list[Box]) -> DetectionScores:
    """The detector's scores on the pictures of ``boxes`` (see ``answer_boxes``)."""
    return answer_boxes(detector, boxes).scores()


def answer_boxes(detector: Detector, boxes: list[Box], progress: bool = False) -> BoxedAnswers:
    """The detector's answers on the pictures of ``boxes`` (a boxes file's lines, several per picture allowed):
    a picture that cannot be read is skipped, and so are the boxes of characters the detector does not know
    (both listed in ``skipped``). ``progress`` draws a bar on a terminal (from 200 pictures)."""
    from tqdm import tqdm

    known = set(detector.characters)
    by_picture: dict[Path, list[Box]] = defaultdict(list)
    skipped: dict[str, str] = {}
    for box in boxes:
        if box.character in known:
            by_picture[box.path].append(box)
        else:
            skipped[str(box.path)] = f"{box.character} is not a character the detector knows"
    answers, batch = BoxedAnswers(detector.characters, skipped=skipped), []
    pictures = tqdm(detector.prepare_files(list(by_picture)), total=len(by_picture), desc="answering pictures",
                    unit="picture", leave=False, disable=None if progress and len(by_picture) >= 200 else True)
    for path, prepared in pictures:
        if isinstance(prepared, str):
            skipped[str(path)] = prepared
            continue
        answers.paths.append(path)
        answers.boxes.append(by_picture[path])
        answers.truths.append(_true_boxes(by_picture[path], prepared[1]))
        batch.append(prepared)
        if len(batch) == detector.batch_size:
            answers.found += _detect_batch(detector, batch)
            batch = []
    answers.found += _detect_batch(detector, batch)
    return answers


def _true_boxes(boxes: list[Box], placement: Placement) -> TrueBoxes:
    """A picture's boxes clipped to it."""
    corners = np.clip([[box.x1, box.y1, box.x2, box.y2] for box in boxes], 0,
                      [placement.width, placement.height, placement.width, placement.height])
    return TrueBoxes(corners.astype(np.float32), [box.character for box in boxes])


def _detect_batch(detector: Detector, batch: list[tuple[np.ndarray, Placement]]) -> list[list[Detection]]:
    if not batch:
        return []
    return detector.detect_prepared(np.stack([pixels for pixels, _ in batch]), [placement for _, placement in batch],
                                    EVALUATION_MIN_PROBABILITY)


def boxes_under(boxes_file: str | Path, folder: str | Path) -> list[Box]:
    """The boxes of ``boxes_file`` on pictures under ``folder``; none raises ``SimpsonsError``."""
    resolved = Path(folder).resolve()
    boxes = [box for box in read_boxes(boxes_file) if resolved in box.path.resolve().parents]
    if not boxes:
        raise SimpsonsError(f"none of the boxes in {boxes_file} is on a picture under {folder}")
    return boxes
