"""The model bundle: one file holding a trained classifier and everything needed to use it.

A bundle is a zip archive with ``model.keras`` (backend-neutral Keras format) and ``bundle.json``, its
``Description``: ordered character names, input size, preprocessing, optional threshold, optional
per-character thresholds, softmax temperature, stranger detector, flip test-time augmentation, prior
correction and training metadata. It loads under any Keras backend. ``bundle.json`` is parsed and
checked once, into typed parts, when a bundle is read; a description in an older format is first
brought to the current one by ``migrate``.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from simpsons.errors import SimpsonsError
from simpsons.extras import import_tensorflow_quietly, require_training_extra
from simpsons.files import write_atomically

if TYPE_CHECKING:  # Keras (and its backend) loads only when a network does: the CLI starts fast
    import keras

FORMAT = "simpsons-model-bundle"
FORMAT_VERSION = 2
PREPROCESSING = {"color": "RGB", "resize": "squash", "resample": "bilinear", "input_range": [0, 255]}
ANSWER_FIGURES = ("max logit", "best probability")  # what a stranger detector can read of the network's answer


class Network(Protocol):
    """What answers for a bundle: its Keras classifier, or an ``OnnxNetwork`` (onnx_network.py) that gives
    logits and features."""

    def predict_on_batch(self, pixels: np.ndarray, /) -> Any: ...


def sigmoid(values: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-values))


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its length (zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class StrangerDetector:
    """Tells pictures of the characters a model knows from pictures of others.

    A linear model on the unit-length pooled features, plus one figure of the network's answer
    (``answer``: its max logit, or its best temperature-scaled probability) times ``answer_weight``, all
    fitted by the confidence study: its sigmoid is the picture's *familiarity*, 0..1, the chance (known
    and unknown weighted equally) that it shows a character the model knows; below ``threshold`` the
    answer is ``unknown``. ``fitted``: how it was fitted and what it measured, as the study reports it.
    """

    weights: np.ndarray
    bias: float
    threshold: float
    answer_weight: float = 0.0
    answer: str = "best probability"
    fitted: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, description: Any) -> StrangerDetector:
        """The detector a format-2 ``bundle.json`` stores; ``SimpsonsError`` naming what is wrong."""
        if not isinstance(description, dict) or not all(
                _number(description.get(key)) for key in ("bias", "threshold", "answer_weight")):
            raise SimpsonsError("its stranger detector lacks weights, bias, threshold or answer_weight")
        weights = description.get("weights")
        if not (isinstance(weights, list) and weights and all(_number(weight) for weight in weights)):
            raise SimpsonsError("its stranger detector lacks weights, bias, threshold or answer_weight")
        if description.get("answer") not in ANSWER_FIGURES:
            raise SimpsonsError(f"the stranger detector reads {description.get('answer')!r}; this version knows "
                                f"{' and '.join(ANSWER_FIGURES)}")
        return cls(np.asarray(weights, np.float64), float(description["bias"]), float(description["threshold"]),
                   float(description["answer_weight"]), description["answer"], dict(description.get("fitted") or {}))

    def as_json(self) -> dict[str, Any]:
        """What the bundle stores."""
        return {"weights": [float(w) for w in self.weights], "bias": self.bias, "threshold": self.threshold,
                "answer_weight": self.answer_weight, "answer": self.answer, "fitted": self.fitted}

    def logits(self, features: np.ndarray, answer: np.ndarray) -> np.ndarray:
        """The linear model's value per picture, before the sigmoid (``answer``: the figure it reads)."""
        return unit_rows(features) @ self.weights + self.bias + self.answer_weight * answer

    def familiarity(self, features: np.ndarray, answer: np.ndarray) -> np.ndarray:
        """Per picture, from the network's pooled features and its answer figure: higher means more like
        the known characters."""
        return sigmoid(self.logits(features, answer))

    def scaled(self, slope: float, intercept: float) -> StrangerDetector:
        """The detector whose logits are ``slope * logits + intercept``: the same order, another sigmoid."""
        return StrangerDetector(self.weights * slope, self.bias * slope + intercept, self.threshold,
                                self.answer_weight * slope, self.answer)


