"""Training: the run folder, time limits, resume, Ctrl-C and refusing to overwrite a run."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from simpsons import data as datasets
from simpsons import training
from simpsons.bundle import PriorCorrection, load_bundle, read_description
from simpsons.errors import SimpsonsError
from simpsons.calibration import fit_prior_correction
from simpsons.models import ARCHITECTURES
from simpsons.prediction import Predictor, default_model_path
from simpsons.training import (
    BUNDLE_NAME,
    PRESETS,
    Recipe,
    balanced_class_weights,
    fit_data,
    read_history,
    resolve_recipe,
    resume_training,
    train,
)

CHARACTERS = ["bart_simpson", "homer_simpson", "lisa_simpson"]
FAST = {"batch_size": 8, "image_size": 32}


def history_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


# --------------------------------------------------------------------------- recipes


def test_presets_and_overrides():
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.arch in ARCHITECTURES
    article = PRESETS["article"]
    assert (article.arch, article.image_size, article.optimizer, article.learning_rate, article.batch_size) == (
        "article_cnn", 64, "rmsprop", 1e-4, 32)

    recipe = resolve_recipe("article", None, epochs=2, batch_size=8, image_size=32)
    assert (recipe.arch, recipe.epochs, recipe.batch_size, recipe.image_size) == ("article_cnn", 2, 8, 32)
    assert recipe.learning_rate == article.learning_rate
    assert resolve_recipe(None, "resnet").name == "strong"
    assert resolve_recipe(None, "resnet_small").name == "laptop"
    assert resolve_recipe(None, None).name == "article"
    assert resolve_recipe(None, "resnet_small_pool").image_size == 96
    assert resolve_recipe("strong", "article_cnn").arch == "article_cnn"
    assert resolve_recipe("article", None, epochs=None).epochs == article.epochs
    # the names architectures had before: on the command line and in a run folder's recipe
    assert resolve_recipe(None, "resnet_small_hr") == resolve_recipe(None, "resnet_small_pool")
    assert resolve_recipe("strong", "seed").arch == "article_cnn"
    assert Recipe(**{**asdict(PRESETS["laptop"]), "arch": "resnet_hr"}).arch == "resnet_pool"


def test_a_recipe_description_names_what_the_options_changed_in_the_preset():
    """A bundle trained with `--preset laptop --arch resnet_small` must not describe the preset's network alone."""
    laptop = PRESETS["laptop"]
    assert resolve_recipe("laptop", None).description == laptop.description
    assert resolve_recipe("laptop", "resnet_small_pool", augmentation="strong").description == laptop.description
    changed = resolve_recipe("laptop", "resnet_small", augmentation="robust", budget_minutes=85)
    assert changed.description == (
        f"{laptop.description}; changed here: arch=resnet_small, augmentation=robust, budget_minutes=85")
    fixres = resolve_recipe("fixres", None, init_augmentation="robust", image_size=112)
    assert fixres.description.endswith("; changed here: image_size=112, augmentation=light_robust")


def test_the_shipped_model_is_laptop_robust_then_fixres_then_composite():
    """MODEL_CARD.md: the shipped model's first stage ran `--preset laptop --arch resnet_small --augmentation
    robust --budget 85` (55 epochs on the 2-core CPU; `--epochs 55` reproduces it), then `--preset fixres
    --image-size 112 --init` fine-tuned it with `light_robust`, then `--preset fixres --image-size 112
    --augmentation composite --epochs 10 --learning-rate 5e-4 --init` fine-tuned that with characters cut
    out onto new backgrounds; all on the same pictures and split, and the presets must stay those recipes."""
    first = resolve_recipe("laptop", "resnet_small", epochs=55, augmentation="robust")
    second = resolve_recipe("fixres", "resnet_small", init_augmentation="robust", image_size=112)
    third = resolve_recipe("fixres", "resnet_small", init_augmentation="light_robust", image_size=112,
                           augmentation="composite", epochs=10, learning_rate=5e-4)
    shipped = read_description(default_model_path()).metadata
    middle = shipped["initialised_from"]
    started = middle["initialised_from"]
    assert started["recipe"]["budget_minutes"] == 85
    ran_first = replace(Recipe(**started["recipe"]), description=first.description, budget_minutes=None)
    assert ran_first == first
    assert replace(Recipe(**middle["recipe"]), description=second.description) == second
    assert replace(Recipe(**shipped["recipe"]), description=third.description) == third
    assert (second.augmentation, third.augmentation) == ("light_robust", "composite")
    assert {(stage["seed"], stage["data_fingerprint"]) for stage in (started, middle, shipped)} == {
        (shipped["seed"], shipped["data_fingerprint"])}


