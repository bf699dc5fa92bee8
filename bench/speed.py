"""CPU speed of the pipeline the CLI uses: training images/s, batched prediction, one-image latency
(Keras, the exported ONNX model and its int8 version calibrated on the sample pictures).

Usage: python bench/speed.py [--model BUNDLE] [--repeats 5]
Prints one JSON object; medians over repeats, measured in this one process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from machine import machine  # noqa: E402  (bench/machine.py, beside this script)
from simpsons.data import load_images, open_rgb  # noqa: E402
from simpsons.export import export_onnx, export_onnx_int8  # noqa: E402
from simpsons.models import build_augmentation, build_training_model, get_architecture  # noqa: E402
from simpsons.prediction import Predictor, default_model_path  # noqa: E402
from simpsons.training import PRESETS, Recipe, build_optimizer, fit_data  # noqa: E402

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "samples")


def timed(function, repeats: int) -> list[float]:
    """Seconds for each of ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def repeated_samples(image_size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The sample pictures repeated to ``count`` images, with one-hot labels."""
    samples = load_images(SAMPLES, image_size, use_cache=False)
    images = np.resize(samples.images, (count, *samples.images.shape[1:]))
    labels = np.eye(len(samples.characters), dtype=np.float32)[np.resize(samples.labels, count)]
    return images, labels


def compiled(model: keras.Model, recipe: Recipe, steps: int) -> keras.Model:
    """``model`` compiled with ``recipe``'s optimizer and schedule, as the speed benches train it."""
    model.compile(optimizer=build_optimizer(recipe, steps), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def training_speed(preset: str, steps: int, repeats: int) -> float:
    """Images/s of ``model.fit`` as ``simpsons train`` runs it (augmentation in the graph)."""
    recipe = PRESETS[preset]
    count = steps * recipe.batch_size
    images, labels = repeated_samples(recipe.image_size, count)
    classifier = get_architecture(recipe.arch).build(labels.shape[1], recipe.image_size)
    model = compiled(build_training_model(classifier, build_augmentation(recipe.augmentation, recipe.image_size, 0)),
                     recipe, steps)
    data = fit_data((images, labels), recipe.batch_size, seed=0)
    seconds = timed(lambda: model.fit(**data, epochs=1, verbose=0), repeats)
    return count / statistics.median(seconds)


def prediction_speed(predictor: Predictor, repeats: int) -> tuple[float, float]:
    """Batched images/s (512 pictures) and one-image latency in ms (resize + network) of ``predictor``."""
    samples = load_images(SAMPLES, predictor.image_size, use_cache=False)
    batch = np.resize(samples.images, (512, *samples.images.shape[1:]))
    one = [open_rgb(samples.paths[0])]
    batched = timed(lambda: predictor.probabilities(batch), repeats)
    single = timed(lambda: predictor.predict_images(one), max(20, repeats * 10))
    return len(batch) / statistics.median(batched), 1000 * statistics.median(single)


def prediction_speeds(model_path: str, repeats: int) -> dict[str, float]:
    """Keras, ONNX Runtime and int8 predictors of one bundle, with one-image ``model.predict`` as the baseline."""
    keras_predictor = Predictor.load(model_path)
    result = dict(zip(("predict_images_per_second", "single_image_ms"), prediction_speed(keras_predictor, repeats)))
    pixels = np.zeros((1, keras_predictor.image_size, keras_predictor.image_size, 3), np.float32)
    baseline = timed(lambda: keras_predictor.bundle.model.predict(pixels, verbose=0), max(20, repeats * 10))
    result["baseline_model_predict_single_ms"] = 1000 * statistics.median(baseline)
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = os.path.join(scratch, "model.onnx")
        export_onnx(keras_predictor.bundle, onnx_path)
        onnx_speed = prediction_speed(Predictor.load(onnx_path), repeats)
        int8_path = os.path.join(scratch, "int8.onnx")
        export_onnx_int8(keras_predictor.bundle, int8_path, SAMPLES)
        int8_speed = prediction_speed(Predictor.load(int8_path), repeats)
    result.update(zip(("onnx_predict_images_per_second", "onnx_single_image_ms"), onnx_speed))
    result.update(zip(("int8_predict_images_per_second", "int8_single_image_ms"), int8_speed))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    result = {"machine": machine(),
              "backend": keras.backend.backend(), "date": time.strftime("%Y-%m-%d")}
    if not args.skip_training:
        result["train_seed_images_per_second"] = training_speed("article", args.train_steps, args.repeats)
    result.update(prediction_speeds(args.model, args.repeats))
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
