"""The Python API: ``import simpsons`` stays light, ``load_model``/``predict`` take every kind of picture,
``analyse_video`` and ``evaluate`` agree with the command line, and the README's Python examples run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, TEST_CHARACTERS, open_sample
from test_cli import run_cli
from test_video import FPS, write_clip

import simpsons
from simpsons.bundle import load_bundle
from simpsons.errors import SimpsonsError
from simpsons.export import export_onnx
from simpsons.prediction import Prediction, Predictor

HEAVY_MODULES = ("keras", "tensorflow", "matplotlib", "torch", "jax", "sklearn", "onnxruntime", "av")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def run_python(code: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that imports this checkout's ``simpsons``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def model() -> simpsons.Model:
    return simpsons.load_model()


# --------------------------------------------------------------------------- the package itself


def test_import_is_light_and_the_backend_loads_on_first_use():
    probe = ("import json, sys, time\n"
             "began = time.perf_counter()\n"
             "import simpsons\n"
             "seconds = time.perf_counter() - began\n"
             f"heavy = lambda: sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)\n"
             "after_import = heavy()\n"
             "functions = [getattr(simpsons, name) for name in simpsons.__all__]\n"
             "print(json.dumps({'seconds': seconds, 'after_import': after_import, 'after_names': heavy()}))\n")
    result = run_python(probe)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["after_import"] == [] and report["after_names"] == [], report
    assert report["seconds"] < 1.0, report


def test_all_names_the_api():
    assert set(simpsons.__all__) >= {"load_model", "analyse_video", "evaluate", "Prediction", "Model", "__version__"}
    assert all(hasattr(simpsons, name) for name in simpsons.__all__)
    assert simpsons.Prediction is Prediction
    with pytest.raises(AttributeError):
        simpsons.no_such_name  # noqa: B018


def test_version_is_the_package_version(capsys):
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert simpsons.__version__ == declared
    with pytest.raises(SystemExit) as stopped:
        run_cli(capsys, "--version")
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"simpsons {declared}"


# --------------------------------------------------------------------------- load_model and predict


def test_characters_are_the_models_in_order(model):
    assert model.characters == TEST_CHARACTERS
    model.characters.append("someone")
    assert model.characters == TEST_CHARACTERS


def test_one_path_gives_one_prediction_like_the_predictor(model):
    path = REPO_ROOT / "samples" / "bart_simpson_0.jpg"
    answer = model.predict(str(path), top_k=5)
    expected = Predictor.load().predict_files([path], top_k=5)[0]

    assert isinstance(answer, Prediction)
    assert answer.best_guess == expected.best_guess == "bart_simpson"
    assert answer.character in (answer.best_guess, "unknown")
    assert answer.probability == pytest.approx(expected.probability, abs=1e-5)
    assert answer.familiarity == pytest.approx(expected.familiarity, abs=1e-5)
    assert len(answer.top_k) == 5 and answer.top_k[0] == (answer.best_guess, pytest.approx(answer.probability))
    assert [p for _, p in answer.top_k] == sorted((p for _, p in answer.top_k), reverse=True)


def test_every_kind_of_input_gives_the_same_answer(model):
    path = REPO_ROOT / "samples" / "homer_simpson_1.jpg"
    picture = open_sample(path)
    inputs = [str(path), path, picture, picture.convert("L"), np.asarray(picture)]
    answers = [model.predict(x) for x in inputs]

    reference = answers[0]
    for answer in answers[1:3] + answers[4:]:
        assert answer.best_guess == reference.best_guess
        assert answer.probability == pytest.approx(reference.probability, abs=1e-5)
    assert answers[3].best_guess in model.characters  # greyscale is turned into RGB, not refused


def test_a_list_gives_a_list_in_order(model):
    paths = sorted((REPO_ROOT / "samples").glob("*_0.jpg"))[:4]
    mixed = [paths[0], str(paths[1]), open_sample(paths[2]), np.asarray(open_sample(paths[3]))]
    answers = model.predict(mixed, top_k=2)
    one_by_one = [model.predict(path, top_k=2) for path in paths]

    assert isinstance(answers, list) and len(answers) == 4
    assert [a.best_guess for a in answers] == [a.best_guess for a in one_by_one]
    assert all(len(a.top_k) == 2 for a in answers)
    assert model.predict(tuple(paths[:2]))[1].best_guess == one_by_one[1].best_guess
    assert model.predict([]) == []


@pytest.mark.parametrize("bad, message", [
    (np.zeros((32, 32, 3), np.float32), "uint8"),
    (np.zeros((32, 32), np.uint8), "shape"),
    (b"bytes", "not bytes"),
])
def test_pictures_it_cannot_take_raise_a_clear_error(model, bad, message):
    with pytest.raises(SimpsonsError, match=message):
        model.predict(bad)


def test_unreadable_or_missing_files_raise_a_clear_error(model, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    with pytest.raises(SimpsonsError, match="cannot read image"):
        model.predict([REPO_ROOT / "samples" / "bart_simpson_0.jpg", broken])
    with pytest.raises(SimpsonsError, match="cannot read image"):
        model.predict(tmp_path / "missing.jpg")
    with pytest.raises(SimpsonsError, match="top_k"):
        model.predict(broken, top_k=0)
    with pytest.raises(SimpsonsError, match="not found"):
        simpsons.load_model(tmp_path / "missing.simpsons")


def test_a_bundle_and_its_onnx_export_load_alike(tiny_bundle, tmp_path, sample_paths):
    target = tmp_path / "tiny.onnx"
    export_onnx(load_bundle(tiny_bundle), target)
    from_keras, from_onnx = simpsons.load_model(tiny_bundle), simpsons.load_model(target)

    assert from_keras.characters == from_onnx.characters == TEST_CHARACTERS
    by_keras, by_onnx = from_keras.predict(sample_paths[:6]), from_onnx.predict(sample_paths[:6])
    assert [a.best_guess for a in by_onnx] == [a.best_guess for a in by_keras]
    np.testing.assert_allclose([a.probability for a in by_onnx], [a.probability for a in by_keras], atol=1e-4)


# --------------------------------------------------------------------------- evaluate and analyse_video


def test_evaluate_gives_the_figures_of_the_command_line(model, capsys, samples_dir, tmp_path):
    metrics = simpsons.evaluate(samples_dir, model)
    code, _, _ = run_cli(capsys, "evaluate", samples_dir, "--json", tmp_path / "metrics.json")
    written = json.loads((tmp_path / "metrics.json").read_text())

    assert code == 0
    assert metrics.images == written["images"] == 60
    assert metrics.accuracy == pytest.approx(written["accuracy"])
    assert metrics.top1_accuracy == pytest.approx(written["top1_accuracy"])
    assert metrics.macro_f1 == pytest.approx(written["macro_f1"])
    assert metrics.accuracy <= metrics.top1_accuracy
    assert set(metrics.per_character) == set(TEST_CHARACTERS)
    assert metrics.details["confusion_matrix"] == written["confusion_matrix"]


def test_evaluate_sets_unknown_characters_apart_and_refuses_a_set_without_known_ones(model, samples_dir, tmp_path):
    only_strangers = tmp_path / "strangers"
    only_strangers.mkdir()
    open_sample(samples_dir / "bart_simpson_0.jpg").save(only_strangers / "maggie_simpson_1.jpg")
    with pytest.raises(SimpsonsError, match="none of the images"):
        simpsons.evaluate(only_strangers, model)

    open_sample(samples_dir / "lisa_simpson_0.jpg").save(only_strangers / "lisa_simpson_1.jpg")
    metrics = simpsons.evaluate(only_strangers, model)
    assert metrics.images == 1 and metrics.unknown_characters == {"maggie_simpson": 1}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of Bart, then 2 s of Homer."""
    pictures = [("bart_simpson_2.jpg", 2 * FPS), ("homer_simpson_0.jpg", 2 * FPS)]
    return write_clip(tmp_path_factory.mktemp("clips") / "bart_then_homer.mp4", pictures)


