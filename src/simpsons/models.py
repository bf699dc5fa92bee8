"""The model registry: architectures and their augmentation, in backend-neutral Keras.

Architectures are looked up by name (``get_architecture``); the names they had before are accepted, with
a warning, through ``DEPRECATED_NAMES`` (so old bundles, run folders and ``--arch`` values keep working).

Every classifier takes RGB pixels in [0, 255] at ``image_size x image_size`` and returns
softmax probabilities from a final Dense layer named ``probabilities``; the scaling to
[0, 1] is its first layer, so a saved model needs no outside preprocessing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from simpsons.errors import SimpsonsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Architecture:
    """A named network; its input size and augmentation come from a recipe (``training.PRESETS``)."""

    name: str
    build: Callable[[int, int], keras.Model]
    description: str


def _inputs(image_size: int) -> keras.KerasTensor:
    return keras.Input(shape=(image_size, image_size, 3), name="pixels")


def _article_block(x: keras.KerasTensor, filters: int, dropout: float) -> keras.KerasTensor:
    """Conv (same) - ReLU - Conv (valid) - ReLU - MaxPool 2 - Dropout, as in the article."""
    x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(filters, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    return layers.Dropout(dropout)(x)


def build_article_cnn(num_classes: int, image_size: int) -> keras.Model:
    """The article's CNN, layer for layer (close to Keras' CIFAR-10 example)."""
    inputs = _inputs(image_size)
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64):
        x = _article_block(x, filters, 0.25)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="article_cnn")


def build_article_cnn6(num_classes: int, image_size: int) -> keras.Model:
    """The repository's 6-conv variant: a third block of 256 filters, Dense 1024."""
    inputs = _inputs(image_size)
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64, 256):
        x = _article_block(x, filters, 0.2)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="article_cnn6")


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
    num_classes: int, image_size: int, widths: tuple[int, ...] = (32, 64, 128, 256), blocks: tuple[int, ...] = (2, 2, 2, 2),
    stem_pool: bool = False,
) -> keras.Model:
    """A ResNet with basic blocks, batch norm and global average pooling, sized for a laptop CPU.

    The stem is a stride-2 convolution; ``stem_pool`` adds a 3x3 stride-2 max-pool after it (the
    ImageNet ResNet's stem), so the blocks see the picture at a quarter of its size.
    """
    inputs = _inputs(image_size)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = _conv_bn(x, widths[0], 3, strides=2)
    if stem_pool:
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage, (filters, count) in enumerate(zip(widths, blocks)):
        for block in range(count):
            x = _basic_block(x, filters, strides=2 if stage > 0 and block == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="resnet")


def build_resnet_small(num_classes: int, image_size: int) -> keras.Model:
    """The ResNet with one basic block per stage: 1.2 M weights, for training on a laptop CPU."""
    return build_resnet(num_classes, image_size, blocks=(1, 1, 1, 1))


def build_resnet_pool(num_classes: int, image_size: int) -> keras.Model:
    """The ResNet with the pooling stem: at 96 px about the work of ``resnet_small`` at 64 px, twice as deep."""
    return build_resnet(num_classes, image_size, stem_pool=True)


def build_resnet_small_pool(num_classes: int, image_size: int) -> keras.Model:
    """``resnet_small`` with the pooling stem: at 96 px 2.25x the pixels of ``resnet_small`` at 64, less work."""
    return build_resnet(num_classes, image_size, blocks=(1, 1, 1, 1), stem_pool=True)


def build_resnet_wide(num_classes: int, image_size: int) -> keras.Model:
    """``resnet_pool`` at ResNet-18's widths (64-512): four times the work, sized for a GPU, not a laptop."""
    return build_resnet(num_classes, image_size, widths=(64, 128, 256, 512), stem_pool=True)


