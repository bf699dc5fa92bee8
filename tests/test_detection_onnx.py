"""The detector exported to ONNX: the same answers as Keras, found beside its bundle while up to date, and answering
with ONNX Runtime alone (no Keras, no TensorFlow)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_backends import block_training_extra
from test_cli import one_line_error, run_cli

from simpsons.backends import exported_network_path
from simpsons.bundle import network_fingerprint
from simpsons.cli import main
from simpsons.data import open_rgb
from simpsons.detection import detector as detector_module
from simpsons.detection.bundle import load_detector, load_detector_network, read_detector_description, save_detector
from simpsons.detection.detector import Detector
from simpsons.errors import SimpsonsError
from simpsons.extras import TRAINING_MODULES
from simpsons.onnx_network import DETECTOR_KEY, PRECISION_KEY, OnnxNetwork
from simpsons.prediction import Predictor, default_model_path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_detector: Path) -> Path:
    """A copy of the tiny detector bundle with its export beside it (``simpsons export``); the bundle's path."""
    bundle = tmp_path_factory.mktemp("exported") / "tiny.detector.simpsons"
    shutil.copyfile(tiny_detector, bundle)
    assert main(["export", str(bundle), "--onnx", str(exported_network_path(bundle))]) == 0
    return bundle


def copied(bundle: Path, folder: Path, name: str = "detector") -> Path:
    """The bundle and its export copied into ``folder`` as ``name.simpsons`` and ``name.onnx``."""
    shutil.copyfile(bundle, folder / f"{name}.simpsons")
    shutil.copyfile(exported_network_path(bundle), folder / f"{name}.onnx")
    return folder / f"{name}.simpsons"


@pytest.fixture(scope="module")
def pictures(sample_paths: list[Path]) -> list:
    return [open_rgb(path) for path in sample_paths[:6]]


def test_onnx_runtime_answers_as_keras_does(exported: Path, pictures: list):
    by_keras, by_onnx = Detector(load_detector(exported)), Detector.load(exported_network_path(exported))
    assert isinstance(by_onnx.bundle.model, OnnxNetwork) and not isinstance(by_keras.bundle.model, OnnxNetwork)
    canvases = np.stack([by_keras.prepare(picture)[0] for picture in pictures])
    raw = by_keras.outputs(canvases)
    assert raw.shape == (6, 8, 8, 3 + 4)
    np.testing.assert_allclose(by_onnx.outputs(canvases), raw, atol=1e-4)
    from_keras = by_keras.detect_images(pictures, min_probability=0.05)
    from_onnx = by_onnx.detect_images(pictures, min_probability=0.05)
    assert sum(len(found) for found in from_keras) >= 6
    for keras_found, onnx_found in zip(from_keras, from_onnx):
        assert [d.character for d in onnx_found] == [d.character for d in keras_found]
        np.testing.assert_allclose([d.box for d in onnx_found], [d.box for d in keras_found], atol=1e-2)
        np.testing.assert_allclose([d.probability for d in onnx_found], [d.probability for d in keras_found],
                                   atol=1e-4)


def test_the_export_carries_the_description_and_the_bundles_fingerprint(exported: Path):
    network = load_detector_network(exported_network_path(exported))
    assert network.stored(DETECTOR_KEY) == read_detector_description(exported)
    assert network.source == network_fingerprint(exported)
    assert network.metadata[PRECISION_KEY] == "float32"
    alone = Detector.load(exported_network_path(exported))
    assert alone.characters == ["bart_simpson", "homer_simpson", "lisa_simpson"]
    assert (alone.image_size, alone.bundle.stride, alone.bundle.metadata) == (64, 8, {"note": "made by the tests"})
    with pytest.raises(SimpsonsError, match="only a Keras network"):
        save_detector(alone.bundle, exported.parent / "again.simpsons")


def test_a_bundle_answers_through_its_export_beside_it(exported: Path, pictures: list):
    detector = Detector.load(exported)
    assert isinstance(detector.bundle.model, OnnxNetwork)
    assert detector.bundle.model.path == exported_network_path(exported)
    found = detector.detect_images(pictures[:2], min_probability=0.05)
    assert found == Detector.load(exported_network_path(exported)).detect_images(pictures[:2], min_probability=0.05)


