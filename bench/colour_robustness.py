"""How a model copes with frames whose colours are not the usual ones: its accuracy on its own
shot-aware validation pictures as stored, in black and white, under a blue night tint and an orange
sunset tint, and with a fifth of each picture hidden by noise.

Usage: python bench/colour_robustness.py TRAIN_DATA [--model BUNDLE ...] [--json FILE]
(TRAIN_DATA: the folder the bundles were trained on; default model: the shipped one.)
Prints one line per model; the test set is not read.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from simpsons.bundle import load_bundle  # noqa: E402
from simpsons.confidence import shot_aware_parts  # noqa: E402
from simpsons.files import write_json  # noqa: E402
from simpsons.models import LUMINANCE  # noqa: E402
from simpsons.prediction import Predictor, default_model_path  # noqa: E402

TINTS = {"night": [0.6, 0.7, 1.1], "sunset": [1.1, 0.85, 0.6]}  # per-channel gains (R, G, B)
HIDDEN_AREA = 0.2


def black_and_white(images: np.ndarray) -> np.ndarray:
    return np.repeat((images @ np.asarray(LUMINANCE, dtype=np.float32))[..., None], 3, axis=-1)


def tinted(images: np.ndarray, gains: list[float]) -> np.ndarray:
    return np.clip(images * np.asarray(gains, dtype=np.float32), 0, 255)


def part_hidden(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each picture with one square of ``HIDDEN_AREA`` of its area, at a random place, replaced by noise."""
    rng = np.random.default_rng(seed)
    hidden = images.copy()
    size = images.shape[1]
    side = int(round(size * HIDDEN_AREA ** 0.5))
    for picture in hidden:
        top, left = rng.integers(0, size - side + 1, size=2)
        picture[top:top + side, left:left + side] = rng.uniform(0, 255, (side, side, 3))
    return hidden


def variants(images: np.ndarray) -> dict[str, np.ndarray]:
    pixels = images.astype(np.float32)
    return {"as stored": pixels, "black and white": black_and_white(pixels),
            **{name: tinted(pixels, gains) for name, gains in TINTS.items()},
            f"{HIDDEN_AREA:.0%} hidden": part_hidden(pixels)}


def robustness(train_data: str, model: str) -> dict[str, float]:
    """Accuracy of ``model`` on each variant of its validation pictures."""
    bundle = load_bundle(model)
    _, validation = shot_aware_parts(train_data, bundle)
    predictor = Predictor(bundle)
    return {name: float(np.mean(predictor.probabilities(pictures).argmax(axis=1) == validation.labels))
            for name, pictures in variants(validation.images).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="the training folder the models were trained on")
    parser.add_argument("--model", action="append", help="model bundle (repeatable; default: the shipped one)")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    results = {}
    for model in args.model or [str(default_model_path())]:
        results[model] = robustness(args.data, model)
        print(model + ": " + ", ".join(f"{name} {accuracy:.4f}" for name, accuracy in results[model].items()))
    if args.json:
        write_json(results, args.json)


if __name__ == "__main__":
    main()