def test_laptop_with_48_epochs_keeps_its_recipe():
    """`--preset laptop --epochs 48` is the 48-epoch CPU recipe on `resnet_small_pool` at 96 px with the `strong`
    augmentation (the first stage of a 128 px model trained without a GPU): it must stay that recipe."""
    ran = {"name": "laptop", "arch": "resnet_small_pool", "image_size": 96, "epochs": 48, "batch_size": 64,
           "optimizer": "adamw_cosine", "learning_rate": 2e-3, "weight_decay": 5e-2, "warmup_epochs": 1,
           "label_smoothing": 0.1, "augmentation": "strong", "mixing": "none", "class_weighting": True,
           "fine_tune": False, "budget_minutes": None, "ema_momentum": None}
    recipe = asdict(resolve_recipe("laptop", None, epochs=48))
    del recipe["description"]
    assert recipe.pop("prior_correction") is True  # chosen after the training: not part of the recipe that ran
    assert recipe == ran


@pytest.mark.parametrize(("trained_with", "given", "fine_tuned_with"), [
    ("robust", None, "light_robust"),
    ("strong", None, "light"),
    (None, None, "light"),
    ("robust", "light", "light"),
])
def test_fine_tuning_keeps_a_robust_models_colour_layers(trained_with, given, fine_tuned_with):
    assert resolve_recipe("fixres", None, init_augmentation=trained_with, augmentation=given).augmentation == (
        fine_tuned_with)
    assert resolve_recipe("laptop", None, init_augmentation=trained_with).augmentation == "strong"  # trains afresh


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_has_a_default_preset(arch):
    recipe = resolve_recipe(None, arch)
    assert recipe.arch == arch and recipe.name in PRESETS


@pytest.mark.parametrize(
    ("preset", "arch", "overrides", "message"),
    [
        ("fancy", None, {}, "unknown preset 'fancy'"),
        (None, "vgg", {}, "unknown architecture 'vgg'"),
        ("article", "vgg", {}, "unknown architecture 'vgg'"),
        ("article", None, {"epochs": 0}, "epochs must be at least 1"),
        ("article", None, {"image_size": 0}, "image_size must be at least 1"),
        ("laptop", None, {"augmentation": "wild"}, "unknown augmentation policy 'wild'"),
        ("laptop", None, {"mixing": "blend"}, "unknown mixing policy 'blend'"),
    ],
)
def test_bad_recipes(preset, arch, overrides, message):
    with pytest.raises(SimpsonsError, match=message):
        resolve_recipe(preset, arch, **overrides)


def test_epochs_given_drop_the_presets_time_budget():
    assert PRESETS["laptop"].budget_minutes == 30
    assert resolve_recipe("laptop", None).budget_minutes == 30
    assert resolve_recipe("laptop", None, epochs=5).budget_minutes is None
    both = resolve_recipe("strong", None, epochs=5, budget_minutes=2.5)
    assert (both.epochs, both.budget_minutes) == (5, 2.5)
    with pytest.raises(SimpsonsError, match="budget_minutes must be above 0 minutes"):
        resolve_recipe("laptop", None, budget_minutes=0)


def test_epochs_within_a_budget():
    probe = training.SpeedProbe(step_seconds=0.5, validation_seconds_per_image=0.01, first_epoch_extra_seconds=10,
                                probe_seconds=20)
    epoch = probe.epoch_seconds(640, 100, 64)  # 10 batches of 64 and 100 validation pictures: 6 s and the margin
    assert epoch == pytest.approx(6 * training.BUDGET_MARGIN)
    assert training.epochs_within(100, probe, 640, 100, 64, most=50) == int((100 - 20 - 10) // epoch)
    assert training.epochs_within(100, probe, 640, 100, 64, most=8) == 8
    assert training.epochs_within(25, probe, 640, 100, 64, most=8) == 1  # the probe spent the budget: one epoch


def test_the_probe_counts_its_fastest_epoch_after_the_first():
    """A timed epoch slowed by other work on the machine does not shorten the run."""
    stopwatch = training._Stopwatch()
    stopwatch.epoch_seconds = [9.0, 5.5, 3.0]  # tracing, a busy moment, the steady pace
    stopwatch.step_seconds = [0.8, 0.45, 0.2]
    stopwatch.validation_seconds = [1.5, 1.0, 0.5]
    probe = stopwatch.speed(validation_images=100, probe_seconds=18.0)
    assert probe == training.SpeedProbe(step_seconds=0.2, validation_seconds_per_image=0.005,
                                        first_epoch_extra_seconds=6.0, probe_seconds=18.0)


@pytest.mark.parametrize("name", list(PRESETS))
def test_optimizers_of_every_preset(name):
    recipe = PRESETS[name]
    optimizer = training.build_optimizer(recipe, steps_per_epoch=100)
    first = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    if recipe.optimizer == "adamw_cosine" and recipe.warmup_epochs:
        assert first == pytest.approx(recipe.learning_rate / 100)  # warm-up starts low
    else:
        assert first == pytest.approx(recipe.learning_rate)


def test_balanced_class_weights():
    labels = np.array([0] * 100 + [1] * 25 + [2] * 4)
    weights = balanced_class_weights(labels, 4)
    assert weights[0] < weights[1] < weights[2]
    assert weights[2] / weights[0] == pytest.approx(5.0)  # sqrt(100 / 4)
    assert weights[3] == 0.0
    assert np.mean(list(weights.values())) == pytest.approx(1.0)


def test_fit_data_gives_every_picture_once_an_epoch_reshuffled():
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    targets = np.eye(10, dtype=np.float32)
    data = fit_data((images, targets), 4, seed=0, validation=(images[:3], targets[:3]))
    if keras.backend.backend() != "tensorflow":  # Keras reads the arrays itself
        assert data["x"] is images and data["batch_size"] == 4
        return

    def one_epoch(dataset) -> list[np.ndarray]:
        batches = list(dataset.as_numpy_iterator())
        for pictures, answers in batches:
            assert (pictures[:, 0, 0, 0] == answers.argmax(1)).all()  # each picture keeps its target
        return [pictures[:, 0, 0, 0] for pictures, _ in batches]

    first, second = one_epoch(data["x"]), one_epoch(data["x"])
    assert [len(batch) for batch in first] == [4, 4, 2]
    assert sorted(np.concatenate(first)) == list(range(10)) == sorted(np.concatenate(second))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))  # a new order each epoch
    assert np.concatenate(one_epoch(data["validation_data"])).tolist() == [0, 1, 2]  # validation in order
    assert data["x"].options().autotune.enabled is False  # the ten-second stall at each epoch's end