def test_a_stale_export_is_not_used(exported: Path, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture):
    import onnx

    bundle = copied(exported, tmp_path)
    graph = onnx.load(exported_network_path(bundle))
    source = next(entry for entry in graph.metadata_props if entry.key == "simpsons_network")
    source.value = "00000000-1"  # exported from another network than the bundle's
    onnx.save(graph, exported_network_path(bundle))
    with caplog.at_level(logging.WARNING, logger="simpsons.backends"):
        detector = Detector.load(bundle)
    assert not isinstance(detector.bundle.model, OnnxNetwork)
    assert "not exported from the network in" in caplog.text
    block_training_extra(monkeypatch)
    with pytest.raises(SimpsonsError, match=r"no up-to-date ONNX export.*simpsons export"):
        Detector.load(bundle)


def test_a_classifiers_export_is_not_a_detector_nor_the_reverse(capsys, exported: Path, sample_paths):
    shipped_classifier = exported_network_path(default_model_path())
    with pytest.raises(SimpsonsError, match="is a classifier"):
        Detector.load(shipped_classifier)
    code, _, err = run_cli(capsys, "detect", sample_paths[0], "--model", shipped_classifier)
    assert code == 2 and "is a classifier" in one_line_error(err)
    with pytest.raises(SimpsonsError, match="is a detector"):
        Predictor.load(exported_network_path(exported))


def test_the_shipped_detector_may_ship_as_its_export_alone(exported: Path, tmp_path: Path, monkeypatch,
                                                           pictures: list):
    shipped = tmp_path / "default.detector.simpsons"
    monkeypatch.setattr(detector_module, "default_detector_path", lambda: shipped)
    shutil.copyfile(exported_network_path(exported), exported_network_path(shipped))
    alone = Detector.load()
    assert isinstance(alone.bundle.model, OnnxNetwork) and alone.bundle.model.path == exported_network_path(shipped)
    shutil.copyfile(exported, shipped)
    block_training_extra(monkeypatch)  # both ship, Keras is not installed: the export answers
    both = Detector.load()
    assert isinstance(both.bundle.model, OnnxNetwork)
    assert both.detect_images(pictures[:2], 0.05) == alone.detect_images(pictures[:2], 0.05)


def test_a_bundle_without_export_needs_keras(monkeypatch, tiny_detector: Path):
    block_training_extra(monkeypatch)
    with pytest.raises(SimpsonsError, match=r"simpsons export .*pip install 'simpsons\[train\]'"):
        Detector.load(tiny_detector)


DETECT_WITHOUT_KERAS = """
import json, sys
from simpsons.data import open_rgb
from simpsons.detection.detector import Detector
detector = Detector.load(sys.argv[1])
found = detector.detect_images([open_rgb(path) for path in sys.argv[2:]], min_probability=0.05)
print(json.dumps({"found": [[d.as_dict() for d in picture] for picture in found],
                  "loaded": sorted(name for name in ("keras", "tensorflow", "tf2onnx") if name in sys.modules)}))
"""


@pytest.mark.parametrize("given", ["bundle", "export"])
def test_a_fresh_process_detects_without_importing_keras(exported: Path, sample_paths, given: str):
    model = exported if given == "bundle" else exported_network_path(exported)
    paths = [str(path) for path in sample_paths[:3]]
    result = subprocess.run([sys.executable, "-c", DETECT_WITHOUT_KERAS, str(model), *paths],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["loaded"] == []
    expected = Detector(load_detector(exported)).detect_images([open_rgb(path) for path in paths], 0.05)
    assert [[d["character"] for d in picture] for picture in answer["found"]] == [
        [d.character for d in picture] for picture in expected]


def test_detect_runs_in_the_base_install(capsys, exported: Path, sample_paths):
    """``simpsons detect`` as the base install runs it: the training extra's modules cannot be imported at all."""
    blocked = f"sys.modules.update(dict.fromkeys({TRAINING_MODULES!r}))"
    program = f"import sys; {blocked}; from simpsons.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["detect", str(sample_paths[0]), "--model", str(exported), "--json", "--min-prob", "0.05"]
    result = subprocess.run([sys.executable, "-c", program, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and result.stdout == out and json.loads(out)["detections"]


def test_a_detector_exports_in_float_only(capsys, tiny_detector: Path, tmp_path: Path, samples_dir: Path):
    target = tmp_path / "int8.onnx"
    code, _, err = run_cli(capsys, "export", tiny_detector, "--onnx", target, "--int8", samples_dir)
    assert code == 2 and "--int8" in one_line_error(err) and not target.exists()
