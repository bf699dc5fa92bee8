"""Pictures with their detections drawn: a coloured box and the character's name and probability."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from simpsons.detection.detector import Detection
from simpsons.files import replacing
from simpsons.plots import pretty

COLOURS = ("#f5c518", "#2f80ed", "#eb5757", "#27ae60", "#9b51e0", "#f2994a", "#56ccf2", "#bb6bd9", "#6fcf97",
           "#e0e0e0")  # one per character, in the order of the detector's characters, round again after ten


def colour_of(character: str, characters: list[str]) -> str:
    """The colour a character's boxes are drawn in."""
    return COLOURS[characters.index(character) % len(COLOURS)] if character in characters else COLOURS[-1]


def draw_detections(image: Image.Image, detections: list[Detection], characters: list[str]) -> Image.Image:
    """A copy of the RGB picture with each detection's box and label (``Name 0.93``) drawn on it."""
    drawn = image.convert("RGB")
    canvas = ImageDraw.Draw(drawn)
    line = max(1, round(min(drawn.size) / 160))
    font = ImageFont.load_default(size=max(10, round(min(drawn.size) / 18)))
    for detection in sorted(detections, key=lambda found: found.probability):  # the most probable on top
        colour = colour_of(detection.character, characters)
        x1, y1, x2, y2 = detection.box
        canvas.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        label = f"{pretty(detection.character)} {detection.probability:.2f}"
        left, top, right, bottom = canvas.textbbox((0, 0), label, font=font)
        text_y = y1 - (bottom - top) - 2 * line if y1 - (bottom - top) - 2 * line >= 0 else y1
        canvas.rectangle((x1, text_y, x1 + right - left + 2 * line, text_y + bottom - top + 2 * line), fill=colour)
        canvas.text((x1 + line - left, text_y + line - top), label, fill="black", font=font)
    return drawn


def save_drawn(image: Image.Image, path: Path) -> None:
    """Write a drawn picture atomically, in the format its suffix names."""
    with replacing(path) as partial:
        image.save(partial, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
