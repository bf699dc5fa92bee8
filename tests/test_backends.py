"""ONNX Runtime answers by default, Keras when asked or when it must; the base install needs no TensorFlow."""

from __future__ import annotations

import ast
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, TEST_CHARACTERS, make_bundle
from test_cli import one_line_error, run_cli

from simpsons import data as datasets
from simpsons.backends import exported_network, exported_network_path, load_for_inference
from simpsons.bundle import (
    PriorCorrection,
    StrangerDetector,
    load_bundle,
    network_fingerprint,
    read_description,
    rewrite_description,
    save_bundle,
)
from simpsons.errors import SimpsonsError
from simpsons.extras import TRAINING_INSTALL, TRAINING_MODULES
from simpsons.onnx_network import OnnxNetwork, load_onnx_network
from simpsons.prediction import UNKNOWN, Predictor, default_model_path

SIZE = 32


@pytest.fixture(scope="module")
def pixels(samples_dir: Path) -> np.ndarray:
    return datasets.load_images(samples_dir, SIZE, use_cache=False).images


def export_beside(bundle, path: Path) -> Path:
    from simpsons.export import export_onnx

    target = exported_network_path(path)
    export_onnx(bundle, target, source=network_fingerprint(path))
    return target


@pytest.fixture(scope="module")
def dressed(tmp_path_factory: pytest.TempPathFactory, pixels: np.ndarray) -> Path:
    """A small bundle holding every decision a description can: global and per-character thresholds, a
    temperature, a prior correction, a stranger detector and the flip; its ONNX export beside it."""
    path = tmp_path_factory.mktemp("dressed") / "small.simpsons"
    bundle = make_bundle(path, TEST_CHARACTERS, image_size=SIZE, seed=3)
    features = Predictor(bundle).features(pixels)
    rng = np.random.default_rng(0)
    detector = StrangerDetector(rng.normal(size=features.shape[1]), 0.0, 0.5, 0.2, "max logit")
    bundle.test_time_flip = True
    bundle.temperature = 0.3
    bundle.prior_correction = PriorCorrection(0.3, list(range(10, 10 + len(TEST_CHARACTERS))))
    scored = Predictor(bundle)
    probabilities = scored.probabilities(pixels)
    best = probabilities.max(axis=1)
    familiarity = detector.familiarity(scored.features(pixels), scored.logits(pixels).max(axis=1))
    detector.threshold = float(np.quantile(familiarity, 0.2))  # a fifth unfamiliar
    bundle.stranger_detector = detector
    bundle.threshold = float(np.quantile(best, 0.1))
    guesses = probabilities.argmax(axis=1)
    common = np.bincount(guesses).argmax()  # half its pictures below its own threshold
    bundle.character_thresholds = {TEST_CHARACTERS[common]: float(np.median(best[guesses == common]))}
    save_bundle(bundle, path)
    export_beside(bundle, path)
    return path


def copied(bundle_path: Path, folder: Path) -> Path:
    """The bundle and its export copied into ``folder``."""
    for source in (bundle_path, exported_network_path(bundle_path)):
        shutil.copyfile(source, folder / source.name)
    return folder / bundle_path.name


