"""The model registry: architectures and their augmentation, in backend-neutral Keras.

Every classifier takes RGB pixels in [0, 255] at ``image_size x image_size`` and returns
softmax probabilities; the scaling to [0, 1] is its first layer, so a saved model needs
no outside preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from simpsons.errors import SimpsonsError


@dataclass(frozen=True)
class Architecture:
    """A named network, its default input size and the augmentation it trains with."""

    name: str
    build: Callable[[int, int], keras.Model]
    image_size: int
    augmentation: str
    description: str


def _inputs(image_size: int) -> keras.KerasTensor:
    return keras.Input(shape=(image_size, image_size, 3), name="pixels")


def build_seed(num_classes: int, image_size: int) -> keras.Model:
    """The article's CNN, layer for layer (close to Keras' CIFAR-10 example)."""
    inputs = _inputs(image_size)
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="seed")


def build_seed6(num_classes: int, image_size: int) -> keras.Model:
    """The repository's 6-conv variant: a third block of 256 filters, Dense 1024."""
    inputs = _inputs(image_size)
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64, 256):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="seed6")


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, strides: int = 1, relu: bool = True) -> keras.KerasTensor:
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x) if relu else x


def _basic_block(x: keras.KerasTensor, filters: int, strides: int) -> keras.KerasTensor:
    shortcut = x
    y = _conv_bn(x, filters, 3, strides)
    y = _conv_bn(y, filters, 3, relu=False)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, relu=False)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build_resnet(
    num_classes: int, image_size: int, widths: tuple[int, ...] = (32, 64, 128, 256), blocks: tuple[int, ...] = (2, 2, 2, 2)
) -> keras.Model:
    """A ResNet with basic blocks, batch norm and global average pooling, sized for a laptop CPU."""
    inputs = _inputs(image_size)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = _conv_bn(x, widths[0], 3, strides=2)
    for stage, (filters, count) in enumerate(zip(widths, blocks)):
        for block in range(count):
            x = _basic_block(x, filters, strides=2 if stage > 0 and block == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="resnet")


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("seed", build_seed, 64, "article", "the article's 4-conv CNN (32, 32, 64, 64), dense 512"),
        Architecture("seed6", build_seed6, 64, "article", "the repository's 6-conv CNN (32, 64, 256), dense 1024"),
        Architecture("resnet", build_resnet, 96, "strong", "ResNet with basic blocks (32-256 wide), batch norm, GAP"),
    )
}


def get_architecture(name: str) -> Architecture:
    """Look an architecture up by name, with a clear error for unknown names."""
    if name not in ARCHITECTURES:
        raise SimpsonsError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build_augmentation(policy: str, image_size: int, seed: int | None = None) -> keras.Sequential:
    """Random transformations applied in the training graph only.

    ``article``: rotations up to 10 degrees, shifts of 10%, horizontal flips and Gaussian noise.
    ``strong``: adds random zoom (a resized crop), contrast and brightness jitter.
    """
    augment = [
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(10 / 360, fill_mode="reflect", seed=seed),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed),
    ]
    if policy == "strong":
        augment += [
            layers.RandomZoom((-0.3, 0.1), fill_mode="reflect", seed=seed),
            layers.RandomContrast(0.3, value_range=(0, 255), seed=seed),
            layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed),
        ]
    elif policy != "article":
        raise SimpsonsError(f"unknown augmentation policy {policy!r}")
    augment += [layers.Rescaling(1 / 255), layers.GaussianNoise(0.015, seed=seed), layers.Rescaling(255.0)]
    return keras.Sequential(augment, name=f"augment_{policy}")


def build_training_model(classifier: keras.Model, augmentation: keras.Sequential) -> keras.Model:
    """The classifier behind its augmentation: what ``fit`` trains; the classifier is what ships."""
    size = classifier.input_shape[1]
    inputs = keras.Input(shape=(size, size, 3), name="pixels")
    return keras.Model(inputs, classifier(augmentation(inputs)), name="training_model")