# --------------------------------------------------------------------------- a whole run


@pytest.fixture(scope="module")
def finished_run(training_folder, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "article"
    recipe = resolve_recipe("article", None, epochs=2, **FAST)
    bundle_path = train(str(training_folder), str(run), recipe, characters=CHARACTERS)
    assert bundle_path == run / BUNDLE_NAME
    return run


def test_training_folder_is_as_built(training_folder):
    loaded = datasets.load_images(training_folder, 32)
    assert loaded.counts() == {name: 12 for name in CHARACTERS}
    assert loaded.bad_files == []


@pytest.mark.slow
def test_run_folder_contents(finished_run):
    for name in ("run.json", "history.csv", "learning_curve.png", "best.weights.h5", "best.json", "last.keras",
                 BUNDLE_NAME, "state.json"):
        assert (finished_run / name).is_file(), name
    assert not list(finished_run.glob("*partial*"))
    assert state(finished_run) == {"epochs_done": 2}

    run = json.loads((finished_run / "run.json").read_text())
    assert run["characters"] == CHARACTERS
    assert run["recipe"]["epochs"] == 2 and run["recipe"]["image_size"] == 32 and run["recipe"]["arch"] == "article_cnn"
    assert run["train_images"] + run["validation_images"] == 36
    assert run["validation_images"] > 0

    rows = history_rows(finished_run)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    for row in rows:
        for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "images_per_second"):
            assert np.isfinite(float(row[column])), column
        assert float(row["learning_rate"]) == pytest.approx(1e-4)

    with Image.open(finished_run / "learning_curve.png") as curve:
        assert curve.format == "PNG"
        assert curve.width > 400 and curve.height > 200


@pytest.mark.slow
def test_run_bundle(finished_run, training_folder):
    bundle = load_bundle(finished_run / BUNDLE_NAME)
    assert bundle.characters == CHARACTERS
    assert bundle.image_size == 32
    assert bundle.model.input_shape == (None, 32, 32, 3)
    assert bundle.model.output_shape == (None, 3)

    metadata = bundle.metadata
    assert metadata["arch"] == "article_cnn"
    assert metadata["interrupted"] is False
    assert metadata["recipe"]["epochs"] == 2
    metrics = metadata["metrics"]
    assert metrics["epochs_done"] == 2
    assert 0.0 <= metrics["validation_accuracy"] <= 1.0
    # the bundle carries the best epoch's weights: its accuracy is the best validation accuracy in the history
    history = read_history(finished_run / "history.csv")
    accuracies = [row["val_accuracy"] for row in history]
    assert metrics["best_epoch"] == accuracies.index(max(accuracies)) + 1
    assert json.loads((finished_run / "best.json").read_text()) == pytest.approx(
        {"epoch": metrics["best_epoch"], "val_accuracy": max(accuracies)})
    prior = metrics["prior_correction"]
    assert prior["validation_accuracy_without"] == pytest.approx(max(accuracies), abs=1e-6)
    assert metadata["train_images"] + metadata["validation_images"] == 36
    loaded = datasets.select_characters(datasets.load_images(training_folder, 32), characters=CHARACTERS)
    assert metadata["data_fingerprint"] == datasets.fingerprint(loaded)


