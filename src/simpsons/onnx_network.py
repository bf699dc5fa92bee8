"""Networks exported to ONNX, run with ONNX Runtime (the base install's engine: no Keras, no TensorFlow).

An exported network outputs the logits and the pooled features of one picture; the prior correction,
the flip test-time augmentation, the temperature, the thresholds and the stranger detector are applied
by ``Predictor``, the same way for a Keras network. The file carries the bundle's ``bundle.json`` in its
metadata (key ``simpsons_bundle``), so it also answers alone (``--model model.onnx``), and the
fingerprint of the bundle network it was exported from (key ``simpsons_network``), so that
``model.onnx`` beside ``model.simpsons`` runs that bundle only while it still holds the same network.
A detector's export carries its description under ``simpsons_detector`` instead (``detection.bundle``
reads it); the session and its metadata are the same ``OnnxNetwork``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from simpsons.bundle import Bundle, Description, parse_description
from simpsons.errors import SimpsonsError

METADATA_KEY = "simpsons_bundle"
DETECTOR_KEY = "simpsons_detector"  # a detector's description (``detection.bundle``), in a detector's export
OUTPUT_KEY, OUTPUT = "simpsons_output", "logits,features"
PRECISION_KEY = "simpsons_precision"
SOURCE_KEY = "simpsons_network"  # ``bundle.network_fingerprint`` of the bundle the network was exported from


class OnnxNetwork:
    """An ONNX Runtime session with the one method ``Predictor`` and ``Detector`` call on a network (it returns
    the list of the network's outputs), and the file's metadata."""

    def __init__(self, session: Any, path: Path):
        self.session = session
        self.path = path
        self.input_name = session.get_inputs()[0].name
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)

    def predict_on_batch(self, pixels: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: pixels.astype(np.float32, copy=False)})

    def stored(self, key: str) -> Any:
        """The JSON stored under ``key`` in the file's metadata at export, parsed."""
        try:
            return json.loads(self.metadata[key])
        except json.JSONDecodeError:
            raise SimpsonsError(f"{self.path} holds a damaged {key} description") from None

    def description(self) -> Description:
        """The ``bundle.json`` stored in the file at export, parsed (and migrated when older)."""
        return parse_description(self.stored(METADATA_KEY), self.path)

    @property
    def source(self) -> str | None:
        """The fingerprint of the bundle network it was exported from (``None`` in older exports)."""
        return self.metadata.get(SOURCE_KEY)


def open_onnx_network(path: str | Path) -> OnnxNetwork:
    """The network of an ONNX file exported by ``simpsons export``, classifier or detector; a missing, broken or
    foreign file raises ``SimpsonsError``."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise SimpsonsError(f"model file not found: {path}")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime raises its own exception types for unreadable graphs
        raise SimpsonsError(f"not a readable ONNX model: {path} ({type(error).__name__})") from None
    network = OnnxNetwork(session, path)
    if METADATA_KEY not in network.metadata and DETECTOR_KEY not in network.metadata:
        raise SimpsonsError(f"{path} is an ONNX model but not one exported by simpsons (no {METADATA_KEY} metadata)")
    return network


def load_onnx_network(path: str | Path) -> OnnxNetwork:
    """The classifier network of an ONNX file exported by ``simpsons export``; a detector's, a foreign or a broken
    file raises ``SimpsonsError``."""
    network = open_onnx_network(path)
    if DETECTOR_KEY in network.metadata:
        raise SimpsonsError(f"{path} is a detector (it finds boxes): give it to `simpsons detect`; naming one "
                            "character per picture needs a classifier")
    if network.metadata.get(OUTPUT_KEY) != OUTPUT:
        raise SimpsonsError(f"{path} was exported by an older simpsons (it lacks the features output); export it again")
    return network


def load_onnx_bundle(path: str | Path) -> Bundle:
    """A bundle made of an exported ONNX file alone: its network and the description stored in it."""
    network = load_onnx_network(path)
    return Bundle.from_description(network, network.description())
