"""The detector bundle: a trained detector and what it needs to answer, in one file.

The same container as a classifier's bundle (``simpsons.bundle.write_archive``: ``model.keras`` and
``bundle.json`` in a zip), with its own format name, so that neither kind is taken for the other.
``bundle.json`` holds the ordered character names, the canvas size, the output stride, the preprocessing
(letterboxed onto a grey canvas) and the training metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simpsons.bundle import FORMAT as CLASSIFIER_FORMAT
from simpsons.bundle import load_archive_network, read_archive_description, write_archive
from simpsons.detection.placement import PAD_VALUE
from simpsons.errors import SimpsonsError

if TYPE_CHECKING:
    import keras

FORMAT = "simpsons-detector-bundle"
FORMAT_VERSION = 1
KIND = "simpsons detector bundle"
PREPROCESSING = {"color": "RGB", "resize": "letterbox", "pad_value": PAD_VALUE, "resample": "bilinear",
                 "input_range": [0, 255]}
OUTPUT_LAYOUT = "heatmap logits per character, log width, log height, offset x, offset y (cells)"


@dataclass
class DetectorBundle:
    """A detector network with its character names and how to feed it and read it."""

    model: keras.Model
    characters: list[str]
    image_size: int
    stride: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def description(self) -> dict[str, Any]:
        """What ``bundle.json`` holds."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "characters": self.characters,
                "image_size": self.image_size, "stride": self.stride, "preprocessing": PREPROCESSING,
                "outputs": OUTPUT_LAYOUT, "metadata": self.metadata}


def save_detector(bundle: DetectorBundle, path: str | Path) -> None:
    """Save the detector bundle as one file, atomically."""
    write_archive(bundle.model, bundle.description(), path)


def read_detector_description(path: str | Path) -> dict[str, Any]:
    """Read and check a detector bundle's ``bundle.json`` without loading its network."""
    description = read_archive_description(path, KIND)
    if not isinstance(description, dict):
        raise SimpsonsError(f"not a {KIND}: {path} (bundle.json is not an object)")
    if description.get("format") == CLASSIFIER_FORMAT:
        raise SimpsonsError(f"{path} is a classifier (it names one character per picture): detection needs a "
                            "detector bundle, trained with `simpsons train DATA --boxes annotation.txt --out RUN`")
    if description.get("format") != FORMAT:
        raise SimpsonsError(f"not a {KIND}: {path} (format {description.get('format')!r})")
    if description.get("version", 0) > FORMAT_VERSION:
        raise SimpsonsError(f"{path} was written by a newer simpsons (detector bundle version "
                            f"{description['version']})")
    if not (isinstance(description.get("characters"), list) and description["characters"]
            and isinstance(description.get("image_size"), int) and isinstance(description.get("stride"), int)):
        raise SimpsonsError(f"not a {KIND}: {path} (it lacks characters, image_size or stride)")
    return description


def load_detector(path: str | Path) -> DetectorBundle:
    """Load a detector bundle with its Keras network (the ``train`` extra); a corrupt or foreign file raises
    ``SimpsonsError``."""
    description = read_detector_description(path)
    model = load_archive_network(path)
    return DetectorBundle(model, list(description["characters"]), description["image_size"],
                          description["stride"], description.get("metadata", {}))
