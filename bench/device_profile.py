"""Where training time goes on a GPU: images/s of one resnet training step setup, by variant.

Run once per backend: KERAS_BACKEND=torch|jax python bench/device_profile.py [steps]
Variants: numpy input with augmentation (what `simpsons train` does), without augmentation,
and with a larger batch. Prints one JSON line per variant.
"""

from __future__ import annotations

import json
import sys
import time

import keras
import numpy as np

from simpsons.models import build_augmentation, build_training_model, get_architecture


def measure(augment: bool, batch_size: int, steps: int) -> float:
    classifier = get_architecture("resnet").build(20, 96)
    model = build_training_model(classifier, build_augmentation("strong", 96, 0)) if augment else classifier
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    count = steps * batch_size
    images = np.random.default_rng(0).integers(0, 255, (count, 96, 96, 3), dtype=np.uint8)
    labels = np.eye(20, dtype=np.float32)[np.arange(count) % 20]
    model.fit(images[: batch_size * 3], labels[: batch_size * 3], batch_size=batch_size, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0)
    return count / (time.perf_counter() - start)


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    for augment, batch in ((True, 128), (False, 128), (True, 512)):
        rate = measure(augment, batch, steps)
        print(json.dumps({"backend": keras.backend.backend(), "augment": augment, "batch": batch,
                          "images_per_second": round(rate, 1)}), flush=True)
