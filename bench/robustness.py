"""How well models name characters in pictures unlike the episodes' frames, side by side.

Top-1 accuracy of the best guesses (thresholds and the stranger detector ignored) on:
- the test set as stored, in black and white, under colour casts (night blue, sunset orange), with a
  fifth of each picture hidden by noise, mirrored, and zoomed out (the frame at half its size in the
  middle of a plain grey canvas);
- the test pictures' boxes (the character the picture is labelled with) pasted on plain backgrounds;
- the artwork set (drawings from outside the episodes; characters the model does not know are left out).

Usage: python bench/robustness.py DATA_ROOT [--model BUNDLE ...] [--json FILE] [--markdown]
(DATA_ROOT holds simpsons/kaggle_simpson_testset, simpsons/annotation.txt and artwork/, as ../shared/data.)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from simpsons.boxes import read_boxes  # noqa: E402
from simpsons.data import list_images, open_rgb, resize_square  # noqa: E402
from simpsons.files import write_json  # noqa: E402
from simpsons.models import LUMINANCE  # noqa: E402
from simpsons.prediction import Predictor, default_model_path  # noqa: E402

TINTS = {"night tint": (0.6, 0.7, 1.1), "sunset tint": (1.1, 0.85, 0.6)}  # per-channel gains (R, G, B)
HIDDEN_AREA = 0.2
ZOOM_OUT = 0.5
PLAIN_COLOURS = ((255, 255, 255), (128, 128, 128), (70, 130, 180))  # white, grey, steel blue: one per box in turn


def black_and_white(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) @ np.asarray(LUMINANCE, dtype=np.float32)
    return Image.fromarray(np.repeat(pixels[..., None], 3, axis=-1).round().astype(np.uint8))


def tinted(gains: tuple[float, float, float]) -> Callable[[Image.Image], Image.Image]:
    def tint(image: Image.Image) -> Image.Image:
        pixels = np.asarray(image, dtype=np.float32) * np.asarray(gains, dtype=np.float32)
        return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    return tint


def part_hidden(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One square of ``HIDDEN_AREA`` of the picture, at a random place, replaced by noise."""
    pixels = np.array(image)
    height, width = pixels.shape[:2]
    side = int(round((HIDDEN_AREA * height * width) ** 0.5))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    pixels[top:top + side, left:left + side] = rng.integers(0, 256, (side, side, 3))
    return Image.fromarray(pixels)


def zoomed_out(image: Image.Image) -> Image.Image:
    """The picture at ``ZOOM_OUT`` of its size in the middle of a grey canvas of its own size."""
    canvas = Image.new("RGB", image.size, (128, 128, 128))
    small = image.resize((max(1, round(image.width * ZOOM_OUT)), max(1, round(image.height * ZOOM_OUT))))
    canvas.paste(small, ((image.width - small.width) // 2, (image.height - small.height) // 2))
    return canvas


def on_plain(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """The picture centred on a square canvas of ``colour`` (a margin of a tenth around its longer side)."""
    side = round(max(image.size) * 1.2)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def labelled_pictures(folder: Path) -> list[tuple[Image.Image, str]]:
    files, _ = list_images(folder)
    return [(open_rgb(path), character) for path, character in files]


def boxed_pictures(boxes_file: Path, test_folder: Path) -> list[tuple[Image.Image, str]]:
    """Each boxed test picture's box, cropped out and put on a plain colour."""
    inside = test_folder.resolve()
    boxes = [box for box in read_boxes(boxes_file) if box.path.resolve().parent == inside]
    return [(on_plain(open_rgb(box.path).crop((box.x1, box.y1, box.x2, box.y2)), PLAIN_COLOURS[i % 3]), box.character)
            for i, box in enumerate(boxes)]


def top1(predictor: Predictor, pictures: list[tuple[Image.Image, str]]) -> tuple[float, int]:
    """Top-1 accuracy of the best guesses on the pictures of characters the model knows, and their count."""
    known = [(image, predictor.characters.index(name)) for image, name in pictures if name in predictor.characters]
    pixels = np.stack([resize_square(image, predictor.image_size) for image, _ in known])
    guesses = predictor.probabilities(pixels).argmax(axis=1)
    return float(np.mean(guesses == np.array([label for _, label in known]))), len(known)


def variants(root: Path) -> dict[str, list[tuple[Image.Image, str]]]:
    """Every picture set of the table, decoded once for all models."""
    test_folder = root / "simpsons" / "kaggle_simpson_testset"
    test = labelled_pictures(test_folder)
    rng = np.random.default_rng(0)
    changed = {
        "black and white": black_and_white,
        **{name: tinted(gains) for name, gains in TINTS.items()},
        f"{HIDDEN_AREA:.0%} hidden": lambda image: part_hidden(image, rng),
        "mirrored": ImageOps.mirror,
        "zoomed out (half size on grey)": zoomed_out,
    }
    return {
        "test set": test,
        **{name: [(change(image), character) for image, character in test] for name, change in changed.items()},
        "box on a plain background": boxed_pictures(root / "simpsons" / "annotation.txt", test_folder),
        "artwork": labelled_pictures(root / "artwork"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="folder holding simpsons/ and artwork/ (../shared/data)")
    parser.add_argument("--model", action="append", help="model bundle (repeatable; default: the shipped one)")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    args = parser.parse_args()
    models = args.model or [str(default_model_path())]
    sets = variants(Path(args.data))
    results: dict[str, dict[str, float]] = {name: {} for name in sets}
    counts: dict[str, int] = {}
    for model in models:
        predictor = Predictor.load(model)
        for name, pictures in sets.items():
            results[name][model], counts[name] = top1(predictor, pictures)
    names = [Path(model).name for model in models]
    if args.markdown:
        print("| pictures | count | " + " | ".join(names) + " |")
        print("|---|---:|" + "---:|" * len(models))
    for name, by_model in results.items():
        figures = [f"{by_model[model]:.3f}" for model in models]
        print(f"| {name} | {counts[name]} | " + " | ".join(figures) + " |" if args.markdown
              else f"{name:<34} {counts[name]:>4}  " + "  ".join(figures))
    if args.json:
        write_json({"models": models, "counts": counts, "top1": results}, args.json)


if __name__ == "__main__":
    main()
