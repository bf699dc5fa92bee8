"""The confidence study: how sure the model is when right and when wrong, thresholds and calibration.

From the probability vectors of a labelled set: the best probability, the gap between the two
best and the spread (standard deviation) per image, for correct against wrong predictions;
precision, recall and F1 against a minimum probability below which the answer is ``unknown``;
and, fitted on the shot-aware validation split of the training data, the prior correction and
temperature scaling.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from simpsons import data as datasets
from simpsons.bundle import Bundle, PriorCorrection
from simpsons.calibration import (describe_prior_correction, fit_prior_correction, fit_temperature,
                                  negative_log_likelihood)
from simpsons.errors import ParameterError, SimpsonsError
from simpsons.evaluation import Evaluation, confidence_figures, evaluate
from simpsons.open_set import DetectorStudy, describe_open_set, open_set_study
from simpsons.plots import plt, pretty, save_figure
from simpsons.prediction import Predictor, softmax

FIGURES = ("best", "gap", "std")
FIGURE_LABELS = {"best": "best probability", "gap": "gap between the two best", "std": "std of the probabilities"}
ARTICLE = {"correct": {"best": 0.83, "gap": 0.773, "std": 0.21}, "wrong": {"best": 0.27, "gap": 0.092, "std": 0.07}}
THRESHOLDS = np.round(np.arange(101) / 100, 2)
ECE_BINS = 15

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the three figures
# (computed per image by ``evaluation.confidence_figures``, which the open-set scores share)


def summarise_figures(figures: np.ndarray, correct: np.ndarray) -> dict:
    """Count, mean and median of each figure for correct and for wrong predictions."""
    summary = {}
    for group, mask in (("correct", correct), ("wrong", ~correct)):
        chosen = figures[mask]
        summary[group] = {
            "count": int(mask.sum()),
            "mean": {name: _finite(chosen[:, i].mean()) if len(chosen) else None for i, name in enumerate(FIGURES)},
            "median": {name: _finite(np.median(chosen[:, i])) if len(chosen) else None
                       for i, name in enumerate(FIGURES)},
        }
    return summary


def summary_table(summary: dict) -> str:
    """The correct-vs-wrong table, mean and median next to the article's (mean) figures."""
    lines = [f"{'':<8} {'images':>6}  {'figure':<26} {'mean':>6} {'median':>7} {'article':>8}"]
    for group in ("correct", "wrong"):
        for i, name in enumerate(FIGURES):
            mean, median = summary[group]["mean"][name], summary[group]["median"][name]
            lines.append(
                f"{group if i == 0 else '':<8} {summary[group]['count'] if i == 0 else '':>6}  "
                f"{FIGURE_LABELS[name]:<26} {_number(mean):>6} {_number(median):>7} {ARTICLE[group][name]:>8}"
            )
    return "\n".join(lines)


def plot_scatter(figures: np.ndarray, correct: np.ndarray, path: str | Path, title: str) -> None:
    """The three figures pairwise (3 panels), correct in blue and wrong in red."""
    figure, axes_row = plt.subplots(1, 3, figsize=(15, 4.6))
    for axes, (x, y) in zip(axes_row, ((0, 1), (0, 2), (1, 2))):
        for mask, label, colour in ((correct, "correct", "tab:blue"), (~correct, "wrong", "tab:red")):
            axes.scatter(figures[mask, x], figures[mask, y], s=10, alpha=0.5, color=colour,
                         label=f"{label} ({int(mask.sum())})")
        axes.set_xlabel(FIGURE_LABELS[FIGURES[x]])
        axes.set_ylabel(FIGURE_LABELS[FIGURES[y]])
        axes.set_title(f"{FIGURE_LABELS[FIGURES[y]]} vs {FIGURE_LABELS[FIGURES[x]]}", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    save_figure(figure, path)


# --------------------------------------------------------------------------- thresholds


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def _curve(hits: np.ndarray, accepted: np.ndarray, support: int) -> dict[str, list[float]]:
    """Precision, recall and F1 from correct-accepted and accepted counts per threshold."""
    precision = _ratio(hits, accepted)
    recall = hits / support if support else np.zeros(len(hits))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "accepted": accepted.astype(int).tolist(), "support": int(support)}


