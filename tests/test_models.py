"""The model registry: every architecture builds and learns; the article's network; augmentation."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
from keras import layers

from simpsons import data as datasets
from simpsons.errors import SimpsonsError
from simpsons.models import (
    ARCHITECTURES,
    AUGMENTATIONS,
    DEPRECATED_NAMES,
    LUMINANCE,
    BatchMixing,
    MixedCrossentropy,
    RandomAffine,
    RandomColour,
    RandomErasing,
    build_article_cnn,
    build_augmentation,
    build_training_model,
    classifier_of,
    get_architecture,
    own_label_accuracy,
    scoring_network,
    uses_cutouts,
)
from simpsons.prediction import softmax

SIZE = 32


def with_full_masks(images: np.ndarray) -> np.ndarray:
    """Pictures with the cut-out mask channel of pictures without a box (255 everywhere)."""
    return np.concatenate([images, np.full((*images.shape[:3], 1), 255.0, np.float32)], axis=-1)


@pytest.fixture(scope="module")
def batch(samples_dir) -> tuple[np.ndarray, np.ndarray]:
    """8 real sample frames of 8 different characters at 32 px, with one-hot labels over 20 classes."""
    loaded = datasets.load_images(samples_dir, SIZE)
    chosen = np.array([np.flatnonzero(loaded.labels == c)[0] for c in range(0, 16, 2)])
    images = loaded.images[chosen].astype(np.float32)
    return images, np.eye(20, dtype=np.float32)[loaded.labels[chosen]]


def test_registry():
    for name, arch in ARCHITECTURES.items():
        assert get_architecture(name) is arch and arch.name == name
    with pytest.raises(SimpsonsError, match="unknown architecture 'vgg'") as raised:
        get_architecture("vgg")
    assert all(name in str(raised.value) for name in ARCHITECTURES)  # the error lists every choice


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architecture_builds_and_outputs_probabilities(name, batch):
    images, _ = batch
    model = ARCHITECTURES[name].build(20, SIZE)

    assert model.input_shape == (None, SIZE, SIZE, 3)
    assert model.output_shape == (None, 20)
    probabilities = np.asarray(model.predict_on_batch(images))
    assert probabilities.shape == (8, 20)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # the scaling to [0, 1] is inside the model: raw 0..255 pixels in, no outside preprocessing
    assert isinstance(model.layers[1], layers.Rescaling)
    # the same network without its softmax gives the logits of these probabilities
    logits, _ = scoring_network(model).predict_on_batch(images)
    np.testing.assert_allclose(softmax(np.asarray(logits)), probabilities, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architecture_learns_from_real_images(name, batch):
    images, labels = batch
    keras.utils.set_random_seed(0)
    model = ARCHITECTURES[name].build(20, SIZE)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")

    before = float(model.test_on_batch(images, labels))
    training = [float(model.train_on_batch(images, labels)) for _ in range(10)]
    after = float(model.test_on_batch(images, labels))

    # train_on_batch reports the loss of the forward pass before each update
    assert np.isfinite(training).all()
    assert np.mean(training[-3:]) < 0.9 * training[0]
    if not any(isinstance(layer, layers.BatchNormalization) for layer in model.layers):
        # without batch norm (whose moving statistics lag behind) inference sees the progress too
        assert after < before


def test_seed_is_the_article_network():
    model = build_article_cnn(20, 64)
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == [
        "Rescaling", "Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Conv2D", "Conv2D", "MaxPooling2D", "Dropout",
        "Flatten", "Dense", "Dropout", "Dense",
    ]
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 32, 64, 64]
    assert all(tuple(c.kernel_size) == (3, 3) for c in convs)
    assert all(c.activation is keras.activations.relu for c in convs)
    assert [layer.rate for layer in model.layers if isinstance(layer, layers.Dropout)] == [0.25, 0.25, 0.5]
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    assert [d.units for d in dense] == [512, 20]
    assert dense[0].activation is keras.activations.relu
    assert dense[1].activation is keras.activations.softmax
    # 64 px: 64 -> 62 -> 31 -> 29 -> 14, so the dense layer sees 14 * 14 * 64 features
    assert dense[0].kernel.shape == (14 * 14 * 64, 512)


@pytest.mark.parametrize("classes", [2, 42])
def test_number_of_classes(classes):
    for arch in ARCHITECTURES.values():
        assert arch.build(classes, SIZE).output_shape == (None, classes)


@pytest.mark.parametrize("policy", list(AUGMENTATIONS))
def test_augmentation_changes_pictures_only_in_training(policy, batch):
    images, _ = batch
    augmentation = build_augmentation(policy, SIZE, seed=1)
    given = with_full_masks(images) if uses_cutouts(policy) else images

    augmented = np.asarray(augmentation(given, training=True))
    untouched = np.asarray(augmentation(given, training=False))

    assert augmented.shape == images.shape
    assert np.abs(augmented - images).mean() > 1.0
    np.testing.assert_allclose(untouched, images, atol=1e-3)
    # still pixels in about 0..255, not rescaled to 0..1
    assert augmented.max() > 100


@pytest.mark.parametrize("name", ["article_cnn", "resnet"])
def test_training_model_at_inference_is_the_classifier(name, batch):
    images, _ = batch
    keras.utils.set_random_seed(0)
    arch = ARCHITECTURES[name]
    classifier = arch.build(20, SIZE)
    model = build_training_model(classifier, build_augmentation("strong", SIZE, seed=0))

    assert model.layers[-1] is classifier
    alone = keras.ops.convert_to_numpy(classifier(images, training=False))
    wrapped = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(wrapped, alone, rtol=1e-5, atol=1e-6)
    trained_view = keras.ops.convert_to_numpy(model(images, training=True))
    assert not np.allclose(trained_view, alone, atol=1e-6)


def test_unknown_augmentation_policy():
    with pytest.raises(SimpsonsError, match="unknown augmentation policy 'wild'"):
        build_augmentation("wild", SIZE)


def test_random_affine_with_no_motion_is_the_identity(batch):
    images = batch[0]
    still = RandomAffine(rotation_degrees=0.0, shift=0.0, zoom=(1.0, 1.0), flip=False, seed=0)
    np.testing.assert_allclose(np.asarray(still(images, training=True)), images, atol=1e-3)


def test_random_affine_flip_mirrors_and_stays_in_range(batch):
    images = batch[0]
    flipped = np.asarray(RandomAffine(0.0, 0.0, (1.0, 1.0), flip=True, seed=3)(images, training=True))
    mirrored = images[:, :, ::-1]
    # each picture is either untouched or mirrored left to right, and both outcomes occur
    outcome = [np.allclose(f, m, atol=1e-3) for f, m in zip(flipped, mirrored)]
    kept = [np.allclose(f, i, atol=1e-3) for f, i in zip(flipped, images)]
    assert all(a or b for a, b in zip(outcome, kept)) and any(outcome) and any(kept)
    moved = np.asarray(RandomAffine(30.0, 0.3, (0.7, 1.5), seed=1)(images, training=True))
    assert moved.min() >= images.min() - 1e-3 and moved.max() <= images.max() + 1e-3


def test_random_affine_survives_a_save_and_load(tmp_path):
    layer_model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), RandomAffine(5.0, 0.05, (0.9, 1.2), seed=2)])
    layer_model.save(tmp_path / "augment.keras")
    loaded = keras.saving.load_model(tmp_path / "augment.keras")
    config = loaded.layers[0].get_config()
    assert (config["rotation_degrees"], config["shift"], config["zoom"]) == (5.0, 0.05, [0.9, 1.2])


def test_random_colour_greys_casts_and_stays_in_range(batch):
    images = batch[0]
    grey = np.asarray(RandomColour(saturation=(1.0, 1.0), grey=1.0, cast=0.0, seed=0)(images, training=True))
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-3)
    np.testing.assert_allclose(grey[..., 1], grey[..., 2], atol=1e-3)
    luminance = images @ np.asarray(LUMINANCE, dtype=np.float32)
    np.testing.assert_allclose(grey[..., 0], luminance, atol=1e-2)

    cast = np.asarray(RandomColour(saturation=(1.0, 1.0), grey=0.0, cast=0.3, seed=1)(images, training=True))
    assert cast.min() >= 0 and cast.max() <= 255
    unclipped = (cast > 0) & (cast < 255) & (images > 0)
    gains = np.where(unclipped, cast / np.maximum(images, 1e-6), np.nan)
    per_channel = np.nanmedian(gains.reshape(len(images), -1, 3), axis=1)  # one gain per picture and channel
    assert np.all(np.abs(per_channel - 1) <= 0.3 + 1e-3) and np.ptp(per_channel) > 0.05
    np.testing.assert_allclose(np.asarray(RandomColour(seed=2)(images, training=False)), images)


def test_random_erasing_replaces_one_rectangle_of_the_chosen_size(batch):
    images = batch[0]
    erased = np.asarray(RandomErasing(rate=1.0, area=(0.1, 0.2), seed=0)(images, training=True))
    for before, after in zip(images, erased):
        changed = np.any(np.abs(after - before) > 1e-3, axis=-1)
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert 0.05 * SIZE * SIZE <= box <= 0.3 * SIZE * SIZE  # whole pixels around a 10-20% area
        assert changed.sum() >= 0.8 * box  # one filled rectangle (noise may match a pixel by chance)
    kept = np.asarray(RandomErasing(rate=0.0, seed=0)(images, training=True))
    np.testing.assert_allclose(kept, images)


def test_colour_and_erasing_survive_a_save_and_load(tmp_path):
    layer_model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), RandomColour((0.5, 1.2), 0.2, 0.1, seed=1),
                                    RandomErasing(0.3, (0.05, 0.1), seed=2)])
    layer_model.save(tmp_path / "augment.keras")
    loaded = keras.saving.load_model(tmp_path / "augment.keras")
    colour, erasing = (layer.get_config() for layer in loaded.layers)
    assert (colour["saturation"], colour["grey"], colour["cast"]) == ([0.5, 1.2], 0.2, 0.1)
    assert (erasing["rate"], erasing["area"]) == (0.3, [0.05, 0.1])


def flat_pictures(count: int) -> np.ndarray:
    """``count`` pictures, picture i filled with the value 10 * i: a mixed pixel tells where it came from."""
    return np.stack([np.full((SIZE, SIZE, 3), 10.0 * i, np.float32) for i in range(count)])


def test_cutmix_pastes_one_rectangle_of_the_picture_before_and_says_how_much_is_left():
    pictures = flat_pictures(16)
    mixed, own = (np.asarray(out) for out in BatchMixing("cutmix", rate=1.0, seed=0)(pictures, training=True))
    assert own.shape == (16, 1)
    for i, picture in enumerate(mixed):
        values = picture[..., 0]
        pasted = values == 10.0 * ((i - 1) % 16)  # the batch's previous picture, the first one's the last
        assert np.all(pasted | (values == 10.0 * i))
        assert own[i, 0] == pytest.approx(1 - pasted.mean())
        if pasted.any():
            rows, cols = np.flatnonzero(pasted.any(axis=1)), np.flatnonzero(pasted.any(axis=0))
            assert pasted.sum() == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    assert own.max() < 1.0 and own.std() > 0.1  # rectangles of many sizes


def test_mixup_blends_with_the_picture_before_by_its_own_share():
    pictures = flat_pictures(16)
    mixed, own = (np.asarray(out) for out in BatchMixing("mixup", rate=1.0, seed=0)(pictures, training=True))
    previous = np.roll(pictures, 1, axis=0)
    np.testing.assert_allclose(mixed, own[:, :, None, None] * pictures + (1 - own[:, :, None, None]) * previous,
                               atol=1e-4)
    assert (own >= 0).all() and (own <= 1).all() and own.std() > 0.1


@pytest.mark.parametrize(("policy", "rate", "training"), [("cutmix", 1.0, False), ("mixup", 1.0, False),
                                                           ("cutmix", 0.0, True), ("none", 1.0, True)])
def test_mixing_leaves_pictures_alone_at_inference_at_rate_0_and_for_none(policy, rate, training):
    pictures = flat_pictures(4)
    mixed, own = BatchMixing(policy, rate=rate, seed=0)(pictures, training=training)
    np.testing.assert_array_equal(np.asarray(mixed), pictures)
    np.testing.assert_array_equal(np.asarray(own), np.ones((4, 1)))


def test_mixed_crossentropy_shares_the_target_with_the_label_before():
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    probabilities = softmax(np.random.default_rng(0).normal(size=(4, 3))).astype(np.float32)
    own = np.array([[1.0], [0.25], [0.5], [0.0]], np.float32)
    outputs = np.concatenate([probabilities, own], axis=1)
    targets = own * labels + (1 - own) * np.roll(labels, 1, axis=0)
    for smoothing in (0.0, 0.1):
        expected = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)(targets, probabilities)
        mixed = MixedCrossentropy(label_smoothing=smoothing)(labels, outputs)
        assert float(mixed) == pytest.approx(float(expected), rel=1e-5)
    # accuracy reads the probabilities against the pictures' own labels, whatever their share
    hits = keras.ops.convert_to_numpy(own_label_accuracy(labels, outputs))
    np.testing.assert_array_equal(hits, probabilities.argmax(axis=1) == labels.argmax(axis=1))


def test_a_mixing_training_model_adds_the_own_share_and_keeps_the_classifier(batch, tmp_path):
    images, _ = batch
    classifier = get_architecture("resnet_small").build(20, SIZE)
    model = build_training_model(classifier, build_augmentation("light", SIZE, seed=0), "cutmix", seed=0)
    assert model.output_shape == (None, 21)
    assert classifier_of(model) is classifier
    assert classifier_of(build_training_model(classifier, build_augmentation("light", SIZE, seed=0))) is classifier
    at_inference = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(at_inference[:, :-1], keras.ops.convert_to_numpy(classifier(images, training=False)),
                               atol=1e-6)
    np.testing.assert_array_equal(at_inference[:, -1], 1.0)
    model.save(tmp_path / "mixing.keras")
    loaded = keras.saving.load_model(tmp_path / "mixing.keras")
    assert loaded.get_layer("mixing_cutmix").get_config()["policy"] == "cutmix"
    with pytest.raises(SimpsonsError, match="unknown mixing policy 'blend'"):
        BatchMixing("blend")


def test_old_architecture_names_give_the_new_ones_with_one_warning(monkeypatch, caplog):
    from simpsons import models

    monkeypatch.setattr(models, "_warned", set())
    assert set(DEPRECATED_NAMES.values()) <= set(ARCHITECTURES) and not set(DEPRECATED_NAMES) & set(ARCHITECTURES)
    with caplog.at_level(logging.WARNING, logger="simpsons.models"):
        assert get_architecture("seed") is ARCHITECTURES["article_cnn"]
        assert get_architecture("resnet_small_hr") is get_architecture("resnet_small_hr") is ARCHITECTURES[
            "resnet_small_pool"]
        assert get_architecture("resnet_small") is ARCHITECTURES["resnet_small"]
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == ["the architecture name 'seed' is deprecated: it is 'article_cnn' now",
                        "the architecture name 'resnet_small_hr' is deprecated: it is 'resnet_small_pool' now"]
    with pytest.raises(SimpsonsError, match="unknown architecture 'resnet_hd'"):
        get_architecture("resnet_hd")


def test_pooling_stem_quarters_the_picture_before_the_blocks():
    plain = get_architecture("resnet_small").build(20, 96)
    pooled = get_architecture("resnet_small_pool").build(20, 96)

    def first_block_size(model):
        return next(layer.output.shape[1] for layer in model.layers if isinstance(layer, layers.Add))

    assert first_block_size(plain) == 48 and first_block_size(pooled) == 24
    # same blocks and widths: the pooling stem adds no weights
    assert pooled.count_params() == plain.count_params()


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_features_are_what_the_final_layer_turns_into_logits(name, batch):
    images, _ = batch
    model = ARCHITECTURES[name].build(20, SIZE)
    logits, features = (np.asarray(output) for output in scoring_network(model).predict_on_batch(images))
    weights, bias = model.get_layer("probabilities").get_weights()

    assert features.shape == (8, weights.shape[0])
    np.testing.assert_allclose(features @ weights + bias, logits, rtol=1e-4, atol=1e-4)


def test_the_mirror_scoring_network_averages_a_picture_and_its_mirror(batch):
    images, _ = batch
    model = ARCHITECTURES["resnet_small_pool"].build(20, SIZE)
    plain, mirror = scoring_network(model), scoring_network(model, mirror=True)
    logits, features = (np.asarray(output) for output in plain.predict_on_batch(images))
    flipped_logits, flipped_features = (np.asarray(output) for output in plain.predict_on_batch(images[:, :, ::-1]))
    mean_logits, mean_features = (np.asarray(output) for output in mirror.predict_on_batch(images))

    np.testing.assert_allclose(mean_features, (features + flipped_features) / 2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean_logits, (logits + flipped_logits) / 2, rtol=1e-4, atol=1e-4)
    assert mirror.count_params() == plain.count_params()  # the same weights, used twice
