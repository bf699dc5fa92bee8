"""Model bundles: the round trip, damaged and foreign files, and the Predictor's decisions."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import TEST_CHARACTERS, make_bundle, open_sample

from simpsons import data as datasets
from simpsons.bundle import (
    FORMAT,
    FORMAT_VERSION,
    PriorCorrection,
    load_bundle,
    migrate,
    read_description,
    save_bundle,
)
from simpsons.errors import SimpsonsError
from simpsons.prediction import UNKNOWN, Predictor

SIZE = 32


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("bundle") / "model.simpsons"
    bundle = make_bundle(path, TEST_CHARACTERS, SIZE, threshold=0.25, seed=3)
    return path, bundle


@pytest.fixture(scope="module")
def sample_pixels(samples_dir) -> np.ndarray:
    return datasets.load_images(samples_dir, SIZE).images


def test_round_trip(saved, sample_pixels):
    path, original = saved
    loaded = load_bundle(path)

    assert loaded.characters == TEST_CHARACTERS
    assert loaded.image_size == SIZE
    assert loaded.threshold == 0.25
    assert loaded.metadata == original.metadata
    before = np.asarray(original.model.predict_on_batch(sample_pixels.astype(np.float32)))
    after = np.asarray(loaded.model.predict_on_batch(sample_pixels.astype(np.float32)))
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    # the random network still tells the pictures apart: the comparison above is not between constants
    assert np.ptp(before, axis=0).max() > 1e-4


def test_bundle_is_a_zip_with_a_description(saved):
    path, _ = saved
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as zipped:
        assert sorted(zipped.namelist()) == ["bundle.json", "model.keras"]
        description = json.loads(zipped.read("bundle.json"))
    assert description["format"] == FORMAT
    assert description["version"] == FORMAT_VERSION
    assert description["characters"] == TEST_CHARACTERS
    assert description["image_size"] == SIZE
    assert description["preprocessing"]["input_range"] == [0, 255]
    assert read_description(path).as_json() == description


def test_save_replaces_atomically(saved, tmp_path):
    path, bundle = saved
    target = tmp_path / "deeper" / "model.simpsons"
    save_bundle(bundle, target)
    save_bundle(bundle, target)  # overwriting an existing bundle is fine
    assert load_bundle(target).characters == TEST_CHARACTERS
    assert [p.name for p in target.parent.iterdir()] == ["model.simpsons"]  # no partial files left


def _foreign_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("README.txt", "photos from the holidays")
        zipped.writestr("photo.jpg", b"\xff\xd8\xff")


def _other_format(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("bundle.json", json.dumps({"format": "some-other-tool", "version": 1}))


def _newer_version(path: Path, source: Path) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        description = json.loads(old.read("bundle.json"))
        description["version"] = FORMAT_VERSION + 1
        new.writestr("bundle.json", json.dumps(description))
        new.writestr("model.keras", old.read("model.keras"))


def _damaged_network(path: Path, source: Path) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        new.writestr("bundle.json", old.read("bundle.json"))
        new.writestr("model.keras", b"PK\x03\x04 this is not a keras file")


def _no_network(path: Path, source: Path) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        new.writestr("bundle.json", old.read("bundle.json"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "not a simpsons model bundle"),
        ("random text", "not a simpsons model bundle"),
        ("foreign zip", "not a simpsons model bundle"),
        ("other format", "not a simpsons model bundle.*some-other-tool"),
        ("newer version", "newer simpsons"),
        ("damaged network", "cannot be loaded"),
        ("no network", "cannot be loaded"),
        ("missing", "model bundle not found"),
        ("folder", "model bundle not found"),
    ],
)
def test_bad_bundles_are_clear_errors(saved, tmp_path, damage, message):
    source, _ = saved
    path = tmp_path / "model.simpsons"
    if damage == "truncated":
        data = source.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random text":
        path.write_text("homer simpson\n" * 100)
    elif damage == "foreign zip":
        _foreign_zip(path)
    elif damage == "other format":
        _other_format(path)
    elif damage == "newer version":
        _newer_version(path, source)
    elif damage == "damaged network":
        _damaged_network(path, source)
    elif damage == "no network":
        _no_network(path, source)
    elif damage == "folder":
        path.mkdir()

    with pytest.raises(SimpsonsError, match=message) as raised:
        load_bundle(path)
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def _with_description(path: Path, source: Path, **changes) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        new.writestr("bundle.json", json.dumps({**json.loads(old.read("bundle.json")), **changes}))
        new.writestr("model.keras", old.read("model.keras"))


@pytest.mark.parametrize("correction", [
    {"strength": -0.5, "training_counts": list(range(1, 21))},
    {"strength": 0.5, "training_counts": list(range(1, 20))},
    {"strength": 0.5, "training_counts": [0] + list(range(1, 20))},
    {"strength": "strong", "training_counts": list(range(1, 21))},
    {"training_counts": list(range(1, 21))},
    [0.5],
])
def test_a_bad_prior_correction_is_a_clear_error(saved, tmp_path, correction):
    path = tmp_path / "model.simpsons"
    _with_description(path, saved[0], prior_correction=correction)
    with pytest.raises(SimpsonsError, match="not a simpsons model bundle.*prior correction") as raised:
        load_bundle(path)
    assert "\n" not in str(raised.value)


def test_prior_correction_round_trip_and_answers(saved, sample_pixels, tmp_path):
    """The correction travels in the bundle and shifts every logit, raw or not, by its offsets."""
    path = tmp_path / "corrected.simpsons"
    counts = [10 * (index + 1) for index in range(20)]
    _with_description(path, saved[0], prior_correction={"strength": 0.8, "training_counts": counts})
    corrected = load_bundle(path)
    assert corrected.prior_correction == PriorCorrection(0.8, counts)
    plain = Predictor(load_bundle(saved[0])).logits(sample_pixels)
    offsets = -0.8 * np.log(np.asarray(counts) / sum(counts))
    for raw in (False, True):
        np.testing.assert_allclose(Predictor(corrected, raw=raw).logits(sample_pixels), plain + offsets, atol=1e-4)
    assert Predictor(corrected).logits(sample_pixels[:0]).shape == (0, 20)
    assert load_bundle(saved[0]).prior_correction is None


@pytest.mark.parametrize("content", [[1, 2, 3], "a string", 42])
def test_bundle_json_that_is_not_an_object_is_a_clear_error(tmp_path, content):
    """A zip from another tool can hold a bundle.json of its own shape."""
    path = tmp_path / "model.simpsons"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("bundle.json", json.dumps(content))
    with pytest.raises(SimpsonsError, match="not a simpsons model bundle"):
        load_bundle(path)


# --------------------------------------------------------------------------- the Predictor


@pytest.fixture(scope="module")
def loaded(saved):
    return load_bundle(saved[0])


@pytest.fixture
def predictor(loaded) -> Predictor:
    return Predictor(loaded, batch_size=16)


def test_probabilities_in_batches(predictor, saved, sample_pixels):
    probabilities = predictor.probabilities(sample_pixels)  # 60 images, batches of 16
    assert probabilities.shape == (60, 20)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    whole = np.asarray(saved[1].model.predict_on_batch(sample_pixels.astype(np.float32)))
    np.testing.assert_allclose(probabilities, whole, rtol=1e-4, atol=1e-6)
    assert predictor.probabilities(sample_pixels[:0]).shape == (0, 20)


def test_threshold_answers_unknown_below_it(predictor, sample_pixels):
    probabilities = predictor.probabilities(sample_pixels[:10])
    best = probabilities.max(axis=1)
    winners = [TEST_CHARACTERS[i] for i in probabilities.argmax(axis=1)]

    predictor.threshold = float(best.max()) + 1e-3
    for prediction, winner, p in zip(predictor.decide(probabilities), winners, best):
        assert prediction.character == UNKNOWN
        assert prediction.best_guess == winner
        assert prediction.probability == pytest.approx(p)

    predictor.threshold = float(best.min()) - 1e-3
    for prediction, winner in zip(predictor.decide(probabilities), winners):
        assert prediction.character == winner
        assert prediction.best_guess == winner

    middle = float(np.median(best))
    predictor.threshold = middle
    answers = [p.character for p in predictor.decide(probabilities)]
    assert answers == [w if p >= middle else UNKNOWN for w, p in zip(winners, best)]
    assert UNKNOWN in answers and set(answers) != {UNKNOWN}

    predictor.threshold = None
    assert [p.character for p in predictor.decide(probabilities)] == winners


def test_threshold_from_the_bundle(predictor):
    assert predictor.threshold == 0.25
    probabilities = np.zeros((2, 20), np.float32)
    probabilities[0, 4], probabilities[0, 5] = 0.2, 0.8
    probabilities[1, :] = 0.9 / 19
    probabilities[1, 7] = 0.1  # the best, but below 0.25
    confident, unsure = predictor.decide(probabilities)
    assert confident.character == TEST_CHARACTERS[5]
    assert unsure.character == UNKNOWN
    assert unsure.best_guess == TEST_CHARACTERS[7]


@pytest.mark.parametrize("k", [1, 3, 5, 20, 50])
def test_top_k_length_and_order(predictor, sample_pixels, k):
    probabilities = predictor.probabilities(sample_pixels[:6])
    for row, prediction in zip(probabilities, predictor.decide(probabilities, top_k=k)):
        assert len(prediction.top_k) == min(k, 20)
        values = [p for _, p in prediction.top_k]
        assert values == sorted(values, reverse=True)
        assert prediction.top_k[0] == (prediction.best_guess, pytest.approx(row.max()))
        assert [name for name, _ in prediction.top_k] == [TEST_CHARACTERS[i] for i in np.argsort(-row)[: min(k, 20)]]
        assert all(p == pytest.approx(row[TEST_CHARACTERS.index(n)]) for n, p in prediction.top_k)


def test_predict_files_and_images_agree(predictor, sample_paths):
    paths = sample_paths[::12]
    from_files = predictor.predict_files(paths, top_k=2)
    from_images = predictor.predict_images([open_sample(p) for p in paths], top_k=2)
    assert len(from_files) == len(paths)
    for a, b in zip(from_files, from_images):
        assert a.best_guess == b.best_guess
        assert a.probability == pytest.approx(b.probability, rel=1e-5)
    as_dict = from_files[0].as_dict()
    assert set(as_dict) == {"character", "probability", "best_guess", "top_k", "familiarity"}
    assert len(as_dict["top_k"]) == 2


def test_predict_unreadable_file_is_a_clear_error(predictor, tmp_path, sample_paths):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(sample_paths[0].read_bytes()[:200])
    with pytest.raises(SimpsonsError, match="cannot read image .*broken.jpg"):
        predictor.predict_files([sample_paths[0], broken])


# --------------------------------------------------------------------------- format 1


def _format_1(path: Path, source: Path, **fields) -> None:
    """The bundle at ``source`` as format 1 wrote it: no temperature, per-character thresholds, flip or prior
    correction; ``fields`` (the stranger detector in format 1's words) over its description."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        description = json.loads(old.read("bundle.json"))
        for later in ("character_thresholds", "temperature", "test_time_flip", "prior_correction"):
            del description[later]
        new.writestr("bundle.json", json.dumps({**description, "version": 1, **fields}))
        new.writestr("model.keras", old.read("model.keras"))


def test_a_format_1_bundle_loads_and_answers_as_before(saved, sample_pixels, tmp_path):
    """A format-1 detector stored its weight as ``probability_weight`` and read the best probability."""
    plain = Predictor(load_bundle(saved[0]))
    probabilities, features = plain.probabilities(sample_pixels), plain.features(sample_pixels)
    weights = np.random.default_rng(1).normal(size=features.shape[1])
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    familiarity = 1 / (1 + np.exp(-(unit @ weights - 0.5 + 2.0 * probabilities.max(axis=1))))
    threshold, familiar = float(np.median(probabilities.max(axis=1))), float(np.median(familiarity))
    old = tmp_path / "old.simpsons"
    _format_1(old, saved[0], threshold=threshold, stranger_detector={
        "weights": weights.tolist(), "bias": -0.5, "threshold": familiar, "probability_weight": 2.0})

    loaded = load_bundle(old)
    assert (loaded.threshold, loaded.temperature, loaded.character_thresholds) == (threshold, None, None)
    assert loaded.prior_correction is None and loaded.test_time_flip is False
    assert (loaded.stranger_detector.answer, loaded.stranger_detector.answer_weight) == ("best probability", 2.0)
    predictor = Predictor(loaded)
    scores = predictor.score(sample_pixels)
    np.testing.assert_allclose(scores.probabilities, probabilities, atol=1e-6)
    np.testing.assert_allclose(scores.familiarity, familiarity, atol=1e-5)
    answers = [answer.character for answer in predictor.decide(scores.probabilities, familiarity=scores.familiarity)]
    expected = [TEST_CHARACTERS[row.argmax()] if row.max() >= threshold and known >= familiar else UNKNOWN
                for row, known in zip(probabilities, scores.familiarity)]
    assert answers == expected and UNKNOWN in answers and set(answers) != {UNKNOWN}

    resaved = tmp_path / "resaved.simpsons"
    save_bundle(loaded, resaved)  # written again, in the current format and its words
    with zipfile.ZipFile(resaved) as zipped:
        description = json.loads(zipped.read("bundle.json"))
    assert description["version"] == FORMAT_VERSION == 2
    assert description["stranger_detector"]["answer_weight"] == 2.0
    assert "probability_weight" not in description["stranger_detector"]


def test_a_format_1_detector_without_an_answer_weight_reads_the_features_alone(saved, tmp_path):
    old = tmp_path / "old.simpsons"
    _format_1(old, saved[0], stranger_detector={"weights": [0.0, 1.0], "bias": 0.0, "threshold": 0.5})
    assert load_bundle(old).stranger_detector.answer_weight == 0.0


def test_migrate_fills_format_1_and_leaves_format_2_alone(saved):
    current = read_description(saved[0]).as_json()
    assert migrate(current) is current
    first = {key: value for key, value in current.items() if key not in ("temperature", "metadata", "test_time_flip")}
    migrated = migrate({**first, "version": 1})
    assert migrated["version"] == 2 and set(migrated) == set(current)
    assert (migrated["temperature"], migrated["metadata"], migrated["test_time_flip"]) == (None, {}, False)


def test_the_shipped_model_and_its_export_are_format_1_and_load():
    """The shipped files were written in format 1; they load through the migration."""
    from simpsons.backends import exported_network_path
    from simpsons.onnx_network import METADATA_KEY, load_onnx_bundle, load_onnx_network
    from simpsons.prediction import default_model_path

    with zipfile.ZipFile(default_model_path()) as zipped:
        assert json.loads(zipped.read("bundle.json"))["version"] == 1
    exported = exported_network_path(default_model_path())
    assert json.loads(load_onnx_network(exported).metadata[METADATA_KEY])["version"] == 1
    from_onnx, from_bundle = load_onnx_bundle(exported), read_description(default_model_path())
    assert from_onnx.stranger_detector.answer == from_bundle.stranger_detector.answer == "max logit"
    assert from_onnx.as_json()["version"] == 2 and from_onnx.characters == from_bundle.characters
