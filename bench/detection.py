"""The detector against the classifier's crops, on the same pictures and the same clip.

- The boxed test pictures (the boxes of annotation.txt under kaggle_simpson_testset): the detector's COCO
  mAP@0.5 and mAP@0.5:0.95, its top box right (name and IoU >= 0.5), and its top box's name against the
  classifier's best guess on the whole picture.
- artwork/: the name of the detector's top box against the classifier's best guess (characters both know).
- comic_shop.mp4 against its truth (who is on screen, second by second): precision and recall per second of
  the timeline from the classifier's left/right/full crops and of the one from the detector's boxes, both at
  the command's default settings; a character is on screen in a second when a segment covers its middle.
- Speed: the detector's pictures per second in batches of 32 (letterboxing included), and the wall time of
  ``simpsons video --detect`` and of ``simpsons video`` against the clip's length (start-up included).

Usage: python bench/detection.py DATA_ROOT [--detector BUNDLE] [--model CLASSIFIER] [--repeats 3] [--json FILE]
(DATA_ROOT holds simpsons/kaggle_simpson_testset, simpsons/annotation.txt, artwork/ and videos/, as ../shared/data.)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from machine import machine  # noqa: E402  (bench/machine.py, beside this script)
from simpsons.data import list_images, open_rgb, resize_square  # noqa: E402
from simpsons.detection.detector import Detector  # noqa: E402
from simpsons.detection.evaluation import boxes_under, evaluate_on_boxes  # noqa: E402
from simpsons.files import write_json  # noqa: E402
from simpsons.frames import probe  # noqa: E402
from simpsons.prediction import Predictor, default_model_path  # noqa: E402

SPEED_PICTURES = 256


def names_of_top_boxes(detector: Detector, paths: list[Path]) -> list[str | None]:
    """The name of each picture's most probable box (None when it has none at the detector's threshold)."""
    names: list[str | None] = []
    for start in range(0, len(paths), detector.batch_size):
        images = [open_rgb(path) for path in paths[start : start + detector.batch_size]]
        names += [found[0].character if found else None for found in detector.detect_images(images)]
    return names


def best_guesses(predictor: Predictor, paths: list[Path]) -> list[str]:
    """The classifier's best guess on each whole picture (thresholds ignored)."""
    guesses: list[str] = []
    for start in range(0, len(paths), predictor.batch_size):
        pixels = np.stack([resize_square(open_rgb(path), predictor.image_size)
                           for path in paths[start : start + predictor.batch_size]])
        guesses += [predictor.characters[index] for index in predictor.probabilities(pixels).argmax(axis=1)]
    return guesses


def names_side_by_side(detector: Detector, predictor: Predictor, labelled: list[tuple[Path, str]]) -> dict:
    """Top-1 of the detector's top box and of the classifier's best guess on the pictures both know."""
    known = [(path, name) for path, name in labelled
             if name in detector.characters and name in predictor.characters]
    paths, truth = [path for path, _ in known], np.array([name for _, name in known])
    return {"pictures": len(known),
            "detector_top_box_name": float(np.mean(np.array(names_of_top_boxes(detector, paths), object) == truth)),
            "classifier_best_guess": float(np.mean(np.array(best_guesses(predictor, paths)) == truth))}


def test_pictures(detector: Detector, predictor: Predictor, root: Path) -> dict:
    """COCO scores on the boxed test pictures, and both models' names for them."""
    boxes = boxes_under(root / "simpsons" / "annotation.txt", root / "simpsons" / "kaggle_simpson_testset")
    scores = evaluate_on_boxes(detector, boxes)
    labelled = sorted({(box.path, box.character) for box in boxes})
    return {"map_50": scores.map_50, "map_50_95": scores.map_50_95, "top_box_right": scores.top_box_right,
            "boxes": sum(scores.true_boxes.values()), **names_side_by_side(detector, predictor, labelled)}


def seconds_on_screen(rows: list[tuple[float, float, str]], duration: float) -> list[set[str]]:
    """For each whole second of the clip, the characters whose span (start, end, name) covers its middle."""
    seconds: list[set[str]] = [set() for _ in range(math.ceil(duration))]
    for second, present in enumerate(seconds):
        present.update(name for start, end, name in rows if start <= second + 0.5 < end)
    return seconds


