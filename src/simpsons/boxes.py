"""Bounding boxes of characters (``annotation.txt``): reading them, and the cut-out masks of training pictures.

A boxes file has one line per picture, ``relative/path.jpg,x1,y1,x2,y2,character``, in the pixels of the
picture as stored; paths are relative to the file's own folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from simpsons.errors import SimpsonsError

BOXES_FILE_NAME = "annotation.txt"  # where the Kaggle layout keeps its boxes: beside the training folder


@dataclass(frozen=True)
class Box:
    """One character's box in a picture: corners in the picture's own pixels, ``x2 > x1`` and ``y2 > y1``."""

    path: Path  # the picture, resolved against the boxes file's folder
    x1: int
    y1: int
    x2: int
    y2: int
    character: str


def read_boxes(path: str | Path) -> list[Box]:
    """Every box of a boxes file; a malformed line raises an error naming its line number."""
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SimpsonsError(f"cannot read the boxes file {source}: {error}") from None
    return [_parse_line(line, number, source) for number, line in enumerate(lines, start=1) if line.strip()]


def _parse_line(line: str, number: int, source: Path) -> Box:
    """One line of a boxes file as a ``Box``."""
    parts = [part.strip() for part in line.split(",")]
    where = f"{source}, line {number}"
    if len(parts) != 6:
        raise SimpsonsError(f"{where}: expected path,x1,y1,x2,y2,character, got {len(parts)} field(s)")
    try:
        x1, y1, x2, y2 = (int(float(value)) for value in parts[1:5])
    except ValueError:
        raise SimpsonsError(f"{where}: the corners must be numbers, got {','.join(parts[1:5])}") from None
    if x2 <= x1 or y2 <= y1 or min(x1, y1) < 0:
        raise SimpsonsError(f"{where}: the box ({x1}, {y1}, {x2}, {y2}) is empty or has negative corners")
    return Box(source.parent / parts[0], x1, y1, x2, y2, parts[5])


def find_boxes_file(data_dir: str | Path) -> Path | None:
    """The boxes file of a training folder in the Kaggle layout (``annotation.txt`` beside it), if any."""
    candidate = Path(data_dir).resolve().parent / BOXES_FILE_NAME
    return candidate if candidate.is_file() else None


def cutout_masks(paths: list[str], boxes: list[Box], size: int) -> np.ndarray:
    """A ``(n, size, size)`` uint8 mask per picture, squashed like its pixels: 255 inside its box, 0 outside;
    255 everywhere for a picture without a box (or one whose file cannot be opened to learn its size)."""
    by_path = {box.path.resolve(): box for box in boxes}
    masks = np.full((len(paths), size, size), 255, dtype=np.uint8)
    for index, path in enumerate(paths):
        box = by_path.get(Path(path).resolve())
        if box is None:
            continue
        try:
            with Image.open(path) as picture:
                width, height = picture.size
        except OSError:
            continue
        masks[index] = box_mask(box, width, height, size)
    return masks


def box_mask(box: Box, width: int, height: int, size: int) -> np.ndarray:
    """The box of a ``width x height`` picture as a ``size x size`` mask of the squashed picture (clipped to it)."""
    mask = np.zeros((size, size), dtype=np.uint8)
    left, right = (int(round(np.clip(x * size / width, 0, size))) for x in (box.x1, box.x2))
    top, bottom = (int(round(np.clip(y * size / height, 0, size))) for y in (box.y1, box.y2))
    mask[top:max(bottom, top + 1), left:max(right, left + 1)] = 255
    return mask