def build_resnet_wide_small(num_classes: int, image_size: int) -> keras.Model:
    """One basic block per stage at ResNet-18's widths (64-512) behind the max-pooling stem: 4.9 M weights,
    four times ``resnet_small``'s, for about 1.3 times its work per training batch on a CPU (no augmentation)."""
    return build_resnet(num_classes, image_size, widths=(64, 128, 256, 512), blocks=(1, 1, 1, 1), stem_pool=True)


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("article_cnn", build_article_cnn, "the article's 4-conv CNN (32, 32, 64, 64), dense 512"),
        Architecture("article_cnn6", build_article_cnn6, "the repository's 6-conv CNN (32, 64, 256), dense 1024"),
        Architecture("resnet", build_resnet, "ResNet with basic blocks (32-256 wide), batch norm, GAP"),
        Architecture("resnet_small", build_resnet_small, "the ResNet with one block per stage"),
        Architecture("resnet_pool", build_resnet_pool, "the ResNet with a max-pooling stem"),
        Architecture("resnet_small_pool", build_resnet_small_pool, "resnet_small with a max-pooling stem"),
        Architecture("resnet_wide", build_resnet_wide, "resnet_pool at ResNet-18's widths (64-512), for a GPU"),
        Architecture("resnet_wide_small", build_resnet_wide_small,
                     "one block per stage at ResNet-18's widths (64-512), max-pooling stem"),
    )
}


DEPRECATED_NAMES = {  # the name an architecture had before -> its name now
    "seed": "article_cnn",
    "seed6": "article_cnn6",
    "resnet_hr": "resnet_pool",
    "resnet_small_hr": "resnet_small_pool",
}
_warned: set[str] = set()


def architecture_name(name: str) -> str:
    """The current name of the architecture called ``name``: itself, or for a deprecated name its new one
    (with a warning, once per name and process)."""
    current = DEPRECATED_NAMES.get(name)
    if current is None:
        return name
    if name not in _warned:
        _warned.add(name)
        log.warning("the architecture name %r is deprecated: it is %r now", name, current)
    return current


def get_architecture(name: str) -> Architecture:
    """Look an architecture up by name (a deprecated one too), with a clear error for unknown names."""
    name = architecture_name(name)
    if name not in ARCHITECTURES:
        raise SimpsonsError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


LUMINANCE = (0.299, 0.587, 0.114)  # weights of R, G and B in a pixel's brightness (ITU-R BT.601)


