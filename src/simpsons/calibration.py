"""Calibration fitted on validation logits: the prior correction for uneven training counts, and the softmax
temperature."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import recall_score

from simpsons.bundle import PriorCorrection
from simpsons.errors import SimpsonsError
from simpsons.prediction import softmax

PRIOR_STRENGTHS = np.round(np.arange(16) / 10, 1)  # 0 (no correction) to 1.5
TEMPERATURE_BOUNDS = (0.05, 20.0)


def balanced_accuracy(logits: np.ndarray, true: np.ndarray) -> float:
    """The mean over characters of the share of their pictures answered right: the accuracy to expect
    if every character were equally likely."""
    return float(recall_score(true, logits.argmax(axis=1), labels=np.unique(true), average="macro", zero_division=0))


def fit_prior_correction(logits: np.ndarray, true: np.ndarray,
                         training_counts: list[int]) -> tuple[PriorCorrection, dict]:
    """The prior correction (strength in ``PRIOR_STRENGTHS``) that gives the uncorrected ``logits`` of the
    validation pictures the best balanced accuracy, the weakest of equals; and the curve it was chosen on.

    The training pictures are not spread evenly over the characters (Homer has 12 times Mayor Quimby's),
    and a test set or a user may be: the balanced accuracy is what the strength should win there."""
    if len(true) == 0:
        raise SimpsonsError("no images to fit the prior correction on")
    counts = [max(int(count), 1) for count in training_counts]  # a character with no training picture: 1
    corrections = [PriorCorrection(float(strength), counts) for strength in PRIOR_STRENGTHS]
    scores = [balanced_accuracy(logits + correction.offsets(), true) for correction in corrections]
    best = int(np.argmax(scores))
    curve = {"strengths": PRIOR_STRENGTHS.tolist(), "validation_balanced_accuracy": scores}
    return corrections[best], curve


def describe_prior_correction(curve: dict, strength: float) -> str:
    """The chosen strength and what it does to the validation split, in one line."""
    scores = curve["validation_balanced_accuracy"]
    chosen = scores[curve["strengths"].index(strength)]
    return (f"prior correction: strength {strength:g} (validation balanced accuracy {scores[0]:.4f} without, "
            f"{chosen:.4f} with)")


def negative_log_likelihood(logits: np.ndarray, true: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes after temperature scaling of the logits."""
    scaled = softmax(logits, temperature).astype(np.float64)
    return float(-np.mean(np.log(np.clip(scaled[np.arange(len(true)), true], 1e-30, None))))


def fit_temperature(logits: np.ndarray, true: np.ndarray) -> float:
    """The temperature minimising the NLL (bounded search in 0.05..20)."""
    if len(true) == 0:
        raise SimpsonsError("no images to fit the temperature on")
    result = minimize_scalar(lambda t: negative_log_likelihood(logits, true, t),
                             bounds=TEMPERATURE_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(result.x)
