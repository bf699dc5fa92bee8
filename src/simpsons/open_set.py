"""Unknown characters: how well a score tells pictures of known characters from pictures of others,
and the stranger detector the bundle can carry.

The candidate scores come from the logits (best probability, gap, max logit, energy), from the
pooled features (similarity to the nearest training pictures) and from both. The stranger
detector is a linear model on the unit-length features, fitted on the training split's pictures
against pictures of characters the model was not trained on ("outlier exposure" on the final
features). Its figures are cross-fitted: each unknown picture is scored by a detector that never
saw its character, so they measure characters nobody showed it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from simpsons import data as datasets
from simpsons.bundle import Bundle, StrangerDetector, sigmoid, unit_rows
from simpsons.errors import SimpsonsError
from simpsons.evaluation import Evaluation, confidence_figures
from simpsons.plots import plt, save_figure
from simpsons.prediction import UNKNOWN, Predictor, answer_figure, softmax

KNOWN_KEPT = 0.95
NEIGHBOURS = 10
NEIGHBOUR_SCORE = f"similarity to the {NEIGHBOURS}th nearest training picture"
COMBINED_SCORE = "best probability + nearest picture"
DETECTOR_SCORE = "stranger detector (cross-fitted)"
# Inverse regularisation of the detector's logistic regression: chosen by the AUROC on the shot-aware
# validation split (0.001 to 0.03 all within 0.002 of it), never on the test set.
DETECTOR_C = 0.003
DETECTOR_FOLDS = 5
DETECTOR_KEEPS = 0.97  # the detector's threshold keeps this share of the known validation pictures


def open_set_scores(logits: np.ndarray, temperature: float | None = None) -> dict[str, np.ndarray]:
    """Candidate scores of "this shows a known character", per image; higher means surer."""
    logits = np.asarray(logits, dtype=np.float64)
    figures = confidence_figures(softmax(logits, temperature))
    return {"best probability": figures[:, 0], "gap between the two best": figures[:, 1],
            "max logit": logits.max(axis=1), "energy": logsumexp(logits, axis=1)}


def nearest_neighbour_similarity(reference: np.ndarray, features: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Cosine similarity of each ``features`` row to its k-th most similar ``reference`` row.

    The deep nearest-neighbour score (Sun et al., 2022) on the network's pooled features: a picture
    far from every training picture likely shows someone the model never saw.
    """
    reference, features = unit_rows(reference), unit_rows(features)
    k = min(k, len(reference))
    similarity = np.empty(len(features), np.float32)
    for start in range(0, len(features), 512):
        block = features[start : start + 512] @ reference.T
        similarity[start : start + 512] = np.partition(block, -k, axis=1)[:, -k]
    return similarity


def combined_score(probability: np.ndarray, similarity: np.ndarray,
                   known_probability: np.ndarray, known_similarity: np.ndarray) -> np.ndarray:
    """The best probability and the nearest-picture similarity, each standardised on pictures of
    known characters (the validation split), then added: two partly independent signs of a stranger."""
    def standardised(values: np.ndarray, known: np.ndarray) -> np.ndarray:
        return (values - known.mean()) / max(float(known.std()), 1e-12)

    return standardised(probability, known_probability) + standardised(similarity, known_similarity)


# --------------------------------------------------------------------------- the stranger detector