class _RandomLayer(layers.Layer):
    """A seeded augmentation layer: the identity unless ``training``; draws its numbers per picture."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training: bool = False):
        return self.transform(images, keras.ops.shape(images)[0]) if training else images

    def transform(self, images, batch):
        """The random change of a training batch of ``batch`` pictures."""
        raise NotImplementedError

    def _uniform(self, batch, low: float = 0.0, high: float = 1.0):
        """One draw per picture, shaped (batch, 1, 1) to broadcast over its rows and columns."""
        return keras.random.uniform((batch, 1, 1), low, high, seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable("simpsons")
class RandomAffine(_RandomLayer):
    """Random horizontal flip, rotation, zoom and shift in one bilinear resampling, mirrored at the edges.

    Written with ``keras.ops`` gathers: Keras' own RandomRotation / RandomTranslation / RandomZoom
    each resample separately, and on the PyTorch backend they take seconds per batch.
    ``zoom`` is a (min, max) scale: above 1 zooms in, as a random resized crop does.
    """

    def __init__(self, rotation_degrees: float = 10.0, shift: float = 0.1, zoom: tuple[float, float] = (1.0, 1.0),
                 flip: bool = True, seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        self.rotation_degrees = rotation_degrees
        self.shift = shift
        self.zoom = tuple(zoom)
        self.flip = flip

    def transform(self, images, batch):
        ops = keras.ops
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        angle = self._uniform(batch, -1.0, 1.0) * math.radians(self.rotation_degrees)
        scale = self._uniform(batch, self.zoom[0], self.zoom[1])
        mirror = ops.sign(self._uniform(batch, -1.0, 1.0)) if self.flip else ops.ones_like(scale)
        shift_x = self._uniform(batch, -self.shift, self.shift) * width
        shift_y = self._uniform(batch, -self.shift, self.shift) * height
        rows, cols = ops.meshgrid(ops.arange(height, dtype="float32"), ops.arange(width, dtype="float32"), indexing="ij")
        u = (cols[None] - (width - 1) / 2) * mirror
        v = rows[None] - (height - 1) / 2
        cos, sin = ops.cos(angle), ops.sin(angle)
        source_x = (cos * u - sin * v) / scale + (width - 1) / 2 + shift_x
        source_y = (sin * u + cos * v) / scale + (height - 1) / 2 + shift_y
        return _bilinear(images, _mirror(source_y, height), _mirror(source_x, width), channels)

    def get_config(self):
        return {**super().get_config(), "rotation_degrees": self.rotation_degrees, "shift": self.shift,
                "zoom": list(self.zoom), "flip": self.flip}


@keras.saving.register_keras_serializable("simpsons")
class RandomColour(_RandomLayer):
    """Random saturation (grey with probability ``grey``) and a random colour cast, per picture.

    For frames the palette does not show as usual: black-and-white scenes, night blue, a green
    light. Saturation scales each pixel's distance from its luminance by a factor in
    ``saturation``; the cast multiplies each channel by a factor within ``1 +- cast``.
    """

    def __init__(self, saturation: tuple[float, float] = (0.6, 1.3), grey: float = 0.1, cast: float = 0.15,
                 seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        self.saturation = tuple(saturation)
        self.grey = grey
        self.cast = cast

    def transform(self, images, batch):
        ops = keras.ops
        luminance = ops.sum(images * ops.convert_to_tensor(LUMINANCE, dtype=images.dtype), axis=-1, keepdims=True)
        factor = self._uniform(batch, *self.saturation)[..., None]
        coloured = self._uniform(batch)[..., None] >= self.grey
        factor = ops.where(coloured, factor, ops.zeros_like(factor))
        gains = keras.random.uniform((batch, 1, 1, 3), 1 - self.cast, 1 + self.cast, seed=self.seed_generator)
        return ops.clip((luminance + factor * (images - luminance)) * gains, 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "saturation": list(self.saturation), "grey": self.grey, "cast": self.cast}


@keras.saving.register_keras_serializable("simpsons")
class RandomErasing(_RandomLayer):
    """With probability ``rate``, one random rectangle of the picture becomes noise (Zhong et al., 2017).

    Its area is a fraction ``area`` of the picture and its aspect ratio within 1/3 to 3; the
    network learns to name a character from what is left (a face without its clothes, a costume
    without its face).
    """

    def __init__(self, rate: float = 0.5, area: tuple[float, float] = (0.02, 0.25), seed: int | None = None,
                 **kwargs):
        super().__init__(seed, **kwargs)
        self.rate = rate
        self.area = tuple(area)

    def transform(self, images, batch):
        ops = keras.ops
        height, width = images.shape[1], images.shape[2]
        area = self._uniform(batch, *self.area) * (height * width)
        aspect = ops.exp(self._uniform(batch, -math.log(3), math.log(3)))  # log-uniform, 1/3..3
        box_height = ops.minimum(ops.sqrt(area * aspect), height)
        box_width = ops.minimum(ops.sqrt(area / aspect), width)
        top = self._uniform(batch) * (height - box_height)
        left = self._uniform(batch) * (width - box_width)
        inside = _box_mask(top, left, box_height, box_width, height, width)
        erase = inside & (self._uniform(batch) < self.rate)
        noise = keras.random.uniform(ops.shape(images), 0.0, 255.0, seed=self.seed_generator)
        return ops.where(erase[..., None], noise, images)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "area": list(self.area)}


@keras.saving.register_keras_serializable("simpsons")
class RandomBackground(_RandomLayer):
    """Cuts the character out along its box and puts it, at a new size and place, on another background.

    Takes pictures with a fourth channel, the cut-out mask: 255 inside the character's box, 0 outside
    (255 everywhere for a picture without a box, which is then resized and moved whole). With
    probability ``rate`` the box is resized so that its longer side spans a fraction in ``scale`` of the
    picture (enlarged at most ``MAX_ENLARGEMENT`` times), placed at a random spot, and everything
    outside it becomes a new background: a plain colour, white, a gradient between two colours, noise,
    or the next picture of the batch. The network then meets the characters away from the sets,
    sizes and framings of the episodes (artwork on plain backgrounds, a character small in a wide
    shot). Gives the three colour channels; outside training it drops the mask and changes nothing.
    """

    MAX_ENLARGEMENT = 3.0

    def __init__(self, rate: float = 0.5, scale: tuple[float, float] = (0.4, 1.0), seed: int | None = None,
                 **kwargs):
        super().__init__(seed, **kwargs)
        self.rate = rate
        self.scale = tuple(scale)

    def call(self, images, training: bool = False):
        return super().call(images, training) if training else images[..., :3]

    def transform(self, images, batch):
        ops = keras.ops
        size = images.shape[1]  # square pictures
        top, bottom = _mask_extent(ops.max(images[..., 3], axis=2))
        left, right = _mask_extent(ops.max(images[..., 3], axis=1))
        longer = ops.maximum(bottom - top, right - left)
        factor = ops.minimum(self._uniform(batch, *self.scale) * size / longer, self.MAX_ENLARGEMENT)
        centre_y = (bottom - top) * factor / 2 + self._uniform(batch) * ops.maximum(size - (bottom - top) * factor, 0)
        centre_x = (right - left) * factor / 2 + self._uniform(batch) * ops.maximum(size - (right - left) * factor, 0)
        grid = ops.arange(size, dtype="float32") + 0.5
        rows, cols = ops.meshgrid(grid, grid, indexing="ij")
        source_y = (rows[None] - centre_y) / factor + (top + bottom) / 2 - 0.5
        source_x = (cols[None] - centre_x) / factor + (left + right) / 2 - 0.5
        inside = ((source_y >= -0.5) & (source_y <= size - 0.5) & (source_x >= -0.5) & (source_x <= size - 0.5))
        moved = _bilinear(images, ops.clip(source_y, 0, size - 1), ops.clip(source_x, 0, size - 1), 4)
        keep = moved[..., 3:] / 255.0 * ops.cast(inside[..., None], images.dtype)
        composed = keep * moved[..., :3] + (1 - keep) * self._backgrounds(images[..., :3], batch, size, size)
        chosen = (self._uniform(batch) < self.rate)[..., None]
        return ops.where(chosen, composed, images[..., :3])

    def _backgrounds(self, pictures, batch, height: int, width: int):
        """One new background per picture, of a kind drawn at random: a plain colour, white, a gradient, noise
        or the next picture of the batch."""
        ops = keras.ops
        first = keras.random.uniform((batch, 1, 1, 3), 0.0, 255.0, seed=self.seed_generator)
        second = keras.random.uniform((batch, 1, 1, 3), 0.0, 255.0, seed=self.seed_generator)
        angle = self._uniform(batch, 0.0, 2 * math.pi)
        rows, cols = ops.meshgrid(ops.linspace(-0.5, 0.5, height), ops.linspace(-0.5, 0.5, width), indexing="ij")
        along = ops.clip(ops.cos(angle) * cols[None] + ops.sin(angle) * rows[None] + 0.5, 0.0, 1.0)[..., None]
        candidates = [
            first * ops.ones_like(pictures),
            ops.full_like(pictures, 255.0),
            first + (second - first) * along,
            keras.random.uniform(ops.shape(pictures), 0.0, 255.0, seed=self.seed_generator),
            _previous_in_batch(pictures),
        ]
        kind = ops.floor(self._uniform(batch) * len(candidates))[..., None]
        background = candidates[0]
        for index, candidate in enumerate(candidates[1:], start=1):
            background = ops.where(kind == index, candidate, background)
        return background

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "scale": list(self.scale)}


def _mask_extent(lines):
    """First and one-past-last index (batch, 1, 1) where a (batch, n) mask profile is on (above half)."""
    ops = keras.ops
    on = ops.cast(lines > 127.5, "float32")
    count = lines.shape[1]
    first = ops.argmax(on, axis=1)
    last = count - ops.argmax(ops.flip(on, axis=1), axis=1)
    shaped = [ops.reshape(ops.cast(index, "float32"), (-1, 1, 1)) for index in (first, last)]
    return shaped[0], ops.maximum(shaped[1], shaped[0] + 1)


def _box_mask(top, left, box_height, box_width, height: int, width: int):
    """A (batch, height, width) mask of one rectangle per picture; the corners are (batch, 1, 1) pixel coordinates."""
    rows = keras.ops.arange(height, dtype="float32")[None, :, None]
    cols = keras.ops.arange(width, dtype="float32")[None, None, :]
    return (rows >= top) & (rows < top + box_height) & (cols >= left) & (cols < left + box_width)


def _mirror(coordinates, size: int):
    """Reflect coordinates into [0, size - 1] (``c b | a b c d | c b``)."""
    period = 2 * (size - 1)
    folded = keras.ops.mod(coordinates, period)
    return keras.ops.where(folded > size - 1, period - folded, folded)


def _bilinear(images, rows, cols, channels: int):
    """Sample ``images`` (b, h, w, c) at fractional ``rows``/``cols`` (b, h, w)."""
    ops = keras.ops
    batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]
    flat = ops.reshape(images, (-1, channels))
    offsets = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))
    top, left = ops.floor(rows), ops.floor(cols)
    bottom, right = ops.minimum(top + 1, height - 1), ops.minimum(left + 1, width - 1)
    weight_y, weight_x = (rows - top)[..., None], (cols - left)[..., None]

    def gather(r, c):
        index = offsets + ops.cast(r, "int32") * width + ops.cast(c, "int32")
        return ops.take(flat, index, axis=0)

    upper = gather(top, left) * (1 - weight_x) + gather(top, right) * weight_x
    lower = gather(bottom, left) * (1 - weight_x) + gather(bottom, right) * weight_x
    return upper * (1 - weight_y) + lower * weight_y


AUGMENTATIONS: dict[str, str] = {
    "article": "the article's: rotations up to 10 degrees, shifts of 10%, horizontal flips, Gaussian noise",
    "strong": "the article's plus zoom up to 1.4x (a resized crop), contrast and brightness jitter",
    "robust": "strong plus colour (saturation, black and white, colour casts) and random erasing",
    "light": "flips, rotations up to 5 degrees and shifts of 5%: pictures close to those the model will "
             "be given, to fine-tune a model trained with another policy (the fixres preset)",
    "light_robust": "light plus colour and random erasing",
    "composite": "half the characters cut out along their boxes and put, at 50-100% of their size, on new "
                 "backgrounds (plain, white, gradient, noise, another frame; needs boxes), then flips, rotations "
                 "up to 15 degrees, shifts of 12%, zoom 0.8-1.15x, contrast, brightness, colour and erasing",
    "light_composite": "light plus colour and erasing, a third of the characters on new backgrounds",
}
CUTOUT_RATES = {"composite": 0.5, "light_composite": 0.3}  # the policies that put characters on new backgrounds


def uses_cutouts(policy: str) -> bool:
    """Whether the policy needs each training picture's cut-out mask as a fourth channel."""
    return policy in CUTOUT_RATES


