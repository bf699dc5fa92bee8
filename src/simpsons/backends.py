"""Which engine runs a bundle's network: ONNX Runtime by default, Keras when asked or when it must.

``model.simpsons`` runs through ONNX Runtime when ``model.onnx`` beside it was exported from the
network it holds (``simpsons export model.simpsons --onnx model.onnx``; the shipped model comes with
its own). The description (characters, thresholds, temperature, prior correction, stranger detector,
flip) is always the bundle's, so rewriting those after the export needs no new export. A bundle
without an up-to-date export runs with Keras when the ``train`` extra is installed; an exported
``.onnx`` file given alone runs with the description stored in it. A detector finds its export the same
way (``detection.bundle``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from simpsons.bundle import Bundle, load_bundle, network_fingerprint, read_description
from simpsons.errors import SimpsonsError
from simpsons.extras import TRAINING_INSTALL, training_extra_installed
from simpsons.onnx_network import OnnxNetwork, load_onnx_bundle, load_onnx_network

BACKENDS = ("onnx", "keras")
ONNX_SUFFIX = ".onnx"
log = logging.getLogger(__name__)


def exported_network_path(bundle_path: str | Path) -> Path:
    """Where a bundle's ONNX export lives: beside it, with the ``.onnx`` suffix."""
    return Path(bundle_path).with_suffix(ONNX_SUFFIX)


def exported_network(bundle_path: str | Path,
                     load: Callable[[Path], OnnxNetwork] = load_onnx_network) -> OnnxNetwork | None:
    """The ONNX network beside the bundle when it was exported from the network the bundle holds, else
    ``None`` (a stale export gets a warning: it is never used). ``load`` reads and checks the export
    (a classifier's unless told)."""
    exported = exported_network_path(bundle_path)
    if not exported.is_file():
        return None
    network = load(exported)
    if network.source == network_fingerprint(bundle_path):
        return network
    log.warning("%s was not exported from the network in %s: not used (simpsons export %s --onnx %s "
                "brings it up to date)", exported, bundle_path, bundle_path, exported)
    return None


def no_export_error(bundle_path: str | Path, keras_possible: bool = True) -> SimpsonsError:
    """Why a bundle without an up-to-date export cannot answer, and how to export it (and, when Keras could
    answer instead, that installing the extra does)."""
    exported = exported_network_path(bundle_path)
    return SimpsonsError(f"{bundle_path} has no up-to-date ONNX export beside it: run `simpsons export {bundle_path} "
                         f"--onnx {exported}` (with the training extra, {TRAINING_INSTALL})"
                         + (", or answer with Keras after installing it" if keras_possible else ""))


def load_for_inference(path: str | Path, backend: str | None = None) -> Bundle:
    """The bundle (or exported ``.onnx`` file) at ``path`` with the network that answers for it.

    ``backend`` ``"onnx"``: ONNX Runtime, or ``SimpsonsError``; ``"keras"``: Keras (the ``train`` extra);
    ``None``: ONNX Runtime when the bundle has an up-to-date export beside it, else Keras.
    """
    if backend not in (None, *BACKENDS):
        raise SimpsonsError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    path = Path(path)
    if path.suffix == ONNX_SUFFIX:
        if backend == "keras":
            raise SimpsonsError(f"{path} is an exported network: it runs with ONNX Runtime only (give its "
                                ".simpsons bundle for the Keras backend)")
        return load_onnx_bundle(path)
    if backend == "keras":
        return load_bundle(path)
    description = read_description(path)
    network = exported_network(path)
    if network is not None:
        return Bundle.from_description(network, description)
    if backend == "onnx" or not training_extra_installed():
        raise no_export_error(path, keras_possible=backend != "onnx")
    return load_bundle(path)