def fit_stranger_weights(known_features: np.ndarray, stranger_features: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic regression, known (1) against strangers (0), on unit-length features, both classes
    weighted equally; the standardisation is folded into the returned weights and bias."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    inputs = np.r_[unit_rows(known_features), unit_rows(stranger_features)].astype(np.float64)
    targets = np.r_[np.ones(len(known_features)), np.zeros(len(stranger_features))]
    scaler = StandardScaler().fit(inputs)
    model = LogisticRegression(C=DETECTOR_C, class_weight="balanced", max_iter=3000)
    model.fit(scaler.transform(inputs), targets)
    weights = model.coef_[0] / scaler.scale_
    return weights, float(model.intercept_[0] - weights @ scaler.mean_)


DETECTOR_ANSWER = "max logit"  # chosen on validation: 0.918 AUROC against 0.912 for the best probability


@dataclass
class DetectorInputs:
    """What the stranger detector reads of some pictures: pooled features and the ``DETECTOR_ANSWER``
    figure of the network's answer."""

    features: np.ndarray
    answer: np.ndarray

    def rows(self, index: np.ndarray) -> DetectorInputs:
        return DetectorInputs(self.features[index], self.answer[index])


def _logits(detector: StrangerDetector, pictures: DetectorInputs) -> np.ndarray:
    return detector.logits(pictures.features, pictures.answer)


def _familiarity(detector: StrangerDetector, pictures: DetectorInputs) -> np.ndarray:
    return detector.familiarity(pictures.features, pictures.answer)


def platt_scaling(known: np.ndarray, strangers: np.ndarray) -> tuple[float, float]:
    """Slope and intercept that turn detector logits into the chance, both classes weighted equally,
    that a picture shows a known character (a one-input logistic regression)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(class_weight="balanced").fit(
        np.r_[known, strangers][:, None], np.r_[np.ones(len(known)), np.zeros(len(strangers))])
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def fit_stranger_detector(training: np.ndarray, strangers: np.ndarray, validation: DetectorInputs) -> StrangerDetector:
    """The logistic regression on features (``fit_stranger_weights``) plus the answer figure, weighted
    so that on the validation pictures it spreads as much as the features' part (the two scores,
    standardised, added) and centred there, so that it adds nothing for a typical known picture
    (threshold 0 until the study sets it)."""
    weights, bias = fit_stranger_weights(training, strangers)
    from_features = unit_rows(validation.features) @ weights + bias
    weight = float(from_features.std()) / max(float(validation.answer.std()), 1e-12)
    return StrangerDetector(weights, bias - weight * float(validation.answer.mean()), 0.0, weight, DETECTOR_ANSWER)


@dataclass
class DetectorStudy:
    """A stranger detector fitted on every unknown picture, and its cross-fitted familiarities."""

    detector: StrangerDetector
    known: np.ndarray  # familiarity of the studied known pictures (detectors of every fold, averaged)
    strangers: np.ndarray  # familiarity of each unknown picture by the detector that never saw its character
    strangers_rejected: np.ndarray  # ``strangers`` below the threshold chosen as the detector's was
    validation_rejected: np.ndarray  # the validation pictures below the detector's threshold
    unknown_characters: int

    @property
    def rejected_at_threshold(self) -> float:
        return float(np.mean(self.strangers_rejected))

    def stored(self) -> StrangerDetector:
        """The detector as the bundle stores it, with how it was fitted and what it measured."""
        return replace(self.detector, fitted={
            "regularisation_C": DETECTOR_C, "unknown_characters": self.unknown_characters,
            "threshold_keeps_known_validation": DETECTOR_KEEPS,
            "cross_fitted_unknown_rejected": round(self.rejected_at_threshold, 4)})


def study_stranger_detector(training: np.ndarray, validation: DetectorInputs, known: DetectorInputs,
                            strangers: DetectorInputs, stranger_names: list[str]) -> DetectorStudy:
    """Fit the detector on the training split's features against every stranger; its threshold keeps
    ``DETECTOR_KEEPS`` of the validation pictures. The familiarities reported are cross-fitted over
    folds of whole unknown characters, and Platt-scaled on them against the validation pictures: a
    familiarity is the chance, known and unknown weighted equally, that a picture shows a known character."""
    from sklearn.model_selection import GroupKFold

    characters = len(set(stranger_names))
    if characters < 2:
        raise SimpsonsError("the stranger detector needs pictures of at least two unknown characters")
    cross_fitted_logits = np.empty(len(strangers.features))
    folds = []
    for fitted, held_out in GroupKFold(min(DETECTOR_FOLDS, characters)).split(strangers.features,
                                                                              groups=stranger_names):
        fold = fit_stranger_detector(training, strangers.features[fitted], validation)
        cross_fitted_logits[held_out] = _logits(fold, strangers.rows(held_out))
        folds.append(fold)
    averaged = StrangerDetector(np.mean([fold.weights for fold in folds], axis=0),
                                float(np.mean([fold.bias for fold in folds])), 0.0,
                                float(np.mean([fold.answer_weight for fold in folds])), DETECTOR_ANSWER)
    slope, intercept = platt_scaling(_logits(averaged, validation), cross_fitted_logits)
    averaged = averaged.scaled(slope, intercept)
    cross_fitted = sigmoid(slope * cross_fitted_logits + intercept)
    fold_threshold = float(np.quantile(_familiarity(averaged, validation), 1 - DETECTOR_KEEPS))
    detector = fit_stranger_detector(training, strangers.features, validation).scaled(slope, intercept)
    validation_familiarity = _familiarity(detector, validation)
    detector.threshold = float(np.quantile(validation_familiarity, 1 - DETECTOR_KEEPS))
    return DetectorStudy(detector=detector, known=_familiarity(averaged, known), strangers=cross_fitted,
                         strangers_rejected=cross_fitted < fold_threshold,
                         validation_rejected=validation_familiarity < detector.threshold, unknown_characters=characters)


# --------------------------------------------------------------------------- figures


def open_set_figures(
    known_logits: np.ndarray, unknown_logits: np.ndarray, temperature: float | None = None, *,
    unknown_names: list[str] | None = None, more_scores: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict:
    """How well each candidate score tells known characters from unknown ones.

    Per score: AUROC (known = positive), and the share of unknown images rejected at the
    threshold that keeps ``KNOWN_KEPT`` of the known images accepted. ``best`` names the score
    with the highest AUROC. The "energy" score is the log-sum-exp of the logits (the negative free energy).
    ``more_scores`` adds scores computed elsewhere: name -> (known images' values, unknown images').
    ``unknown_names`` (each unknown image's character) adds the best score's AUROC per unknown character.
    """
    known = open_set_scores(known_logits, temperature)
    unknown = open_set_scores(unknown_logits, temperature)
    for name, (known_values, unknown_values) in (more_scores or {}).items():
        known[name], unknown[name] = known_values, unknown_values
    scores = {}
    for name in known:
        kept_from = float(np.quantile(known[name], 1 - KNOWN_KEPT))
        scores[name] = {
            "auroc": _auroc(known[name], unknown[name]),
            "threshold_keeping_95_percent_known": kept_from,
            "unknown_rejected_share": float(np.mean(unknown[name] < kept_from)),
        }
    best = max(scores, key=lambda name: scores[name]["auroc"])
    figures = {"known_images": int(len(known_logits)), "unknown_images": int(len(unknown_logits)),
               "scores": scores, "best": best}
    if unknown_names is not None:
        names = np.asarray(unknown_names)
        per_character = {name: {"images": int(np.sum(names == name)),
                                "auroc": _auroc(known[best], unknown[best][names == name])}
                         for name in sorted(set(unknown_names))}
        figures["per_unknown_character"] = dict(sorted(per_character.items(), key=lambda item: item[1]["auroc"]))
    return figures


def _auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of a score telling known (positive) from unknown images."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(unknown))], np.r_[known, unknown]))


def plot_open_set(panels: dict[str, tuple[np.ndarray, np.ndarray]], figures: dict, path: str | Path) -> None:
    """Histograms of known against unknown pictures, one panel per score: name -> (known values, unknown values)."""
    figure, axes_row = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for axes, (name, (known, unknown)) in zip(axes_row[0], panels.items()):
        bins = np.linspace(min(known.min(), unknown.min()), max(known.max(), unknown.max()), 26)
        axes.hist(known, bins=bins, alpha=0.6, density=True, label="known characters")
        axes.hist(unknown, bins=bins, alpha=0.6, density=True, label="unknown characters")
        score = figures["scores"][name]
        cut = score["threshold_keeping_95_percent_known"]
        axes.axvline(cut, color="black", linestyle="--", label=f"keeps 95% of known ({cut:.2f})")
        axes.set_xlabel(name)
        axes.set_ylabel("density")
        axes.set_title(f"{name}: AUROC {score['auroc']:.3f}")
        axes.legend()
    figure.suptitle("Known against unknown characters")
    save_figure(figure, path)


def describe_open_set(figures: dict) -> str:
    """The known-against-unknown figures in words."""
    lines = [f"unknown characters: {figures['unknown_images']} images against {figures['known_images']} known"]
    for name, score in figures["scores"].items():
        lines.append(f"  {name}: AUROC {score['auroc']:.3f}; keeping 95% of known images "
                     f"(>= {score['threshold_keeping_95_percent_known']:.2f}) rejects "
                     f"{score['unknown_rejected_share']:.0%} of unknown ones")
    lines.append(f"  best score: {figures['best']}")
    hardest = list(figures.get("per_unknown_character", {}).items())[:5]
    if hardest:
        lines.append("  hardest unknown characters (AUROC of the best score): "
                     + ", ".join(f"{name} {figure['auroc']:.2f} ({figure['images']})" for name, figure in hardest))
    detector = figures.get("stranger_detector")
    if detector:
        lines.append(f"  stranger detector: familiarity threshold {detector['threshold']:.3f} keeps "
                     f"{DETECTOR_KEEPS:.0%} of known validation images and rejects "
                     f"{detector['cross_fitted_unknown_rejected']:.0%} of unknown ones (cross-fitted)")
        if "unknown_rejected_with_thresholds" in detector:
            lines.append(f"  with the recommended probability thresholds: "
                         f"{detector['unknown_rejected_by_thresholds']:.0%} of unknown images answered unknown by "
                         f"the thresholds alone, "
                         f"{detector['unknown_rejected_with_thresholds']:.0%} with the detector too (cross-fitted); "
                         f"known validation images: {detector['validation_rejected_by_thresholds']:.1%} and "
                         f"{detector['validation_rejected_with_thresholds']:.1%}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the study's part


def unknown_images(data_dir: str | Path, bundle: Bundle) -> datasets.LabelledImages:
    """The images of ``data_dir`` showing characters the model was not trained on."""
    images = datasets.load_images(data_dir, bundle.image_size)
    strangers = [name for name in images.characters if name not in bundle.characters]
    if not strangers:
        raise SimpsonsError(f"every character in {data_dir} is known to the model: no unknown images to measure")
    return datasets.relabel(images, strangers)


def open_set_study(predictor: Predictor, known: Evaluation, unknown: str | Path, temperature: float | None,
                   plot_path: Path, training: datasets.LabelledImages | None = None,
                   validation: Evaluation | None = None,
                   recommended: dict | None = None) -> tuple[dict, DetectorStudy | None]:
    """Known against unknown characters by every score, and the stranger detector. The scores from
    features (nearest picture, combined, detector) need the training split and the validation split's
    evaluation (``training`` and ``validation``); with the ``recommended`` probability thresholds
    (``recommend_thresholds``' answer) too, what they and the detector turn away together."""
    strangers = unknown_images(unknown, predictor.bundle)
    names = [strangers.characters[label] for label in strangers.labels]
    strangers_logits, strangers_features = predictor.logits_and_features(strangers.images)
    logits = {"known": known.logits, "strangers": strangers_logits,
              **({} if validation is None else {"validation": validation.logits})}
    probabilities = {name: softmax(part, temperature) for name, part in logits.items()}
    more_scores, detector = {}, None
    if training is not None and validation is not None:
        features = {"validation": validation.features, "known": known.features, "strangers": strangers_features}
        more_scores, detector = _feature_scores(predictor.features(training.images), logits, features, probabilities,
                                                names)
    figures = open_set_figures(known.logits, strangers_logits, temperature, unknown_names=names,
                               more_scores=more_scores)
    if detector is not None:
        figures["stranger_detector"] = {"threshold": detector.detector.threshold, **detector.stored().fitted}
        if recommended is not None:
            figures["stranger_detector"].update(_rejected_together(
                predictor, recommended, detector, probabilities["strangers"], probabilities["validation"]))
    panels = {"best probability": (probabilities["known"].max(axis=1), probabilities["strangers"].max(axis=1))}
    if figures["best"] in more_scores:
        panels[figures["best"]] = more_scores[figures["best"]]
    plot_open_set(panels, figures, plot_path)
    return figures, detector


def _feature_scores(reference: np.ndarray, logits: dict[str, np.ndarray], features: dict[str, np.ndarray],
                    probabilities: dict[str, np.ndarray], names: list[str],
                    ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], DetectorStudy | None]:
    """The nearest-picture, combined and stranger-detector scores of the known and unknown pictures
    (``reference``: the training split's features), and the detector (``None`` with one unknown character).
    ``logits``, ``features`` and (temperature-scaled) ``probabilities`` of the "validation", "known" and
    "strangers" pictures."""
    pictures = {name: DetectorInputs(features[name], answer_figure(DETECTOR_ANSWER, logits[name], probabilities[name]))
                for name in features}
    similarity = {name: nearest_neighbour_similarity(reference, part.features) for name, part in pictures.items()}
    best = {name: answer_figure("best probability", logits[name], probabilities[name]) for name in logits}
    standardise_on = (best["validation"], similarity["validation"])
    scores = {NEIGHBOUR_SCORE: (similarity["known"], similarity["strangers"]), COMBINED_SCORE: tuple(
        combined_score(best[name], similarity[name], *standardise_on) for name in ("known", "strangers"))}
    if len(set(names)) < 2:
        return scores, None
    detector = study_stranger_detector(reference, pictures["validation"], pictures["known"], pictures["strangers"],
                                       names)
    scores[DETECTOR_SCORE] = (detector.known, detector.strangers)
    return scores, detector


def _rejected_together(predictor: Predictor, recommended: dict, detector: DetectorStudy,
                       strangers: np.ndarray, validation: np.ndarray) -> dict[str, float]:
    """Shares of unknown pictures (cross-fitted) and of known validation pictures answered ``unknown``
    by the probability thresholds, and by the thresholds and the detector together."""
    judge = copy.copy(predictor)
    judge.threshold, judge.character_thresholds = recommended["threshold"], recommended["character_thresholds"]

    def below(probabilities: np.ndarray) -> np.ndarray:
        return np.array([answer.character == UNKNOWN for answer in judge.decide(probabilities, top_k=1)])

    by_probability = {"unknown": below(strangers), "validation": below(validation)}
    return {"unknown_rejected_by_thresholds": float(np.mean(by_probability["unknown"])),
            "unknown_rejected_with_thresholds": float(np.mean(by_probability["unknown"] | detector.strangers_rejected)),
            "validation_rejected_by_thresholds": float(np.mean(by_probability["validation"])),
            "validation_rejected_with_thresholds": float(np.mean(by_probability["validation"]
                                                                 | detector.validation_rejected))}
