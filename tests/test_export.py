"""ONNX export: same answers as the Keras bundle, usable by predict, clear errors for foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import TEST_CHARACTERS
from test_cli import one_line_error, run_cli

from simpsons import data as datasets
from simpsons.bundle import load_bundle
from simpsons.errors import SimpsonsError
from simpsons.export import export_onnx
from simpsons.onnx_network import OUTPUT_KEY, load_onnx_bundle
from simpsons.prediction import Predictor, default_model_path


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("onnx") / "default.onnx"
    export_onnx(load_bundle(default_model_path()), target)
    return target


def test_onnx_gives_the_same_answers_as_keras(shipped_onnx: Path, samples_dir: Path):
    keras_predictor = Predictor.load(backend="keras")
    onnx_predictor = Predictor.load(shipped_onnx)
    images = datasets.load_images(samples_dir, keras_predictor.image_size).images
    from_keras = keras_predictor.probabilities(images)
    from_onnx = onnx_predictor.probabilities(images)
    np.testing.assert_allclose(from_onnx, from_keras, atol=1e-4)
    assert (from_onnx.argmax(axis=1) == from_keras.argmax(axis=1)).all()
    # the stranger detector travels in the file's description: the same answers, unknown ones included
    assert onnx_predictor.stranger_detector is not None
    by_keras, by_onnx = keras_predictor.predict_pixels(images), onnx_predictor.predict_pixels(images)
    assert [a.character for a in by_onnx] == [a.character for a in by_keras]
    np.testing.assert_allclose([a.familiarity for a in by_onnx], [a.familiarity for a in by_keras], atol=1e-4)


def test_onnx_file_carries_the_bundle_description(shipped_onnx: Path):
    bundle = load_onnx_bundle(shipped_onnx)
    original = load_bundle(default_model_path())
    assert bundle.characters == original.characters == sorted(TEST_CHARACTERS)
    assert bundle.image_size == original.image_size
    assert bundle.metadata == original.metadata
    assert bundle.prior_correction == original.prior_correction


def test_export_and_predict_through_the_cli(capsys, tmp_path: Path, tiny_bundle: Path, sample_paths):
    target = tmp_path / "tiny.onnx"
    code, out, _ = run_cli(capsys, "export", tiny_bundle, "--onnx", target)
    assert code == 0 and target.is_file() and str(target) in out
    code, out, _ = run_cli(capsys, "predict", *sample_paths[:3], "--model", target, "--json")
    keras_code, keras_out, _ = run_cli(capsys, "predict", *sample_paths[:3], "--model", tiny_bundle, "--json")
    assert code == keras_code == 0
    onnx_answers = [json.loads(line) for line in out.splitlines()]
    keras_answers = [json.loads(line) for line in keras_out.splitlines()]
    assert [a["character"] for a in onnx_answers] == [a["character"] for a in keras_answers]


@pytest.mark.parametrize("content", [b"not an onnx graph", b""])
def test_a_broken_onnx_file_is_a_clear_error(capsys, tmp_path: Path, sample_paths, content: bytes):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(content)
    code, _, err = run_cli(capsys, "predict", sample_paths[0], "--model", broken)
    assert code == 2
    assert "broken.onnx" in one_line_error(err)


def test_an_onnx_model_from_elsewhere_is_refused(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), foreign)
    with pytest.raises(SimpsonsError, match="not one exported by simpsons"):
        load_onnx_bundle(foreign)


@pytest.mark.slow
def test_int8_export_is_smaller_and_mostly_agrees(capsys, tmp_path: Path, shipped_onnx: Path, samples_dir: Path):
    target = tmp_path / "int8.onnx"
    code, out, err = run_cli(capsys, "export", default_model_path(), "--onnx", target, "--int8", samples_dir)
    assert code == 0, err
    assert "same best guess on" in out and "of 60 held-out pictures" in out  # 60 samples < 512: checked on them
    assert target.stat().st_size < shipped_onnx.stat().st_size / 3
    int8 = Predictor.load(target)
    images = datasets.load_images(samples_dir, int8.image_size).images
    assert int8.temperature == Predictor.load().temperature  # the description travels with the int8 model too
    agreement = np.mean(int8.logits(images).argmax(axis=1) == Predictor.load(shipped_onnx).logits(images).argmax(axis=1))
    assert agreement >= 0.9


@pytest.mark.slow
def test_export_without_a_bundle_exports_the_shipped_model(capsys, tmp_path: Path):
    code, out, err = run_cli(capsys, "export", "--onnx", tmp_path / "default.onnx")
    assert code == 0, err
    assert load_onnx_bundle(tmp_path / "default.onnx").characters == Predictor.load().characters


def test_int8_export_needs_pictures(capsys, tmp_path: Path, tiny_bundle: Path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "export", tiny_bundle, "--onnx", tmp_path / "x.onnx", "--int8", tmp_path / "nowhere")
    assert code == 2 and "not found" in one_line_error(err)
    code, _, err = run_cli(capsys, "export", tiny_bundle, "--onnx", tmp_path / "x.onnx", "--int8", tmp_path / "empty")
    assert code == 2 and not (tmp_path / "x.onnx").exists()


def test_an_onnx_file_giving_probabilities_is_refused(tmp_path: Path, shipped_onnx: Path):
    import onnx

    graph = onnx.load(shipped_onnx)
    kept = [entry for entry in graph.metadata_props if entry.key != OUTPUT_KEY]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    older = tmp_path / "older.onnx"
    onnx.save(graph, older)
    with pytest.raises(SimpsonsError, match="older simpsons"):
        load_onnx_bundle(older)


def test_export_refuses_a_missing_bundle(capsys, tmp_path: Path):
    code, _, err = run_cli(capsys, "export", tmp_path / "nothing.simpsons", "--onnx", tmp_path / "out.onnx")
    assert code == 2 and "nothing.simpsons" in one_line_error(err)
    assert not (tmp_path / "out.onnx").exists()


def test_the_exported_network_gives_the_features_too(shipped_onnx: Path, samples_dir: Path):
    keras_predictor, onnx_predictor = Predictor.load(backend="keras"), Predictor.load(shipped_onnx)
    images = datasets.load_images(samples_dir, keras_predictor.image_size).images[:5]
    from_keras, from_onnx = keras_predictor.features(images), onnx_predictor.features(images)
    assert from_keras.shape == (5, 256)
    np.testing.assert_allclose(from_onnx, from_keras, rtol=1e-3, atol=1e-3)
