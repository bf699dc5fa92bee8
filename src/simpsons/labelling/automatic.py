"""Model-assisted labelling: cut each planned frame into crops a model names, and put the confident ones in
``DATASET/_review/<character>/`` for a human to check. The crops come from a strategy: the classifier's (the left,
right and full crops, classified in one model call) or the detector's (one crop around each character it finds)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from simpsons.data import difference_hash
from simpsons.errors import ParameterError
from simpsons.frames import CROPS, crop_frame
from simpsons.labelling.plan import (DEFAULT_EVERY, DEFAULT_START_WITHIN, announce_resume, check_start_within,
                                     planned_frames, prepare_videos)
from simpsons.labelling.session import Session, bundle_characters, open_session
from simpsons.labelling.store import (REJECTED_DIR, REVIEW_DIR, UNSURE_DIR, file_errors, open_dataset, read_log,
                                      save_picture, seen_frames)

if TYPE_CHECKING:
    from simpsons.detection.detector import Detector
    from simpsons.prediction import Predictor

DEFAULT_MIN_PROB = 0.6


@dataclass
class AutoReport:
    """What ``--auto`` did."""

    frames: int = 0
    kept: Counter = field(default_factory=Counter)
    unsure: int = 0
    dropped: int = 0
    duplicates: int = 0

    def text(self) -> str:
        """The end-of-run report, one figure per line."""
        lines = [f"frames analysed: {self.frames}", f"crops kept for review: {sum(self.kept.values())}"]
        lines += [f"  {name}: {count}" for name, count in sorted(self.kept.items())]
        lines += [f"unsure crops kept: {self.unsure}", f"crops dropped: {self.dropped}",
                  f"near-duplicates skipped: {self.duplicates}"]
        return "\n".join(lines)


@dataclass(frozen=True)
class Candidate:
    """One crop of a frame that ``--auto`` may file: where in the frame it was cut (``left``, or a box
    ``x1,y1,x2,y2``), the picture, the name and probability the model gives it, whether that is sure enough to
    wait under the name, and the stranger detector's familiarity (``None`` without one)."""

    where: str
    picture: Image.Image
    name: str
    probability: float
    sure: bool
    familiarity: float | None = None


class CropStrategy(Protocol):
    """How ``--auto`` cuts a frame into named crops."""

    def candidates(self, frame: Image.Image) -> list[Candidate]: ...


@dataclass
class ClassifiedCrops:
    """The classifier's strategy: the left, right and full crops, classified in one call; sure at or above
    ``min_prob`` and familiar to the bundle's stranger detector."""

    predictor: Predictor
    min_prob: float

    def candidates(self, frame: Image.Image) -> list[Candidate]:
        crops = crop_frame(frame, CROPS)
        predictions = self.predictor.predict_pixels(np.stack([self.predictor.prepare(c) for c in crops]), top_k=1)
        return [Candidate(where, picture, found.best_guess, found.probability,
                          found.probability >= self.min_prob and self.predictor.is_familiar(found.familiarity),
                          found.familiarity)
                for where, picture, found in zip(CROPS, crops, predictions)]


BOX_MARGIN = 0.1  # the detector's crops: this share of the box's width and height added on each side
MIN_BOX_SIDE = 32  # pixels: a box narrower or lower than this is too small to label (dropped)


@dataclass
class DetectedBoxes:
    """The detector's strategy: one crop around each box found at or above ``min_prob``, named as the detector
    names it; a box under ``MIN_BOX_SIDE`` pixels is never sure."""

    detector: Detector
    min_prob: float

    def candidates(self, frame: Image.Image) -> list[Candidate]:
        found = self.detector.detect_images([frame], self.min_prob)[0]
        candidates = []
        for detection in found:
            x1, y1, x2, y2 = detection.box
            box = crop_box(detection.box, frame.size)
            candidates.append(Candidate(",".join(map(str, box)), frame.crop(box), detection.character,
                                        detection.probability, min(x2 - x1, y2 - y1) >= MIN_BOX_SIDE))
        return candidates


def crop_box(box: tuple[float, float, float, float], size: tuple[int, int],
             margin: float = BOX_MARGIN) -> tuple[int, int, int, int]:
    """The box grown by ``margin`` of its width and height on each side, in whole pixels within the frame."""
    x1, y1, x2, y2 = box
    grow_x, grow_y = margin * (x2 - x1), margin * (y2 - y1)
    return (max(0, math.floor(x1 - grow_x)), max(0, math.floor(y1 - grow_y)),
            min(size[0], math.ceil(x2 + grow_x)), min(size[1], math.ceil(y2 + grow_y)))


