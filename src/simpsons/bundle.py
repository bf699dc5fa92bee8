"""The model bundle: one file holding a trained classifier and everything needed to use it.

A bundle is a zip archive with ``model.keras`` (backend-neutral Keras format) and
``bundle.json`` (ordered character names, input size, preprocessing, optional threshold,
optional per-character thresholds, softmax temperature, stranger detector, flip test-time
augmentation and prior correction, training metadata). It loads under any Keras backend.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simpsons.errors import SimpsonsError
from simpsons.extras import import_tensorflow_quietly, require_training_extra
from simpsons.files import write_atomically

if TYPE_CHECKING:  # Keras (and its backend) loads only when a network does: the CLI starts fast
    import keras

FORMAT = "simpsons-model-bundle"
FORMAT_VERSION = 1
PREPROCESSING = {"color": "RGB", "resize": "squash", "resample": "bilinear", "input_range": [0, 255]}


@dataclass
class Bundle:
    """A classifier with its character names and how to feed it."""

    model: keras.Model  # or an ``OnnxNetwork`` (onnx_network.py), whose ``predict_on_batch`` gives logits
    characters: list[str]
    image_size: int
    threshold: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    character_thresholds: dict[str, float] | None = None
    temperature: float | None = None
    stranger_detector: dict[str, Any] | None = None  # ``StrangerDetector.description()`` (prediction.py)
    test_time_flip: bool = False  # answer from the mean of each picture and its mirror image
    prior_correction: dict[str, Any] | None = None  # ``PriorCorrection.description()`` (prediction.py)

    @classmethod
    def from_description(cls, model: Any, description: dict[str, Any]) -> Bundle:
        """A bundle of ``model`` with what a checked ``bundle.json`` says."""
        temperature = description.get("temperature")
        character_thresholds = description.get("character_thresholds") or None
        return cls(
            model=model,
            characters=list(description["characters"]),
            image_size=int(description["image_size"]),
            threshold=description.get("threshold"),
            metadata=description.get("metadata", {}),
            character_thresholds=character_thresholds and {str(k): float(v) for k, v in character_thresholds.items()},
            temperature=float(temperature) if temperature is not None else None,
            stranger_detector=description.get("stranger_detector"),
            test_time_flip=bool(description.get("test_time_flip", False)),
            prior_correction=description.get("prior_correction"),
        )

    def description(self) -> dict[str, Any]:
        """What ``bundle.json`` holds."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "characters": self.characters,
            "image_size": self.image_size,
            "preprocessing": PREPROCESSING,
            "threshold": self.threshold,
            "character_thresholds": self.character_thresholds,
            "temperature": self.temperature,
            "stranger_detector": self.stranger_detector,
            "test_time_flip": self.test_time_flip,
            "prior_correction": self.prior_correction,
            "metadata": self.metadata,
        }


def save_bundle(bundle: Bundle, path: str | Path) -> None:
    """Save the bundle as one file, atomically."""
    write_archive(bundle.model, bundle.description(), path)


def write_archive(model: keras.Model, description: dict[str, Any], path: str | Path) -> None:
    """A network and its description as one zip file (``model.keras`` and ``bundle.json``), written atomically:
    the container of every bundle the package writes (classifiers here, detectors in ``detection.bundle``)."""
    with tempfile.TemporaryDirectory() as scratch:
        model_file = Path(scratch) / "model.keras"
        model.save(model_file)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
            zipped.writestr("bundle.json", json.dumps(description, indent=2))
            zipped.write(model_file, "model.keras")
    write_atomically(path, archive.getvalue())


def rewrite_description(bundle: Bundle, path: str | Path) -> None:
    """Store ``bundle``'s description in the bundle file at ``path``, atomically, keeping its network file
    byte for byte (thresholds, temperature and metadata change; the network and its ONNX export stay valid)."""
    read_description(path)
    archive = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("bundle.json", json.dumps(bundle.description(), indent=2))
        for member in source.infolist():
            if member.filename != "bundle.json":
                zipped.writestr(member, source.read(member))
    write_atomically(path, archive.getvalue())


