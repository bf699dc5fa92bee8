"""Training: named recipes, the shot-aware split, checkpoints, resume and the learning curve."""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from simpsons import data as datasets
from simpsons.boxes import cutout_masks, find_boxes_file, read_boxes
from simpsons.bundle import Bundle, load_bundle, save_bundle
from simpsons.errors import ParameterError, SimpsonsError
from simpsons.files import write_atomically
from simpsons.models import (
    MixedCrossentropy,
    architecture_name,
    build_augmentation,
    build_training_model,
    check_augmentation,
    check_mixing,
    classifier_of,
    get_architecture,
    own_label_accuracy,
    uses_cutouts,
)

BUNDLE_NAME = "model.simpsons"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how a model is trained, apart from the data and the seed."""

    name: str
    arch: str
    image_size: int
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    weight_decay: float = 0.0
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    augmentation: str = "article"
    mixing: str = "none"  # models.MIXINGS: CutMix or mixup of the training pictures in pairs
    class_weighting: bool = False
    description: str = ""
    fine_tune: bool = False  # continues a trained model (train --init BUNDLE) rather than starting afresh
    budget_minutes: float | None = None  # when set, the epochs (at most ``epochs``) are sized to fit it here
    prior_correction: bool = True  # the bundle counts every character as equally likely (README: the model bundle)
    ema_momentum: float | None = None  # when set, validation and the bundle use a moving average of the weights

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", architecture_name(self.arch))  # a run folder may name it as it was


PRESETS: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "article", "article_cnn", 64, 200, 32, "rmsprop", 1e-4,
            description="the article: 4-conv CNN, 64 px, RMSprop 1e-4, batch 32, 200 epochs, light augmentation",
        ),
        Recipe(
            "article6", "article_cnn6", 64, 40, 32, "sgd_step", 1e-2,
            description="the repository's 6-conv CNN: SGD 0.01 with Nesterov momentum, lr x0.1 every 10 epochs",
        ),
        Recipe(
            "strong", "resnet", 96, 60, 128, "adamw_cosine", 2e-3, weight_decay=5e-2, warmup_epochs=3,
            label_smoothing=0.1, augmentation="strong", class_weighting=True,
            description="ResNet at 96 px: AdamW, warm-up then cosine, label smoothing, strong augmentation, class weights",
        ),
        Recipe(
            "laptop", "resnet_small_pool", 96, 60, 64, "adamw_cosine", 2e-3, weight_decay=5e-2, warmup_epochs=1,
            label_smoothing=0.1, augmentation="strong", class_weighting=True, budget_minutes=30,
            description="the strong recipe on the pooling-stem ResNet at 96 px, as many epochs (up to 60) as "
                        "fit in 30 minutes of training on this machine (48 on a 2-core Intel Xeon with TensorFlow); "
                        "--arch resnet_small --augmentation robust --budget 85: the shipped default's first stage",
        ),
        Recipe(
            "wide", "resnet_wide_small", 96, 60, 64, "adamw_cosine", 2e-3, weight_decay=5e-2, warmup_epochs=1,
            label_smoothing=0.1, augmentation="composite", class_weighting=True, budget_minutes=100,
            description="ResNet-18's widths, one block per stage, at 96 px with the composite augmentation "
                        "(characters cut out along their boxes onto new backgrounds, mild geometry, colour, "
                        "erasing): as many epochs (up to 60) as fit in 100 minutes of training on this machine",
        ),
        Recipe(
            "fixres", "resnet_small_pool", 128, 3, 64, "adamw_cosine", 1e-4, weight_decay=5e-2,
            label_smoothing=0.1, augmentation="light", class_weighting=True, fine_tune=True,
            description="fine-tunes a trained model (--init BUNDLE) at 128 px for 3 epochs with light "
                        "augmentation (light_robust or light_composite for a model trained with robust or "
                        "composite), so it sees the sharper "
                        "pictures it will be given (with --image-size 112, the second stage of the shipped "
                        "default: about 6 minutes on a 2-core CPU)",
        ),
    )
}
DEFAULT_PRESET_FOR_ARCH = {
    "article_cnn": "article", "article_cnn6": "article6", "resnet": "strong", "resnet_pool": "strong",
    "resnet_wide": "strong", "resnet_small": "laptop", "resnet_small_pool": "laptop", "resnet_wide_small": "wide",
}


def resolve_recipe(preset: str | None, arch: str | None, init_augmentation: str | None = None,
                   **overrides: Any) -> Recipe:
    """The preset (or the arch's default preset) with the given non-None overrides.

    ``init_augmentation`` is the policy the ``--init`` model was trained with: a preset that fine-tunes
    keeps the colour and erasing layers of a ``robust`` model (``light_robust``) unless told otherwise,
    so that the fine-tuning does not unlearn what they taught.
    """
    if preset is None:
        preset = DEFAULT_PRESET_FOR_ARCH[get_architecture(arch or "article_cnn").name]
    if preset not in PRESETS:
        raise SimpsonsError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    recipe = PRESETS[preset]
    if arch is not None:
        recipe = replace(recipe, arch=get_architecture(arch).name)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("budget_minutes", 1) <= 0:
        raise ParameterError("budget_minutes", "{name} must be above 0 minutes")
    if not 0 < changes.get("ema_momentum", 0.5) < 1:
        raise ParameterError("ema_momentum", "{name} must be between 0 and 1 (e.g. 0.999)")
    if "epochs" in changes and "budget_minutes" not in changes:
        changes["budget_minutes"] = None  # epochs given: the preset's time budget no longer sizes them
    for key in ("epochs", "batch_size", "image_size"):
        if key in changes and changes[key] < 1:
            raise ParameterError(key, "{name} must be at least 1")
    if recipe.fine_tune and "augmentation" not in changes:
        for family in ("robust", "composite"):
            if (init_augmentation or "").endswith(family):
                changes["augmentation"] = f"light_{family}"
    check_augmentation(changes.get("augmentation", recipe.augmentation))
    check_mixing(changes.get("mixing", recipe.mixing))
    resolved = replace(recipe, **changes)
    return replace(resolved, description=describe_changes(PRESETS[preset], resolved))


def describe_changes(preset: Recipe, recipe: Recipe) -> str:
    """The preset's description followed by what ``recipe`` changed in it, so that a bundle says what it ran."""
    changed = [f"{field.name}={getattr(recipe, field.name)}" for field in fields(Recipe)
               if field.name != "description" and getattr(recipe, field.name) != getattr(preset, field.name)]
    return f"{preset.description}; changed here: {', '.join(changed)}" if changed else preset.description


def build_optimizer(recipe: Recipe, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer, its schedule counted in steps so that resuming continues it."""
    ema = {"use_ema": recipe.ema_momentum is not None, "ema_momentum": recipe.ema_momentum or 0.99}
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=recipe.learning_rate, **ema)
    if recipe.optimizer == "sgd_step":
        schedule = keras.optimizers.schedules.ExponentialDecay(
            recipe.learning_rate, decay_steps=10 * steps_per_epoch, decay_rate=0.1, staircase=True
        )
        return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True, **ema)
    if recipe.optimizer == "adamw_cosine":
        warmup = recipe.warmup_epochs * steps_per_epoch
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.learning_rate / 100,
            decay_steps=max(1, recipe.epochs * steps_per_epoch - warmup),
            alpha=0.01,
            warmup_target=recipe.learning_rate,
            warmup_steps=warmup,
        )
        return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=recipe.weight_decay, **ema)
    raise SimpsonsError(f"unknown optimizer {recipe.optimizer!r}")


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Square-root inverse-frequency weights, mean 1: rare characters count more, not wildly so."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
    weights *= num_classes / weights.sum()
    return {i: float(w) for i, w in enumerate(weights)}


PROBE_STEPS = 10  # training batches in each of the speed probe's epochs
# the probe's epochs after the first (which traces the graph): the fastest one counts, so that a moment of
# other work on the machine does not shorten the whole run (a busy moment once made a probe read 55 s, not 34)
PROBE_TIMED_EPOCHS = 2
BUDGET_MARGIN = 1.05  # checkpoints, history and a busy machine: an epoch counts 5% longer than measured


@dataclass(frozen=True)
class SpeedProbe:
    """What training costs on this machine, measured on a throwaway copy of the model."""

    step_seconds: float  # one training batch
    validation_seconds_per_image: float
    first_epoch_extra_seconds: float  # tracing and warming up, paid once per run
    probe_seconds: float  # the probe's own wall time

    def epoch_seconds(self, train_images: int, validation_images: int, batch_size: int) -> float:
        """One epoch's estimated seconds, validation included, with ``BUDGET_MARGIN``."""
        return BUDGET_MARGIN * (math.ceil(train_images / batch_size) * self.step_seconds
                                + validation_images * self.validation_seconds_per_image)


def epochs_within(
    budget_seconds: float, probe: SpeedProbe, train_images: int, validation_images: int, batch_size: int, most: int,
) -> int:
    """How many epochs (1 to ``most``) fit in the budget, which also pays for the probe and the first epoch's
    extra."""
    left = budget_seconds - probe.probe_seconds - probe.first_epoch_extra_seconds
    return int(min(most, max(1, left // probe.epoch_seconds(train_images, validation_images, batch_size))))


class _Stopwatch(keras.callbacks.Callback):
    """Times each epoch of a ``fit``: the whole epoch, its median training batch and its validation pass."""

    def __init__(self):
        super().__init__()
        self.epoch_seconds: list[float] = []
        self.step_seconds: list[float] = []
        self.validation_seconds: list[float] = []
        self.batch_ends: list[float] = []
        self._started = self._validation_started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()
        self.batch_ends = [self._started]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.batch_ends.append(time.perf_counter())

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._validation_started = time.perf_counter()

    def on_test_end(self, logs: dict | None = None) -> None:
        self.validation_seconds.append(time.perf_counter() - self._validation_started)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._started)
        self.step_seconds.append(float(np.median(np.diff(self.batch_ends))))

    def speed(self, validation_images: int, probe_seconds: float) -> SpeedProbe:
        """What the epochs after the first measured, the fastest of them; the first one's extra is its tracing."""
        timed = slice(1, None)
        return SpeedProbe(
            step_seconds=min(self.step_seconds[timed]),
            validation_seconds_per_image=min(self.validation_seconds[timed]) / validation_images,
            first_epoch_extra_seconds=max(0.0, self.epoch_seconds[0] - min(self.epoch_seconds[timed])),
            probe_seconds=probe_seconds,
        )


def probe_speed(
    recipe: Recipe, train_set: datasets.LabelledImages, val_set: datasets.LabelledImages, num_classes: int, seed: int,
) -> SpeedProbe:
    """Train a throwaway model of ``recipe`` for a few short epochs on the run's own pictures, the way
    ``train`` will: the fastest epoch after the first gives the steady cost of a batch and of validation,
    the first the one-off cost of tracing."""
    started = time.perf_counter()
    count = PROBE_STEPS * recipe.batch_size
    model = _compiled_model(recipe, num_classes, PROBE_STEPS, seed)
    train_part = train_set.subset(np.arange(min(count, len(train_set))))
    val_part = val_set.subset(np.arange(min(count, len(val_set))))
    stopwatch = _Stopwatch()
    model.fit(**fit_data((train_part.images, _one_hot(train_part.labels, num_classes)), recipe.batch_size, seed,
                         validation=(val_part.images, _one_hot(val_part.labels, num_classes))),
              epochs=1 + PROBE_TIMED_EPOCHS, verbose=0, callbacks=[stopwatch])
    return stopwatch.speed(len(val_part), time.perf_counter() - started)


# The resume checkpoint (last.keras with the optimizer's state) takes about 0.4 s to write: a third of the
# time of a GPU run's short epochs, nothing beside a CPU's. It is written after the first and
# the last epoch, when a time limit stops training, and otherwise at most this often.
CHECKPOINT_SECONDS = 30.0


class EpochRecorder(keras.callbacks.Callback):
    """Adds speed and learning rate to the logs, saves the state needed to resume (at most every
    ``CHECKPOINT_SECONDS``), and stops training once another epoch would overrun ``time_limit`` seconds."""

    def __init__(self, run_dir: Path, train_images: int, time_limit: float | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.train_images = train_images
        self.time_limit = time_limit
        self.started = 0.0
        self.first_started = time.perf_counter()
        self.saved_at = -math.inf

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        seconds = now - self.started
        if logs is not None:
            logs["epoch_seconds"] = seconds
            logs["images_per_second"] = self.train_images / seconds
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        stopping = self.time_limit is not None and now - self.first_started + seconds > self.time_limit
        if stopping or epoch + 1 == self.params["epochs"] or now - self.saved_at >= CHECKPOINT_SECONDS:
            self._save_resume_point(epoch + 1)
        if stopping:
            log.info("time limit reached after epoch %d: stopping (the run resumes from its last checkpoint)",
                     epoch + 1)
            self.model.stop_training = True

    def _save_resume_point(self, epochs_done: int) -> None:
        partial = self.run_dir / "last.partial.keras"
        self.model.save(partial)
        partial.replace(self.run_dir / "last.keras")
        write_atomically(self.run_dir / "state.json", json.dumps({"epochs_done": epochs_done}).encode())
        self.saved_at = time.perf_counter()


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best ``monitor`` figure of the whole run (validation accuracy
    unless told otherwise; the lowest one with ``lower_is_better``) in ``best.weights.h5`` and which epoch
    that was in ``best.json``, both replaced atomically.

    ``best`` is the record to beat, from before an interruption (``best_so_far``). It may name an
    epoch whose history row a resume dropped (one finished after the last resume checkpoint): its
    weights stay, a network measured on the validation pictures like any other, until an epoch beats it.
    """

    def __init__(self, run_dir: Path, best: dict[str, float] | None = None, monitor: str = "val_accuracy",
                 lower_is_better: bool = False):
        super().__init__()
        self.run_dir = run_dir
        self.best = best
        self.monitor = monitor
        self.sign = -1.0 if lower_is_better else 1.0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        figure = (logs or {}).get(self.monitor)
        if figure is None or (self.best is not None and self.sign * figure <= self.sign * self.best[self.monitor]):
            return
        partial = self.run_dir / "best.partial.weights.h5"
        self.model.save_weights(partial)
        partial.replace(self.run_dir / "best.weights.h5")
        self.best = {"epoch": epoch + 1, self.monitor: float(figure)}
        write_atomically(self.run_dir / "best.json", json.dumps(self.best).encode())


def best_so_far(run_dir: Path, monitor: str = "val_accuracy", lower_is_better: bool = False) -> dict[str, float] | None:
    """The run's best epoch (from 1) and its ``monitor`` figure: ``best.json``, else (runs from before
    it existed) the best row of ``history.csv``; None before any epoch."""
    try:
        return json.loads((run_dir / "best.json").read_text())
    except (OSError, ValueError):
        pass
    figures = [row[monitor] for row in read_history(run_dir / "history.csv") if monitor in row]
    if not figures:
        return None
    best = int(np.argmin(figures) if lower_is_better else np.argmax(figures))
    return {"epoch": best + 1, monitor: figures[best]}


def forget_unsaved_epochs(history_path: Path, epochs_done: int) -> None:
    """Drop the rows of epochs finished after the last resume checkpoint: resuming trains them again."""
    if not history_path.exists():
        return
    with open(history_path, newline="") as handle:
        lines = handle.readlines()
    if len(lines) > epochs_done + 1:
        write_atomically(history_path, "".join(lines[: epochs_done + 1]).encode())


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


def read_run(run_dir: Path) -> tuple[dict, int]:
    """A stopped run's ``run.json`` and how many epochs its last checkpoint holds (what ``--resume`` continues)."""
    try:
        run = json.loads((run_dir / "run.json").read_text())
        done = json.loads((run_dir / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError, KeyError):
        raise SimpsonsError(f"{run_dir} holds no resumable run (run.json, state.json and last.keras are needed)") from None
    if not (run_dir / "last.keras").is_file():
        raise SimpsonsError(f"{run_dir} has no last.keras checkpoint to resume from")
    return run, int(done)


def train(
    data_dir: str,
    run_dir: str,
    recipe: Recipe,
    *,
    seed: int | None = None,
    min_images: int = datasets.DEFAULT_MIN_IMAGES,
    characters: list[str] | None = None,
    test_dir: str | None = None,
    resume: bool = False,
    validation_fraction: float | None = None,
    time_limit_minutes: float | None = None,
    background_dir: str | None = None,
    init_bundle: str | None = None,
    cutout_boxes: str | None = None,
) -> Path:
    """Train ``recipe`` on ``data_dir`` and write the run folder; returns the bundle's path.

    With ``background_dir``, its pictures (frames showing none of the characters) become one more
    class, ``no_character``, split and evaluated like the others.

    A recipe whose augmentation cuts characters out (``composite``) reads their boxes from ``cutout_boxes``
    (default: ``annotation.txt`` beside ``data_dir``); pictures without a box are shrunk and moved whole.

    With ``init_bundle``, training starts from that bundle's weights (same architecture and
    characters, any input size) and, unless told otherwise, from its seed and validation fraction,
    so that its validation pictures stay unseen. ``seed`` defaults to 0 and ``validation_fraction``
    to 0.15 otherwise.

    The run folder gets ``run.json``, ``history.csv``, ``learning_curve.png``, the checkpoints
    ``last.keras`` and ``best.weights.h5`` (its epoch in ``best.json``), and the bundle ``model.simpsons``.
    ``time_limit_minutes`` stops after the last finished epoch, Ctrl-C at once; ``resume_training``
    continues from the last checkpoint (at most ``CHECKPOINT_SECONDS`` of training back). A recipe with
    ``budget_minutes`` first times a throwaway copy of its model (``probe_speed``), trains as many epochs
    as the budget holds (``run.json`` records the probe) and, unless given another, takes the budget as
    its time limit.
    """
    out = Path(run_dir)
    earlier_run, epochs_done = read_run(out) if resume else ({}, 0)
    if not resume and (out / "state.json").exists():
        raise ParameterError("run_dir", f"{out} already holds a training run: resume it ({{resume}}) or choose "
                             "another {name}", mentions=("resume",))
    if recipe.fine_tune and not (init_bundle or resume):
        raise ParameterError("init_bundle", f"the {recipe.name} preset fine-tunes a trained model: give it one "
                                            "({name} BUNDLE)")
    init = _starting_bundle(init_bundle, recipe) if init_bundle and not resume else None
    if init is not None:
        characters = _starting_characters(init, characters, init_bundle)
    seed, validation_fraction = _split_settings(init, seed, validation_fraction)
    keras.utils.set_random_seed(seed)

    if background_dir and characters:  # a resumed run lists no_character, which comes from background_dir
        characters = [name for name in characters if name != datasets.NO_CHARACTER]
    images = _selected_images(data_dir, recipe.image_size, min_images, characters, background_dir)
    train_idx, val_idx = datasets.shot_aware_split(images, validation_fraction=validation_fraction, seed=seed)
    train_set, val_set = images.subset(train_idx), images.subset(val_idx)
    num_classes = len(images.characters)
    if init is not None and images.characters != init.characters:
        raise ParameterError("background_dir", f"{init_bundle} answers for {len(init.characters)} classes and this "
                             f"data gives {num_classes}: give {{name}} exactly when the model has the no_character "
                             "class")
    log.info("%d characters, %d training and %d validation images (shot-aware split)", num_classes, len(train_set),
             len(val_set))
    boxes_file = _cutout_boxes_file(recipe, data_dir, cutout_boxes)
    train_fit, val_fit = _with_cutout_masks(train_set, val_set, boxes_file, recipe.image_size)
    budget = earlier_run.get("budget")  # a resumed run keeps what sized its epochs
    if recipe.budget_minutes and not resume:
        recipe, budget = _sized_to_budget(recipe, train_fit, val_fit, num_classes, seed)
        keras.utils.set_random_seed(seed)  # the run starts as it would have without the probe
        time_limit_minutes = time_limit_minutes or budget["time_limit_minutes"]

    out.mkdir(parents=True, exist_ok=True)
    fingerprint = datasets.fingerprint(images)
    if resume and earlier_run.get("data_fingerprint") != fingerprint:
        raise SimpsonsError(f"the images in {data_dir} changed since the run in {out} started; start a new run")
    run = {
        "recipe": asdict(recipe), "seed": seed, "data": str(Path(data_dir).resolve()), "characters": images.characters,
        "validation_fraction": validation_fraction, "train_images": len(train_set), "validation_images": len(val_set),
        "data_fingerprint": fingerprint, "background": background_dir and str(Path(background_dir).resolve()),
        "cutout_boxes": boxes_file and str(boxes_file),
    }
    if budget is not None:
        run["budget"] = budget
    if init is not None:
        _warn_unless_same_split(init, init_bundle, run)
        run["initialised_from"] = _lineage(init, init_bundle)
    elif "initialised_from" in earlier_run:  # a resumed fine-tuning keeps what it started from
        run["initialised_from"] = earlier_run["initialised_from"]
    if resume:
        forget_unsaved_epochs(out / "history.csv", epochs_done)
        model = keras.saving.load_model(out / "last.keras")
    else:
        model = _compiled_model(recipe, num_classes, math.ceil(len(train_set) / recipe.batch_size), seed)
        if init is not None:
            _copy_weights(init, classifier_of(model), init_bundle)
        write_atomically(out / "run.json", json.dumps(run, indent=2).encode())
    class_weight = balanced_class_weights(train_set.labels, num_classes) if recipe.class_weighting else None
    data = fit_data((train_fit.images, _one_hot(train_set.labels, num_classes)), recipe.batch_size, seed,
                    validation=(val_fit.images, _one_hot(val_set.labels, num_classes)))
    started = time.perf_counter()
    interrupted = False
    callbacks = _callbacks(out, len(train_set), resume, time_limit_minutes, ema=recipe.ema_momentum is not None)
    try:
        model.fit(
            **data, epochs=recipe.epochs, initial_epoch=epochs_done, class_weight=class_weight,
            callbacks=callbacks, verbose=2 if _quiet() else 1,
        )
    except KeyboardInterrupt:
        interrupted = True
        log.info("interrupted: the run in %s resumes from its last checkpoint", out)
    train_seconds = time.perf_counter() - started

    metadata = {**run, "arch": recipe.arch, "interrupted": interrupted,
                "train_seconds_this_session": round(train_seconds, 1)}
    training_counts = np.bincount(train_set.labels, minlength=num_classes).tolist() if recipe.prior_correction else None
    return _save_result(model, out, images.characters, val_set, training_counts, test_dir, metadata)


def _cutout_boxes_file(recipe: Recipe, data_dir: str, given: str | None) -> Path | None:
    """The boxes file a cutting-out augmentation reads (None for the other policies)."""
    if not uses_cutouts(recipe.augmentation):
        return None
    found = Path(given) if given else find_boxes_file(data_dir)
    if found is None or not found.is_file():
        raise ParameterError("cutout_boxes", f"the {recipe.augmentation} augmentation cuts characters out along "
                                             f"their boxes: give {{name}} (annotation.txt; none found beside {data_dir})")
    return found.resolve()


def _with_cutout_masks(
    train_set: datasets.LabelledImages, val_set: datasets.LabelledImages, boxes_file: Path | None, size: int,
) -> tuple[datasets.LabelledImages, datasets.LabelledImages]:
    """The pictures ``fit`` reads: with a boxes file, each gets its cut-out mask as a fourth channel (validation
    pictures a full one: they are shown as they are)."""
    if boxes_file is None:
        return train_set, val_set
    masks = cutout_masks(train_set.paths, read_boxes(boxes_file), size)
    boxed = int(np.sum(masks.min(axis=(1, 2)) == 0))
    log.info("%d of %d training pictures have a box to cut their character out along (%s)", boxed, len(train_set),
             boxes_file)
    full = np.full((*val_set.images.shape[:3], 1), 255, dtype=np.uint8)
    return (replace(train_set, images=np.concatenate([train_set.images, masks[..., None]], axis=-1)),
            replace(val_set, images=np.concatenate([val_set.images, full], axis=-1)))


def _sized_to_budget(
    recipe: Recipe, train_set: datasets.LabelledImages, val_set: datasets.LabelledImages, num_classes: int, seed: int,
) -> tuple[Recipe, dict[str, float]]:
    """The recipe with as many epochs as its time budget holds on this machine, and what the probe measured."""
    probe = probe_speed(recipe, train_set, val_set, num_classes, seed)
    epoch_seconds = probe.epoch_seconds(len(train_set), len(val_set), recipe.batch_size)
    epochs = epochs_within(recipe.budget_minutes * 60, probe, len(train_set), len(val_set), recipe.batch_size,
                           most=recipe.epochs)
    log.info("time budget %g min: an epoch takes about %.0f s here (measured in %.0f s), so %d epochs",
             recipe.budget_minutes, epoch_seconds, probe.probe_seconds, epochs)
    budget = {"minutes": recipe.budget_minutes, "probe_seconds": round(probe.probe_seconds, 1),
              "estimated_epoch_seconds": round(epoch_seconds, 1), "epochs": epochs,
              "time_limit_minutes": round((recipe.budget_minutes * 60 - probe.probe_seconds) / 60, 2)}
    return replace(recipe, epochs=epochs), budget


def _selected_images(
    data_dir: str, size: int, min_images: int, characters: list[str] | None, background_dir: str | None,
) -> datasets.LabelledImages:
    """The training folder's pictures of the chosen characters, with the background class when asked."""
    images = datasets.load_images(data_dir, size)
    if images.bad_files:
        log.warning("%s", datasets.describe_bad_files(images.bad_files))
    images = datasets.select_characters(images, min_images=min_images, characters=characters)
    return _add_background(images, background_dir, size) if background_dir else images


def _starting_bundle(path: str, recipe: Recipe) -> Bundle:
    """The bundle ``train --init`` starts from, checked against the recipe's architecture."""
    init = load_bundle(path)
    arch = init.metadata.get("arch")
    if arch is not None and architecture_name(arch) != recipe.arch:
        raise ParameterError("arch", f"the network in {path} is {arch}; the recipe trains {recipe.arch} "
                                     f"({{name}} {arch} trains it)")
    return init


def _starting_characters(init: Bundle, characters: list[str] | None, path: str) -> list[str]:
    """The characters of the starting bundle: its network answers for them, in that order."""
    known = [name for name in init.characters if name != datasets.NO_CHARACTER]
    if characters and sorted(characters) != sorted(known):
        raise ParameterError("characters", f"{path} knows {', '.join(known)}; {{name}} cannot change them when "
                                           "fine-tuning")
    return known


def _split_settings(init: Bundle | None, seed: int | None, fraction: float | None) -> tuple[int, float]:
    """The seed and validation fraction: as given, else the starting bundle's (so that its validation
    pictures stay unseen), else 0 and 0.15."""
    trained = init.metadata if init is not None else {}
    return (int(trained.get("seed", 0)) if seed is None else seed,
            fraction or float(trained.get("validation_fraction", 0.15)))


def _warn_unless_same_split(init: Bundle, path: str, run: dict[str, Any]) -> None:
    """Say so when the validation split may hold pictures the starting bundle was trained on."""
    keys = ("data_fingerprint", "seed", "validation_fraction")
    if any(init.metadata.get(key) != run[key] for key in keys):
        log.warning("%s was trained on other pictures or another split; pictures it learnt may sit in this run's "
                    "validation split and make its validation accuracy read high", path)


def _lineage(init: Bundle, path: str) -> dict[str, Any]:
    """What the run records of the bundle it started from."""
    kept = ("recipe", "seed", "data_fingerprint", "metrics", "train_seconds_this_session", "initialised_from")
    return {"path": str(Path(path).resolve()), **{key: init.metadata[key] for key in kept if key in init.metadata}}


def _copy_weights(init: Bundle, classifier: keras.Model, path: str) -> None:
    """Start ``classifier`` from the bundle's weights: the same network, maybe at another input size."""
    try:
        classifier.set_weights(init.model.get_weights())
    except ValueError:
        raise SimpsonsError(f"the network in {path} does not fit this recipe's {classifier.name} at "
                            f"{classifier.input_shape[1]} px (networks that flatten their maps fix their input "
                            "size)") from None


def _compiled_model(recipe: Recipe, num_classes: int, steps_per_epoch: int, seed: int) -> keras.Model:
    """A fresh classifier behind the recipe's augmentation, compiled with its optimizer and loss."""
    classifier = get_architecture(recipe.arch).build(num_classes, recipe.image_size)
    augmentation = build_augmentation(recipe.augmentation, recipe.image_size, seed)
    model = build_training_model(classifier, augmentation, recipe.mixing, seed)
    if recipe.mixing == "none":
        loss, accuracy = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing), "accuracy"
    else:
        loss = MixedCrossentropy(label_smoothing=recipe.label_smoothing)
        accuracy = keras.metrics.MeanMetricWrapper(own_label_accuracy, name="accuracy")
    model.compile(optimizer=build_optimizer(recipe, steps_per_epoch), loss=loss, metrics=[accuracy])
    return model


def fit_data(
    train: tuple[np.ndarray, np.ndarray], batch_size: int, seed: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``fit``'s data arguments: shuffled batches of ``train`` (pictures, targets), and ``validation``.

    From arrays, Keras on TensorFlow builds an autotuned ``tf.data`` pipeline, and releasing its iterator
    at the end of an epoch then leaves the process idle for up to about ten seconds, in about half the
    epochs (TensorFlow 2.21, waiting for the autotuning thread; BENCHMARKS.md). So on TensorFlow the same
    batches come from a pipeline without autotuning; the other backends read the arrays.
    """
    if keras.backend.backend() != "tensorflow":
        return {"x": train[0], "y": train[1], "batch_size": batch_size, "validation_data": validation}
    return {"x": _untuned_batches(*train, batch_size, shuffle_seed=seed), "shuffle": False,
            "validation_data": None if validation is None else _untuned_batches(*validation, batch_size)}


def _untuned_batches(images: np.ndarray, targets: np.ndarray, batch_size: int, shuffle_seed: int | None = None):
    """A ``tf.data`` pipeline of (pictures, targets) batches with autotuning off, reshuffled every epoch
    when ``shuffle_seed`` is given (TensorFlow only)."""
    import tensorflow as tf

    order = tf.data.Dataset.range(len(images))
    if shuffle_seed is not None:
        order = order.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    arrays = tf.data.Dataset.from_tensors((images, targets)).repeat()
    batches = tf.data.Dataset.zip(order.batch(batch_size), arrays).map(
        lambda chosen, data: (tf.gather(data[0], chosen), tf.gather(data[1], chosen)))
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.prefetch(1).with_options(options)


def _callbacks(out: Path, train_images: int, resume: bool, time_limit_minutes: float | None, ema: bool) -> list:
    """Speed and resume state, the best checkpoint on validation accuracy, and history.csv. With ``ema``,
    validation and the best checkpoint see the moving average of the weights, the resume state the weights."""
    recorder = EpochRecorder(out, train_images, time_limit_minutes * 60 if time_limit_minutes else None)
    swap = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema else []
    return [
        recorder, *swap,
        BestCheckpoint(out, best_so_far(out) if resume else None),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=resume),
    ]


def _add_background(images: datasets.LabelledImages, folder: str, size: int) -> datasets.LabelledImages:
    """The characters' images and the background pictures as the class ``no_character``."""
    background = datasets.load_background(folder, size)
    if background.bad_files:
        log.warning("%s", datasets.describe_bad_files(background.bad_files))
    if len(background) < 2:
        raise ParameterError("background_dir", f"{{name}} needs at least 2 readable pictures; {folder} has "
                                               f"{len(background)}")
    return datasets.with_background(images, background)


def _save_result(
    model: keras.Model, out: Path, characters: list[str], val_set: datasets.LabelledImages,
    training_counts: list[int] | None, test_dir: str | None, metadata: dict[str, Any],
) -> Path:
    """Learning curve, best weights, the prior correction chosen on the validation split (with
    ``training_counts``), metrics and the bundle at the end of a training session."""
    from simpsons.calibration import balanced_accuracy, describe_prior_correction, fit_prior_correction
    from simpsons.evaluation import accuracy_of
    from simpsons.plots import plot_learning_curve
    from simpsons.prediction import Predictor

    recipe = metadata["recipe"]
    history = read_history(out / "history.csv")
    if not history:
        raise SimpsonsError("training stopped before the first epoch finished; nothing to save")
    plot_learning_curve(history, out / "learning_curve.png", title=_curve_title(recipe))
    if (out / "best.weights.h5").exists():
        model.load_weights(out / "best.weights.h5")
    bundle = Bundle(model=classifier_of(model), characters=characters, image_size=recipe["image_size"])
    logits = corrected = Predictor(bundle).logits(val_set.images)
    prior: dict[str, Any] = {}
    if training_counts is not None:
        correction, curve = fit_prior_correction(logits, val_set.labels, training_counts)
        log.info("%s", describe_prior_correction(curve, correction.strength))
        bundle.prior_correction = correction
        corrected = logits + correction.offsets()
        prior = {"prior_correction": {
            "strength": correction.strength,
            "validation_accuracy_without": float(np.mean(logits.argmax(axis=1) == val_set.labels)),
            "validation_balanced_accuracy_without": balanced_accuracy(logits, val_set.labels)}}
    metrics = {
        "validation_accuracy": float(np.mean(corrected.argmax(axis=1) == val_set.labels)),
        "validation_balanced_accuracy": balanced_accuracy(corrected, val_set.labels),
        **prior,
        "best_epoch": best_so_far(out)["epoch"],
        "epochs_done": len(history),
    }
    if test_dir:
        test = datasets.relabel(datasets.load_images(test_dir, recipe["image_size"]), characters)
        metrics["test_accuracy"] = accuracy_of(bundle, test)
        metrics["test_images"] = len(test)
    bundle.metadata = {**metadata, "metrics": metrics}
    save_bundle(bundle, out / BUNDLE_NAME)
    return out / BUNDLE_NAME


def _curve_title(recipe: dict[str, Any]) -> str:
    """The learning curve's title: the network and the recipe, with the augmentation if not the preset's
    and the mixing if any."""
    preset = PRESETS.get(recipe["name"])
    details = [recipe["name"] + " recipe"]
    if preset is not None and preset.augmentation != recipe["augmentation"]:
        details.append(f"{recipe['augmentation']} augmentation")
    if recipe.get("mixing", "none") != "none":
        details.append(recipe["mixing"])
    return f"{recipe['arch']} ({', '.join(details)})"


def resume_training(run_dir: str, time_limit_minutes: float | None = None) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint, with its own recipe and data."""
    run, _ = read_run(Path(run_dir))
    return train(
        run["data"], run_dir, Recipe(**run["recipe"]), seed=run["seed"], characters=run["characters"],
        validation_fraction=run["validation_fraction"], resume=True, time_limit_minutes=time_limit_minutes,
        background_dir=run.get("background"), cutout_boxes=run.get("cutout_boxes"),
    )


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of ``history.csv`` as floats (empty when absent)."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _quiet() -> bool:
    return not sys.stdout.isatty()