@pytest.mark.slow
def test_run_bundle_is_corrected_for_the_training_prior(finished_run, training_folder):
    """The bundle answers with the prior correction chosen on its validation split from its training counts."""
    bundle = load_bundle(finished_run / BUNDLE_NAME)
    metrics = bundle.metadata["metrics"]
    loaded = datasets.select_characters(datasets.load_images(training_folder, 32), characters=CHARACTERS)
    train_idx, val_idx = datasets.shot_aware_split(loaded, validation_fraction=0.15, seed=0)
    counts = np.bincount(loaded.labels[train_idx], minlength=3).tolist()
    assert bundle.prior_correction == PriorCorrection(metrics["prior_correction"]["strength"], counts)
    validation = loaded.subset(val_idx)
    uncorrected = Predictor(replace(bundle, prior_correction=None)).logits(validation.images)
    assert fit_prior_correction(uncorrected, validation.labels, counts)[0].strength == bundle.prior_correction.strength
    answers = Predictor(bundle).probabilities(validation.images).argmax(axis=1)
    assert metrics["validation_accuracy"] == pytest.approx(np.mean(answers == validation.labels))
    assert metrics["validation_balanced_accuracy"] >= metrics["prior_correction"]["validation_balanced_accuracy_without"]


@pytest.mark.slow
def test_second_train_into_the_same_folder_is_refused(finished_run, training_folder):
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    recipe = resolve_recipe("article", None, epochs=1, **FAST)
    with pytest.raises(SimpsonsError, match="already holds a training run"):
        train(str(training_folder), str(finished_run), recipe, characters=CHARACTERS)
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before


def test_resume_of_a_folder_without_a_run(tmp_path):
    with pytest.raises(SimpsonsError, match="no resumable run"):
        resume_training(str(tmp_path))


@pytest.mark.slow
def test_training_with_a_test_set(training_folder, samples_dir, tmp_path):
    recipe = resolve_recipe("article", None, epochs=1, **FAST)
    train(str(training_folder), str(tmp_path / "run"), recipe, characters=CHARACTERS, test_dir=str(samples_dir))
    metrics = load_bundle(tmp_path / "run" / BUNDLE_NAME).metadata["metrics"]
    assert metrics["test_images"] == 9  # the samples of the three trained characters only
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


def test_learning_curve_title_names_an_augmentation_other_than_the_presets():
    strong = asdict(PRESETS["strong"])
    assert training._curve_title(strong) == "resnet (strong recipe)"
    assert training._curve_title({**strong, "augmentation": "robust"}) == "resnet (strong recipe, robust augmentation)"
    assert training._curve_title({**strong, "mixing": "cutmix"}) == "resnet (strong recipe, cutmix)"


# --------------------------------------------------------------------------- time limit and resume


@pytest.mark.slow
@pytest.mark.parametrize(("minutes", "epochs"), [(10, 3), (0.01, 1)])
def test_a_budget_sizes_the_epochs_on_this_machine(minutes, epochs, training_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="simpsons")
    run = tmp_path / "budget"
    recipe = resolve_recipe("laptop", "resnet_small", epochs=3, budget_minutes=minutes, **FAST)
    train(str(training_folder), str(run), recipe, characters=CHARACTERS)
    recorded = json.loads((run / "run.json").read_text())
    budget = recorded["budget"]
    assert budget["epochs"] == recorded["recipe"]["epochs"] == len(history_rows(run)) == epochs
    assert budget["probe_seconds"] > 0 and budget["estimated_epoch_seconds"] > 0
    assert f"time budget {minutes:g} min: an epoch takes about" in caplog.text


@pytest.mark.slow
def test_the_probe_leaves_the_run_as_it_would_have_been(training_folder, tmp_path):
    recipe = resolve_recipe("laptop", "resnet_small", epochs=1, **FAST)
    plain = train(str(training_folder), str(tmp_path / "plain"), recipe, characters=CHARACTERS)
    probed = train(str(training_folder), str(tmp_path / "probed"), replace(recipe, budget_minutes=10),
                   characters=CHARACTERS)
    for ours, theirs in zip(load_bundle(plain).model.get_weights(), load_bundle(probed).model.get_weights()):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.fixture(scope="module")
def stopped_run(training_folder, tmp_path_factory) -> Path:
    """A 3-epoch run stopped by its time limit after the first epoch."""
    run = tmp_path_factory.mktemp("runs") / "stopped"
    recipe = resolve_recipe("article", None, epochs=3, **FAST)
    train(str(training_folder), str(run), recipe, characters=CHARACTERS, time_limit_minutes=1e-6)
    return run


@pytest.mark.slow
def test_time_limit_stops_after_one_epoch(stopped_run):
    assert state(stopped_run) == {"epochs_done": 1}
    assert [row["epoch"] for row in history_rows(stopped_run)] == ["0"]
    bundle = load_bundle(stopped_run / BUNDLE_NAME)
    assert bundle.metadata["metrics"]["epochs_done"] == 1
    assert bundle.metadata["recipe"]["epochs"] == 3


@pytest.fixture(scope="module")
def resumed_run(stopped_run, tmp_path_factory) -> dict:
    """A copy of the stopped run, resumed; with what the folder held before."""
    run = tmp_path_factory.mktemp("runs") / "resumed"
    shutil.copytree(stopped_run, run)
    before = {
        "history": history_rows(run),
        "run.json": json.loads((run / "run.json").read_text()),
        "best.weights.h5": (run / "best.weights.h5").read_bytes(),
    }
    resume_training(str(run))  # with the run folder's own recipe, data, seed and split
    return {"run": run, "before": before}


