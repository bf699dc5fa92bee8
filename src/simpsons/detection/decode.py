"""What the detector answers -> boxes: peaks of the heatmaps, their size and offset, in canvas pixels.

A peak is a cell whose probability is the highest of its 3x3 neighbourhood in its character's heatmap (the
max-pooling that replaces non-maximum suppression in CenterNet); the ``max_detections`` highest peaks at or
above ``min_probability`` are the detections, most probable first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter

from simpsons.detection.targets import BOX_CHANNELS

MAX_LOG_SIDE = 8.0  # a box's log side in cells is clipped here: exp(8) cells is far beyond any canvas


@dataclass(frozen=True)
class CanvasDetections:
    """The detections of one canvas: ``(k, 4)`` boxes ``x1, y1, x2, y2`` in canvas pixels, their
    probabilities and character indices, most probable first."""

    boxes: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray


def sigmoid(values: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise, without overflow warnings."""
    return 1.0 / (1.0 + np.exp(-np.clip(values, -60.0, 60.0)))


def decode(output: np.ndarray, stride: int, min_probability: float = 0.3,
           max_detections: int = 100) -> CanvasDetections:
    """The detections in one canvas's ``(grid, grid, C + 4)`` network answer (heatmap logits, then log
    width, log height and centre offset per cell)."""
    num_classes = output.shape[-1] - BOX_CHANNELS
    heat = sigmoid(output[..., :num_classes].astype(np.float32))
    peaks = np.where(heat == maximum_filter(heat, size=(3, 3, 1), mode="constant", cval=0.0), heat, 0.0)
    flat = peaks.ravel()
    count = min(max_detections, flat.size)
    chosen = np.argpartition(-flat, count - 1)[:count] if count else np.zeros(0, np.int64)
    chosen = chosen[flat[chosen] >= min_probability]
    chosen = chosen[np.argsort(-flat[chosen], kind="stable")]
    rows, cols, labels = np.unravel_index(chosen, peaks.shape)
    box = output[rows, cols, num_classes:].astype(np.float32)
    width, height = (np.exp(np.clip(box[:, side], -MAX_LOG_SIDE, MAX_LOG_SIDE)) for side in (0, 1))
    centre_x, centre_y = cols + box[:, 2], rows + box[:, 3]
    boxes = np.stack([centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2],
                     axis=1) * stride
    return CanvasDetections(boxes.reshape(-1, 4).astype(np.float32), flat[chosen].astype(np.float32),
                            labels.astype(np.int64))
