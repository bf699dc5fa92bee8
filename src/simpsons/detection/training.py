"""Training a detector: boxed pictures, the classifier's shot-aware split, mosaic canvases, resume, the bundle.

The validation pictures are the boxed pictures that the classifier's shot-aware split (``data.shot_aware_split``
on the same folder, characters, seed and fraction) puts on its validation side: a detector started from a
classifier trained on that folder never validates on a picture, or a frame of a shot, that the classifier
learnt. Training canvases are mosaics of the training pictures (``mosaic``); validation canvases show each
validation picture alone, letterboxed, as the detector sees a picture it is given.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
from tqdm import tqdm

from simpsons import data as datasets
from simpsons.boxes import Box, read_boxes
from simpsons.bundle import Bundle, load_bundle
from simpsons.detection.bundle import DetectorBundle, save_detector
from simpsons.detection.detector import Detector
from simpsons.detection.evaluation import (
    EVALUATION_MIN_PROBABILITY,
    DetectionScores,
    TrueBoxes,
    boxes_under,
    evaluate_on_boxes,
    score_detections,
)
from simpsons.detection.model import build_detector, compile_detector, trunk_architecture
from simpsons.detection.mosaic import BoxedPicture, Canvas, alone, random_canvas
from simpsons.detection.targets import encode_batch
from simpsons.errors import SimpsonsError
from simpsons.files import write_atomically
from simpsons.training import (
    BestCheckpoint,
    EpochRecorder,
    Recipe,
    best_so_far,
    build_optimizer,
    describe_changes,
    forget_unsaved_epochs,
    read_history,
    read_run,
)

BUNDLE_NAME = "detector.simpsons"
TASK = "detection"  # what run.json says a detector's run is, so that --resume finds its trainer
SPLIT_IMAGE_SIZE = 96  # the size the split decodes the folder at, unless --init's classifier has its own: the
# groups do not depend on it, and the classifier's training left that size in the decoded-picture cache
NECK_WIDTH = 64
OUTPUT_STRIDE = 8
CURVE_PANELS = (("loss", "Loss"), ("heatmap_loss", "Heatmap (focal) loss"), ("box_loss", "Box (L1) loss"))
PRESETS: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "detector", "resnet_small_pool", 256, 40, 16, "adamw_cosine", 1e-3, weight_decay=5e-2, warmup_epochs=1,
            augmentation="mosaic",
            description="CenterNet-style detector at 256 px (output stride 8) on the pooling-stem ResNet trunk "
                        "(--init CLASSIFIER starts it from a trained ResNet classifier, such as the shipped one), "
                        "mosaics of 1-4 boxed pictures, AdamW with a warm-up then cosine, 40 epochs",
        ),
    )
}


@dataclass
class DetectionData:
    """The boxed pictures of a training folder, split shot-aware, decoded at their own sizes."""

    characters: list[str]  # the detector's: those with a box on a training picture
    train: list[BoxedPicture]
    validation: list[BoxedPicture]
    split_characters: list[str]  # the characters the split chose pictures of, as the classifier's split does
    fingerprint: str  # the classifier's ``data.fingerprint`` of those characters' pictures
    dropped: Counter


def resolve_detector_recipe(preset: str | None, **overrides: Any) -> Recipe:
    """The detector preset (``detector`` unless named) with the given non-None overrides."""
    name = preset or "detector"
    if name not in PRESETS:
        raise SimpsonsError(f"unknown detector preset {name!r}; choose one of {', '.join(PRESETS)}")
    changes = {key: value for key, value in overrides.items() if value is not None}
    for key in ("epochs", "batch_size", "image_size"):
        if key in changes and changes[key] < 1:
            raise SimpsonsError(f"--{key.replace('_', '-')} must be at least 1")
    if "arch" in changes:
        changes["arch"] = trunk_architecture(changes["arch"])
    if changes.get("image_size", 32) % 32:
        raise SimpsonsError(f"--image-size must be a multiple of 32 for a detector (e.g. 224 or 256), "
                            f"not {changes['image_size']}")
    resolved = replace(PRESETS[name], **changes)
    return replace(resolved, description=describe_changes(PRESETS[name], resolved))


def load_detection_data(data_dir: str | Path, boxes_file: str | Path, *, seed: int, validation_fraction: float,
                        min_images: int = datasets.DEFAULT_MIN_IMAGES, characters: list[str] | None = None,
                        split_image_size: int = SPLIT_IMAGE_SIZE) -> DetectionData:
    """The boxes of ``boxes_file`` on pictures of ``data_dir``'s chosen characters, each picture decoded with
    its boxes clipped to it, on the side of the classifier's shot-aware split its picture is on. The detector's
    characters are those with a box on a training picture.

    A box on a picture outside the folder or of another character, of a character without training boxes, on
    an unreadable picture, or with no area left inside its picture is dropped and counted in ``dropped`` by
    reason."""
    images = datasets.select_characters(datasets.load_images(data_dir, split_image_size), min_images=min_images,
                                        characters=characters)
    train_idx, val_idx = datasets.shot_aware_split(images, validation_fraction=validation_fraction, seed=seed)
    side = {os.path.abspath(images.paths[i]): "train" for i in train_idx}
    side.update({os.path.abspath(images.paths[i]): "validation" for i in val_idx})
    by_picture: dict[str, list[Box]] = {}
    dropped: Counter = Counter()
    for box in read_boxes(boxes_file):
        key = os.path.abspath(box.path)
        if key not in side or box.character not in images.characters:
            dropped["not on a picture of the chosen characters in the training folder"] += 1
        else:
            by_picture.setdefault(key, []).append(box)
    boxed = sorted({box.character for path, boxes in by_picture.items() if side[path] == "train" for box in boxes})
    if not boxed:
        raise SimpsonsError(f"none of the boxes in {boxes_file} is on a training picture of the chosen characters "
                            f"in {data_dir}")
    split: dict[str, list[BoxedPicture]] = {"train": [], "validation": []}
    for path, boxes in tqdm(sorted(by_picture.items()), desc="reading boxed pictures", unit="img",
                            disable=True if len(by_picture) < 200 else None):
        known = [box for box in boxes if box.character in boxed]
        dropped["of a character without a box on a training picture"] += len(boxes) - len(known)
        picture = _boxed_picture(path, known, boxed, dropped) if known else None
        if picture is not None:
            split[side[path]].append(picture)
    if not split["validation"]:
        raise SimpsonsError(f"the shot-aware split leaves no boxed validation picture among the {len(by_picture)} "
                            "boxed pictures: give more boxes")
    return DetectionData(boxed, split["train"], split["validation"], images.characters, datasets.fingerprint(images),
                         dropped)


def _boxed_picture(path: str, boxes: list[Box], characters: list[str], dropped: Counter) -> BoxedPicture | None:
    """A picture with its boxes clipped to it; None (counted in ``dropped``) when it cannot be read or no box
    keeps an area inside it."""
    try:
        pixels = np.asarray(datasets.open_rgb(path), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError):
        dropped["on an unreadable picture"] += len(boxes)
        return None
    height, width = pixels.shape[:2]
    corners = np.clip([[b.x1, b.y1, b.x2, b.y2] for b in boxes], 0, [width, height, width, height]).astype(np.float32)
    inside = (corners[:, 2] > corners[:, 0]) & (corners[:, 3] > corners[:, 1])
    dropped["outside its picture"] += int(np.sum(~inside))
    if not inside.any():
        return None
    labels = np.array([characters.index(b.character) for b in boxes], np.int64)
    return BoxedPicture(pixels, corners[inside], labels[inside])


class MosaicBatches(keras.utils.PyDataset):
    """Batches of mosaic canvases and their targets: each training picture leads one canvas per epoch, in an
    order shuffled per epoch; a canvas is the same for the same seed, epoch and place in the epoch."""

    def __init__(self, pictures: list[BoxedPicture], num_classes: int, image_size: int, stride: int,
                 batch_size: int, seed: int):
        super().__init__()
        self.pictures, self.num_classes, self.image_size, self.stride = pictures, num_classes, image_size, stride
        self.batch_size, self.seed = batch_size, seed
        self.epoch = 0  # set by ``EpochOfBatches`` as each epoch begins

    def __len__(self) -> int:
        return math.ceil(len(self.pictures) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.pictures))
        rng = np.random.default_rng([self.seed, self.epoch, index])
        canvases = [random_canvas(self.pictures, int(lead), self.image_size, rng)
                    for lead in order[index * self.batch_size : (index + 1) * self.batch_size]]
        return _as_batch(canvases, self.num_classes, self.image_size, self.stride)


class CanvasBatches(keras.utils.PyDataset):
    """Batches of fixed canvases (the validation pictures, each alone) and their targets."""

    def __init__(self, pixels: np.ndarray, targets: np.ndarray, batch_size: int):
        super().__init__()
        self.pixels, self.targets, self.batch_size = pixels, targets, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.pixels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.pixels[rows].astype(np.float32), self.targets[rows]


class EpochOfBatches(keras.callbacks.Callback):
    """Tells the mosaic batches which epoch begins, so that a resumed run draws the canvases it would have."""

    def __init__(self, batches: MosaicBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.epoch = epoch


def _as_batch(canvases: list[Canvas], num_classes: int, image_size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.stack([canvas.pixels for canvas in canvases]).astype(np.float32)
    targets = encode_batch([c.boxes for c in canvases], [c.labels for c in canvases], num_classes, image_size, stride)
    return pixels, targets


def validation_batches(pictures: list[BoxedPicture], num_classes: int, image_size: int, stride: int,
                       batch_size: int) -> CanvasBatches:
    """The validation pictures, each alone on its canvas, with their targets."""
    canvases = [alone(picture, image_size) for picture in pictures]
    pixels = np.stack([canvas.pixels for canvas in canvases])
    targets = encode_batch([c.boxes for c in canvases], [c.labels for c in canvases], num_classes, image_size, stride)
    return CanvasBatches(pixels, targets, batch_size)


def train_detector(
    data_dir: str,
    boxes_file: str,
    run_dir: str,
    recipe: Recipe,
    *,
    seed: int | None = None,
    validation_fraction: float | None = None,
    min_images: int = datasets.DEFAULT_MIN_IMAGES,
    characters: list[str] | None = None,
    init_bundle: str | None = None,
    resume: bool = False,
    time_limit_minutes: float | None = None,
    test_dir: str | None = None,
) -> Path:
    """Train a detector on the boxed pictures of ``data_dir`` and write the run folder; returns the bundle's path.

    With ``init_bundle`` (a classifier bundle), the trunk starts from its network and the split from its seed
    and validation fraction. The run folder gets ``run.json``, ``history.csv``, ``learning_curve.png``, the
    checkpoints ``last.keras`` (to resume) and ``best.weights.h5`` (lowest validation loss), and the bundle
    ``detector.simpsons``, whose metadata holds the validation mAP of the best weights, and with ``test_dir`` its
    scores on the boxes (of the same boxes file) of the pictures under that folder.
    """
    out = Path(run_dir)
    earlier_run, epochs_done = read_run(out) if resume else ({}, 0)
    if not resume and (out / "state.json").exists():
        raise SimpsonsError(f"{out} already holds a training run; use --resume or another --out")
    init = load_bundle(init_bundle) if init_bundle and not resume else None
    trained = init.metadata if init is not None else {}
    seed = int(trained.get("seed", 0)) if seed is None else seed
    validation_fraction = validation_fraction or float(trained.get("validation_fraction", 0.15))
    if test_dir:
        boxes_under(boxes_file, test_dir)  # a test folder without boxes fails now, not after the training
    keras.utils.set_random_seed(seed)

    split_image_size = earlier_run.get("split_image_size") or (init.image_size if init else SPLIT_IMAGE_SIZE)
    data = load_detection_data(data_dir, boxes_file, seed=seed, validation_fraction=validation_fraction,
                               min_images=min_images, characters=characters, split_image_size=split_image_size)
    _describe(data)
    if resume and earlier_run.get("data_fingerprint") != data.fingerprint:
        raise SimpsonsError(f"the pictures in {data_dir} changed since the run in {out} started; start a new run")
    run = {
        "task": TASK, "recipe": asdict(recipe), "seed": seed, "data": str(Path(data_dir).resolve()),
        "boxes": str(Path(boxes_file).resolve()), "characters": data.characters,
        "split_characters": data.split_characters, "split_image_size": split_image_size, "min_images": min_images,
        "validation_fraction": validation_fraction, "train_pictures": len(data.train),
        "validation_pictures": len(data.validation), "data_fingerprint": data.fingerprint,
        "stride": OUTPUT_STRIDE, "neck_width": NECK_WIDTH, "test": test_dir and str(Path(test_dir).resolve()),
        **_lineage(init, init_bundle, data, (seed, validation_fraction), earlier_run),
    }

    out.mkdir(parents=True, exist_ok=True)
    batches = MosaicBatches(data.train, len(data.characters), recipe.image_size, OUTPUT_STRIDE, recipe.batch_size,
                            seed)
    if resume:
        forget_unsaved_epochs(out / "history.csv", epochs_done)
        model = keras.saving.load_model(out / "last.keras")
    else:
        model = build_detector(len(data.characters), recipe.image_size, recipe.arch, NECK_WIDTH, OUTPUT_STRIDE,
                               init=init.model if init is not None else None)
        compile_detector(model, build_optimizer(recipe, len(batches)))
        write_atomically(out / "run.json", json.dumps(run, indent=2).encode())
    validation = validation_batches(data.validation, len(data.characters), recipe.image_size, OUTPUT_STRIDE,
                                    recipe.batch_size)
    started = time.perf_counter()
    interrupted = False
    try:
        model.fit(batches, validation_data=validation, epochs=recipe.epochs, initial_epoch=epochs_done,
                  callbacks=_callbacks(out, batches, resume, time_limit_minutes),
                  verbose=1 if sys.stdout.isatty() else 2)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: continue from the last checkpoint with: simpsons train --resume {out}")
    metadata = {**run, "arch": recipe.arch, "interrupted": interrupted,
                "train_seconds_this_session": round(time.perf_counter() - started, 1)}
    return _save_result(model, out, data, metadata)


def _describe(data: DetectionData) -> None:
    """Print what the run trains on and which boxes it dropped."""
    print(f"{len(data.characters)} characters, {len(data.train)} boxed training and {len(data.validation)} "
          f"validation pictures (the classifier's shot-aware split)")
    for reason, count in data.dropped.items():
        if count:
            print(f"dropped {count} box(es): {reason}")


def _lineage(init: Bundle | None, init_bundle: str | None, data: DetectionData, split: tuple[int, float],
             earlier_run: dict[str, Any]) -> dict[str, Any]:
    """What ``run.json`` records of the classifier the trunk started from (a resumed run keeps its record);
    a warning when that classifier learnt on another ``split`` (seed, validation fraction) or other pictures."""
    if init is None:
        return {key: earlier_run[key] for key in ("initialised_from",) if key in earlier_run}
    trained = init.metadata
    learnt_on = (trained.get("data_fingerprint"), trained.get("seed"), trained.get("validation_fraction"))
    if learnt_on != (data.fingerprint, *split):
        print(f"warning: {init_bundle} was trained on other pictures or another split: its training pictures "
              "may sit in this run's validation split and make the validation figures read high")
    return {"initialised_from": {"path": str(Path(init_bundle).resolve()), "arch": trained.get("arch"),
                                 "data_fingerprint": trained.get("data_fingerprint")}}


def _callbacks(out: Path, batches: MosaicBatches, resume: bool, time_limit_minutes: float | None) -> list:
    """The epoch for the mosaics, speed and resume state, the best checkpoint on validation loss, history.csv."""
    return [
        EpochOfBatches(batches),
        EpochRecorder(out, len(batches) * batches.batch_size, time_limit_minutes * 60 if time_limit_minutes else None),
        BestCheckpoint(out, best_so_far(out, "val_loss", lower_is_better=True) if resume else None,
                       monitor="val_loss", lower_is_better=True),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=resume),
    ]


def _save_result(model: keras.Model, out: Path, data: DetectionData, metadata: dict[str, Any]) -> Path:
    """Learning curve, best weights, the validation scores and the bundle at the end of a training session."""
    from simpsons.plots import plot_learning_curve

    recipe = metadata["recipe"]
    history = read_history(out / "history.csv")
    if not history:
        raise SimpsonsError("training stopped before the first epoch finished; nothing to save")
    plot_learning_curve(history, out / "learning_curve.png", title=f"{recipe['arch']} detector ({recipe['name']} "
                        "recipe)", panels=CURVE_PANELS)
    if (out / "best.weights.h5").exists():
        model.load_weights(out / "best.weights.h5")
    bundle = DetectorBundle(inference_copy(model), data.characters, recipe["image_size"], metadata["stride"])
    scores = validation_scores(Detector(bundle), data.validation)
    metrics = {"validation_map_50": scores.map_50, "validation_map_50_95": scores.map_50_95,
               "validation_top_box_right": scores.top_box_right, "validation_pictures": scores.pictures,
               "best_epoch": best_so_far(out, "val_loss", lower_is_better=True)["epoch"], "epochs_done": len(history)}
    print(scores.table())
    if metadata.get("test"):
        metrics.update(_test_scores(Detector(bundle), metadata["boxes"], metadata["test"]))
    bundle.metadata = {**metadata, "metrics": metrics}
    save_detector(bundle, out / BUNDLE_NAME)
    print(json.dumps(metrics, indent=2))
    return out / BUNDLE_NAME


def inference_copy(model: keras.Model) -> keras.Model:
    """The network with its weights and without its optimizer's state (a third of the size of a compiled
    model's file, and what a bundle needs)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _test_scores(detector: Detector, boxes_file: str, test_dir: str) -> dict[str, float]:
    """The detector's scores on the boxes of the pictures under ``test_dir``, printed as a table."""
    scores = evaluate_on_boxes(detector, boxes_under(boxes_file, test_dir))
    print(f"test pictures ({test_dir}):\n{scores.table()}")
    return {"test_map_50": scores.map_50, "test_map_50_95": scores.map_50_95,
            "test_top_box_right": scores.top_box_right, "test_pictures": scores.pictures}


