"""The ``Detector``: a detector bundle that answers pictures with boxes and names, in the pictures' own pixels."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from simpsons.backends import exported_network_path
from simpsons.data import open_rgb
from simpsons.detection.bundle import DetectorBundle, load_detector_for_inference
from simpsons.detection.decode import decode
from simpsons.detection.placement import Placement, letterbox
from simpsons.errors import SimpsonsError

DEFAULT_MIN_PROBABILITY = 0.3
MAX_DETECTIONS = 100  # per picture, before the probability threshold
TRAIN_A_DETECTOR = "train one with `simpsons train DATA --boxes annotation.txt --out RUN`"


def default_detector_path() -> Path:
    """Where the package keeps its shipped detector bundle (its ONNX export beside it)."""
    return Path(str(resources.files("simpsons") / "assets" / "default.detector.simpsons"))


def detector_path(path: str | Path | None = None, option: str = "--model") -> Path:
    """``path``, or the shipped detector's: its bundle, or its ONNX export when only that ships
    (``SimpsonsError`` when none ships with this install, saying how to train one and give it with ``option``)."""
    if path is not None:
        return Path(path)
    for shipped in (default_detector_path(), exported_network_path(default_detector_path())):
        if shipped.is_file():
            return shipped
    raise SimpsonsError(f"no detector ships with this install: {TRAIN_A_DETECTOR} and give it as {option} "
                        "RUN/detector.simpsons")


@dataclass(frozen=True)
class Detection:
    """One character found in a picture: its name, the probability of its box, and the box ``x1, y1, x2, y2``
    in the picture's own pixels."""

    character: str
    probability: float
    box: tuple[float, float, float, float]

    def as_dict(self) -> dict:
        return {"character": self.character, "probability": round(self.probability, 6),
                "box": [round(value, 1) for value in self.box]}


class Detector:
    """Finds the characters in RGB pictures with a detector bundle: letterboxes each picture onto the
    network's canvas, runs the network in batches, and maps its peaks back to the picture's pixels."""

    def __init__(self, bundle: DetectorBundle, batch_size: int = 32):
        self.bundle = bundle
        self.characters = bundle.characters
        self.image_size = bundle.image_size
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | Path | None = None, option: str = "--model") -> Detector:
        """The detector bundle (or exported ``.onnx`` file) at ``path``, or the shipped one (without one, the error
        says how to train a detector and give it with ``option``); a bundle answers through ONNX Runtime when an
        up-to-date export lies beside it, else through Keras."""
        return cls(load_detector_for_inference(detector_path(path, option)))

    def prepare(self, image: Image.Image) -> tuple[np.ndarray, Placement]:
        """The picture letterboxed onto the network's canvas, and where it sits there."""
        return letterbox(image.convert("RGB"), self.image_size)

    def outputs(self, pixels: np.ndarray) -> np.ndarray:
        """The network's raw answers (``targets.outputs`` channels per cell) for a uint8 batch of canvases."""
        chunks = [self._answer(pixels[start : start + self.batch_size].astype(np.float32))
                  for start in range(0, len(pixels), self.batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)

    def _answer(self, pixels: np.ndarray) -> np.ndarray:
        """One batch through the network: a Keras model answers its one output, an ONNX session the list of
        its outputs."""
        answer = self.bundle.model.predict_on_batch(pixels)
        return np.asarray(answer[0] if isinstance(answer, list) else answer)

    def detect_prepared(self, pixels: np.ndarray, placements: list[Placement],
                        min_probability: float = DEFAULT_MIN_PROBABILITY) -> list[list[Detection]]:
        """Each canvas's detections at or above ``min_probability``, most probable first."""
        return [self.detections_of(output, placement, min_probability)
                for output, placement in zip(self.outputs(pixels), placements)]

    def detections_of(self, output: np.ndarray, placement: Placement, min_probability: float) -> list[Detection]:
        """One canvas's network answer as detections in its picture's pixels (boxes clipped to the picture;
        one left with no area is dropped)."""
        found = decode(output, self.bundle.stride, min_probability, MAX_DETECTIONS)
        boxes = placement.to_picture(found.boxes)
        return [Detection(self.characters[label], float(probability), tuple(float(v) for v in box))
                for box, probability, label in zip(boxes, found.probabilities, found.labels)
                if box[2] > box[0] and box[3] > box[1]]

    def detect_images(self, images: list[Image.Image],
                      min_probability: float = DEFAULT_MIN_PROBABILITY) -> list[list[Detection]]:
        """Each Pillow picture's detections (any mode)."""
        prepared = [self.prepare(image) for image in images]
        if not prepared:
            return []
        return self.detect_prepared(np.stack([pixels for pixels, _ in prepared]),
                                    [placement for _, placement in prepared], min_probability)

    def prepare_files(self, paths: list[str | Path]) -> Iterator[tuple[str | Path, tuple[np.ndarray, Placement] | str]]:
        """Each file with its canvas and placement, or why it cannot be read, in order; a pool of threads
        decodes ahead of the caller."""
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            yield from zip(paths, pool.map(self._prepare_file, paths))

    def _prepare_file(self, path: str | Path) -> tuple[np.ndarray, Placement] | str:
        try:
            return self.prepare(open_rgb(path))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            return f"unreadable image ({type(error).__name__})"
