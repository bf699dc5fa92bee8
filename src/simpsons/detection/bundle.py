"""The detector bundle: a trained detector and what it needs to answer, in one file.

The same container as a classifier's bundle (``simpsons.bundle.write_archive``: ``model.keras`` and
``bundle.json`` in a zip), with its own format name, so that neither kind is taken for the other.
``bundle.json`` holds the ordered character names, the canvas size, the output stride, the preprocessing
(letterboxed onto a grey canvas) and the training metadata.

Its network exports to ONNX (``simpsons export detector.simpsons --onnx detector.onnx``) with that
description in the file's metadata: the export answers alone, and beside its bundle it answers for the
bundle while it holds the same network (``backends.exported_network``), with ONNX Runtime only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simpsons.backends import ONNX_SUFFIX, exported_network, no_export_error
from simpsons.bundle import FORMAT as CLASSIFIER_FORMAT
from simpsons.bundle import Network, load_archive_network, read_archive_description, write_archive
from simpsons.detection.placement import PAD_VALUE
from simpsons.errors import SimpsonsError
from simpsons.extras import training_extra_installed
from simpsons.onnx_network import DETECTOR_KEY, METADATA_KEY, OnnxNetwork, open_onnx_network

FORMAT = "simpsons-detector-bundle"
FORMAT_VERSION = 1
KIND = "simpsons detector bundle"
PREPROCESSING = {"color": "RGB", "resize": "letterbox", "pad_value": PAD_VALUE, "resample": "bilinear",
                 "input_range": [0, 255]}
OUTPUT_LAYOUT = "heatmap logits per character, log width, log height, offset x, offset y (cells)"


@dataclass
class DetectorBundle:
    """A detector network (its Keras model, or its ONNX export: both answer ``predict_on_batch`` of float32
    canvases) with its character names and how to feed it and read it."""

    model: Network
    characters: list[str]
    image_size: int
    stride: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def description(self) -> dict[str, Any]:
        """What ``bundle.json`` holds."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "characters": self.characters,
                "image_size": self.image_size, "stride": self.stride, "preprocessing": PREPROCESSING,
                "outputs": OUTPUT_LAYOUT, "metadata": self.metadata}

    @classmethod
    def from_description(cls, model: Network, description: dict[str, Any]) -> DetectorBundle:
        """A bundle of ``model`` with what a checked description says."""
        return cls(model, list(description["characters"]), description["image_size"], description["stride"],
                   description.get("metadata", {}))


def save_detector(bundle: DetectorBundle, path: str | Path) -> None:
    """Save the detector bundle (its network a Keras model) as one file, atomically."""
    if not hasattr(bundle.model, "save"):
        raise SimpsonsError(f"only a Keras network can be saved as a bundle, not {type(bundle.model).__name__}")
    write_archive(bundle.model, bundle.description(), path)


def is_detector_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a readable archive whose description names the detector format."""
    try:
        description = read_archive_description(path, KIND)
    except SimpsonsError:
        return False
    return isinstance(description, dict) and description.get("format") == FORMAT


def read_detector_description(path: str | Path) -> dict[str, Any]:
    """Read and check a detector bundle's ``bundle.json`` without loading its network."""
    return checked_description(read_archive_description(path, KIND), path)


def describe_detector(path: str | Path) -> dict[str, Any]:
    """The checked description of a detector bundle, or of its ONNX export (whose session it opens), without
    loading Keras."""
    if Path(path).suffix == ONNX_SUFFIX:
        return checked_description(load_detector_network(path).stored(DETECTOR_KEY), path)
    return read_detector_description(path)


def checked_description(description: Any, path: str | Path) -> dict[str, Any]:
    """A detector's description (from its bundle or its export at ``path``), checked; a classifier's, a foreign,
    a newer or an incomplete one raises ``SimpsonsError``."""
    if not isinstance(description, dict):
        raise SimpsonsError(f"not a {KIND}: {path} (its description is not an object)")
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
    return DetectorBundle.from_description(load_archive_network(path), description)


def load_detector_network(path: str | Path) -> OnnxNetwork:
    """The network of a detector's ONNX export; a classifier's, a foreign or a broken file raises
    ``SimpsonsError``."""
    network = open_onnx_network(path)
    if DETECTOR_KEY not in network.metadata:
        if METADATA_KEY in network.metadata:
            raise SimpsonsError(f"{path} is a classifier (it names one character per picture): detection needs a "
                                "detector, exported with `simpsons export DETECTOR.simpsons --onnx FILE`")
        raise SimpsonsError(f"{path} is not a detector's export (no {DETECTOR_KEY} metadata)")
    return network


def load_exported_detector(path: str | Path) -> DetectorBundle:
    """A detector made of its ONNX export alone: its network and the description stored in it."""
    network = load_detector_network(path)
    return DetectorBundle.from_description(network, checked_description(network.stored(DETECTOR_KEY), path))


def load_detector_for_inference(path: str | Path) -> DetectorBundle:
    """The detector bundle (or exported ``.onnx`` file) at ``path`` with the network that answers for it: ONNX
    Runtime when an up-to-date export lies beside the bundle, else Keras (the ``train`` extra)."""
    path = Path(path)
    if path.suffix == ONNX_SUFFIX:
        return load_exported_detector(path)
    description = read_detector_description(path)
    network = exported_network(path, load_detector_network)
    if network is not None:
        return DetectorBundle.from_description(network, description)
    if not training_extra_installed():
        raise no_export_error(path)
    return load_detector(path)
