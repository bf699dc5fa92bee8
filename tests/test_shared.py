"""The real data set in ../shared/data: counts, the default selection and the shot-aware split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import TEST_CHARACTERS

from simpsons import data as datasets

pytestmark = [pytest.mark.shared, pytest.mark.slow]  # the whole real data set, loaded

SIZE = 32  # decoding at 32 px keeps this quick; the hashes come from the full pictures anyway


@pytest.fixture(scope="module")
def training_set(shared_data: Path) -> datasets.LabelledImages:
    return datasets.load_images(shared_data / "simpsons" / "simpsons_dataset", SIZE)


@pytest.fixture(scope="module")
def test_set(shared_data: Path) -> datasets.LabelledImages:
    return datasets.load_images(shared_data / "simpsons" / "kaggle_simpson_testset", SIZE)


@pytest.fixture(scope="module")
def selected(training_set) -> datasets.LabelledImages:
    return datasets.select_characters(training_set)


def test_training_folder(training_set):
    assert len(training_set) == 15_456
    assert len(training_set.characters) == 42
    assert training_set.bad_files == []
    assert training_set.images.shape == (15_456, SIZE, SIZE, 3)
    counts = training_set.counts()
    assert counts["homer_simpson"] == 2097
    assert counts["maggie_simpson"] == 72
    assert counts["lionel_hutz"] == 3
    assert sum(counts.values()) == 15_456


def test_default_selection_is_the_20_test_characters(selected, training_set):
    assert selected.characters == TEST_CHARACTERS
    counts = training_set.counts()
    assert len(selected) == sum(counts[name] for name in TEST_CHARACTERS)
    assert min(selected.counts().values()) >= datasets.DEFAULT_MIN_IMAGES
    dropped = [name for name in training_set.characters if name not in TEST_CHARACTERS]
    assert max(counts[name] for name in dropped) < datasets.DEFAULT_MIN_IMAGES


def test_flat_test_set(test_set):
    assert len(test_set) == 801
    assert test_set.characters == TEST_CHARACTERS
    assert test_set.bad_files == []
    assert all(30 <= n <= 50 for n in test_set.counts().values())


def test_default_split_has_no_near_duplicates_across(selected):
    train, validation = datasets.shot_aware_split(selected)

    assert len(np.intersect1d(train, validation)) == 0
    assert len(train) + len(validation) == len(selected)
    assert 0.10 < len(validation) / len(selected) < 0.20
    assert set(selected.labels[validation].tolist()) == set(range(20))
    closest = datasets.HASH_BITS
    train_hashes = selected.hashes[train]
    for start in range(0, len(validation), 1024):
        chunk = selected.hashes[validation[start : start + 1024]]
        closest = min(closest, int(datasets.hamming_distances(chunk, train_hashes).min()))
    assert closest > datasets.NEAR_DUPLICATE_DISTANCE


# Measured for the shipped model with `simpsons evaluate` (MODEL_CARD.md): top-1 accuracy 0.954; with its
# thresholds and stranger detector (unknown answers count as wrong) accuracy 0.934 and macro F1 0.956.
SHIPPED_MIN_TOP1_ACCURACY = 0.946
SHIPPED_MIN_ACCURACY = 0.926
SHIPPED_MIN_MACRO_F1 = 0.948


def test_shipped_model_on_the_whole_test_set(shared_data: Path, tmp_path: Path):
    from simpsons.evaluation import evaluate
    from simpsons.prediction import Predictor

    predictor = Predictor.load()
    test = datasets.load_images(shared_data / "simpsons" / "kaggle_simpson_testset", predictor.image_size)
    metrics = evaluate(predictor, test).as_dict()
    assert metrics["images"] == 801
    assert metrics["top1_accuracy"] >= SHIPPED_MIN_TOP1_ACCURACY
    assert metrics["accuracy"] >= SHIPPED_MIN_ACCURACY
    assert metrics["macro_f1"] >= SHIPPED_MIN_MACRO_F1


def test_onnx_runtime_and_keras_answer_alike_on_the_whole_test_set(shared_data: Path):
    """The shipped model's two engines: the same best guesses and answers on all 801 pictures, probabilities and
    familiarity within 1e-4, with the bundle's thresholds, temperature, prior correction and stranger detector,
    and with the flip turned on too."""
    from simpsons.onnx_network import OnnxNetwork
    from simpsons.prediction import Predictor

    by_onnx, by_keras = Predictor.load(), Predictor.load(backend="keras")
    assert isinstance(by_onnx.network, OnnxNetwork) and not isinstance(by_keras.network, OnnxNetwork)
    assert by_onnx.logit_offsets is not None and by_onnx.temperature and by_onnx.stranger_detector
    test = datasets.load_images(shared_data / "simpsons" / "kaggle_simpson_testset", by_onnx.image_size)
    assert len(test) == 801
    for flip in (False, True):
        by_onnx.bundle.test_time_flip = by_keras.bundle.test_time_flip = flip
        onnx_scores, keras_scores = by_onnx.score(test.images), by_keras.score(test.images)
        assert (onnx_scores.probabilities.argmax(axis=1) == keras_scores.probabilities.argmax(axis=1)).all()
        np.testing.assert_allclose(onnx_scores.probabilities, keras_scores.probabilities, atol=1e-4)
        np.testing.assert_allclose(onnx_scores.familiarity, keras_scores.familiarity, atol=1e-4)
        onnx_answers = by_onnx.decide(onnx_scores.probabilities, familiarity=onnx_scores.familiarity)
        keras_answers = by_keras.decide(keras_scores.probabilities, familiarity=keras_scores.familiarity)
        assert [a.character for a in onnx_answers] == [a.character for a in keras_answers]


# Measured for the shipped model with `simpsons evaluate ../shared/data/artwork` (MODEL_CARD.md): top-1 of the
# best guesses 0.656 on the 90 pictures of characters it knows (the 14 of Maggie are not counted).
SHIPPED_MIN_ARTWORK_TOP1 = 0.63


def test_shipped_model_on_artwork(shared_data: Path):
    from simpsons.evaluation import evaluate
    from simpsons.prediction import Predictor

    predictor = Predictor.load()
    artwork = datasets.load_images(shared_data / "artwork", predictor.image_size)
    metrics = evaluate(predictor, artwork).as_dict()
    assert metrics["images"] == 90
    assert metrics["top1_accuracy"] >= SHIPPED_MIN_ARTWORK_TOP1
