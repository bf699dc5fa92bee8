"""Boxes -> what the detector learns: a heatmap per character, and box size and centre offset at each centre.

The network sees a ``size x size`` canvas and answers on a grid of ``size / stride`` cells a side. For each
cell it gives ``C`` heatmap logits (one per character), then the box's log width and log height in cells and
the centre's offset from the cell's corner (two each): ``C + 4`` channels, ``outputs`` below. A box's centre
falls in one cell, its *peak*: there the target heatmap of its character is 1, and it falls off around the
peak as a Gaussian as wide as a sixth of the box (times ``GAUSSIAN_SPREAD``). The size and offset are learnt
at the peaks only: the target has one more channel, 1 at the peaks (``REGRESSION_MASK``).
"""

from __future__ import annotations

import numpy as np

BOX_CHANNELS = 4  # log width, log height (in cells), centre offset x, y (in cells, 0..1)
GAUSSIAN_SPREAD = 0.54  # the heatmap's standard deviation, in sixths of the box's side (TTFNet's alpha)
MIN_SIGMA = 0.5  # cells: even a small box's peak has neighbours that count as near misses


def outputs(num_classes: int) -> int:
    """Channels of the network's answer per cell: one heatmap per character, then the box's four numbers."""
    return num_classes + BOX_CHANNELS


def target_channels(num_classes: int) -> int:
    """Channels of a target per cell: the network's, then the regression mask."""
    return outputs(num_classes) + 1


def encode(boxes: np.ndarray, labels: np.ndarray, num_classes: int, size: int, stride: int) -> np.ndarray:
    """The ``(size / stride, size / stride, C + 5)`` target of one canvas from its ``(n, 4)`` boxes
    ``x1, y1, x2, y2`` in canvas pixels and their ``(n,)`` character indices.

    Where two boxes share a peak cell, the smaller one's size and offset are learnt (it is drawn last).
    """
    grid = size // stride
    target = np.zeros((grid, grid, target_channels(num_classes)), dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / stride
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cells = np.arange(grid, dtype=np.float32)
    for index in np.argsort(-areas):
        x1, y1, x2, y2 = boxes[index]
        width, height = x2 - x1, y2 - y1
        if width <= 0 or height <= 0:
            continue
        centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
        peak_x, peak_y = (int(np.clip(np.floor(c), 0, grid - 1)) for c in (centre_x, centre_y))
        sigma_x, sigma_y = (max(GAUSSIAN_SPREAD * side / 6, MIN_SIGMA) for side in (width, height))
        gaussian = np.outer(np.exp(-((cells - peak_y) ** 2) / (2 * sigma_y**2)),
                            np.exp(-((cells - peak_x) ** 2) / (2 * sigma_x**2)))
        channel = int(labels[index])
        target[..., channel] = np.maximum(target[..., channel], gaussian)
        target[peak_y, peak_x, num_classes:] = [np.log(width), np.log(height),
                                                centre_x - peak_x, centre_y - peak_y, 1.0]
    return target


def encode_batch(boxes: list[np.ndarray], labels: list[np.ndarray], num_classes: int, size: int,
                 stride: int) -> np.ndarray:
    """``encode`` of each canvas of a batch, stacked."""
    return np.stack([encode(box, label, num_classes, size, stride) for box, label in zip(boxes, labels)])