def auto_frame(strategy: CropStrategy, session: Session, report: AutoReport, video: Path, number: int,
               frame: Image.Image, keep_unsure: bool) -> None:
    """Cut one frame into named crops with ``strategy`` and file each; a frame without any is logged
    ``auto_empty``, so that a later run skips it too."""
    candidates = strategy.candidates(frame)
    report.frames += 1
    if not candidates:
        session.log.write("auto_empty", video=video, frame=number)
    for candidate in candidates:
        file_candidate(session, report, video, number, candidate, keep_unsure)


def file_candidate(session: Session, report: AutoReport, video: Path, number: int, candidate: Candidate,
                   keep_unsure: bool) -> None:
    """File one crop by how sure its name is: under ``_review/<name>/``, ``_review/_unsure/`` (``keep_unsure``)
    or nowhere; a near-duplicate of a picture there (or of a rejected one) is skipped."""
    name, picture, sure = candidate.name, candidate.picture, candidate.sure
    common = {"video": video, "frame": number, "crop": candidate.where, "label": name,
              "probability": candidate.probability, "familiarity": candidate.familiarity}
    if not sure and not keep_unsure:
        report.dropped += 1
        session.log.write("auto_dropped", **common)
        return
    review = session.root / REVIEW_DIR
    folders = [review / name, session.root / name] if sure else [review / UNSURE_DIR]
    duplicate = session.hashes.duplicate_of(difference_hash(picture), folders + [review / REJECTED_DIR])
    if duplicate is not None:
        report.duplicates += 1
        session.log.write("skipped_duplicate", file=duplicate, **common)
        return
    path = save_picture(picture, folders[0])
    if sure:
        report.kept[name] += 1
    else:
        report.unsure += 1
    session.log.write("auto_kept" if sure else "auto_unsure", file=path, **common)


def auto_label(paths: Iterable[str | Path], dataset: str | Path, *, every: tuple[int, int] = DEFAULT_EVERY,
               seed: int | None = None, start_within: float = DEFAULT_START_WITHIN, model: str | Path | None = None,
               min_prob: float = DEFAULT_MIN_PROB, keep_unsure: bool = False, backend: str | None = None,
               detect: bool = False, detector: str | Path | None = None) -> AutoReport:
    """Model-assisted labelling: confident crops go to ``DATASET/_review/<character>/``. The classifier at
    ``model`` names the left, right and full crops (``backend``: ``Predictor.load``'s); with ``detect``, the
    detector at ``detector`` (default: the shipped one) finds the characters and each box is a crop."""
    if not 0.0 <= min_prob <= 1.0:
        raise ParameterError("min_prob", f"{{name}} must be between 0 and 1, not {min_prob}")
    check_strategy_options(detect, detector, model=model, backend=backend, keep_unsure=keep_unsure)
    check_start_within(start_within)
    rng = random.Random(seed)
    videos = prepare_videos(paths, rng)
    strategy = load_strategy(detect, detector, model, backend, min_prob)
    root = open_dataset(dataset, create=True)
    seen = seen_frames(read_log(root))
    announce_resume(videos, seen)
    report = AutoReport()
    with file_errors(root), open_session(root) as session:
        try:
            for video, number, frame in planned_frames(videos, every, start_within, rng, seen):
                auto_frame(strategy, session, report, video, number, frame, keep_unsure)
        except KeyboardInterrupt:
            print("interrupted")
    print(report.text())
    return report


def check_strategy_options(detect: bool, detector: str | Path | None, **classifier_options: object) -> None:
    """``detector`` needs ``detect``; ``detect`` takes none of the classifier's options."""
    if detector is not None and not detect:
        raise ParameterError("detector", "{name} is the detector of {detect}: add {detect}", mentions=("detect",))
    given = [name for name, value in classifier_options.items() if value not in (None, False)]
    if detect and given:
        raise ParameterError(given[0], "{name} is for the classifier; {detect} files the boxes of the detector "
                                       "(choose it with {detector})", mentions=("detect", "detector"))


def load_strategy(detect: bool, detector: str | Path | None, model: str | Path | None, backend: str | None,
                  min_prob: float) -> CropStrategy:
    """The detector's boxes with ``detect``, else the classifier's crops; a clear error before loading a network."""
    if detect:
        from simpsons.detection.detector import Detector

        return DetectedBoxes(Detector.load(detector, option="--detector"), min_prob)
    from simpsons.prediction import Predictor

    if model is not None:
        bundle_characters(model)  # a clear error before loading the network
    return ClassifiedCrops(Predictor.load(model, backend), min_prob)
