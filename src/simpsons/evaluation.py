"""Evaluation: per-character metrics, the confusion matrix, the grid of 12 and the most confused pairs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from simpsons.bundle import Bundle, rewrite_description
from simpsons.data import LabelledImages, open_rgb
from simpsons.plots import plt, pretty, save_figure
from simpsons.prediction import UNKNOWN, Predictor


def accuracy_of(bundle: Bundle, data: LabelledImages) -> float:
    """Top-1 accuracy of a bundle on images labelled with the bundle's characters."""
    if len(data) == 0:
        return float("nan")
    predicted = Predictor(bundle).probabilities(data.images).argmax(axis=1)
    return float(np.mean(predicted == data.labels))


def confidence_figures(probabilities: np.ndarray) -> np.ndarray:
    """Per image: best probability, gap between the two best, population std of the vector; shape (n, 3)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    ordered = np.sort(probabilities, axis=1)
    best = ordered[:, -1]
    second = ordered[:, -2] if probabilities.shape[1] > 1 else np.zeros(len(probabilities))
    return np.stack([best, best - second, probabilities.std(axis=1)], axis=1)


ANSWERED_UNKNOWN = -1


@dataclass
class Evaluation:
    """The outcome of ``evaluate``: metrics on the known characters, unknown ones apart.

    ``predicted`` holds ``ANSWERED_UNKNOWN`` where the bundle's thresholds (or its stranger
    detector) made the answer ``unknown``: such an image counts against recall and accuracy, not
    against precision. ``features`` are the network's pooled features (the confidence study's).
    """

    characters: list[str]
    true: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray
    logits: np.ndarray
    paths: list[str]
    unknown_paths: dict[str, list[str]] = field(default_factory=dict)
    features: np.ndarray | None = None

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.true == self.predicted)) if len(self.true) else float("nan")

    @property
    def top1_accuracy(self) -> float:
        """Accuracy of the best guesses: the bundle's thresholds ignored."""
        return float(np.mean(self.true == self.probabilities.argmax(axis=1))) if len(self.true) else float("nan")

    @property
    def unknown_answers(self) -> int:
        return int(np.sum(self.predicted == ANSWERED_UNKNOWN))

    @property
    def accuracy_on_answered(self) -> float | None:
        """Accuracy over the images that got a character (``None`` when every answer was ``unknown``)."""
        answered = self.predicted != ANSWERED_UNKNOWN
        return float(np.mean(self.true[answered] == self.predicted[answered])) if answered.any() else None

    def predicted_name(self, index: int) -> str:
        """The answer for image ``index``: a character or ``unknown``."""
        label = int(self.predicted[index])
        return UNKNOWN if label == ANSWERED_UNKNOWN else self.characters[label]

    def report_text(self) -> str:
        """scikit-learn's per-character precision, recall, F1 and support."""
        labels = list(range(len(self.characters)))
        return classification_report(
            self.true, self.predicted, labels=labels, target_names=self.characters, digits=3, zero_division=0
        )

    def as_dict(self) -> dict:
        labels = list(range(len(self.characters)))
        per_class = classification_report(
            self.true, self.predicted, labels=labels, target_names=self.characters, output_dict=True, zero_division=0
        )
        return {
            "images": int(len(self.true)),
            "accuracy": self.accuracy,
            "top1_accuracy": self.top1_accuracy,
            "macro_f1": float(f1_score(self.true, self.predicted, labels=labels, average="macro", zero_division=0)),
            "weighted_f1": float(f1_score(self.true, self.predicted, labels=labels, average="weighted", zero_division=0)),
            "per_class": {name: per_class[name] for name in self.characters},
            "characters": self.characters,
            "confusion_matrix": confusion_matrix(self.true, self.predicted, labels=labels).tolist(),
            "unknown_characters": {name: len(paths) for name, paths in self.unknown_paths.items()},
            "unknown_answers": self.unknown_answers,
            "most_confused": [{key: value for key, value in pair.items() if key != "examples"}
                              for pair in confused_pairs(self)],
            "accuracy_on_answered": self.accuracy_on_answered,
        }


def evaluate(predictor: Predictor, data: LabelledImages) -> Evaluation:
    """Predict every image; images of characters the model does not know are set apart."""
    known = [i for i, name in enumerate(data.characters) if name in predictor.characters]
    model_index = {name: i for i, name in enumerate(predictor.characters)}
    keep = np.array([i for i, label in enumerate(data.labels) if label in known], dtype=np.int64)
    unknown: dict[str, list[str]] = {}
    for i, label in enumerate(data.labels):
        if label not in known:
            unknown.setdefault(data.characters[label], []).append(data.paths[i])
    logits, features = predictor.logits_and_features(data.images[keep])
    scores = predictor.scores_from(logits, features)
    probabilities = scores.probabilities
    predicted = probabilities.argmax(axis=1) if len(keep) else np.zeros(0, np.int64)
    answers = predictor.decide(probabilities, top_k=1, familiarity=scores.familiarity)
    rejected = [i for i, answer in enumerate(answers) if answer.character == UNKNOWN]
    predicted[rejected] = ANSWERED_UNKNOWN
    return Evaluation(
        characters=predictor.characters,
        true=np.array([model_index[data.characters[data.labels[i]]] for i in keep], dtype=np.int64),
        predicted=predicted,
        probabilities=probabilities,
        logits=logits,
        paths=[data.paths[i] for i in keep],
        unknown_paths=unknown,
        features=features,
    )