def threshold_curves(
    probabilities: np.ndarray, true: np.ndarray, characters: list[str], thresholds: np.ndarray = THRESHOLDS
) -> dict:
    """Precision, recall and F1 against the minimum probability, overall (micro) and per character.

    An image whose best probability is below the threshold is answered ``unknown``: it is not
    a prediction, so it lowers recall, and precision is over the accepted predictions only.
    Per character, precision is over images predicted as it and recall over images truly of it.
    """
    best = probabilities.max(axis=1)
    predicted = probabilities.argmax(axis=1)
    correct = predicted == true
    accepted = best[None, :] >= thresholds[:, None]  # (thresholds, images)
    overall = _curve((accepted & correct).sum(axis=1), accepted.sum(axis=1), len(true))
    per_character = {}
    for index, name in enumerate(characters):
        as_it = accepted & (predicted == index)
        per_character[name] = _curve((as_it & correct).sum(axis=1), as_it.sum(axis=1), int((true == index).sum()))
    return {"thresholds": thresholds.tolist(), "overall": overall, "per_character": per_character}


@dataclass
class Objective:
    """How a threshold is chosen: best F1, or the lowest threshold reaching a target precision."""

    target_precision: float | None = None

    def describe(self) -> str:
        if self.target_precision is None:
            return "best F1 (lowest threshold among ties)"
        return f"lowest threshold with precision >= {self.target_precision:g}"

    def choose(self, curve: dict, thresholds: list[float]) -> float | None:
        """The chosen threshold on ``curve``, or None when the objective cannot be met."""
        if self.target_precision is None:
            f1 = np.asarray(curve["f1"])
            return float(thresholds[int(np.argmax(f1))]) if f1.max() > 0 else None
        for threshold, precision, accepted in zip(thresholds, curve["precision"], curve["accepted"]):
            if accepted > 0 and precision >= self.target_precision - 1e-12:
                return float(threshold)
        return None


def recommend_thresholds(curves: dict, objective: Objective) -> dict:
    """The recommended global threshold and per-character ones (characters absent or unmet are left out).

    A character's own threshold is never below the global one: the pictures the thresholds are chosen
    on show known characters only, so a character the model rarely gets wrong would otherwise get
    threshold 0 and every stranger taken for them would be accepted.
    """
    thresholds = curves["thresholds"]
    overall = objective.choose(curves["overall"], thresholds)
    per_character, unmet = {}, []
    for name, curve in curves["per_character"].items():
        if curve["support"] == 0:
            continue
        chosen = objective.choose(curve, thresholds)
        if chosen is None:
            unmet.append(name)
        else:
            per_character[name] = chosen if overall is None else max(chosen, overall)
    return {"objective": objective.describe() + ("" if overall is None else "; a character's own threshold "
                                                 "is never below the global one"),
            "target_precision": objective.target_precision,
            "threshold": overall, "reachable": overall is not None, "character_thresholds": per_character,
            "characters_unreachable": unmet, "at_threshold": _point(curves["overall"], thresholds, overall)}


def _point(curve: dict, thresholds: list[float], threshold: float | None) -> dict | None:
    """Precision, recall, F1 and accepted images of a curve at one threshold."""
    if threshold is None:
        return None
    i = thresholds.index(threshold)
    return {key: curve[key][i] for key in ("precision", "recall", "f1", "accepted")}


def plot_threshold_overall(curves: dict, recommended: dict, path: str | Path) -> None:
    """Micro precision, recall and F1 against the minimum probability, with the recommended threshold."""
    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    _draw_curve(axes, curves["overall"], curves["thresholds"], recommended["threshold"], legend=True)
    axes.set_xlabel("minimum probability (below it: 'unknown')")
    axes.set_ylabel("score")
    axes.set_title(f"All characters: precision, recall and F1 against the threshold\n"
                   f"recommended {_number(recommended['threshold'])} ({recommended['objective']})", fontsize=10)
    save_figure(figure, path)