def network_fingerprint(path: str | Path) -> str:
    """What identifies the network file inside the bundle at ``path`` (its CRC-32 and size, read from the
    archive's directory): an ONNX export records it, so a stale export is never taken for the bundle's network."""
    try:
        with zipfile.ZipFile(path) as zipped:
            member = zipped.getinfo("model.keras")
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise SimpsonsError(f"not a simpsons model bundle: {path} ({type(error).__name__})") from None
    return f"{member.CRC:08x}-{member.file_size}"


def read_description(path: str | Path) -> dict[str, Any]:
    """Read and check ``bundle.json`` without loading the network."""
    return check_description(read_archive_description(path, "simpsons model bundle"), path)


def read_archive_description(path: str | Path, kind: str) -> Any:
    """The parsed ``bundle.json`` of the archive at ``path``; a missing or unreadable file raises
    ``SimpsonsError`` naming the ``kind`` of file expected."""
    path = Path(path)
    if not path.is_file():
        raise SimpsonsError(f"{kind.removeprefix('simpsons ')} not found: {path}")
    try:
        with zipfile.ZipFile(path) as zipped:
            return json.loads(zipped.read("bundle.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as error:
        raise SimpsonsError(f"not a {kind}: {path} ({type(error).__name__})") from None


def check_description(description: Any, path: str | Path) -> dict[str, Any]:
    """Refuse a description that is not a simpsons bundle's, or one from a newer version."""
    if not isinstance(description, dict):
        raise SimpsonsError(f"not a simpsons model bundle: {path} (bundle.json is not an object)")
    if description.get("format") != FORMAT:
        raise SimpsonsError(f"not a simpsons model bundle: {path} (format {description.get('format')!r})")
    if description.get("version", 0) > FORMAT_VERSION:
        raise SimpsonsError(f"{path} was written by a newer simpsons (bundle version {description['version']})")
    temperature = description.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise SimpsonsError(f"not a simpsons model bundle: {path} (temperature {temperature!r} is not positive)")
    detector = description.get("stranger_detector")
    if detector is not None and not (isinstance(detector, dict) and {"weights", "bias", "threshold"} <= set(detector)):
        raise SimpsonsError(f"not a simpsons model bundle: {path} "
                            "(its stranger detector lacks weights, bias or threshold)")
    _check_prior_correction(description, path)
    return description


def _check_prior_correction(description: dict[str, Any], path: str | Path) -> None:
    """Refuse a prior correction without a strength of at least 0 and one positive count per class."""
    correction = description.get("prior_correction")
    if correction is None:
        return
    counts = correction.get("training_counts") if isinstance(correction, dict) else None
    strength = correction.get("strength") if isinstance(correction, dict) else None
    if not (isinstance(strength, (int, float)) and strength >= 0 and isinstance(counts, list)
            and len(counts) == len(description.get("characters", [])) and all(
                isinstance(count, (int, float)) and count > 0 for count in counts)):
        raise SimpsonsError(f"not a simpsons model bundle: {path} (its prior correction needs a strength of at "
                            "least 0 and a positive training count for each character)")


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle with its Keras network; a corrupt or foreign file raises ``SimpsonsError``, and so does
    an install without Keras (the ``train`` extra)."""
    description = read_description(path)
    return Bundle.from_description(load_archive_network(path), description)


def load_archive_network(path: str | Path) -> keras.Model:
    """The Keras network in the archive at ``path`` (the ``train`` extra); a damaged one raises ``SimpsonsError``."""
    require_training_extra(f"the Keras network of {path}")
    import_tensorflow_quietly()
    import keras

    with tempfile.TemporaryDirectory() as scratch:
        model_file = Path(scratch) / "model.keras"
        try:
            with zipfile.ZipFile(path) as zipped:
                model_file.write_bytes(zipped.read("model.keras"))
            return keras.saving.load_model(model_file, compile=False)
        except Exception as error:  # Keras raises many kinds for a damaged model file
            raise SimpsonsError(f"the network in {path} cannot be loaded: {str(error)[:120]}") from None
