"""The two installs: the base package answers through ONNX Runtime; the ``train`` extra adds Keras,
TensorFlow and the ONNX exporter, which training, export, calibration and ``--backend keras`` need."""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec

from simpsons.errors import SimpsonsError

TRAINING_MODULES = ("keras", "tensorflow", "tf2onnx", "onnx")
TRAINING_INSTALL = "pip install 'simpsons[train]'"


def training_extra_installed() -> bool:
    """Whether the ``train`` extra's packages are importable (checked without importing them)."""
    return all(find_spec(module) is not None for module in TRAINING_MODULES)


def require_training_extra(task: str) -> None:
    """Raise ``SimpsonsError`` naming the install command when the ``train`` extra is missing."""
    if not training_extra_installed():
        missing = ", ".join(module for module in TRAINING_MODULES if find_spec(module) is None)
        raise SimpsonsError(f"{task} needs the training extra (missing: {missing}): {TRAINING_INSTALL}")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the process's stderr closed for the moment: on some CPUs (Intel, with
    oneDNN) it prints notices that TF_CPP_MIN_LOG_LEVEL does not silence, before any answer."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    except ImportError:
        pass  # Keras says what is missing when it needs its backend
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
