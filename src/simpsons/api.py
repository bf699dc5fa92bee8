"""The Python API: name the characters in pictures, analyse a video, measure a model on labelled pictures.

Everything goes through the one ``Predictor`` that the command line uses (and ``analyse_video(detect=True)``
through its ``Detector``), so the answers are the same as ``simpsons predict``, ``simpsons video`` and
``simpsons evaluate`` give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np
from PIL import Image

from simpsons.data import open_rgb
from simpsons.errors import SimpsonsError
from simpsons.prediction import Prediction, Predictor

if TYPE_CHECKING:
    from simpsons.detection.detector import Detector
    from simpsons.video import Sample, Segment, VideoInfo

ImageInput = str | Path | Image.Image | np.ndarray
CHUNK = 256  # pictures decoded and classified together: bounds the memory a long list takes


def to_image(picture: ImageInput) -> Image.Image:
    """A Pillow image from a file path, a Pillow image or an RGB ``uint8`` array of shape (height, width, 3)."""
    if isinstance(picture, Image.Image):
        return picture
    if isinstance(picture, np.ndarray):
        if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[2] != 3:
            raise SimpsonsError(f"a picture array must be RGB uint8 of shape (height, width, 3), "
                                f"not {picture.dtype} of shape {picture.shape}")
        return Image.fromarray(picture, "RGB")
    if isinstance(picture, (str, Path)):
        try:
            return open_rgb(picture)
        except (OSError, ValueError, SyntaxError) as error:
            raise SimpsonsError(f"cannot read image {picture}: {type(error).__name__}") from None
    raise SimpsonsError(f"a picture is a file path, a PIL image or an RGB numpy array, not {type(picture).__name__}")


class Model:
    """A trained model: ``predict`` names the character in pictures; ``characters`` lists the names it knows."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @property
    def characters(self) -> list[str]:
        """The characters the model can name, in the order of its outputs."""
        return list(self.predictor.characters)

    @overload
    def predict(self, x: ImageInput, top_k: int = 3) -> Prediction: ...

    @overload
    def predict(self, x: Sequence[ImageInput], top_k: int = 3) -> list[Prediction]: ...

    def predict(self, x, top_k=3):
        """The answer for one picture (a ``Prediction``), or a list of answers for a list of pictures.

        A picture is a file path, a PIL image or an RGB ``uint8`` numpy array. A ``Prediction`` has
        ``character`` (``unknown`` below the model's thresholds or for an unfamiliar picture),
        ``probability``, ``best_guess``, ``top_k`` (name, probability) pairs and ``familiarity``.
        """
        if top_k < 1:
            raise SimpsonsError("top_k must be at least 1")
        if isinstance(x, (list, tuple)):
            return [answer for start in range(0, len(x), CHUNK)
                    for answer in self.predictor.predict_images([to_image(p) for p in x[start : start + CHUNK]],
                                                                top_k)]
        return self.predictor.predict_images([to_image(x)], top_k)[0]

    def __repr__(self) -> str:
        return f"Model({len(self.characters)} characters, {self.predictor.image_size} px)"


def load_model(path: str | Path | None = None) -> Model:
    """The shipped model, or the model bundle (``.simpsons``) or exported ``.onnx`` file at ``path``."""
    if path is not None and not Path(path).is_file():
        raise SimpsonsError(f"model file not found: {path}")
    return Model(Predictor.load(path))


def _model(model: Model | str | Path | None) -> Model:
    return model if isinstance(model, Model) else load_model(model)


@dataclass
class Timeline:
    """Who is on screen when in a video: its segments, the seconds per character and every sample."""

    video: VideoInfo
    segments: list[Segment]
    screen_time: dict[str, float]
    samples: list[Sample] = field(repr=False)
    seconds: float  # the analysis took this long


def analyse_video(path: str | Path, model: Model | str | Path | None = None, *, sample_fps: float = 2.0,
                  crops: Sequence[str] | None = None, min_prob: float | None = None, smooth: int = 3,
                  progress: bool = False, detect: bool = False,
                  detector: Detector | str | Path | None = None) -> Timeline:
    """The timeline of a video, as ``simpsons video`` finds it: ``sample_fps`` frames a second (0: every
    frame), each cut into ``crops`` (default full, left, right), a character present where its probability
    reaches ``min_prob`` (default: the model's threshold, at least 0.5), smoothed by a majority over ``smooth``
    neighbouring samples.

    ``detect=True`` (``simpsons video --detect``) finds the characters with a detector instead: ``detector`` is
    a detector bundle's path or a loaded ``Detector`` (default: the shipped one); a character is present where
    it has a box at or above ``min_prob`` (default 0.3), wherever it stands, and each sample lists its
    ``boxes`` (``Detection``: character, probability, box in the frame's pixels). ``model`` and ``crops`` are
    the classifier's: giving them with ``detect`` is an error, and so is ``detector`` without it."""
    from simpsons.video import analyse_video as analyse
    from simpsons.video import parse_crops, screen_time

    if detect:
        answerer = _detector(model, crops, detector)
        chosen = None
    else:
        if detector is not None:
            raise SimpsonsError("detector is the detector of detect=True: add detect=True")
        answerer = _model(model).predictor
        try:
            chosen = parse_crops(",".join(("full", "left", "right") if crops is None else crops))
        except ValueError as error:
            raise SimpsonsError(str(error)) from None
    result = analyse(path, answerer, sample_fps=sample_fps, crops=chosen, min_prob=min_prob, window=smooth,
                     progress=progress)
    return Timeline(result.info, result.segments, screen_time(result.segments), result.samples, result.seconds)


def _detector(model, crops, detector: Detector | str | Path | None) -> Detector:
    """The detector of ``analyse_video(detect=True)``; the classifier's ``model`` or ``crops`` refused."""
    from simpsons.detection.detector import Detector

    if model is not None or crops is not None:
        raise SimpsonsError("model and crops are the classifier's: with detect=True, give detector= instead")
    return detector if isinstance(detector, Detector) else Detector.load(detector)


@dataclass
class Metrics:
    """A model's figures on labelled pictures, as ``simpsons evaluate --json`` writes them.

    ``accuracy`` counts ``unknown`` answers as wrong; ``top1_accuracy`` is that of the best guesses
    (thresholds ignored). ``per_character`` maps each character to its precision, recall, F1 and support.
    Pictures of characters the model does not know are counted apart, in ``unknown_characters``.
    """

    images: int
    accuracy: float
    top1_accuracy: float
    macro_f1: float
    unknown_answers: int
    per_character: dict[str, dict[str, float]]
    unknown_characters: dict[str, int]
    details: dict = field(repr=False)  # everything, confusion matrix and most confused pairs included


def evaluate(data: str | Path, model: Model | str | Path | None = None) -> Metrics:
    """Measure a model on labelled pictures (a folder per character, or flat ``<character>_<n>.jpg`` files)."""
    from simpsons.data import load_images
    from simpsons.evaluation import evaluate as measure

    chosen = _model(model)
    result = measure(chosen.predictor, load_images(data, chosen.predictor.image_size))
    if len(result.true) == 0:
        raise SimpsonsError(f"none of the images in {data} shows a character the model knows")
    figures = result.as_dict()
    return Metrics(figures["images"], figures["accuracy"], figures["top1_accuracy"], figures["macro_f1"],
                   figures["unknown_answers"], figures["per_class"], figures["unknown_characters"], figures)