def record_test_accuracy(predictor: Predictor, path: str | Path, data_dir: str | Path, metrics: dict) -> None:
    """Store the best guesses' accuracy on a test set in the bundle's metrics (what ``serve`` shows, like
    ``train --test``), atomically; the bundle's network file stays as it is."""
    bundle = predictor.bundle
    test = {"test_accuracy": metrics["top1_accuracy"], "test_images": metrics["images"],
            "test_data": str(Path(data_dir).resolve())}
    bundle.metadata = {**bundle.metadata, "metrics": {**bundle.metadata.get("metrics", {}), **test}}
    rewrite_description(bundle, path)


def plot_confusion_matrix(evaluation: Evaluation, path: str | Path) -> None:
    """Row-normalised confusion matrix (recall on the diagonal) with readable names.

    When the bundle's thresholds answered ``unknown`` for some images, they get a last column.
    """
    labels = list(range(len(evaluation.characters)))
    columns = labels + ([ANSWERED_UNKNOWN] if evaluation.unknown_answers else [])
    matrix = confusion_matrix(evaluation.true, evaluation.predicted, labels=columns).astype(float)[: len(labels)]
    matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    names = [pretty(c) for c in evaluation.characters]
    size = max(6, 0.45 * len(names) + 3)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    shown = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(columns)), names + (["(unknown)"] if len(columns) > len(labels) else []),
                    rotation=60, ha="right", fontsize=8)
    axes.set_yticks(labels, names, fontsize=8)
    for row, col in zip(*np.nonzero(matrix >= 0.01)):
        value = matrix[row, col]
        axes.text(col, row, f"{value:.2f}"[1:] if value < 1 else "1", ha="center", va="center", fontsize=6,
                  color="white" if value > 0.6 else "black")
    axes.set_xlabel("predicted character")
    axes.set_ylabel("true character")
    axes.set_title(f"Confusion matrix (rows sum to 1), accuracy {evaluation.accuracy:.3f}")
    figure.colorbar(shown, ax=axes, fraction=0.04, label="share of the true character's images")
    save_figure(figure, path)


def plot_prediction_grid(evaluation: Evaluation, path: str | Path, count: int = 12, seed: int = 0) -> None:
    """The article's visual check: 12 pictures with true and predicted names, mistakes in red."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(evaluation.true), size=min(count, len(evaluation.true)), replace=False)
    columns = 4
    rows = max(1, int(np.ceil(len(chosen) / columns)))
    figure, axes_grid = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows))
    for axes, index in zip(np.ravel(axes_grid), chosen):
        truth = evaluation.characters[evaluation.true[index]]
        guess = evaluation.predicted_name(index)
        probability = evaluation.probabilities[index].max()
        axes.imshow(open_rgb(evaluation.paths[index]))
        right = truth == guess
        axes.set_title(f"true: {pretty(truth)}\npredicted: {pretty(guess)} ({probability:.0%})",
                       fontsize=9, color="black" if right else "red")
        if not right:
            for spine in axes.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(3)
        axes.set_xticks([])
        axes.set_yticks([])
    for axes in np.ravel(axes_grid)[len(chosen):]:
        axes.axis("off")
    figure.suptitle("True and predicted characters (mistakes in red)")
    save_figure(figure, path)


def confused_pairs(evaluation: Evaluation, top: int = 6) -> list[dict]:
    """The ``top`` most frequent (true, predicted) mistakes between two characters, largest share first."""
    mistakes = (evaluation.predicted != evaluation.true) & (evaluation.predicted != ANSWERED_UNKNOWN)
    counts = Counter(zip(evaluation.true[mistakes].tolist(), evaluation.predicted[mistakes].tolist()))
    support = np.bincount(evaluation.true, minlength=len(evaluation.characters))
    ranked = sorted(counts.items(), key=lambda item: (-item[1] / support[item[0][0]], -item[1], item[0]))[:top]
    return [
        {"true": evaluation.characters[truth], "predicted": evaluation.characters[guess], "images": count,
         "share_of_true": count / int(support[truth]),
         "examples": [evaluation.paths[i] for i in np.flatnonzero(mistakes & (evaluation.true == truth)
                                                                  & (evaluation.predicted == guess))]}
        for (truth, guess), count in ranked
    ]


def plot_confused_pairs(evaluation: Evaluation, path: str | Path, top: int = 6, examples: int = 3) -> None:
    """One row per most-confused pair: up to ``examples`` of its mistaken pictures."""
    pairs = confused_pairs(evaluation, top)
    rows = max(1, len(pairs))
    figure, axes_grid = plt.subplots(rows, examples, figsize=(3.0 * examples, 3.1 * rows), squeeze=False)
    for row, pair in zip(axes_grid, pairs):
        for axes, example in zip(row, pair["examples"][:examples]):
            axes.imshow(open_rgb(example))
            axes.set_title(Path(example).name, fontsize=8)
        row[0].set_ylabel(f"{pretty(pair['true'])}\n→ {pretty(pair['predicted'])}\n"
                          f"{pair['images']} ({pair['share_of_true']:.0%})", fontsize=9)
    for axes in axes_grid.ravel():
        axes.set_xticks([])
        axes.set_yticks([])
        if not axes.images:
            axes.set_frame_on(False)
    figure.suptitle("Most confused pairs: true → predicted,\nmistakes (share of the true character's pictures)", y=1.02)
    save_figure(figure, path)
