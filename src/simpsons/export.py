"""Export a bundle to ONNX, and run such a file with ONNX Runtime.

The exported network outputs the logits and the pooled features (the softmax, with the bundle's
temperature, and the stranger detector are applied by ``Predictor``). The file carries the bundle's
``bundle.json`` in its metadata (key ``simpsons_bundle``), so ``simpsons predict --model model.onnx``
knows the characters, the input size, the temperature, the thresholds and the stranger detector
without the Keras bundle.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from simpsons import data as datasets
from simpsons.bundle import Bundle, check_description
from simpsons.errors import SimpsonsError
from simpsons.files import write_atomically

METADATA_KEY = "simpsons_bundle"
OUTPUT_KEY, OUTPUT = "simpsons_output", "logits,features"
PRECISION_KEY = "simpsons_precision"
CALIBRATION_BATCH = 64
INT8_CALIBRATION_IMAGES, INT8_CHECK_IMAGES = 512, 1024


def quantize_int8(model: Path, scratch: Path, pixels: np.ndarray) -> Path:
    """Static int8 quantization of an exported float model (QDQ format, ONNX Runtime's tools)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, quantized = scratch / "prepared.onnx", scratch / "int8.onnx"
    quant_pre_process(str(model), str(prepared))
    nodes = onnx.load(prepared).graph.node
    first_conv = [node.name for node in nodes if node.op_type == "Conv"][:1]
    kept_float = first_conv + [node.name for node in nodes if node.op_type in ("MatMul", "Gemm")]
    input_name = onnxruntime.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(range(0, len(pixels), CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            start = next(self.batches, None)
            return None if start is None else {input_name: pixels[start : start + CALIBRATION_BATCH].astype(np.float32)}

    with contextlib.redirect_stdout(io.StringIO()):  # the percentile calibration prints its progress
        quantize_static(str(prepared), str(quantized), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=kept_float)
    return quantized


def export_onnx_int8(bundle: Bundle, target: str | Path, data_dir: str | Path, seed: int = 0) -> tuple[float, int]:
    """Export an int8 model calibrated on pictures of ``data_dir`` (the training data, never the test set).

    A seeded shuffle gives up to ``INT8_CALIBRATION_IMAGES`` calibration pictures and up to
    ``INT8_CHECK_IMAGES`` others; returns the share of those others on which the int8 and the float
    networks give the same best guess, and how many were checked.
    """
    from simpsons.prediction import Predictor

    images = datasets.load_images(data_dir, bundle.image_size).images
    if len(images) == 0:
        raise SimpsonsError(f"no readable pictures in {data_dir} to calibrate the int8 model on")
    order = np.random.default_rng(seed).permutation(len(images))
    calibration = images[order[:INT8_CALIBRATION_IMAGES]]
    check = images[order[INT8_CALIBRATION_IMAGES : INT8_CALIBRATION_IMAGES + INT8_CHECK_IMAGES]]
    export_onnx(bundle, target, calibration)
    check = check if len(check) else calibration
    float_guesses = Predictor(bundle, raw=True).logits(check).argmax(axis=1)
    int8_guesses = Predictor(load_onnx_bundle(target), raw=True).logits(check).argmax(axis=1)
    return float(np.mean(float_guesses == int8_guesses)), len(check)


def export_onnx(bundle: Bundle, target: str | Path, int8_calibration: np.ndarray | None = None) -> None:
    """Write the bundle's scoring network (logits and features) as ONNX (through Keras' exporter),
    with its description inside.

    With ``int8_calibration`` (uint8 pixels of training images), the convolutions are quantized to
    8-bit integers (static, per channel, percentile ranges; the first convolution and the dense
    head stay in float): a smaller, faster file whose answers can differ on a few pictures.
    """
    import onnx

    from simpsons.models import scoring_network

    size = bundle.image_size
    network = scoring_network(bundle.model, mirror=bundle.test_time_flip)
    network.predict_on_batch(np.zeros((1, size, size, 3), np.float32))  # the exporter needs a built graph
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "model.onnx"
        network.export(str(raw), format="onnx", verbose=False)
        if int8_calibration is not None:
            raw = quantize_int8(raw, Path(scratch), int8_calibration)
        graph = onnx.load(raw)
    precision = "float32" if int8_calibration is None else f"int8 ({len(int8_calibration)} calibration images)"
    for key, value in ((METADATA_KEY, json.dumps(bundle.description())), (OUTPUT_KEY, OUTPUT),
                       (PRECISION_KEY, precision)):
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    write_atomically(target, graph.SerializeToString())


class OnnxNetwork:
    """An ONNX Runtime session with the one method ``Predictor`` calls on a network (it returns logits and features)."""

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def predict_on_batch(self, pixels: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: pixels.astype(np.float32)})


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
        raise SimpsonsError(f"{path} was exported by an older simpsons (it lacks the features output); export it again")
    description = check_description(json.loads(stored), path)
    return Bundle.from_description(OnnxNetwork(session), description)
