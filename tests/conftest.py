"""Shared fixtures: the sample images, a temporary cache, the shared data and small model bundles."""

from __future__ import annotations

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # before anything imports keras / tensorflow

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import SAMPLES, TEST_CHARACTERS, build_training_folder, make_bundle  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared: needs the real data set in ../shared/data (fails under CI if missing)")
    # Keras 3 on NumPy 2 warns about its own __array__ on every predict: noise, not the project's
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")
    # Keras' bundled tf2onnx helper probes np.object: a NumPy FutureWarning, not the project's
    config.addinivalue_line("filterwarnings", "ignore:In the future `np.object` will be defined")


@pytest.fixture(scope="session", autouse=True)
def simpsons_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Keep every decoded-image cache of the test run in a temporary folder, never in ~/.cache."""
    folder = tmp_path_factory.mktemp("simpsons-cache")
    previous = os.environ.get("SIMPSONS_CACHE_DIR")
    os.environ["SIMPSONS_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("SIMPSONS_CACHE_DIR", None)
    else:
        os.environ["SIMPSONS_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data set beside the repository: fails under CI when missing, skips otherwise."""
    root = (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()
    if not (root / "simpsons").is_dir():
        message = f"the shared data set is missing: {root}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    assert len(list(SAMPLES.glob("*.jpg"))) == 60, "the repository's samples/ folder should hold 60 JPEGs"
    return SAMPLES


@pytest.fixture(scope="session")
def sample_paths(samples_dir: Path) -> list[Path]:
    return sorted(samples_dir.glob("*.jpg"))


@pytest.fixture(scope="session")
def training_folder(sample_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three characters, 12 real-derived images each; shared read-only by the training tests."""
    return build_training_folder(
        sample_paths, tmp_path_factory.mktemp("data") / "train", ["bart_simpson", "homer_simpson", "lisa_simpson"]
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px ``article_cnn`` bundle for the 20 test characters (random weights: its answers mean nothing)."""
    path = tmp_path_factory.mktemp("bundles") / "tiny.simpsons"
    make_bundle(path, TEST_CHARACTERS)
    return path




@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 px detector bundle for three characters (random weights: its answers mean nothing)."""
    import keras

    from simpsons.detection.bundle import DetectorBundle, save_detector
    from simpsons.detection.model import build_detector

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("detectors") / "tiny.detector.simpsons"
    model = build_detector(3, 64, width=16)
    save_detector(DetectorBundle(model, ["bart_simpson", "homer_simpson", "lisa_simpson"], 64, 8,
                                 {"note": "made by the tests"}), path)
    return path