def test_analyse_video_gives_the_timeline_as_objects(model, clip):
    timeline = simpsons.analyse_video(clip, model, sample_fps=4, crops=["full"])

    assert timeline.video.frames == 4 * FPS and len(timeline.samples) == 16
    assert all(set(sample.crops) == {"full"} for sample in timeline.samples)
    main = [s for s in timeline.segments if s.character in ("bart_simpson", "homer_simpson")]
    assert [s.character for s in main] == ["bart_simpson", "homer_simpson"], timeline.segments
    assert main[0].start == pytest.approx(0.0, abs=0.3) and main[1].end == pytest.approx(4.0, abs=0.3)
    for name, seconds in timeline.screen_time.items():
        assert seconds == pytest.approx(sum(s.duration for s in timeline.segments if s.character == name))
    assert list(timeline.screen_time)[:2] == sorted(["bart_simpson", "homer_simpson"],
                                                     key=lambda name: -timeline.screen_time[name])


def test_analyse_video_refuses_unknown_crops_and_missing_files(model, clip, tmp_path):
    with pytest.raises(SimpsonsError, match="crops"):
        simpsons.analyse_video(clip, model, crops=["middle"])
    with pytest.raises(SimpsonsError):
        simpsons.analyse_video(tmp_path / "missing.mp4", model)


# --------------------------------------------------------------------------- the README's examples


def readme_python_blocks() -> list[str]:
    return PYTHON_BLOCK.findall((REPO_ROOT / "README.md").read_text())


def test_readme_python_example_runs_as_written():
    blocks = readme_python_blocks()
    assert blocks, "the README should show the Python API in a ```python block"
    result = run_python(blocks[0])
    assert result.returncode == 0, result.stderr
    assert "bart_simpson" in result.stdout, result.stdout


def test_readme_video_example_runs_as_written(shared_data):
    blocks = [block for block in readme_python_blocks() if "analyse_video" in block]
    assert blocks, "the README should show analyse_video in a ```python block"
    result = run_python(blocks[0])
    assert result.returncode == 0, result.stderr
    assert "bart_simpson" in result.stdout, result.stdout