@pytest.mark.slow
def test_resume_continues_where_it_stopped(resumed_run):
    run, before = resumed_run["run"], resumed_run["before"]
    rows = history_rows(run)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert rows[0] == before["history"][0]
    assert state(run) == {"epochs_done": 3}
    assert json.loads((run / "run.json").read_text()) == before["run.json"]
    bundle = load_bundle(run / BUNDLE_NAME)
    assert bundle.characters == CHARACTERS
    assert bundle.image_size == 32
    assert bundle.metadata["arch"] == "article_cnn"
    assert bundle.metadata["recipe"]["name"] == "article"
    assert bundle.metadata["metrics"]["epochs_done"] == 3
    assert bundle.metadata["interrupted"] is False
    # the optimizer continued too (its schedule counts steps): three epochs of steps in all
    steps = -(-before["run.json"]["train_images"] // 8)
    last = keras.saving.load_model(run / "last.keras")
    assert int(keras.ops.convert_to_numpy(last.optimizer.iterations)) == 3 * steps


@pytest.mark.slow
def test_resume_keeps_the_best_checkpoint_of_the_whole_run(resumed_run):
    """best.weights.h5 is only replaced by an epoch better than every earlier one, including those
    before the interruption; otherwise the bundle ships a worse epoch than its history promises."""
    run, before = resumed_run["run"], resumed_run["before"]
    history = read_history(run / "history.csv")
    first = history[0]["val_accuracy"]
    improved = max(row["val_accuracy"] for row in history[1:]) > first
    rewritten = (run / "best.weights.h5").read_bytes() != before["best.weights.h5"]
    assert rewritten == improved, (
        f"validation accuracy per epoch {[row['val_accuracy'] for row in history]}: "
        f"best.weights.h5 {'was' if rewritten else 'was not'} replaced after resuming"
    )
    metrics = load_bundle(run / BUNDLE_NAME).metadata["metrics"]
    assert metrics["prior_correction"]["validation_accuracy_without"] == pytest.approx(
        max(row["val_accuracy"] for row in history), abs=1e-6)


@pytest.mark.slow
def test_resume_from_another_working_directory(training_folder, tmp_path, monkeypatch):
    """run.json must not depend on the folder training was started from."""
    shutil.copytree(training_folder, tmp_path / "project" / "data")
    monkeypatch.chdir(tmp_path / "project")
    recipe = resolve_recipe("article", None, epochs=2, **FAST)
    train("data", "run", recipe, characters=CHARACTERS, time_limit_minutes=1e-6)
    assert state(tmp_path / "project" / "run") == {"epochs_done": 1}

    monkeypatch.chdir(tmp_path)
    resume_training(str(tmp_path / "project" / "run"))

    assert [row["epoch"] for row in history_rows(tmp_path / "project" / "run")] == ["0", "1"]


@pytest.mark.slow
def test_resume_refuses_changed_images(stopped_run, training_folder, tmp_path):
    """A run continues only on the images it started with (run.json's data fingerprint)."""
    data = tmp_path / "data"
    shutil.copytree(training_folder, data)
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    settings = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**settings, "data": str(data)}))
    victim = sorted((data / CHARACTERS[0]).iterdir())[0]
    Image.open(victim).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(victim)

    with pytest.raises(SimpsonsError, match="changed since the run"):
        resume_training(str(run))
    assert state(run) == {"epochs_done": 1}


@contextmanager
def ctrl_c_in_epoch(interrupted: int) -> Iterator[None]:
    """Within the block, training gets a KeyboardInterrupt (Ctrl-C) as epoch ``interrupted`` (from 0) begins."""
    original = training.EpochRecorder.on_epoch_begin

    def begin(self, epoch, logs=None):
        if epoch == interrupted:
            raise KeyboardInterrupt
        original(self, epoch, logs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.EpochRecorder, "on_epoch_begin", begin)
        yield


@pytest.mark.slow
def test_interrupt_keeps_a_bundle_and_a_resumable_state(training_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="simpsons")
    run = tmp_path / "interrupted"
    recipe = resolve_recipe("article", None, epochs=2, **FAST)
    with ctrl_c_in_epoch(1):
        path = train(str(training_folder), str(run), recipe, characters=CHARACTERS)

    assert f"interrupted: the run in {run} resumes from its last checkpoint" in caplog.text
    assert path == run / BUNDLE_NAME
    bundle = load_bundle(path)
    assert bundle.metadata["interrupted"] is True
    assert bundle.metadata["metrics"]["epochs_done"] == 1
    assert bundle.characters == CHARACTERS
    assert state(run) == {"epochs_done": 1}
    assert [row["epoch"] for row in history_rows(run)] == ["0"]
    assert (run / "last.keras").is_file()

    resume_training(str(run))

    assert [row["epoch"] for row in history_rows(run)] == ["0", "1"]
    assert state(run) == {"epochs_done": 2}
    resumed = load_bundle(run / BUNDLE_NAME)
    assert resumed.metadata["interrupted"] is False
    assert resumed.metadata["metrics"]["epochs_done"] == 2


