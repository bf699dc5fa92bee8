"""Training speed of the article's `article_cnn` model: our pipeline against the article's, in one process.

The article fed `model.fit` from Keras' old ImageDataGenerator: every picture rotated, shifted and
flipped one at a time on the CPU by scipy (`ndimage.affine_transform`, order 1, nearest fill), then
the batch handed to the network. `simpsons train` keeps the pictures as one array and does the same
augmentation inside the training graph (`models.RandomAffine`, batched). The network alone (no
augmentation at all) is the ceiling. Each pipeline trains in a process of its own, as `simpsons train`
would (one `fit` call, a first epoch to warm up, then `--epochs` timed epochs); the three alternate,
`--repeats` processes each, so that a noisy minute of this shared machine hits all three.

Usage: python bench/train_speed.py [--steps 40] [--repeats 3] [--epochs 2]   (KERAS_BACKEND picks the backend)
Prints one JSON object: median images/s of each pipeline over its timed epochs, every epoch's speed,
and the ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from simpsons.models import build_article_cnn, build_augmentation, build_training_model  # noqa: E402
from simpsons.training import PRESETS, fit_data  # noqa: E402
from machine import machine  # noqa: E402
from speed import compiled, repeated_samples  # noqa: E402  (bench/speed.py, beside this script)


def article_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One picture as ImageDataGenerator(rotation_range=10, width/height_shift_range=0.1,
    horizontal_flip=True) transformed it, plus the article's Gaussian noise."""
    height, width = image.shape[:2]
    angle = np.deg2rad(rng.uniform(-10, 10))
    shift = rng.uniform(-0.1, 0.1, 2) * (height, width)
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, -sin], [sin, cos]])
    centre = np.array([height, width]) / 2 - 0.5
    offset = centre - matrix @ centre + shift
    out = np.stack([ndimage.affine_transform(image[..., c], matrix, offset, order=1, mode="nearest")
                    for c in range(image.shape[-1])], axis=-1)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out + rng.normal(0, 0.015 * 255, out.shape).astype(np.float32)


class ArticleBatches(keras.utils.PyDataset):
    """Shuffled batches, each picture augmented in Python as the article's generator did."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int):
        super().__init__()
        self.images, self.labels, self.batch_size = images.astype(np.float32), labels, batch_size
        self.rng = np.random.default_rng(0)
        self.order = self.rng.permutation(len(images))

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int):
        chosen = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        batch = np.stack([article_augment(self.images[i], self.rng) for i in chosen])
        return batch, self.labels[chosen]


PIPELINES = ("article_pipeline", "ours", "network_alone")


def epoch_seconds(pipeline: str, steps: int, epochs: int) -> list[float]:
    """Seconds of each epoch of one ``fit`` call of ``pipeline``, after a first epoch that warms up."""
    recipe = PRESETS["article"]
    images, labels = repeated_samples(recipe.image_size, steps * recipe.batch_size)
    classes, size = labels.shape[1], recipe.image_size
    if pipeline == "article_pipeline":
        model, data = build_article_cnn(classes, size), {"x": ArticleBatches(images, labels, recipe.batch_size)}
    elif pipeline == "ours":
        model = build_training_model(build_article_cnn(classes, size), build_augmentation("article", size, 0))
        data = fit_data((images, labels), recipe.batch_size, seed=0)
    else:
        model, data = build_article_cnn(classes, size), fit_data((images, labels), recipe.batch_size, seed=0)
    seconds = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds.append(time.perf_counter() - self.started)

    compiled(model, recipe, steps).fit(**data, epochs=epochs + 1, verbose=0, callbacks=[EpochTimer()])
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40, help="batches of 32 per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="processes per pipeline, interleaved")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per process")
    parser.add_argument("--only", choices=PIPELINES, help=argparse.SUPPRESS)  # one process's share
    args = parser.parse_args()
    if args.only:
        print(json.dumps(epoch_seconds(args.only, args.steps, args.epochs)))
        return
    seconds: dict[str, list[float]] = {name: [] for name in PIPELINES}
    for _ in range(args.repeats):
        for name in PIPELINES:
            command = [sys.executable, __file__, "--only", name, "--steps", str(args.steps), "--epochs", str(args.epochs)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            seconds[name] += json.loads(output.strip().splitlines()[-1])
    count = args.steps * PRESETS["article"].batch_size
    speed = {name: count / statistics.median(times) for name, times in seconds.items()}
    result = {
        "machine": machine(),
        "backend": keras.backend.backend(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "images_per_epoch": count, "processes_per_pipeline": args.repeats, "epochs_per_process": args.epochs,
        **{f"{name}_images_per_second": round(value, 1) for name, value in speed.items()},
        **{f"{name}_epoch_images_per_second": [round(count / t) for t in times] for name, times in seconds.items()},
        "ours_vs_article_pipeline": round(speed["ours"] / speed["article_pipeline"], 2),
        "ours_vs_network_alone": round(speed["ours"] / speed["network_alone"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
