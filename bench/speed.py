"""CPU speed of the pipeline the CLI uses: training images/s; batched prediction and one-image latency
through ONNX Runtime (the bundle's export beside it), Keras and an int8 export calibrated on --calibration
pictures (its top-1 accuracy against the float network's on --test pictures); the command line in fresh
processes: `import simpsons`, `simpsons predict one.jpg` and pictures/s of `simpsons predict FOLDER`
beyond start-up (decoding included).

Usage: python bench/speed.py [--model BUNDLE] [--repeats 5] [--test DIR] [--calibration DIR]
Prints one JSON object; medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from machine import machine  # noqa: E402  (bench/machine.py, beside this script)
from simpsons.data import load_images, open_rgb  # noqa: E402
from simpsons.bundle import network_fingerprint  # noqa: E402
from simpsons.export import export_onnx_int8  # noqa: E402
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


def prediction_speeds(model_path: str, repeats: int, calibration: str) -> tuple[dict[str, float], Predictor]:
    """ONNX Runtime, Keras and int8 predictors of one bundle, with one-image ``model.predict`` as the baseline;
    the figures and the int8 predictor."""
    onnx_predictor, keras_predictor = Predictor.load(model_path, "onnx"), Predictor.load(model_path, "keras")
    result = dict(zip(("onnx_predict_images_per_second", "onnx_single_image_ms"),
                      prediction_speed(onnx_predictor, repeats)))
    result.update(zip(("keras_predict_images_per_second", "keras_single_image_ms"),
                      prediction_speed(keras_predictor, repeats)))
    pixels = np.zeros((1, keras_predictor.image_size, keras_predictor.image_size, 3), np.float32)
    baseline = timed(lambda: keras_predictor.bundle.model.predict(pixels, verbose=0), max(20, repeats * 10))
    result["baseline_model_predict_single_ms"] = 1000 * statistics.median(baseline)
    with tempfile.TemporaryDirectory() as scratch:
        int8_path = os.path.join(scratch, "int8.onnx")
        agreement, _ = export_onnx_int8(keras_predictor.bundle, int8_path, calibration,
                                        source=network_fingerprint(model_path))
        int8_predictor = Predictor.load(int8_path)
        result.update(zip(("int8_predict_images_per_second", "int8_single_image_ms"),
                          prediction_speed(int8_predictor, repeats)))
        result["int8_agreement_on_calibration_data"] = agreement
        result["int8_megabytes"] = os.path.getsize(int8_path) / 1e6
    result["onnx_megabytes"] = os.path.getsize(Path(model_path).with_suffix(".onnx")) / 1e6
    return result, int8_predictor


def test_accuracies(predictors: dict[str, Predictor], test_dir: str) -> dict[str, float]:
    """Top-1 accuracy (best guesses, thresholds ignored) of each predictor on a labelled test set."""
    result = {}
    for name, predictor in predictors.items():
        test = load_images(test_dir, predictor.image_size)
        known = np.array([test.characters[label] in predictor.characters for label in test.labels])
        truth = [predictor.characters.index(test.characters[label]) for label in test.labels[known]]
        guesses = predictor.logits(test.images[known]).argmax(axis=1)
        result[f"{name}_test_top1_accuracy"] = float(np.mean(guesses == np.array(truth)))
    return result


def command_seconds(*argv: str) -> float:
    """Wall time of a fresh Python process running ``argv`` (``-m simpsons.cli ...`` or ``-c ...``)."""
    began = time.perf_counter()
    subprocess.run([sys.executable, *argv], check=True, capture_output=True)
    return time.perf_counter() - began


def command_line_speeds(model_path: str, repeats: int, pictures: int) -> dict[str, float]:
    """Start-up and throughput of the command line in fresh processes, through its default backend."""
    one = os.path.join(SAMPLES, "bart_simpson_0.jpg")
    median = lambda *argv: statistics.median(command_seconds(*argv) for _ in range(repeats))  # noqa: E731
    result = {"import_simpsons_s": median("-c", "import simpsons"),
              "import_simpsons_prediction_s": median("-c", "import simpsons.prediction"),
              "predict_one_picture_s": median("-m", "simpsons.cli", "predict", one, "--model", model_path)}
    with tempfile.TemporaryDirectory() as folder:
        samples = sorted(Path(SAMPLES).glob("*.jpg"))
        for number in range(pictures):
            source = samples[number % len(samples)]
            shutil.copyfile(source, Path(folder) / f"{number:04d}_{source.name}")
        many = median("-m", "simpsons.cli", "predict", folder, "--model", model_path)
    result[f"predict_{pictures}_pictures_s"] = many
    result["predict_pictures_per_second_beyond_start_up"] = (pictures - 1) / (many - result["predict_one_picture_s"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--pictures", type=int, default=600, help="pictures of the batched command (default 600)")
    parser.add_argument("--calibration", default=SAMPLES, help="int8 calibration pictures (default: the samples)")
    parser.add_argument("--test", help="labelled test set: top-1 accuracy of the float and the int8 networks")
    args = parser.parse_args()
    result = {"machine": machine(),
              "backend": keras.backend.backend(), "date": time.strftime("%Y-%m-%d")}
    result.update(command_line_speeds(args.model, args.repeats, args.pictures))
    if not args.skip_training:
        result["train_seed_images_per_second"] = training_speed("article", args.train_steps, args.repeats)
    speeds, int8_predictor = prediction_speeds(args.model, args.repeats, args.calibration)
    result.update(speeds)
    if args.test:
        result.update(test_accuracies({"onnx": Predictor.load(args.model, "onnx"), "int8": int8_predictor}, args.test))
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