def check_augmentation(policy: str) -> None:
    """A clear error for a policy that ``AUGMENTATIONS`` does not list."""
    if policy not in AUGMENTATIONS:
        raise SimpsonsError(f"unknown augmentation policy {policy!r}; choose one of {', '.join(AUGMENTATIONS)}")


def build_augmentation(policy: str, image_size: int, seed: int | None = None) -> keras.Sequential:
    """Random transformations applied in the training graph only; ``AUGMENTATIONS`` describes the policies."""
    check_augmentation(policy)
    light = policy.startswith("light")
    cutouts = [RandomBackground(CUTOUT_RATES[policy], seed=seed)] if uses_cutouts(policy) else []
    if light:
        augment = [RandomAffine(5.0, 0.05, (1.0, 1.0), seed=seed)]
    elif policy == "article":
        augment = [RandomAffine(10.0, 0.1, (1.0, 1.0), seed=seed)]
    elif policy == "composite":
        augment = [
            RandomAffine(15.0, 0.12, (0.8, 1.15), seed=seed),
            layers.RandomContrast(0.25, value_range=(0, 255), seed=seed),
            layers.RandomBrightness(0.25, value_range=(0, 255), seed=seed),
        ]
    else:
        augment = [
            RandomAffine(10.0, 0.1, (0.9, 1.4), seed=seed),
            layers.RandomContrast(0.3, value_range=(0, 255), seed=seed),
            layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed),
        ]
    if policy.endswith("robust"):
        augment += [RandomColour(seed=seed), RandomErasing(seed=seed)]
    elif policy.endswith("composite"):
        augment += [RandomColour(seed=seed), RandomErasing(rate=0.25, seed=seed)]
    if not light:
        augment += [layers.Rescaling(1 / 255), layers.GaussianNoise(0.015, seed=seed), layers.Rescaling(255.0)]
    return keras.Sequential(cutouts + augment, name=f"augment_{policy}")


