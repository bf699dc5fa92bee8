"""Pictures with their detections drawn: a coloured box and the character's name and probability."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from simpsons.detection.detector import Detection
from simpsons.files import replacing
from simpsons.plots import pretty

COLOURS = ("#f5c518", "#2f80ed", "#eb5757", "#27ae60", "#9b51e0", "#f2994a", "#56ccf2", "#bb6bd9", "#6fcf97",
           "#e0e0e0")  # one per character, in the order of the detector's characters, round again after ten
LabelledBox = tuple[tuple[float, float, float, float], str, str]  # a box x1, y1, x2, y2, its label, its colour


def colour_of(character: str, characters: list[str]) -> str:
    """The colour a character's boxes are drawn in."""
    return COLOURS[characters.index(character) % len(COLOURS)] if character in characters else COLOURS[-1]


def draw_detections(image: Image.Image, detections: list[Detection], characters: list[str]) -> Image.Image:
    """A copy of the RGB picture with each detection's box and label (``Name 0.93``) drawn on it, in its
    character's colour."""
    most_probable_first = sorted(detections, key=lambda found: found.probability, reverse=True)
    return draw_boxes(image, [labelled(detection, colour_of(detection.character, characters))
                              for detection in most_probable_first])


def labelled(detection: Detection, colour: str) -> LabelledBox:
    """A detection as ``draw_boxes`` takes it: its box, ``Name 0.93``, and ``colour``."""
    return detection.box, f"{pretty(detection.character)} {detection.probability:.2f}", colour


def draw_boxes(image: Image.Image, boxes: list[LabelledBox], labels_below: bool = False) -> Image.Image:
    """A copy of the RGB picture with each box, its outline and its label in its colour, drawn on it; the first
    of ``boxes`` on top. A label sits above its box (``labels_below``: under it), or inside it at the edge."""
    drawn = image.convert("RGB")
    canvas = ImageDraw.Draw(drawn)
    line = max(1, round(min(drawn.size) / 160))
    font = ImageFont.load_default(size=max(10, round(min(drawn.size) / 18)))
    for (x1, y1, x2, y2), label, colour in reversed(boxes):
        canvas.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        left, top, right, bottom = canvas.textbbox((0, 0), label, font=font)
        height = bottom - top + 2 * line
        if labels_below:
            text_y = y2 if y2 + height <= drawn.height else y2 - height
        else:
            text_y = y1 - height if y1 - height >= 0 else y1
        canvas.rectangle((x1, text_y, x1 + right - left + 2 * line, text_y + height), fill=colour)
        canvas.text((x1 + line - left, text_y + line - top), label, fill="black", font=font)
    return drawn


def save_drawn(image: Image.Image, path: Path) -> None:
    """Write a drawn picture atomically, in the format its suffix names."""
    with replacing(path) as partial:
        image.save(partial, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
