"""Milliseconds per batch of 128 pictures (96 px) for the geometric augmentation, on this backend.

Keras' RandomFlip + RandomRotation + RandomTranslation + RandomZoom (four resamplings) against the
project's RandomAffine (one). Usage: KERAS_BACKEND=tensorflow|torch|jax python bench/augmentation_speed.py
"""

from __future__ import annotations

import json
import statistics
import time

import keras
import numpy as np
from keras import layers

from simpsons.models import RandomAffine


def median_ms(layer, images, repeats: int = 3) -> float:
    layer(images, training=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(layer(images, training=True))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


if __name__ == "__main__":
    images = keras.ops.convert_to_tensor(np.random.default_rng(0).uniform(0, 255, (128, 96, 96, 3)).astype("float32"))
    keras_stack = keras.Sequential([
        layers.RandomFlip("horizontal", seed=0),
        layers.RandomRotation(10 / 360, fill_mode="reflect", seed=0),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=0),
        layers.RandomZoom((-0.3, 0.1), fill_mode="reflect", seed=0),
    ])
    ours = RandomAffine(10.0, 0.1, (0.9, 1.4), seed=0)
    print(json.dumps({"backend": keras.backend.backend(), "keras_layers_ms": round(median_ms(keras_stack, images)),
                      "random_affine_ms": round(median_ms(ours, images))}))
