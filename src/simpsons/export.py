"""Export a bundle to ONNX, and run such a file with ONNX Runtime.

The exported network outputs logits (the softmax, with the bundle's temperature, is applied by
``Predictor``). The file carries the bundle's ``bundle.json`` in its metadata (key
``simpsons_bundle``), so ``simpsons predict --model model.onnx`` knows the characters,
the input size, the temperature and the thresholds without the Keras bundle.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from simpsons.bundle import Bundle, check_description, write_atomically
from simpsons.errors import SimpsonsError
from simpsons.models import logits_network

METADATA_KEY = "simpsons_bundle"
OUTPUT_KEY, OUTPUT = "simpsons_output", "logits"


def export_onnx(bundle: Bundle, target: str | Path) -> None:
    """Write the bundle's logits network as ONNX (through Keras' exporter), with its description inside."""
    import onnx

    size = bundle.image_size
    network = logits_network(bundle.model)
    network.predict_on_batch(np.zeros((1, size, size, 3), np.float32))  # the exporter needs a built graph
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "model.onnx"
        network.export(str(raw), format="onnx", verbose=False)
        graph = onnx.load(raw)
    for key, value in ((METADATA_KEY, json.dumps(bundle.description())), (OUTPUT_KEY, OUTPUT)):
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    write_atomically(target, graph.SerializeToString())


class OnnxNetwork:
    """An ONNX Runtime session with the one method ``Predictor`` calls on a network (it returns logits)."""

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
    metadata = session.get_modelmeta().custom_metadata_map
    stored = metadata.get(METADATA_KEY)
    if stored is None:
        raise SimpsonsError(f"{path} is an ONNX model but not one exported by simpsons (no {METADATA_KEY} metadata)")
    if metadata.get(OUTPUT_KEY) != OUTPUT:
        raise SimpsonsError(f"{path} was exported by an older simpsons (it outputs probabilities); export it again")
    description = check_description(json.loads(stored), path)
    return Bundle.from_description(OnnxNetwork(session), description)