def plot_threshold_per_character(curves: dict, recommended: dict, path: str | Path) -> None:
    """Small multiples: one precision/recall/F1 panel per character."""
    names = list(curves["per_character"])
    columns = 5
    rows = max(1, int(np.ceil(len(names) / columns)))
    figure, grid = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows + 0.6), sharex=True, sharey=True,
                                squeeze=False)
    for axes, name in zip(grid.ravel(), names):
        chosen = recommended["character_thresholds"].get(name)
        _draw_curve(axes, curves["per_character"][name], curves["thresholds"], chosen, legend=axes is grid[0, 0])
        axes.set_title(f"{pretty(name)} (t={_number(chosen)})", fontsize=9)
    for axes in grid.ravel()[len(names):]:
        axes.axis("off")
    for axes in grid[-1]:
        axes.set_xlabel("minimum probability")
    for axes in grid[:, 0]:
        axes.set_ylabel("score")
    figure.suptitle(f"Precision, recall and F1 against the threshold, per character ({recommended['objective']})")
    save_figure(figure, path)


def _draw_curve(axes: plt.Axes, curve: dict, thresholds: list[float], chosen: float | None, legend: bool) -> None:
    for key, colour in (("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green")):
        axes.plot(thresholds, curve[key], color=colour, label=key if key != "f1" else "F1")
    if chosen is not None:
        axes.axvline(chosen, color="black", linestyle="--", linewidth=1, label="recommended")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    if legend:
        axes.legend(fontsize=8, loc="lower left")


# --------------------------------------------------------------------------- calibration


