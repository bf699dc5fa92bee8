"""The one ``Predictor`` that the command line, evaluation, video, labelling and web all use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from simpsons.backends import load_for_inference
from simpsons.bundle import Bundle, Network, StrangerDetector
from simpsons.data import open_rgb, resize_square
from simpsons.errors import SimpsonsError
from simpsons.onnx_network import OnnxNetwork

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
    familiarity: float | None = None

    def as_dict(self) -> dict:
        return {
            "character": self.character,
            "probability": round(self.probability, 6),
            "best_guess": self.best_guess,
            "top_k": [[name, round(p, 6)] for name, p in self.top_k],
            "familiarity": None if self.familiarity is None else round(self.familiarity, 6),
        }


def answer_figure(answer: str, logits: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per picture, the figure ``answer`` (one of ``bundle.ANSWER_FIGURES``) of the network's answer: the max of
    its logits or of its (temperature-scaled) probabilities. What a stranger detector is fitted on and reads."""
    source = np.asarray(logits if answer == "max logit" else probabilities, dtype=np.float64)
    return source.max(axis=1) if len(source) else np.zeros(0)


@dataclass
class Scores:
    """What the network says about a batch of pictures: probabilities and, with a stranger detector, familiarity."""

    probabilities: np.ndarray
    familiarity: np.ndarray | None = None

    def __getitem__(self, rows: slice) -> Scores:
        return Scores(self.probabilities[rows], None if self.familiarity is None else self.familiarity[rows])


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

    ``raw=True`` gives the network's own probabilities: the bundle's temperature, thresholds and
    stranger detector are ignored (what the confidence study fits them on). The bundle's flip
    test-time augmentation and prior correction are part of the network's answer, raw or not. The
    network is the bundle's Keras model or its ONNX export: everything around it is the same code.
    """

    def __init__(self, bundle: Bundle, batch_size: int = 64, raw: bool = False):
        self.bundle = bundle
        self.characters = bundle.characters
        self.image_size = bundle.image_size
        self.threshold = None if raw else bundle.threshold
        self.character_thresholds = {} if raw else dict(bundle.character_thresholds or {})
        self.temperature = None if raw else bundle.temperature
        self.stranger_detector: StrangerDetector | None = None if raw else bundle.stranger_detector
        correction = bundle.prior_correction
        self.logit_offsets = None if correction is None else correction.offsets()
        self.batch_size = batch_size

    @cached_property
    def network(self) -> Network:
        """What gives logits and features, built at its first use (a subclass that answers from another
        predictor never builds it). Keras loads here, not at import: commands that need no network start fast."""
        if isinstance(self.bundle.model, OnnxNetwork):  # an exported network gives logits and features already
            return self.bundle.model
        from simpsons.models import scoring_network

        return scoring_network(self.bundle.model)

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str | None = None) -> Predictor:
        """A predictor for the bundle (or exported ``.onnx`` file) at ``path``, or the shipped default model.

        ``backend``: ``"onnx"`` (ONNX Runtime), ``"keras"``, or ``None``: ONNX Runtime when the bundle has
        an up-to-date export beside it (the shipped model has), else Keras (see ``backends``)."""
        return cls(load_for_inference(path or default_model_path(), backend))

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Pixels as the model wants them: RGB, squashed to its input size."""
        return resize_square(image.convert("RGB"), self.image_size)

    def logits_and_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's logits (with the bundle's prior correction) and the pooled features behind them
        (the final layer's input), in one pass, for a ``(n, size, size, 3)`` uint8 batch of any length."""
        if len(pixels) == 0:  # the network's answer to one blank picture gives the shapes
            logits, features = self.logits_and_features(np.zeros((1, self.image_size, self.image_size, 3), np.uint8))
            return logits[:0], features[:0]
        chunks = [self._network_outputs(pixels[start : start + self.batch_size])
                  for start in range(0, len(pixels), self.batch_size)]
        logits, features = (np.concatenate([chunk[output] for chunk in chunks]) for output in (0, 1))
        return (logits if self.logit_offsets is None else logits + self.logit_offsets), features

    def _network_outputs(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and features of one batch; with the bundle's flip, the means over each picture and its
        mirror image (both in one network call; the mean logits are the logits of the mean features)."""
        batch = pixels.astype(np.float32)
        if not self.bundle.test_time_flip:
            logits, features = self.network.predict_on_batch(batch)[:2]
            return np.asarray(logits), np.asarray(features)
        logits, features = (np.asarray(output) for output in
                            self.network.predict_on_batch(np.concatenate([batch, batch[:, :, ::-1]]))[:2])
        rows = len(batch)
        return (logits[:rows] + logits[rows:]) / 2, (features[:rows] + features[rows:]) / 2

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """The network's logits (with the bundle's prior correction) for a uint8 batch of any length."""
        return self.logits_and_features(pixels)[0]

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """The pooled features behind the logits for a uint8 batch of any length."""
        return self.logits_and_features(pixels)[1]

    def familiarity(self, logits: np.ndarray, features: np.ndarray, probabilities: np.ndarray) -> np.ndarray | None:
        """The stranger detector's familiarity of each picture (from its features, logits and
        temperature-scaled probabilities); ``None`` without a detector."""
        if self.stranger_detector is None:
            return None
        detector = self.stranger_detector
        return detector.familiarity(features, answer_figure(detector.answer, logits, probabilities))

    def score(self, pixels: np.ndarray) -> Scores:
        """Probabilities (temperature-scaled when the bundle has a temperature) and familiarity of a uint8 batch."""
        return self.scores_from(*self.logits_and_features(pixels))

    def scores_from(self, logits: np.ndarray, features: np.ndarray) -> Scores:
        """``score``'s answer from the network's outputs, for callers that keep those too."""
        probabilities = softmax(logits, self.temperature)
        return Scores(probabilities, self.familiarity(logits, features, probabilities))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax probabilities for a ``(n, size, size, 3)`` uint8 batch of any length."""
        return self.score(pixels).probabilities

    def threshold_for(self, character: str) -> float | None:
        """The minimum probability for answering ``character``: its own threshold, else the global one."""
        return self.character_thresholds.get(character, self.threshold)

    def is_familiar(self, familiarity: float | None) -> bool:
        """Whether a picture passes the stranger detector (always, without a detector or a familiarity)."""
        return familiarity is None or self.stranger_detector is None or familiarity >= self.stranger_detector.threshold

    def decide(self, probabilities: np.ndarray, top_k: int = 3,
               familiarity: np.ndarray | None = None) -> list[Prediction]:
        """Turn probability rows into predictions, answering ``unknown`` below the threshold.

        The threshold is the predicted character's own one when the bundle has it, else the global
        one. With ``familiarity`` and a stranger detector, a picture below the detector's threshold
        is ``unknown`` too, however sure the probabilities.
        """
        predictions = []
        for index, row in enumerate(probabilities):
            order = np.argsort(row)[::-1][: max(1, top_k)]
            best = self.characters[order[0]]
            probability = float(row[order[0]])
            threshold = self.threshold_for(best)
            familiar = None if familiarity is None else float(familiarity[index])
            accepted = (threshold is None or probability >= threshold) and self.is_familiar(familiar)
            predictions.append(
                Prediction(
                    character=best if accepted else UNKNOWN,
                    probability=probability,
                    top_k=[(self.characters[i], float(row[i])) for i in order],
                    best_guess=best,
                    familiarity=familiar,
                )
            )
        return predictions

    def predict_pixels(self, pixels: np.ndarray, top_k: int = 3) -> list[Prediction]:
        """Predictions for a ``(n, size, size, 3)`` uint8 batch: ``score`` then ``decide``."""
        scores = self.score(pixels)
        return self.decide(scores.probabilities, top_k, scores.familiarity)

    def predict_images(self, images: list[Image.Image], top_k: int = 3) -> list[Prediction]:
        """Predictions for Pillow images (any mode)."""
        pixels = np.stack([self.prepare(image) for image in images]) if images else np.zeros((0,), np.uint8)
        return self.predict_pixels(pixels, top_k)

    def predict_files(self, paths: list[str | Path], top_k: int = 3) -> list[Prediction]:
        """Predictions for image files; an unreadable file raises ``SimpsonsError``."""
        prepared = []
        for path, pixels in self.prepare_files(paths):
            if isinstance(pixels, str):
                raise SimpsonsError(f"cannot read image {path}: {pixels}")
            prepared.append(pixels)
        return self.predict_pixels(np.stack(prepared) if prepared else np.zeros((0,), np.uint8), top_k)

    def prepare_files(self, paths: list[str | Path]) -> Iterator[tuple[str | Path, np.ndarray | str]]:
        """Each file with its pixels as the network wants them, or why it cannot be read, in order.

        A pool of threads (one per core) decodes and resizes ahead of the caller (Pillow works outside
        the GIL), so the network answers one batch while the next pictures are being decoded."""
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            yield from zip(paths, pool.map(self._prepare_file, paths))

    def _prepare_file(self, path: str | Path) -> np.ndarray | str:
        try:
            return self.prepare(open_rgb(path))
        except (OSError, ValueError, SyntaxError) as error:
            return f"unreadable image ({type(error).__name__})"