def truth_rows(path: Path) -> list[tuple[float, float, str]]:
    """The truth file's spans, one row per character."""
    with path.open(newline="") as file:
        return [(float(row["start"]), float(row["end"]), name) for row in csv.DictReader(file)
                for name in row["characters"].split(";") if name]


def precision_recall(found: list[set[str]], truth: list[set[str]]) -> dict:
    """Precision and recall of the names per second."""
    hits = sum(len(f & t) for f, t in zip(found, truth))
    named, present = sum(len(f) for f in found), sum(len(t) for t in truth)
    return {"precision": hits / named if named else float("nan"), "recall": hits / present if present else float("nan"),
            "names": named, "true_names": present}


def run_video(clip: Path, timeline: Path, *options: str) -> tuple[float, list[tuple[float, float, str]]]:
    """Wall time of ``simpsons video`` (start-up included) and the spans of its timeline."""
    began = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "simpsons"), "video", str(clip), "--timeline", str(timeline),
                    *options], check=True, capture_output=True)
    seconds = time.perf_counter() - began
    segments = json.loads(timeline.read_text())["segments"]
    return seconds, [(segment["start"], segment["end"], segment["character"]) for segment in segments]


def clip_side_by_side(root: Path, detector: str | None, model: str, repeats: int, scratch: Path) -> dict:
    """Both timelines of comic_shop.mp4 against its truth, and the commands' speed (medians over ``repeats``)."""
    clip = root / "videos" / "comic_shop.mp4"
    duration = probe(clip).duration
    truth = seconds_on_screen(truth_rows(clip.with_suffix(".truth.csv")), duration)
    runs = {"classifier_crops": ("--model", model), "detector": ("--detect", *(("--detector", detector) if detector else ()))}
    result = {"clip_seconds": round(duration, 1)}
    for name, options in runs.items():
        times, spans = [], []
        for _ in range(repeats):
            seconds, spans = run_video(clip, scratch / f"{name}.json", *options)
            times.append(seconds)
        wall = statistics.median(times)
        result[name] = {**precision_recall(seconds_on_screen(spans, duration), truth),
                        "command_s": round(wall, 2), "x_real_time": round(duration / wall, 1)}
    return result


def detector_speed(detector: Detector, root: Path, repeats: int) -> dict:
    """Pictures per second through ``detect_images`` in batches of 32: medians over ``repeats``."""
    paths = [path for path, _ in list_images(root / "simpsons" / "kaggle_simpson_testset")[0]][:SPEED_PICTURES]
    images = [open_rgb(path) for path in paths]
    detector.detect_images(images[: detector.batch_size])  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        for start in range(0, len(images), detector.batch_size):
            detector.detect_images(images[start : start + detector.batch_size])
        times.append(time.perf_counter() - began)
    return {"pictures": len(images), "batch": detector.batch_size,
            "pictures_per_s": round(len(images) / statistics.median(times), 1),
            "network": type(detector.bundle.model).__name__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="folder holding simpsons/, artwork/ and videos/ (../shared/data)")
    parser.add_argument("--detector", help="detector bundle or .onnx (default: the shipped one)")
    parser.add_argument("--model", default=str(default_model_path()), help="classifier (default: the shipped one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the report to this JSON file too")
    args = parser.parse_args()
    detector, predictor = Detector.load(args.detector), Predictor.load(args.model)
    artwork = [(Path(path), name) for path, name in list_images(args.data / "artwork")[0]]
    with tempfile.TemporaryDirectory() as scratch:
        report = {
            "machine": machine(), "date": time.strftime("%Y-%m-%d"), "detector": args.detector or "shipped",
            "classifier": args.model,
            "test_pictures": test_pictures(detector, predictor, args.data),
            "artwork": names_side_by_side(detector, predictor, artwork),
            "speed": detector_speed(detector, args.data, args.repeats),
            "comic_shop": clip_side_by_side(args.data, args.detector, args.model, args.repeats, Path(scratch)),
        }
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(report, args.json)


if __name__ == "__main__":
    main()