@dataclass
class PriorCorrection:
    """Logit adjustment towards every character being equally likely (Menon et al., 2021, "Long-tail
    learning via logit adjustment"): each logit lowered by ``strength`` times the log of that character's
    share of the training pictures, so that a frequent character no longer wins close calls for being
    frequent. ``strength`` 0 changes nothing; 1 removes the whole training prior."""

    strength: float
    training_counts: list[int]

    @classmethod
    def from_json(cls, description: Any, characters: int) -> PriorCorrection:
        """The correction a ``bundle.json`` stores for ``characters`` classes; ``SimpsonsError`` when it lacks
        a strength of at least 0 or one positive count per class."""
        strength = description.get("strength") if isinstance(description, dict) else None
        counts = description.get("training_counts") if isinstance(description, dict) else None
        if not (_number(strength) and strength >= 0 and isinstance(counts, list) and len(counts) == characters
                and all(_number(count) and count > 0 for count in counts)):
            raise SimpsonsError("its prior correction needs a strength of at least 0 and a positive training count "
                                "for each character")
        return cls(float(strength), [int(count) for count in counts])

    def as_json(self) -> dict[str, Any]:
        return {"strength": self.strength, "training_counts": self.training_counts}

    def offsets(self) -> np.ndarray:
        """What is added to each character's logit."""
        counts = np.asarray(self.training_counts, dtype=np.float64)
        return (-self.strength * np.log(counts / counts.sum())).astype(np.float32)


