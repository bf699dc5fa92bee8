"""The one ``Predictor`` that the command line, evaluation, video, labelling and web all use."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from simpsons.bundle import Bundle, load_bundle
from simpsons.data import open_rgb, resize_square
from simpsons.errors import SimpsonsError
from simpsons.export import OnnxNetwork

UNKNOWN = "unknown"


def default_model_path() -> Path:
    """The trained model shipped inside the package."""
    return Path(str(resources.files("simpsons") / "assets" / "default.simpsons"))


@dataclass
class Prediction:
    """One image's answer: the character (or ``unknown``), its probability and the top k."""

    character: str
    probability: float
    top_k: list[tuple[str, float]]
    best_guess: str

    def as_dict(self) -> dict:
        return {
            "character": self.character,
            "probability": round(self.probability, 6),
            "best_guess": self.best_guess,
            "top_k": [[name, round(p, 6)] for name, p in self.top_k],
        }


def softmax(logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
    """Probabilities from logits, divided by the temperature first when one is given."""
    scaled = np.asarray(logits, dtype=np.float64) / (temperature or 1.0)
    scaled -= scaled.max(axis=1, keepdims=True)
    exponentials = np.exp(scaled)
    return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype(np.float32)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling from probabilities: ``softmax(log(p) / T)``.

    ``log(p)`` equals the logits up to a per-row constant, so this is exact temperature
    scaling of the network's logits; ``T > 1`` softens, ``T < 1`` sharpens, ``T = 1`` is a no-op.
    """
    return softmax(np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-30, None)), temperature)


class Predictor:
    """Classifies RGB images with a bundle; batches internally and keeps one compiled function.

    ``raw=True`` gives the network's own probabilities: the bundle's temperature and thresholds
    are ignored (what the confidence study fits them on).
    """

    def __init__(self, bundle: Bundle, batch_size: int = 64, raw: bool = False):
        self.bundle = bundle
        self.characters = bundle.characters
        self.image_size = bundle.image_size
        self.threshold = None if raw else bundle.threshold
        self.character_thresholds = {} if raw else dict(bundle.character_thresholds or {})
        self.temperature = None if raw else bundle.temperature
        self.batch_size = batch_size
        self._features = None
        if isinstance(bundle.model, OnnxNetwork):  # an exported network gives logits already
            self.network = bundle.model
        else:  # Keras loads here, not at import: commands that need no network start fast
            from simpsons.models import logits_network

            self.network = logits_network(bundle.model)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Predictor:
        """A predictor for the bundle (or exported ``.onnx`` file) at ``path``, or the shipped default model."""
        if path is not None and str(path).endswith(".onnx"):
            from simpsons.export import load_onnx_bundle

            return cls(load_onnx_bundle(path))
        return cls(load_bundle(path or default_model_path()))

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Pixels as the model wants them: RGB, squashed to its input size."""
        return resize_square(image.convert("RGB"), self.image_size)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """The network's logits for a ``(n, size, size, 3)`` uint8 batch of any length."""
        if len(pixels) == 0:
            return np.zeros((0, len(self.characters)), np.float32)
        return self._in_batches(self.network, pixels)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """The pooled features behind the logits (the final layer's input) for a uint8 batch; Keras bundles only."""
        if self._features is None:
            if isinstance(self.bundle.model, OnnxNetwork):
                raise SimpsonsError("features need the Keras bundle, not an exported .onnx model")
            from simpsons.models import features_network

            self._features = features_network(self.bundle.model)
        if len(pixels) == 0:
            return np.zeros((0, self._features.output_shape[-1]), np.float32)
        return self._in_batches(self._features, pixels)

    def _in_batches(self, network, pixels: np.ndarray) -> np.ndarray:
        chunks = [
            np.asarray(network.predict_on_batch(pixels[start : start + self.batch_size].astype(np.float32)))
            for start in range(0, len(pixels), self.batch_size)
        ]
        return np.concatenate(chunks)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax probabilities for a ``(n, size, size, 3)`` uint8 batch of any length.

        With a ``temperature`` (from the bundle) they are temperature-scaled (calibrated).
        """
        return softmax(self.logits(pixels), self.temperature)

    def threshold_for(self, character: str) -> float | None:
        """The minimum probability for answering ``character``: its own threshold, else the global one."""
        return self.character_thresholds.get(character, self.threshold)

    def decide(self, probabilities: np.ndarray, top_k: int = 3) -> list[Prediction]:
        """Turn probability rows into predictions, answering ``unknown`` below the threshold.

        The threshold is the predicted character's own one when the bundle has it, else the global one.
        """
        predictions = []
        for row in probabilities:
            order = np.argsort(row)[::-1][: max(1, top_k)]
            best = self.characters[order[0]]
            probability = float(row[order[0]])
            threshold = self.threshold_for(best)
            accepted = threshold is None or probability >= threshold
            predictions.append(
                Prediction(
                    character=best if accepted else UNKNOWN,
                    probability=probability,
                    top_k=[(self.characters[i], float(row[i])) for i in order],
                    best_guess=best,
                )
            )
        return predictions

    def predict_images(self, images: list[Image.Image], top_k: int = 3) -> list[Prediction]:
        """Predictions for Pillow images (any mode)."""
        pixels = np.stack([self.prepare(image) for image in images]) if images else np.zeros((0,), np.uint8)
        return self.decide(self.probabilities(pixels), top_k)

    def predict_files(self, paths: list[str | Path], top_k: int = 3) -> list[Prediction]:
        """Predictions for image files; an unreadable file raises ``SimpsonsError``."""
        images = []
        for path in paths:
            try:
                images.append(open_rgb(path))
            except (OSError, ValueError, SyntaxError) as error:
                raise SimpsonsError(f"cannot read image {path}: {type(error).__name__}") from None
        return self.predict_images(images, top_k)
