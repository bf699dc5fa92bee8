"""Training canvases composed from boxed pictures: 2 to 4 per canvas (a mosaic), or one alone.

Each picture of the Kaggle set has one box, its folder's character; other characters in the frame have
none. A canvas puts several boxed pictures side by side, each cropped at random around its box (so that
less of the unboxed rest comes along), maybe mirrored, scaled at random within its part of the canvas and
placed at random in it: the network learns several characters per picture, at many sizes and places. Pure
NumPy and Pillow, seeded by the caller's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from simpsons.detection.placement import PAD_VALUE, Placement, letterbox, paste

PICTURES_PER_CANVAS = (1, 2, 3, 4)
PICTURES_PER_CANVAS_ODDS = (0.25, 0.25, 0.2, 0.3)  # one picture alone a quarter of the time
CROP_RATE = 0.7  # pictures cropped at random around their box; the others come whole
FLIP_RATE = 0.5
SCALE_RANGE = (0.5, 1.0)  # of the scale that fits the picture's part of the canvas
ALONE_SCALE_RANGE = (0.35, 1.0)  # a picture alone: from a third of the canvas to all of it
SPLIT_RANGE = (0.35, 0.65)  # where the canvas is cut into parts, as a share of its side
BRIGHTNESS_RANGE = (0.8, 1.2)


@dataclass(frozen=True)
class BoxedPicture:
    """A decoded RGB picture (uint8, height x width x 3) with its characters' ``(n, 4)`` boxes ``x1, y1, x2, y2``
    in its pixels and their ``(n,)`` character indices."""

    pixels: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Canvas:
    """A square uint8 canvas with its ``(n, 4)`` boxes in canvas pixels and their ``(n,)`` character indices."""

    pixels: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def compose(pictures: list[BoxedPicture], size: int, rng: np.random.Generator) -> Canvas:
    """A ``size x size`` canvas of the ``pictures`` (1 to 4), each in its own part of it."""
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    single = len(pictures) == 1
    boxes, labels = [], []
    for picture, region in zip(pictures, _regions(len(pictures), size, rng)):
        cropped, crop_boxes = _random_crop(picture, rng)
        if rng.random() < FLIP_RATE:
            cropped, crop_boxes = cropped[:, ::-1], _mirrored(crop_boxes, cropped.shape[1])
        placement = _random_placement(cropped.shape[1], cropped.shape[0], region,
                                      ALONE_SCALE_RANGE if single else SCALE_RANGE, rng)
        gain = rng.uniform(*BRIGHTNESS_RANGE)
        brightened = np.clip(cropped.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        paste(canvas, Image.fromarray(brightened), placement)
        boxes.append(np.clip(placement.to_canvas(crop_boxes), 0, size))
        labels.append(picture.labels)
    return Canvas(canvas, np.concatenate(boxes).astype(np.float32), np.concatenate(labels).astype(np.int64))


def random_canvas(pictures: list[BoxedPicture], lead: int, size: int, rng: np.random.Generator) -> Canvas:
    """A canvas of picture ``lead`` and 0 to 3 others drawn at random from ``pictures``."""
    count = int(rng.choice(PICTURES_PER_CANVAS, p=PICTURES_PER_CANVAS_ODDS))
    others = rng.integers(0, len(pictures), size=count - 1)
    chosen = [pictures[lead], *(pictures[int(i)] for i in others)]
    order = rng.permutation(len(chosen))
    return compose([chosen[i] for i in order], size, rng)


def alone(picture: BoxedPicture, size: int) -> Canvas:
    """The picture letterboxed whole onto the canvas, as the detector sees a picture it is given."""
    pixels, placement = letterbox(Image.fromarray(picture.pixels), size)
    return Canvas(pixels, placement.to_canvas(picture.boxes), np.asarray(picture.labels, np.int64))


def _regions(count: int, size: int, rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """``count`` parts of the canvas (left, top, right, bottom) that tile it: the whole, halves, a half and
    two quarters, or four quarters, cut at random places."""
    cut_x, cut_y = (rng.uniform(*SPLIT_RANGE) * size for _ in range(2))
    whole = (0.0, 0.0, float(size), float(size))
    if count == 1:
        return [whole]
    if count == 2:
        if rng.random() < 0.5:
            return [(0.0, 0.0, cut_x, size), (cut_x, 0.0, size, size)]
        return [(0.0, 0.0, size, cut_y), (0.0, cut_y, size, size)]
    quarters = [(0.0, 0.0, cut_x, cut_y), (cut_x, 0.0, size, cut_y), (0.0, cut_y, cut_x, size),
                (cut_x, cut_y, size, size)]
    if count == 4:
        return quarters
    half = rng.integers(4)  # which side of the canvas one picture has alone: left, right, top or bottom
    merged = [(0.0, 0.0, cut_x, size), (cut_x, 0.0, size, size), (0.0, 0.0, size, cut_y), (0.0, cut_y, size, size)]
    rest = [quarters[i] for i in ((1, 3), (0, 2), (2, 3), (0, 1))[half]]
    return [merged[half], *rest]


def _random_crop(picture: BoxedPicture, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The picture cropped to a random rectangle that holds all its boxes (or whole, ``1 - CROP_RATE`` of the
    time), and the boxes in the crop's pixels."""
    height, width = picture.pixels.shape[:2]
    boxes = np.asarray(picture.boxes, np.float32).reshape(-1, 4)
    if rng.random() >= CROP_RATE:
        return picture.pixels, boxes
    x1, y1 = boxes[:, :2].min(axis=0)
    x2, y2 = boxes[:, 2:].max(axis=0)
    left, top = int(rng.uniform(0, np.floor(x1) + 1)), int(rng.uniform(0, np.floor(y1) + 1))
    right, bottom = int(np.ceil(rng.uniform(x2, width))), int(np.ceil(rng.uniform(y2, height)))
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    return picture.pixels[top:bottom, left:right], boxes - np.array([left, top, left, top], np.float32)


def _mirrored(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of a ``width``-pixel-wide picture, in its mirror image."""
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def _random_placement(width: int, height: int, region: tuple[float, float, float, float],
                      scales: tuple[float, float], rng: np.random.Generator) -> Placement:
    """A ``width x height`` picture scaled at random to fit ``region`` and placed at random inside it."""
    left, top, right, bottom = region
    scale = min((right - left) / width, (bottom - top) / height) * rng.uniform(*scales)
    free_x, free_y = (right - left) - width * scale, (bottom - top) - height * scale
    return Placement(width, height, scale, left + rng.uniform(0, max(free_x, 0.0)),
                     top + rng.uniform(0, max(free_y, 0.0)))