def block_training_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process behave as the base install: Keras, TensorFlow and the exporter cannot be imported."""
    for module in TRAINING_MODULES:
        monkeypatch.setitem(sys.modules, module, None)


# --------------------------------------------------------------------------- the default engine


def test_the_shipped_model_answers_through_onnx_runtime():
    predictor = Predictor.load()
    assert isinstance(predictor.network, OnnxNetwork)
    assert predictor.characters == sorted(TEST_CHARACTERS)
    assert predictor.stranger_detector is not None and predictor.temperature is not None


def test_the_shipped_export_comes_from_the_shipped_network():
    """``simpsons export src/simpsons/assets/default.simpsons --onnx src/simpsons/assets/default.onnx`` made it."""
    bundle_path = default_model_path()
    shipped = load_onnx_network(exported_network_path(bundle_path))
    assert shipped.source == network_fingerprint(bundle_path)
    assert shipped.description().as_json() == read_description(bundle_path).as_json()  # default.onnx answers alike


def test_onnx_and_keras_answer_alike_with_every_decision(dressed: Path, pixels: np.ndarray):
    by_onnx, by_keras = Predictor.load(dressed), Predictor.load(dressed, backend="keras")
    assert isinstance(by_onnx.network, OnnxNetwork) and not isinstance(by_keras.network, OnnxNetwork)
    np.testing.assert_allclose(by_onnx.logits(pixels), by_keras.logits(pixels), atol=1e-4)
    np.testing.assert_allclose(by_onnx.probabilities(pixels), by_keras.probabilities(pixels), atol=1e-4)
    onnx_answers, keras_answers = by_onnx.predict_pixels(pixels), by_keras.predict_pixels(pixels)
    assert [a.character for a in onnx_answers] == [a.character for a in keras_answers]
    assert [a.best_guess for a in onnx_answers] == [a.best_guess for a in keras_answers]
    np.testing.assert_allclose([a.familiarity for a in onnx_answers], [a.familiarity for a in keras_answers],
                               atol=1e-4)
    characters = {a.character for a in onnx_answers}
    assert UNKNOWN in characters and len(characters - {UNKNOWN}) >= 1  # the decisions really decide


def test_the_flip_answers_a_picture_and_its_mirror_alike_on_onnx(dressed: Path, pixels: np.ndarray):
    predictor = Predictor.load(dressed)
    mirrored = pixels[:, :, ::-1].copy()
    np.testing.assert_allclose(predictor.logits(pixels), predictor.logits(mirrored), atol=1e-4)
    predictor.bundle.test_time_flip = False
    assert not np.allclose(predictor.logits(pixels), predictor.logits(mirrored), atol=1e-3)


def test_rewritten_decisions_keep_the_export_in_use(dressed: Path, tmp_path: Path, pixels: np.ndarray):
    path = copied(dressed, tmp_path)
    bundle = load_bundle(path)
    bundle.threshold, bundle.character_thresholds, bundle.test_time_flip = 0.999, None, False
    rewrite_description(bundle, path)
    predictor = Predictor.load(path)
    assert isinstance(predictor.network, OnnxNetwork)
    assert predictor.threshold == 0.999 and not predictor.bundle.test_time_flip
    assert {a.character for a in predictor.predict_pixels(pixels)} == {UNKNOWN}
    keras = Predictor.load(path, backend="keras")
    np.testing.assert_allclose(predictor.probabilities(pixels), keras.probabilities(pixels), atol=1e-4)


def test_a_stale_export_is_never_used(dressed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = copied(dressed, tmp_path)
    save_bundle(make_bundle(tmp_path / "other.simpsons", TEST_CHARACTERS, image_size=SIZE, seed=4), path)
    with caplog.at_level(logging.WARNING, logger="simpsons.backends"):
        predictor = Predictor.load(path)
    assert not isinstance(predictor.network, OnnxNetwork)
    assert "not exported from the network in" in caplog.text and "simpsons export" in caplog.text
    with pytest.raises(SimpsonsError, match="no up-to-date ONNX export"):
        Predictor.load(path, backend="onnx")


def test_a_bundle_without_export_runs_with_keras(tiny_bundle: Path):
    assert exported_network(tiny_bundle) is None
    assert not isinstance(Predictor.load(tiny_bundle).network, OnnxNetwork)
    with pytest.raises(SimpsonsError, match="simpsons export"):
        Predictor.load(tiny_bundle, backend="onnx")


def test_an_exported_file_runs_only_with_onnx_runtime(dressed: Path):
    with pytest.raises(SimpsonsError, match="ONNX Runtime only"):
        load_for_inference(exported_network_path(dressed), "keras")
    with pytest.raises(SimpsonsError, match="backend must be one of"):
        load_for_inference(dressed, "torch")


def test_predict_answers_alike_with_either_backend(capsys, dressed: Path, sample_paths):
    answers = {}
    for backend in ("onnx", "keras"):
        code, out, err = run_cli(capsys, "predict", *sample_paths[:8], "--model", dressed, "--backend", backend,
                                 "--json")
        assert code == 0, err
        answers[backend] = [json.loads(line) for line in out.splitlines()]
    assert [a["character"] for a in answers["onnx"]] == [a["character"] for a in answers["keras"]]
    np.testing.assert_allclose([a["probability"] for a in answers["onnx"]],
                               [a["probability"] for a in answers["keras"]], atol=1e-4)


# --------------------------------------------------------------------------- the base install


def test_the_base_install_answers_without_the_training_extra(monkeypatch, dressed: Path, pixels: np.ndarray):
    expected = Predictor.load(dressed).probabilities(pixels)
    block_training_extra(monkeypatch)
    np.testing.assert_allclose(Predictor.load(dressed).probabilities(pixels), expected)
    with pytest.raises(SimpsonsError, match=r"pip install 'simpsons\[train\]'"):
        Predictor.load(dressed, backend="keras")


def test_a_bundle_without_export_names_the_extra_in_the_base_install(monkeypatch, tiny_bundle: Path):
    block_training_extra(monkeypatch)
    with pytest.raises(SimpsonsError, match=r"simpsons export .*pip install 'simpsons\[train\]'"):
        Predictor.load(tiny_bundle)


@pytest.mark.parametrize("argv", [
    ["train", "DATA", "--out", "RUN"],
    ["train", "--list-presets"],
    ["export", "--onnx", "OUT.onnx"],
    ["confidence", "DATA", "--report-dir", "REPORT", "--calibrate", "DATA"],
    ["predict", "PICTURE", "--backend", "keras"],
])
def test_training_commands_name_the_extra_in_one_line(capsys, monkeypatch, tmp_path: Path, argv: list[str]):
    block_training_extra(monkeypatch)
    places = {"DATA": tmp_path, "RUN": tmp_path / "run", "OUT.onnx": tmp_path / "out.onnx",
              "REPORT": tmp_path / "report", "PICTURE": REPO_ROOT / "samples" / "bart_simpson_0.jpg"}
    code, out, err = run_cli(capsys, *[places.get(arg, arg) for arg in argv])
    assert code == 2 and out == ""
    assert one_line_error(err).endswith(TRAINING_INSTALL)
    assert not (tmp_path / "run").exists() and not (tmp_path / "out.onnx").exists()


def test_a_fresh_process_answers_without_keras_or_tensorflow(sample_paths, capsys):
    """The command as the base install runs it: the training extra's modules cannot be imported at all."""
    blocked = f"sys.modules.update(dict.fromkeys({TRAINING_MODULES!r}))"
    program = f"import sys; {blocked}; from simpsons.cli import main; sys.exit(main(sys.argv[1:]))"
    paths = [str(path) for path in sample_paths[:4]]
    result = subprocess.run([sys.executable, "-c", program, "predict", *paths, "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    code, out, _ = run_cli(capsys, "predict", *paths, "--json")
    assert code == 0 and result.stdout == out
    refused = subprocess.run([sys.executable, "-c", program, "export", "--onnx", "x.onnx"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and one_line_error(refused.stderr).endswith(TRAINING_INSTALL)


# --------------------------------------------------------------------------- structure


def imported_modules(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at its top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "simpsons":
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simpsons."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("simpsons.")}
    return names - {path.stem}


def test_no_import_cycle_lazy_imports_included():
    package = REPO_ROOT / "src" / "simpsons"
    graph = {path.stem: imported_modules(path) for path in package.glob("*.py")}
    finished: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(module):] + [module]))
        if module in finished:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, trail + [module])
        finished.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert "export" not in graph["prediction"] | graph["onnx_network"] | graph["backends"]