MIXINGS: dict[str, str] = {
    "none": "each training picture keeps its own character",
    "cutmix": "half the training pictures get a rectangle (area uniform in 0-1) of the picture before them in the "
              "batch, their target shared by area (CutMix, Yun et al., 2019)",
    "mixup": "half the training pictures are blended with the picture before them in the batch (weight "
             "Beta(0.4, 0.4)), their target alike (mixup, Zhang et al., 2018)",
}


def check_mixing(policy: str) -> None:
    """A clear error for a policy that ``MIXINGS`` does not list."""
    if policy not in MIXINGS:
        raise SimpsonsError(f"unknown mixing policy {policy!r}; choose one of {', '.join(MIXINGS)}")


def _previous_in_batch(tensor):
    """Each row's mixing partner: the row before it in the batch, the first row's the last one.

    ``BatchMixing`` pairs the pictures and ``MixedCrossentropy`` their labels with it, so the two agree.
    """
    return keras.ops.roll(tensor, 1, axis=0)


@keras.saving.register_keras_serializable("simpsons")
class BatchMixing(_RandomLayer):
    """Mixes training pictures with the one before them in the batch (``MIXINGS``), each with probability ``rate``.

    Returns the pictures and each one's own share of its target, shaped (batch, 1): 1 when not mixed,
    and always at inference. The batches are shuffled, so the partners are random; ``MixedCrossentropy``
    pairs the labels the same way.
    """

    def __init__(self, policy: str = "cutmix", rate: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        check_mixing(policy)
        self.policy = policy
        self.rate = rate

    def call(self, images, training: bool = False):
        ops = keras.ops
        batch = ops.shape(images)[0]
        if not training or self.policy == "none":
            return images, ops.ones((batch, 1), dtype=images.dtype)
        partner = _previous_in_batch(images)
        if self.policy == "cutmix":
            pasted = self._rectangles(images.shape[1], images.shape[2], batch) & (self._uniform(batch) < self.rate)
            own = 1.0 - ops.mean(ops.cast(pasted, images.dtype), axis=(1, 2))
            mixed = ops.where(pasted[..., None], partner, images)
        else:
            weight = keras.random.beta((batch, 1, 1), 0.4, 0.4, seed=self.seed_generator, dtype=images.dtype)
            own = ops.where(self._uniform(batch) < self.rate, weight, ops.ones_like(weight))[..., None]
            mixed = own * images + (1.0 - own) * partner
        return mixed, ops.reshape(own, (batch, 1))

    def _rectangles(self, height: int, width: int, batch):
        """One random rectangle per picture, as a (batch, height, width) mask; its area before clipping to the
        picture is uniform in 0-1."""
        side = keras.ops.sqrt(self._uniform(batch))
        box_height, box_width = side * height, side * width
        top = self._uniform(batch) * height - box_height / 2
        left = self._uniform(batch) * width - box_width / 2
        return _box_mask(top, left, box_height, box_width, height, width)

    def compute_output_shape(self, input_shape):
        return input_shape, (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "policy": self.policy, "rate": self.rate}


@keras.saving.register_keras_serializable("simpsons")
class MixedCrossentropy(keras.losses.Loss):
    """Cross-entropy against the targets of ``BatchMixing``: the training model's output is the probabilities
    with the picture's own share of its target as one more column; the rest goes to the label before it."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "mixed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        probabilities, own = y_pred[:, :-1], y_pred[:, -1:]
        targets = own * y_true + (1.0 - own) * _previous_in_batch(y_true)
        return keras.losses.categorical_crossentropy(targets, probabilities, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable("simpsons")
def own_label_accuracy(y_true, y_pred):
    """Accuracy of a mixing training model's probabilities (all but its last column) on the pictures' own labels."""
    return keras.metrics.categorical_accuracy(y_true, y_pred[:, :-1])


def build_training_model(classifier: keras.Model, augmentation: keras.Sequential, mixing: str = "none",
                         seed: int | None = None) -> keras.Model:
    """The classifier behind its augmentation: what ``fit`` trains; the classifier is what ships.

    With a ``mixing`` policy, the augmented pictures are mixed (``BatchMixing``) and the output gains
    their own share of the target as a last column, for ``MixedCrossentropy`` and ``own_label_accuracy``.
    """
    size = classifier.input_shape[1]
    channels = 4 if isinstance(augmentation.layers[0], RandomBackground) else 3  # the cut-out mask rides along
    inputs = keras.Input(shape=(size, size, channels), name="pixels")
    pictures = augmentation(inputs)
    if mixing == "none":
        return keras.Model(inputs, classifier(pictures), name="training_model")
    pictures, own_share = BatchMixing(mixing, seed=seed, name=f"mixing_{mixing}")(pictures)
    outputs = layers.Concatenate(name="with_own_share")([classifier(pictures), own_share])
    return keras.Model(inputs, outputs, name="training_model")


def classifier_of(training_model: keras.Model) -> keras.Model:
    """The classifier inside a model of ``build_training_model``: the last of its layers that is a network."""
    return next(layer for layer in reversed(training_model.layers) if isinstance(layer, keras.Model))


def scoring_network(classifier: keras.Model, mirror: bool = False) -> keras.Model:
    """The classifier without its final softmax, in one pass: outputs ``[logits, features]``.

    Every registered architecture ends in a Dense layer named ``probabilities``; its copy here has
    no activation and the same weights. Logits give the temperature-scaled probabilities and the
    energy and max-logit scores; the features (that layer's input, the pooled activations) feed the
    stranger detector and the nearest-picture score of the confidence study. With ``mirror``, the
    features are the mean of the picture's and its mirror image's (flip test-time augmentation), and
    the logits are computed from that mean, which equals the mean of the two pictures' logits.
    """
    head = classifier.get_layer("probabilities")
    pooled = keras.Model(classifier.input, head.input, name=f"{classifier.name}_features")
    pixels = keras.Input(shape=classifier.input_shape[1:], name="pixels")
    features = pooled(pixels)
    if mirror:
        features = layers.Average(name="mirror_average")([features, pooled(keras.ops.flip(pixels, axis=2))])
    logits = layers.Dense(head.units, name="logits")
    outputs = logits(features)
    logits.set_weights(head.get_weights())
    return keras.Model(pixels, [outputs, features], name=f"{classifier.name}_scores")
