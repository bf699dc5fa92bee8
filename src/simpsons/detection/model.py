"""The detector network: a classifier's convolution trunk, a feature pyramid, and CenterNet's heads.

Zhou et al., 2019, "Objects as Points": each character is the peak of its own heatmap at the centre of its
box, where the network also reads the box's size and the centre's exact place (``targets``). The trunk is
one of the project's ResNets with the max-pooling stem (the ``_pool`` architectures), so that its stages see
the canvas at strides 4 to 32; a top-down pyramid brings the deeper stages up to the output stride (8 by
default), and two small heads answer per cell. In backbone-neutral Keras: ``keras.ops`` and Keras layers
only. The trunk starts from a trained classifier's weights (``init``) or from scratch.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from simpsons.detection.targets import BOX_CHANNELS
from simpsons.errors import SimpsonsError
from simpsons.models import architecture_name, get_architecture

STRIDES = (4, 8)  # output strides the pyramid reaches
TRUNK_STRIDES = (8, 16, 32)  # the stages the pyramid starts from (and 4 for an output stride of 4)
PRIOR_PROBABILITY = 0.1  # the heatmaps start near this probability everywhere (Lin et al.'s focal loss prior)
# a classifier trained without the pooling stem lends its weights to its twin with it: the same layers
POOLING_STEM_TWIN = {"resnet": "resnet_pool", "resnet_small": "resnet_small_pool"}
POOLING_STEM_ARCHITECTURES = ("resnet_pool", "resnet_small_pool", "resnet_wide", "resnet_wide_small")


def trunk_architecture(arch: str) -> str:
    """The pooling-stem architecture a detector builds for a classifier's ``arch`` (or refuses it)."""
    arch = architecture_name(arch)
    twin = POOLING_STEM_TWIN.get(arch, arch)
    if twin not in POOLING_STEM_ARCHITECTURES:
        raise SimpsonsError(f"a detector's trunk is one of the ResNets ({', '.join(POOLING_STEM_ARCHITECTURES)}, "
                            f"or resnet and resnet_small, which lend their weights to their _pool twins), not {arch}")
    return twin


def build_detector(num_classes: int, image_size: int, arch: str = "resnet_small_pool", width: int = 64,
                   stride: int = 8, init: keras.Model | None = None) -> keras.Model:
    """The detector for ``num_classes`` characters on ``image_size``-pixel canvases: pixels in [0, 255] in,
    ``(grid, grid, num_classes + 4)`` out (``targets.outputs``), ``grid = image_size / stride``.

    ``init`` is a trained classifier of ``arch`` (or of the architecture whose twin ``arch`` is): its weights
    start the trunk; its input size may differ.
    """
    if stride not in STRIDES:
        raise SimpsonsError(f"the output stride must be one of {', '.join(map(str, STRIDES))}, not {stride}")
    if image_size % 32:
        raise SimpsonsError(f"the detector's image size must be a multiple of 32 (e.g. 224 or 256), not {image_size}")
    classifier = get_architecture(trunk_architecture(arch)).build(
        1 if init is None else init.output_shape[-1], image_size)
    if init is not None:
        try:
            classifier.set_weights(init.get_weights())
        except ValueError:
            raise SimpsonsError(f"the classifier's network ({init.name}) does not fit a {arch} trunk") from None
    features = stage_outputs(classifier, image_size)
    pyramid = _top_down(features, width, stride)
    heatmaps = _head(pyramid, width, num_classes, "heatmaps",
                     keras.initializers.Constant(-math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)))
    boxes = _head(pyramid, width, BOX_CHANNELS, "boxes", "zeros")
    answer = layers.Concatenate(name="detections")([heatmaps, boxes])
    return keras.Model(classifier.input, answer, name="detector")