@pytest.mark.slow
def test_checkpoints_are_spaced_out_and_resume_retrains_the_unsaved_epochs(training_folder, tmp_path, monkeypatch):
    """With short epochs the resume checkpoint is written after the first and last epochs only; an
    interrupt after an unsaved epoch resumes from the checkpoint and trains that epoch again."""
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", float("inf"))
    saved, original_save = [], training.EpochRecorder._save_resume_point

    def record_save(self, epochs_done):
        saved.append(epochs_done)
        original_save(self, epochs_done)

    monkeypatch.setattr(training.EpochRecorder, "_save_resume_point", record_save)
    recipe = resolve_recipe("article", None, epochs=3, **FAST)
    train(str(training_folder), str(tmp_path / "whole"), recipe, characters=CHARACTERS)
    assert saved == [1, 3]
    assert state(tmp_path / "whole") == {"epochs_done": 3}

    run = tmp_path / "interrupted"
    with ctrl_c_in_epoch(2):
        train(str(training_folder), str(run), recipe, characters=CHARACTERS)
    assert state(run) == {"epochs_done": 1}
    assert [row["epoch"] for row in history_rows(run)] == ["0", "1"]

    resume_training(str(run))
    assert [row["epoch"] for row in history_rows(run)] == ["0", "1", "2"]
    assert state(run) == {"epochs_done": 3}


