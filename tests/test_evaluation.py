"""Evaluation helpers on hand-made answers: the most confused pairs and their picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import drawn_png

from simpsons.evaluation import ANSWERED_UNKNOWN, Evaluation, confused_pairs, plot_confused_pairs


def hand_made(sample_paths: list[Path]) -> Evaluation:
    """Four characters, 4 images each: a->b twice, b->a once, c->d once, one 'unknown' answer for d."""
    true = np.repeat(np.arange(4), 4)
    predicted = true.copy()
    predicted[[0, 1]] = 1
    predicted[4] = 0
    predicted[8] = 3
    predicted[12] = ANSWERED_UNKNOWN
    probabilities = np.eye(4)[np.where(predicted < 0, true, predicted)]
    return Evaluation(characters=["a", "b", "c", "d"], true=true, predicted=predicted, probabilities=probabilities,
                      logits=np.log(probabilities + 1e-6), paths=[str(p) for p in sample_paths[:16]])


def test_confused_pairs_rank_by_share_and_keep_their_examples(sample_paths):
    evaluation = hand_made(sample_paths)
    pairs = confused_pairs(evaluation)
    assert [(p["true"], p["predicted"], p["images"]) for p in pairs] == [("a", "b", 2), ("b", "a", 1), ("c", "d", 1)]
    assert pairs[0]["share_of_true"] == 0.5  # 'unknown' answers are not a confusion
    assert pairs[0]["examples"] == [str(sample_paths[0]), str(sample_paths[1])]
    assert len(confused_pairs(evaluation, top=1)) == 1
    assert evaluation.as_dict()["most_confused"][0] == {"true": "a", "predicted": "b", "images": 2,
                                                        "share_of_true": 0.5}


def test_confused_pairs_picture_has_a_row_per_pair(sample_paths, tmp_path):
    evaluation = hand_made(sample_paths)
    plot_confused_pairs(evaluation, tmp_path / "three.png")
    plot_confused_pairs(evaluation, tmp_path / "one.png", top=1)
    three, one = drawn_png(tmp_path / "three.png"), drawn_png(tmp_path / "one.png")
    assert three.height > 2 * one.height and abs(three.width - one.width) < one.width / 10  # 3 rows, 1 row
    perfect = hand_made(sample_paths)
    perfect.predicted = perfect.true.copy()
    plot_confused_pairs(perfect, tmp_path / "none.png")  # no mistakes: an empty figure, not a crash
    drawn_png(tmp_path / "none.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none.png", "one.png", "three.png"]  # no partial file