def stage_outputs(classifier: keras.Model, image_size: int) -> dict[int, keras.KerasTensor]:
    """The last feature map of each resolution in a convolutional classifier, by stride: its stages' outputs."""
    found: dict[int, keras.KerasTensor] = {}
    for layer in classifier.layers:
        shape = layer.output.shape
        if len(shape) == 4 and shape[1]:
            found[image_size // shape[1]] = layer.output
    missing = [stride for stride in TRUNK_STRIDES if stride not in found]
    if missing:
        raise SimpsonsError(f"{classifier.name} has no feature maps at stride {missing}: not a detector trunk")
    return found


def _top_down(features: dict[int, keras.KerasTensor], width: int, stride: int) -> keras.KerasTensor:
    """The feature pyramid's top-down path from stride 32 to ``stride``: each level upsampled and added to the
    next stage's features (1x1 convolutions bring all to ``width`` channels), then a 3x3 convolution."""
    merged = layers.Conv2D(width, 1, name="lateral_32")(features[32])
    for level in (16, 8, 4):
        if level < stride:
            break
        lateral = layers.Conv2D(width, 1, name=f"lateral_{level}")(features[level])
        merged = layers.Add(name=f"merge_{level}")([layers.UpSampling2D(2, name=f"up_{level}")(merged), lateral])
    merged = layers.Conv2D(width, 3, padding="same", use_bias=False, name="smooth")(merged)
    merged = layers.BatchNormalization(momentum=0.9, name="smooth_norm")(merged)
    return layers.ReLU(name="smooth_relu")(merged)


def _head(features: keras.KerasTensor, width: int, channels: int, name: str, bias) -> keras.KerasTensor:
    """A 3x3 convolution and ReLU, then a 1x1 convolution to ``channels`` per cell."""
    hidden = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_hidden")(features)
    return layers.Conv2D(channels, 1, bias_initializer=bias, name=name)(hidden)


@keras.saving.register_keras_serializable("simpsons")
def heatmap_loss(y_true, y_pred):
    """CenterNet's focal loss on the heatmaps (Law and Deng's CornerNet variant), per canvas, divided by its
    number of boxes: peaks weigh ``(1 - p)^2``, other cells ``p^2`` less near a peak by ``(1 - target)^4``."""
    ops = keras.ops
    num_classes = y_pred.shape[-1] - BOX_CHANNELS
    target, logits = y_true[..., :num_classes], y_pred[..., :num_classes]
    probability = ops.sigmoid(logits)
    peak = ops.cast(target >= 1.0 - 1e-4, logits.dtype)
    at_peaks = -peak * ops.square(1 - probability) * ops.log_sigmoid(logits)
    elsewhere = -(1 - peak) * ops.power(1 - target, 4) * ops.square(probability) * ops.log_sigmoid(-logits)
    return ops.sum(at_peaks + elsewhere, axis=(1, 2, 3)) / ops.maximum(ops.sum(peak, axis=(1, 2, 3)), 1.0)


@keras.saving.register_keras_serializable("simpsons")
def box_loss(y_true, y_pred):
    """L1 loss of the log size and centre offset at the peaks, per canvas, divided by its number of boxes."""
    ops = keras.ops
    num_classes = y_pred.shape[-1] - BOX_CHANNELS
    mask = y_true[..., -1]
    error = ops.sum(ops.abs(y_true[..., num_classes:-1] - y_pred[..., num_classes:]), axis=-1)
    return ops.sum(error * mask, axis=(1, 2)) / ops.maximum(ops.sum(mask, axis=(1, 2)), 1.0)


@keras.saving.register_keras_serializable("simpsons")
class CenterNetLoss(keras.losses.Loss):
    """``heatmap_loss`` plus ``box_weight`` times ``box_loss``, against targets of ``targets.encode``."""

    def __init__(self, box_weight: float = 1.0, name: str = "centernet_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.box_weight = box_weight

    def call(self, y_true, y_pred):
        return heatmap_loss(y_true, y_pred) + self.box_weight * box_loss(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "box_weight": self.box_weight}


def compile_detector(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """Compile ``model`` with the CenterNet loss, its two parts reported as metrics."""
    model.compile(optimizer=optimizer, loss=CenterNetLoss(), metrics=[heatmap_loss, box_loss])
