"""Model-assisted labelling: classify the left, right and full crops of each planned frame in one model call and
put the confident ones in ``DATASET/_review/<character>/`` for a human to check."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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


def auto_frame(predictor, session: Session, report: AutoReport, video: Path, number: int, frame: Image.Image,
               min_prob: float, keep_unsure: bool) -> None:
    """Classify the three crops of one frame in one call and file each by its probability."""
    crops = crop_frame(frame, CROPS)
    predictions = predictor.predict_pixels(np.stack([predictor.prepare(c) for c in crops]), top_k=1)
    report.frames += 1
    review = session.root / REVIEW_DIR
    for where, picture, prediction in zip(CROPS, crops, predictions):
        name, probability = prediction.best_guess, prediction.probability
        common = {"video": video, "frame": number, "crop": where, "label": name, "probability": probability,
                  "familiarity": prediction.familiarity}
        sure = probability >= min_prob and predictor.is_familiar(prediction.familiarity)
        if not sure and not keep_unsure:
            report.dropped += 1
            session.log.write("auto_dropped", **common)
            continue
        folders = [review / name, session.root / name] if sure else [review / UNSURE_DIR]
        duplicate = session.hashes.duplicate_of(difference_hash(picture), folders + [review / REJECTED_DIR])
        if duplicate is not None:
            report.duplicates += 1
            session.log.write("skipped_duplicate", file=duplicate, **common)
            continue
        path = save_picture(picture, folders[0])
        if sure:
            report.kept[name] += 1
        else:
            report.unsure += 1
        session.log.write("auto_kept" if sure else "auto_unsure", file=path, **common)


def auto_label(paths: Iterable[str | Path], dataset: str | Path, *, every: tuple[int, int] = DEFAULT_EVERY,
               seed: int | None = None, start_within: float = DEFAULT_START_WITHIN, model: str | Path | None = None,
               min_prob: float = DEFAULT_MIN_PROB, keep_unsure: bool = False, backend: str | None = None) -> AutoReport:
    """Model-assisted labelling: confident crops go to ``DATASET/_review/<character>/`` (``backend``:
    ``Predictor.load``'s)."""
    from simpsons.prediction import Predictor

    if not 0.0 <= min_prob <= 1.0:
        raise ParameterError("min_prob", f"{{name}} must be between 0 and 1, not {min_prob}")
    check_start_within(start_within)
    rng = random.Random(seed)
    videos = prepare_videos(paths, rng)
    if model is not None:
        bundle_characters(model)  # a clear error before loading the network
    predictor = Predictor.load(model, backend)
    root = open_dataset(dataset, create=True)
    seen = seen_frames(read_log(root))
    announce_resume(videos, seen)
    report = AutoReport()
    with file_errors(root), open_session(root) as session:
        try:
            for video, number, frame in planned_frames(videos, every, start_within, rng, seen):
                auto_frame(predictor, session, report, video, number, frame, min_prob, keep_unsure)
        except KeyboardInterrupt:
            print("interrupted")
    print(report.text())
    return report
