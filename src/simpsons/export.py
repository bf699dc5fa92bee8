"""Export a bundle's Keras network to ONNX (float, or int8 calibrated on training pictures), or a detector's
(float).

Needs the ``train`` extra (Keras, TensorFlow, tf2onnx, onnx); the file it writes runs with ONNX Runtime
alone (``onnx_network``). ``simpsons export model.simpsons --onnx model.onnx`` puts it beside the bundle,
where every command that answers finds it.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simpsons import data as datasets
from simpsons.bundle import Bundle
from simpsons.detection.bundle import DetectorBundle
from simpsons.errors import SimpsonsError
from simpsons.files import write_atomically
from simpsons.onnx_network import (
    DETECTOR_KEY,
    METADATA_KEY,
    OUTPUT,
    OUTPUT_KEY,
    PRECISION_KEY,
    SOURCE_KEY,
    load_onnx_bundle,
)

if TYPE_CHECKING:
    import keras

FLOAT = "float32"

CALIBRATION_BATCH = 64
INT8_CALIBRATION_IMAGES, INT8_CHECK_IMAGES = 512, 1024


def quantize_int8(model: Path, scratch: Path, pixels: np.ndarray) -> Path:
    """Static int8 quantization of an exported float model (QDQ format, ONNX Runtime's tools)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
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


def export_onnx_int8(bundle: Bundle, target: str | Path, data_dir: str | Path, seed: int = 0,
                     source: str | None = None) -> tuple[float, int]:
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
    export_onnx(bundle, target, calibration, source)
    check = check if len(check) else calibration
    float_guesses = Predictor(bundle, raw=True).logits(check).argmax(axis=1)
    int8_guesses = Predictor(load_onnx_bundle(target), raw=True).logits(check).argmax(axis=1)
    return float(np.mean(float_guesses == int8_guesses)), len(check)


def export_onnx(bundle: Bundle, target: str | Path, int8_calibration: np.ndarray | None = None,
                source: str | None = None) -> None:
    """Write the bundle's scoring network (logits and features of one picture; ``Predictor`` adds the
    mirror image) as ONNX (through Keras' exporter), with its description inside, and ``source``, the
    ``network_fingerprint`` of the bundle file it comes from, when given.

    With ``int8_calibration`` (uint8 pixels of training images), the convolutions are quantized to
    8-bit integers (static, per channel, percentile ranges; the first convolution and the dense
    head stay in float): a smaller, faster file whose answers can differ on a few pictures.
    """
    from simpsons.models import scoring_network

    precision = FLOAT if int8_calibration is None else f"int8 ({len(int8_calibration)} calibration images)"
    entries = {METADATA_KEY: json.dumps(bundle.as_json()), OUTPUT_KEY: OUTPUT, PRECISION_KEY: precision}
    write_onnx(scoring_network(bundle.model), bundle.image_size, target, entries, source, int8_calibration)


def export_detector_onnx(bundle: DetectorBundle, target: str | Path, source: str | None = None) -> None:
    """Write the detector's network (float) as ONNX, with its description inside (``bundle.json``'s, under
    ``DETECTOR_KEY``) and ``source``, the ``network_fingerprint`` of the bundle file it comes from, when given."""
    entries = {DETECTOR_KEY: json.dumps(bundle.description()), PRECISION_KEY: FLOAT}
    write_onnx(bundle.model, bundle.image_size, target, entries, source)


def write_onnx(network: keras.Model, size: int, target: str | Path, entries: dict[str, str], source: str | None = None,
               int8_calibration: np.ndarray | None = None) -> None:
    """Export a Keras ``network`` of ``size`` px canvases to ONNX through Keras' exporter (quantized to int8 on
    ``int8_calibration`` when given), with ``entries`` and ``source`` in its metadata, written atomically."""
    import onnx

    network.predict_on_batch(np.zeros((1, size, size, 3), np.float32))  # the exporter needs a built graph
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "model.onnx"
        network.export(str(raw), format="onnx", verbose=False)
        if int8_calibration is not None:
            raw = quantize_int8(raw, Path(scratch), int8_calibration)
        graph = onnx.load(raw)
    for key, value in {**entries, **({} if source is None else {SOURCE_KEY: source})}.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    write_atomically(target, graph.SerializeToString())