@dataclass
class Description:
    """What ``bundle.json`` says: everything of a bundle but its network."""

    characters: list[str]
    image_size: int
    threshold: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    character_thresholds: dict[str, float] | None = None
    temperature: float | None = None
    stranger_detector: StrangerDetector | None = None
    test_time_flip: bool = False  # answer from the mean of each picture and its mirror image
    prior_correction: PriorCorrection | None = None

    def as_json(self) -> dict[str, Any]:
        """What ``bundle.json`` holds (the current format)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "characters": self.characters,
            "image_size": self.image_size,
            "preprocessing": PREPROCESSING,
            "threshold": self.threshold,
            "character_thresholds": self.character_thresholds,
            "temperature": self.temperature,
            "stranger_detector": self.stranger_detector and self.stranger_detector.as_json(),
            "test_time_flip": self.test_time_flip,
            "prior_correction": self.prior_correction and self.prior_correction.as_json(),
            "metadata": self.metadata,
        }


@dataclass(kw_only=True)
class Bundle(Description):
    """A classifier with its character names and how to feed it."""

    model: Network

    @classmethod
    def from_description(cls, model: Network, description: Description) -> Bundle:
        """A bundle of ``model`` with what a parsed ``bundle.json`` says."""
        return cls(model=model, **{part.name: getattr(description, part.name) for part in fields(Description)})


FORMAT_1_DEFAULTS: dict[str, Any] = {"threshold": None, "character_thresholds": None, "temperature": None,
                                     "stranger_detector": None, "test_time_flip": False, "prior_correction": None,
                                     "metadata": {}}


def migrate(description: dict[str, Any]) -> dict[str, Any]:
    """A format-1 description (or one without a version) as format 2, unchanged otherwise.

    Format 1 grew field by field: a field it lacks takes the value that meant "none" (no thresholds,
    temperature, stranger detector, prior correction or flip; empty metadata); a stranger detector
    without ``answer`` reads the best probability, with its weight stored as ``probability_weight``
    (or none: 0).
    """
    if description.get("version", 0) >= FORMAT_VERSION:
        return description
    migrated = {**FORMAT_1_DEFAULTS, **description, "version": FORMAT_VERSION}
    detector = migrated["stranger_detector"]
    if isinstance(detector, dict):
        detector = {"answer": "best probability", **detector}
        detector["answer_weight"] = detector.pop("probability_weight", detector.get("answer_weight", 0.0))
        migrated["stranger_detector"] = detector
    return migrated


def parse_description(raw: Any, path: str | Path) -> Description:
    """The typed description of a ``bundle.json`` (read from ``path``): checked, and migrated when older.

    A foreign, damaged or newer one raises a one-line ``SimpsonsError``."""
    if not isinstance(raw, dict):
        raise SimpsonsError(f"not a simpsons model bundle: {path} (bundle.json is not an object)")
    if raw.get("format") != FORMAT:
        raise SimpsonsError(f"not a simpsons model bundle: {path} (format {raw.get('format')!r})")
    version = raw.get("version", 0)
    if not _number(version):
        raise SimpsonsError(f"not a simpsons model bundle: {path} (version {version!r})")
    if version > FORMAT_VERSION:
        raise SimpsonsError(f"{path} was written by a newer simpsons (bundle version {version})")
    try:
        return _typed(migrate(raw))
    except SimpsonsError as error:
        raise SimpsonsError(f"not a simpsons model bundle: {path} ({error})") from None


def _typed(description: dict[str, Any]) -> Description:
    """The parts of a format-2 description, each checked."""
    missing = [part.name for part in fields(Description) if part.name not in description]
    if missing:
        raise SimpsonsError(f"bundle.json lacks {', '.join(missing)}")
    characters, image_size = description["characters"], description["image_size"]
    if not (isinstance(characters, list) and characters and all(isinstance(name, str) for name in characters)):
        raise SimpsonsError("its characters are not a list of names")
    if not (isinstance(image_size, int) and image_size > 0):
        raise SimpsonsError(f"image size {image_size!r} is not a positive whole number")
    threshold, temperature = description["threshold"], description["temperature"]
    if threshold is not None and not _number(threshold):
        raise SimpsonsError(f"threshold {threshold!r} is not a number")
    if temperature is not None and not (_number(temperature) and temperature > 0):
        raise SimpsonsError(f"temperature {temperature!r} is not positive")
    if not isinstance(description["metadata"], dict):
        raise SimpsonsError("its metadata is not an object")
    detector, correction = description["stranger_detector"], description["prior_correction"]
    return Description(
        characters=list(characters),
        image_size=image_size,
        threshold=None if threshold is None else float(threshold),
        metadata=description["metadata"],
        character_thresholds=_character_thresholds(description["character_thresholds"]),
        temperature=None if temperature is None else float(temperature),
        stranger_detector=None if detector is None else StrangerDetector.from_json(detector),
        test_time_flip=bool(description["test_time_flip"]),
        prior_correction=None if correction is None else PriorCorrection.from_json(correction, len(characters)),
    )


def _character_thresholds(thresholds: Any) -> dict[str, float] | None:
    """Per-character thresholds as stored (an empty mapping means none)."""
    if not thresholds:
        return None
    if not (isinstance(thresholds, dict) and all(_number(value) for value in thresholds.values())):
        raise SimpsonsError("its character thresholds are not numbers by name")
    return {str(name): float(value) for name, value in thresholds.items()}


def save_bundle(bundle: Bundle, path: str | Path) -> None:
    """Save the bundle (its network a Keras model) as one file, atomically."""
    if not hasattr(bundle.model, "save"):
        raise SimpsonsError(f"only a Keras network can be saved as a bundle, not {type(bundle.model).__name__}")
    write_archive(bundle.model, bundle.as_json(), path)


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


def rewrite_description(bundle: Description, path: str | Path) -> None:
    """Store ``bundle``'s description in the bundle file at ``path``, atomically, keeping its network file
    byte for byte (thresholds, temperature and metadata change; the network and its ONNX export stay valid)."""
    read_description(path)
    archive = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("bundle.json", json.dumps(bundle.as_json(), indent=2))
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


def read_description(path: str | Path) -> Description:
    """Read and check ``bundle.json`` without loading the network."""
    return parse_description(read_archive_description(path, "simpsons model bundle"), path)


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