def reliability(probabilities: np.ndarray, true: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per equal-width confidence bin: images, mean confidence and accuracy; and the ECE."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = probabilities.argmax(axis=1) == true
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # bins (lo, hi]; 0 goes to the first
    counts = np.bincount(index, minlength=bins)
    mean_confidence = _ratio(np.bincount(index, weights=confidence, minlength=bins), counts)
    accuracy = _ratio(np.bincount(index, weights=correct.astype(float), minlength=bins), counts)
    ece = float(np.sum(counts * np.abs(accuracy - mean_confidence)) / max(len(true), 1))
    return {"edges": np.linspace(0, 1, bins + 1).tolist(), "count": counts.tolist(),
            "confidence": mean_confidence.tolist(), "accuracy": accuracy.tolist(), "ece": ece}


def expected_calibration_error(probabilities: np.ndarray, true: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the image-weighted mean gap between accuracy and confidence over equal-width bins."""
    return reliability(probabilities, true, bins)["ece"]


def plot_reliability(diagrams: dict[str, dict], path: str | Path) -> None:
    """Reliability diagram: accuracy against confidence per bin, one panel per probability set."""
    figure, grid = plt.subplots(1, len(diagrams), figsize=(5.2 * len(diagrams), 4.8), squeeze=False)
    for axes, (label, diagram) in zip(grid[0], diagrams.items()):
        edges = np.asarray(diagram["edges"])
        width = edges[1] - edges[0]
        filled = np.asarray(diagram["count"]) > 0
        axes.bar(edges[:-1][filled], np.asarray(diagram["accuracy"])[filled], width=width, align="edge",
                 color="tab:blue", edgecolor="#333", alpha=0.8, label="accuracy")
        centres = (edges[:-1] + width / 2)[filled]
        axes.scatter(centres, np.asarray(diagram["confidence"])[filled], marker="_", s=300, color="tab:red",
                     linewidths=2, zorder=3, label="mean confidence")
        axes.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="perfect calibration")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel("confidence (best probability)")
        axes.set_ylabel("accuracy")
        axes.set_title(f"{label}: ECE {diagram['ece']:.3f}")
        axes.legend(fontsize=8, loc="upper left")
    figure.suptitle(f"Reliability diagram ({ECE_BINS} equal-width bins)")
    save_figure(figure, path)


def shot_aware_parts(train_data: str | Path, bundle: Bundle) -> tuple[datasets.LabelledImages, datasets.LabelledImages]:
    """The bundle's shot-aware training and validation images, recomputed from its training folder."""
    images = datasets.load_images(train_data, bundle.image_size)
    images = datasets.select_characters(images, characters=bundle.characters)
    training, validation = datasets.shot_aware_split(
        images, seed=int(bundle.metadata.get("seed", 0)),
        validation_fraction=float(bundle.metadata.get("validation_fraction", 0.15)),
    )
    return images.subset(training), images.subset(validation)


# --------------------------------------------------------------------------- the study


@dataclass
class Study:
    """What the confidence study found: the JSON payload, the temperature used, the recommendation
    and the stranger detector (with ``unknown`` and ``calibrate``)."""

    payload: dict
    temperature: float | None
    recommended: dict
    detector: DetectorStudy | None = None
    prior_correction: PriorCorrection | None = None  # what the answers were studied with


def run_study(
    bundle: Bundle,
    data_dir: str | Path,
    report_dir: str | Path,
    *,
    character: str | None = None,
    target_precision: float | None = None,
    calibrate: str | Path | None = None,
    unknown: str | Path | None = None,
    prior_correction: bool = True,
    log: Callable[[str], None] = logger.info,
) -> Study:
    """The whole study on ``data_dir``: tells ``log`` the tables, writes the PNGs, returns the JSON payload.

    With ``calibrate`` (the training folder), the prior correction, the temperature and the recommended
    thresholds are chosen on the bundle's shot-aware validation split, in that order; ``data_dir`` only
    measures them. With ``unknown`` too, its training split is the reference of the nearest-training-picture
    score. ``prior_correction=False`` studies the network without any prior correction.
    """
    if character is not None and character not in bundle.characters:
        raise SimpsonsError(f"the model does not know the character {character!r}; it knows "
                            f"{', '.join(bundle.characters)}")
    if target_precision is not None and not 0 < target_precision <= 1:
        raise ParameterError("target_precision", f"{{name}} must be in (0, 1], not {target_precision:g}")
    training, validation_images = shot_aware_parts(calibrate, bundle) if calibrate is not None else (None, None)
    prior_study = None
    if not prior_correction:
        bundle = replace(bundle, prior_correction=None)
    elif training is not None:
        correction, prior_study = _prior_correction(bundle, training, validation_images)
        bundle = replace(bundle, prior_correction=correction)
        log(describe_prior_correction(prior_study, correction.strength))
    predictor = Predictor(bundle, raw=True)
    result = _evaluate_known(predictor, data_dir, log)
    validation = evaluate(predictor, validation_images) if validation_images is not None else None
    calibration = _calibration(bundle, result, validation, calibrate)
    temperature = calibration["temperature"]
    probabilities = softmax(result.logits, temperature)
    true = result.true

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    correct = result.true == result.predicted
    figures = confidence_figures(probabilities)
    summary = summarise_figures(figures, correct)
    log(f"{len(true)} images, accuracy {result.accuracy:.3f}"
        + (", each answered with its mirror image (flip test-time augmentation)" if bundle.test_time_flip else "")
        + ("" if temperature is None else f"; probabilities temperature-scaled with T={temperature:.3f}"))
    if validation is not None:
        log(f"shot-aware validation split: {len(validation.true)} images, accuracy {validation.accuracy:.4f}")
    log(summary_table(summary))
    written = _plot_scatters(figures, correct, true, bundle, character, report_dir)

    curves = threshold_curves(probabilities, true, bundle.characters)
    recommended = _recommendation(curves, validation, temperature, bundle.characters, Objective(target_precision),
                                  chosen_on=str(data_dir) if validation is None else
                                  f"shot-aware validation split of {calibrate}")
    log(describe_recommendation(recommended, curves))
    plot_threshold_overall(curves, recommended, report_dir / "threshold_overall.png")
    plot_threshold_per_character(curves, recommended, report_dir / "threshold_per_character.png")
    diagrams = {"before (network)": calibration["reliability_before"]}
    if temperature is not None:
        diagrams[f"after (T={temperature:.2f})"] = calibration["reliability_after"]
    plot_reliability(diagrams, report_dir / "reliability.png")
    written += ["threshold_overall.png", "threshold_per_character.png", "reliability.png"]
    log(describe_calibration(calibration))
    open_set = detector = None
    if unknown is not None:
        open_set, detector = open_set_study(predictor, result, unknown, temperature, report_dir / "open_set.png",
                                            training, validation, recommended)
        written.append("open_set.png")
        log(describe_open_set(open_set))
    log(f"wrote {', '.join(written)} to {report_dir}")

    payload = {
        "data": str(data_dir), "images": int(len(true)), "accuracy": result.accuracy, "characters": bundle.characters,
        "test_time_flip": bundle.test_time_flip,
        "figures": {"names": list(FIGURES), "summary": summary, "article": ARTICLE,
                    "calibrated": temperature is not None,
                    "summary_uncalibrated": summarise_figures(confidence_figures(result.probabilities), correct)},
        "prior_correction": prior_study and {"strength": bundle.prior_correction.strength, **prior_study},
        "curves": curves, "recommended": recommended, "calibration": calibration,
        "unknown_characters": {name: len(paths) for name, paths in result.unknown_paths.items()},
        "open_set": open_set,
        "plots": written,
    }
    return Study(payload=payload, temperature=temperature, recommended=recommended, detector=detector,
                 prior_correction=bundle.prior_correction)


def _prior_correction(bundle: Bundle, training: datasets.LabelledImages,
                      validation: datasets.LabelledImages) -> tuple[PriorCorrection, dict]:
    """The prior correction chosen on the validation pictures from the network's logits without any."""
    uncorrected = Predictor(replace(bundle, prior_correction=None), raw=True)
    counts = np.bincount(training.labels, minlength=len(bundle.characters))
    return fit_prior_correction(uncorrected.logits(validation.images), validation.labels, counts.tolist())


def _recommendation(curves: dict, validation: Evaluation | None, temperature: float | None,
                    characters: list[str], objective: Objective, chosen_on: str) -> dict:
    """The thresholds chosen on the validation split (else on the studied data) and where they land on ``curves``."""
    if validation is not None:
        curves_to_choose_on = threshold_curves(softmax(validation.logits, temperature), validation.true, characters)
    else:
        curves_to_choose_on = curves
    recommended = recommend_thresholds(curves_to_choose_on, objective)
    recommended["chosen_on"] = chosen_on
    recommended["on_data"] = _point(curves["overall"], curves["thresholds"], recommended["threshold"])
    return recommended


def _evaluate_known(predictor: Predictor, data_dir: str | Path, log) -> Evaluation:
    """The raw network's answers on the images of ``data_dir`` showing characters the model knows."""
    images = datasets.load_images(data_dir, predictor.image_size)
    if images.bad_files:
        log(datasets.describe_bad_files(images.bad_files))
    result = evaluate(predictor, images)
    if len(result.true) == 0:
        raise SimpsonsError(f"none of the images in {data_dir} shows a character the model knows")
    for name, paths in result.unknown_paths.items():
        log(f"not counted: {len(paths)} image(s) of {name}, a character the model does not know")
    return result


def _calibration(bundle: Bundle, result: Evaluation, validation: Evaluation | None,
                 calibrate: str | Path | None) -> dict:
    """The temperature (fitted on the validation split, else the bundle's) and what it does to the data."""
    calibration: dict = {"temperature": bundle.temperature, "source": "bundle" if bundle.temperature else None}
    if validation is not None:
        temperature = fit_temperature(validation.logits, validation.true)
        calibration = {"temperature": temperature,
                       "source": f"fitted on the shot-aware validation split of {calibrate}",
                       "validation_images": int(len(validation.true)), "validation_accuracy": validation.accuracy,
                       "validation_nll_before": negative_log_likelihood(validation.logits, validation.true),
                       "validation_nll_after": negative_log_likelihood(validation.logits, validation.true, temperature)}
    temperature = calibration["temperature"]
    before = reliability(result.probabilities, result.true)
    after = reliability(softmax(result.logits, temperature), result.true)
    calibration.update({"bins": ECE_BINS, "ece_before": before["ece"], "ece_after": after["ece"],
                        "nll_before": negative_log_likelihood(result.logits, result.true),
                        "nll_after": negative_log_likelihood(result.logits, result.true, temperature or 1.0),
                        "reliability_before": before, "reliability_after": after})
    return calibration


def _plot_scatters(figures: np.ndarray, correct: np.ndarray, true: np.ndarray, bundle: Bundle,
                   character: str | None, report_dir: Path) -> list[str]:
    """The scatter plots of all images and, when asked, of one character's; their file names."""
    plot_scatter(figures, correct, report_dir / "scatter_all.png", "Confidence of correct and wrong predictions")
    if character is None:
        return ["scatter_all.png"]
    mine = true == bundle.characters.index(character)
    plot_scatter(figures[mine], correct[mine], report_dir / f"scatter_{character}.png",
                 f"Confidence of correct and wrong predictions: {pretty(character)} images")
    return ["scatter_all.png", f"scatter_{character}.png"]


def describe_recommendation(recommended: dict, curves: dict) -> str:
    """The recommended thresholds in words."""
    lines = [f"objective: {recommended['objective']}, chosen on {recommended['chosen_on']}"]
    if recommended["threshold"] is None:
        lines.append(f"recommended global threshold: none (precision {recommended['target_precision']:g} "
                     f"is unreachable)" if recommended["target_precision"] is not None
                     else "recommended global threshold: none (no correct prediction)")
    else:
        at, data = recommended["at_threshold"], recommended["on_data"]
        lines.append(f"recommended global threshold: {recommended['threshold']:.2f} (where chosen: precision "
                     f"{at['precision']:.3f}, recall {at['recall']:.3f}, F1 {at['f1']:.3f}; on the data studied: "
                     f"precision {data['precision']:.3f}, recall {data['recall']:.3f}, F1 {data['f1']:.3f}, "
                     f"against F1 {curves['overall']['f1'][0]:.3f} with no threshold)")
    chosen = recommended["character_thresholds"]
    if chosen:
        lines.append("per character: " + ", ".join(f"{name} {value:.2f}" for name, value in chosen.items()))
    if recommended["characters_unreachable"]:
        lines.append("objective unreachable for: " + ", ".join(recommended["characters_unreachable"]))
    return "\n".join(lines)


def describe_calibration(calibration: dict) -> str:
    """Temperature and ECE before/after in one line."""
    if calibration["temperature"] is None:
        return f"no calibration (no training folder to fit it on); ECE {calibration['ece_before']:.4f}"
    return (f"temperature T={calibration['temperature']:.4f} ({calibration['source']}); "
            f"ECE before {calibration['ece_before']:.4f}, after {calibration['ece_after']:.4f}")


def write_to_bundle(bundle: Bundle, study: Study, path: str | Path) -> None:
    """Store the prior correction the study answered with (or none), the recommended thresholds, the
    temperature and the stranger detector (when the study fitted one; else the bundle keeps its own) in
    the bundle file, atomically; its network file stays as it is (so does an ONNX export of it)."""
    from simpsons.bundle import rewrite_description

    if study.recommended["threshold"] is None:
        raise SimpsonsError("no global threshold meets the objective; nothing written to the bundle")
    bundle.threshold = study.recommended["threshold"]
    bundle.character_thresholds = dict(study.recommended["character_thresholds"]) or None
    bundle.temperature = study.temperature
    bundle.prior_correction = study.prior_correction
    if study.detector is not None:
        bundle.stranger_detector = study.detector.stored()
    rewrite_description(bundle, path)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
