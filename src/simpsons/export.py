"""Export a bundle to ONNX, and run such a file with ONNX Runtime.

The exported file carries the bundle's ``bundle.json`` in its metadata (key
``simpsons_bundle``), so ``simpsons predict --model model.onnx`` knows the characters,
the input size and the thresholds without the Keras bundle.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from simpsons.bundle import Bundle, check_description, write_atomically
from simpsons.errors import SimpsonsError

METADATA_KEY = "simpsons_bundle"


def export_onnx(bundle: Bundle, target: str | Path) -> None:
    """Write the bundle's network as ONNX (through Keras' exporter), with its description inside."""
    import onnx

    size = bundle.image_size
    bundle.model.predict_on_batch(np.zeros((1, size, size, 3), np.float32))  # the exporter needs a built graph
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "model.onnx"
        bundle.model.export(str(raw), format="onnx", verbose=False)
        graph = onnx.load(raw)
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(bundle.description())
    write_atomically(target, graph.SerializeToString())


class OnnxNetwork:
    """An ONNX Runtime session with the one method ``Predictor`` calls on a network."""

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def predict_on_batch(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: pixels.astype(np.float32)})[0]


def load_onnx_bundle(path: str | Path) -> Bundle:
    """A bundle whose network runs in ONNX Runtime; a foreign or broken file raises ``SimpsonsError``."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise SimpsonsError(f"model file not found: {path}")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime raises its own exception types for unreadable graphs
        raise SimpsonsError(f"not a readable ONNX model: {path} ({type(error).__name__})") from None
    stored = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if stored is None:
        raise SimpsonsError(f"{path} is an ONNX model but not one exported by simpsons (no {METADATA_KEY} metadata)")
    description = check_description(json.loads(stored), path)
    return Bundle.from_description(OnnxNetwork(session), description)