def test_best_checkpoint_replaces_only_for_a_better_epoch(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = training.BestCheckpoint(tmp_path)
    checkpoint.set_model(model)
    for epoch, accuracy in enumerate([0.5, 0.7, 0.7, 0.6]):
        model.layers[0].set_weights([np.full((2, 1), float(epoch)), np.zeros(1)])
        checkpoint.on_epoch_end(epoch, {"val_accuracy": accuracy})
    assert training.best_so_far(tmp_path) == {"epoch": 2, "val_accuracy": 0.7}
    model.load_weights(tmp_path / "best.weights.h5")
    assert model.layers[0].get_weights()[0].tolist() == [[1.0], [1.0]]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.json", "best.weights.h5"]


@pytest.mark.slow
def test_best_so_far_of_a_run_from_before_best_json(finished_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    (old / "best.json").unlink()
    assert training.best_so_far(old) == json.loads((finished_run / "best.json").read_text())
    assert training.best_so_far(tmp_path / "empty") is None


@pytest.mark.slow
def test_a_best_epoch_dropped_by_resume_keeps_its_weights_until_beaten(training_folder, tmp_path, monkeypatch):
    """Resuming trains again the epochs finished after the last resume checkpoint; if one of them was
    the best, best.weights.h5 keeps its weights (best.json names it) until a later epoch beats it."""
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", float("inf"))
    run = tmp_path / "run"
    with ctrl_c_in_epoch(2):
        train(str(training_folder), str(run), resolve_recipe("article", None, epochs=3, **FAST), characters=CHARACTERS)
    assert state(run) == {"epochs_done": 1}
    unbeatable = {"epoch": 2, "val_accuracy": 1.0}  # as if the unsaved second epoch had been perfect
    (run / "best.json").write_text(json.dumps(unbeatable))
    weights = (run / "best.weights.h5").read_bytes()

    resume_training(str(run))

    assert [row["epoch"] for row in history_rows(run)] == ["0", "1", "2"]
    assert (run / "best.weights.h5").read_bytes() == weights
    assert json.loads((run / "best.json").read_text()) == unbeatable
    assert load_bundle(run / BUNDLE_NAME).metadata["metrics"]["best_epoch"] == 2


@pytest.mark.slow
def test_interrupt_before_the_first_epoch_ends_is_an_error(training_folder, tmp_path):
    recipe = resolve_recipe("article", None, epochs=2, **FAST)
    with ctrl_c_in_epoch(0), pytest.raises(SimpsonsError, match="before the first epoch"):
        train(str(training_folder), str(tmp_path / "run"), recipe, characters=CHARACTERS)
    assert not (tmp_path / "run" / BUNDLE_NAME).exists()


def test_training_needs_enough_images(training_folder, tmp_path):
    recipe = resolve_recipe("article", None, epochs=1, **FAST)
    with pytest.raises(SimpsonsError, match="no character has at least 1000 images"):
        train(str(training_folder), str(tmp_path / "run"), recipe, min_images=1000)
    with pytest.raises(SimpsonsError, match="dataset folder not found"):
        train(str(tmp_path / "missing"), str(tmp_path / "run"), recipe)
    assert not (tmp_path / "run" / "state.json").exists()


def write_backgrounds(folder: Path, count: int = 12) -> Path:
    """Pictures of no character, under any names and sub-folders: random blobs of colour."""
    rng = np.random.default_rng(7)
    for i in range(count):
        target = folder / ("street" if i % 2 else "kitchen/night") / f"frame{i:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(blocks).resize((48, 40), Image.NEAREST).save(target)
    return folder


@pytest.mark.slow
def test_background_pictures_become_the_no_character_class(training_folder, tmp_path, capsys):
    from simpsons.cli import main

    background = write_backgrounds(tmp_path / "background")
    run = tmp_path / "run"
    argv = ["train", str(training_folder), "--background", str(background), "--preset", "article", "--epochs", "2",
            "--batch-size", "8", "--image-size", "32", "--min-images", "5", "--out", str(run), "--time-limit", "1e-6"]
    assert main(argv) == 0  # stopped by the time limit after one epoch
    assert json.loads((run / "run.json").read_text())["background"] == str(background.resolve())
    assert main(["train", "--resume", str(run)]) == 0
    bundle = load_bundle(run / BUNDLE_NAME)
    assert bundle.characters == ["bart_simpson", "homer_simpson", "lisa_simpson", datasets.NO_CHARACTER]
    assert bundle.metadata["metrics"]["epochs_done"] == 2

    test = tmp_path / "test"
    test.mkdir()
    for i, path in enumerate(sorted(background.rglob("*.png"))[:4]):
        (test / f"no_character_{i}.png").write_bytes(path.read_bytes())
    capsys.readouterr()
    assert main(["evaluate", str(test), "--model", str(run / BUNDLE_NAME), "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["per_class"][datasets.NO_CHARACTER]["support"] == 4


@pytest.mark.slow
def test_no_prior_correction_keeps_the_training_frequencies(training_folder, tmp_path, capsys):
    from simpsons.cli import main

    run = tmp_path / "run"
    argv = ["train", str(training_folder), "--preset", "article", "--epochs", "1", "--batch-size", "8",
            "--image-size", "32", "--characters", ",".join(CHARACTERS), "--no-prior-correction", "--out", str(run)]
    assert main(argv) == 0
    assert json.loads((run / "run.json").read_text())["recipe"]["prior_correction"] is False
    bundle = load_bundle(run / BUNDLE_NAME)
    metrics = bundle.metadata["metrics"]
    assert bundle.prior_correction is None and "prior_correction" not in metrics
    captured = capsys.readouterr()
    assert "prior correction:" not in captured.out + captured.err
    assert '"epochs_done": 1' in captured.out  # the metrics, printed by the command
    assert metrics["validation_accuracy"] == pytest.approx(read_history(run / "history.csv")[0]["val_accuracy"])


def test_background_needs_pictures(training_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    recipe = resolve_recipe("article", None, epochs=1, **FAST)
    with pytest.raises(SimpsonsError, match="no pictures in"):
        train(str(training_folder), str(tmp_path / "run"), recipe, characters=CHARACTERS,
              background_dir=str(tmp_path / "empty"))


# --------------------------------------------------------------------------- fine-tuning (train --init)


@pytest.mark.slow
def test_a_mixing_run_resumes_and_ships_the_classifier_alone(training_folder, tmp_path):
    run = tmp_path / "cutmix"
    recipe = resolve_recipe("laptop", "resnet_small", epochs=2, mixing="cutmix", **FAST)
    train(str(training_folder), str(run), recipe, characters=CHARACTERS, time_limit_minutes=1e-6)
    assert state(run) == {"epochs_done": 1}
    resume_training(str(run))  # from last.keras: the mixing layer, its loss and its accuracy reload

    rows = history_rows(run)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert all(0 <= float(row["accuracy"]) <= 1 and 0 <= float(row["val_accuracy"]) <= 1 for row in rows)
    bundle = load_bundle(run / BUNDLE_NAME)
    assert bundle.metadata["recipe"]["mixing"] == "cutmix"
    assert bundle.model.output_shape == (None, len(CHARACTERS))  # no mixing column in what ships
    probabilities = Predictor(bundle).probabilities(datasets.load_images(training_folder, 32).images[:4])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def resnet_bundle(training_folder, tmp_path_factory) -> Path:
    """A one-epoch resnet_small at 32 px with the robust augmentation: a bundle to fine-tune."""
    run = tmp_path_factory.mktemp("runs") / "resnet"
    recipe = resolve_recipe("laptop", "resnet_small", epochs=1, augmentation="robust", **FAST)
    return train(str(training_folder), str(run), recipe, characters=CHARACTERS)


def trainable_arrays(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(weight) for weight in model.trainable_weights]


@pytest.mark.slow
def test_fine_tuning_starts_from_the_bundle_at_another_size_and_resumes(resnet_bundle, training_folder, tmp_path,
                                                                        capsys):
    from simpsons.cli import main

    run = tmp_path / "fine"
    argv = ["train", str(training_folder), "--init", str(resnet_bundle), "--preset", "fixres", "--image-size", "48",
            "--epochs", "2", "--batch-size", "8", "--out", str(run), "--time-limit", "1e-6"]
    assert main(argv) == 0  # stopped by the time limit after one epoch
    assert "warning" not in capsys.readouterr().out  # same pictures, seed and split as the bundle's run
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["recipe"]["name"] == "fixres" and recorded["recipe"]["arch"] == "resnet_small"
    assert recorded["recipe"]["augmentation"] == "light_robust"  # the bundle was trained with robust
    started = load_bundle(resnet_bundle)
    assert recorded["initialised_from"]["path"] == str(resnet_bundle.resolve())
    assert recorded["initialised_from"]["recipe"] == started.metadata["recipe"]
    assert recorded["characters"] == started.characters and recorded["seed"] == started.metadata["seed"]
    assert main(["train", "--resume", str(run)]) == 0

    tuned = load_bundle(run / BUNDLE_NAME)
    assert tuned.image_size == 48 and tuned.model.input_shape == (None, 48, 48, 3)
    assert tuned.metadata["metrics"]["epochs_done"] == 2
    assert tuned.metadata["initialised_from"] == recorded["initialised_from"]  # the resumed run keeps its lineage
    moved = [not np.allclose(a, b) for a, b in zip(trainable_arrays(tuned.model), trainable_arrays(started.model),
                                                    strict=True)]
    assert any(moved)  # trained further, from the same shapes


@pytest.mark.slow
def test_fine_tuning_copies_the_weights(resnet_bundle, training_folder, tmp_path):
    """With a learning rate of 0 the fine-tuned network keeps every trainable weight of the bundle."""
    recipe = resolve_recipe("fixres", "resnet_small", epochs=1, batch_size=8, image_size=40, learning_rate=0.0)
    tuned = load_bundle(train(str(training_folder), str(tmp_path / "run"), recipe, init_bundle=str(resnet_bundle)))
    started = load_bundle(resnet_bundle)
    for a, b in zip(trainable_arrays(tuned.model), trainable_arrays(started.model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_fine_tuning_on_another_split_warns(resnet_bundle, training_folder, tmp_path, caplog):
    recipe = resolve_recipe("fixres", "resnet_small", epochs=1, **FAST)
    train(str(training_folder), str(tmp_path / "run"), recipe, init_bundle=str(resnet_bundle), seed=5)
    assert "pictures it learnt may sit in this run's validation split" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "fixres"], "the fixres preset fine-tunes a trained model: give it one (--init BUNDLE)"),
        (["--init", "{article}", "--arch", "resnet_small"], "is article_cnn; the recipe trains resnet_small (--arch article_cnn trains it)"),
        (["--init", "{article}", "--image-size", "48"], "does not fit this recipe's article_cnn at 48 px"),
        (["--init", "{resnet}", "--characters", "bart_simpson,lisa_simpson"],
         "--characters cannot change them when fine-tuning"),
        (["--init", "{missing}"], "missing.simpsons"),
    ],
)
def test_bad_fine_tuning_is_refused(extra, message, finished_run, resnet_bundle, training_folder, tmp_path, capsys):
    from simpsons.cli import main

    paths = {"article": str(finished_run / BUNDLE_NAME), "resnet": str(resnet_bundle),
             "missing": str(tmp_path / "missing.simpsons")}
    argv = ["train", str(training_folder), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "8"]
    assert main(argv + [arg.format(**paths) for arg in extra]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not (tmp_path / "run" / "run.json").exists()  # refused before anything was written


@pytest.mark.slow
def test_a_moving_average_run_validates_and_ships_the_average_and_resumes_from_the_weights(training_folder, tmp_path):
    run = tmp_path / "ema"
    recipe = resolve_recipe("laptop", "resnet_small", epochs=2, ema_momentum=0.5, **FAST)
    train(str(training_folder), str(run), recipe, characters=CHARACTERS, time_limit_minutes=1e-6)
    assert state(run) == {"epochs_done": 1}
    last = keras.saving.load_model(run / "last.keras")
    weights, average = trainable_arrays(last), [keras.ops.convert_to_numpy(variable) for variable in
                                                last.optimizer._model_variables_moving_average]
    shipped = trainable_arrays(load_bundle(run / BUNDLE_NAME).model)
    assert len(shipped) == len(weights) == len(average)  # zip below compares every array
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(shipped, average))  # the average ships...
    assert not all(np.allclose(a, b, atol=1e-6) for a, b in zip(shipped, weights))  # ...not the weights

    resume_training(str(run))  # the resume state holds the weights, and the average in the optimizer
    assert [row["epoch"] for row in history_rows(run)] == ["0", "1"]
    metrics = load_bundle(run / BUNDLE_NAME).metadata["metrics"]
    assert metrics["prior_correction"]["validation_accuracy_without"] == pytest.approx(
        max(row["val_accuracy"] for row in read_history(run / "history.csv")), abs=1e-6)


def test_a_moving_average_needs_a_momentum_below_one():
    with pytest.raises(SimpsonsError, match="ema_momentum must be between 0 and 1"):
        resolve_recipe("laptop", None, ema_momentum=1.0)