def validation_scores(detector: Detector, pictures: list[BoxedPicture]) -> DetectionScores:
    """The detector's COCO scores on decoded pictures with their true boxes."""
    from PIL import Image

    truths = [TrueBoxes(p.boxes, [detector.characters[label] for label in p.labels]) for p in pictures]
    found = []
    for start in range(0, len(pictures), detector.batch_size):
        chunk = pictures[start : start + detector.batch_size]
        found += detector.detect_images([Image.fromarray(p.pixels) for p in chunk], EVALUATION_MIN_PROBABILITY)
    return score_detections(truths, found, detector.characters)


def is_detection_run(run_dir: str | Path) -> bool:
    """Whether the run folder holds a detector's training run."""
    try:
        return json.loads((Path(run_dir) / "run.json").read_text()).get("task") == TASK
    except (OSError, ValueError, AttributeError):
        return False


def resume_detector_training(run_dir: str, time_limit_minutes: float | None = None) -> Path:
    """Continue the detector's run in ``run_dir`` from its last checkpoint, with its own recipe and data."""
    run, _ = read_run(Path(run_dir))
    return train_detector(run["data"], run["boxes"], run_dir, Recipe(**run["recipe"]), seed=run["seed"],
                          validation_fraction=run["validation_fraction"], min_images=run["min_images"],
                          characters=run["split_characters"], resume=True, time_limit_minutes=time_limit_minutes,
                          test_dir=run.get("test"))
