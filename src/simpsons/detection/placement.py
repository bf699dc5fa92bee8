"""Where a picture sits on the square canvas the detector sees: scaled (aspect ratio kept) and shifted.

The detector letterboxes: a picture is scaled to fit the canvas, its aspect ratio kept, and centred on a
grey canvas (``PAD_VALUE``). Characters keep their shapes whatever the frame's shape, as in the training
canvases, where each picture keeps its aspect ratio too; boxes map back with one scale and one shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PAD_VALUE = 114  # the grey of the canvas around a picture


@dataclass(frozen=True)
class Placement:
    """A picture of ``width x height`` pixels drawn at ``scale`` with its top-left corner at (``left``, ``top``)
    of the canvas."""

    width: int
    height: int
    scale: float
    left: float
    top: float

    def to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """``(n, 4)`` boxes ``x1, y1, x2, y2`` in the picture's pixels -> in the canvas's."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        return boxes * self.scale + np.array([self.left, self.top, self.left, self.top], np.float32)

    def to_picture(self, boxes: np.ndarray) -> np.ndarray:
        """``(n, 4)`` boxes in the canvas's pixels -> in the picture's, clipped to the picture."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        mapped = (boxes - np.array([self.left, self.top, self.left, self.top], np.float32)) / self.scale
        return np.clip(mapped, 0, np.array([self.width, self.height, self.width, self.height], np.float32))


def fit_scale(width: int, height: int, size: int) -> float:
    """The scale at which a ``width x height`` picture just fits a ``size x size`` canvas."""
    return size / max(width, height)


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, Placement]:
    """The RGB picture scaled to fit a ``size x size`` grey canvas, centred: the canvas as uint8 and where the
    picture sits on it."""
    scale = fit_scale(*image.size, size)
    placement = Placement(image.width, image.height, scale, (size - image.width * scale) / 2,
                          (size - image.height * scale) / 2)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    paste(canvas, image, placement)
    return canvas, placement


def paste(canvas: np.ndarray, image: Image.Image, placement: Placement) -> None:
    """Draw ``image`` resized by ``placement.scale`` onto ``canvas`` at its place (the part inside the canvas)."""
    width = max(1, round(placement.width * placement.scale))
    height = max(1, round(placement.height * placement.scale))
    left, top = round(placement.left), round(placement.top)
    pixels = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    size_y, size_x = canvas.shape[:2]
    y1, x1 = max(top, 0), max(left, 0)
    y2, x2 = min(top + height, size_y), min(left + width, size_x)
    if y2 > y1 and x2 > x1:
        canvas[y1:y2, x1:x2] = pixels[y1 - top : y2 - top, x1 - left : x2 - left]
