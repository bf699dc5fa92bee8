"""A detector's report: the verdict on each picture's top box, the worst misses, the precision-recall curves, and
``evaluate --boxes --report-dir``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import drawn_png
from test_cli import run_cli

from simpsons.detection.detector import Detection
from simpsons.detection.evaluation import RECALL_POINTS, BoxedAnswers, TrueBoxes, judge_top_box, score_detections
from simpsons.detection.report import WORST_COUNT, worst_misses

NAMES = ["bart_simpson", "homer_simpson", "lisa_simpson"]
TRUTH = TrueBoxes(np.array([[0, 0, 100, 100], [200, 0, 300, 100]], np.float32), ["bart_simpson", "homer_simpson"])


def found(character: str, probability: float, box: tuple[float, float, float, float]) -> Detection:
    return Detection(character, probability, box)


@pytest.mark.parametrize(("detections", "kind", "overlap", "truth"), [
    ([found("bart_simpson", 0.9, (0, 0, 100, 90)), found("homer_simpson", 0.2, (0, 0, 1, 1))], "right", 0.9, 0),
    ([found("homer_simpson", 0.8, (5, 0, 105, 100))], "wrongly named", 0.905, 0),
    ([found("bart_simpson", 0.7, (50, 50, 150, 150))], "badly placed", 2500 / 17500, 0),
    ([found("lisa_simpson", 0.6, (200, 90, 300, 190))], "missed", 1000 / 19000, 1),
    ([found("bart_simpson", 0.6, (400, 400, 450, 450))], "missed", 0.0, 0),
    ([], "nothing found", 0.0, None),
])
def test_the_top_box_verdict(detections, kind: str, overlap: float, truth: int | None):
    verdict = judge_top_box(TRUTH, detections)
    assert (verdict.kind, verdict.truth) == (kind, truth)
    assert verdict.iou == pytest.approx(overlap, abs=1e-3)
    assert verdict.right == (kind == "right")
    assert verdict.detection == (max(detections, key=lambda d: d.probability) if detections else None)


def test_the_worst_misses_come_first_and_right_pictures_never(tmp_path: Path):
    truth = TrueBoxes(np.array([[0, 0, 100, 100]], np.float32), ["bart_simpson"])
    answers = BoxedAnswers(NAMES)
    cases = {"right": [found("bart_simpson", 0.99, (0, 0, 100, 100))],
             "sure_and_wrong": [found("homer_simpson", 0.95, (0, 0, 100, 100))],
             "unsure_and_wrong": [found("lisa_simpson", 0.2, (0, 0, 100, 100))],
             "elsewhere": [found("bart_simpson", 0.6, (300, 300, 400, 400))],
             "empty": []}
    for name, detections in cases.items():
        answers.paths.append(tmp_path / f"{name}.jpg")
        answers.truths.append(truth)
        answers.found.append(detections)
    misses = worst_misses(answers)
    assert [miss.path.stem for miss in misses] == ["empty", "sure_and_wrong", "elsewhere", "unsure_and_wrong"]
    assert [miss.top.kind for miss in misses] == ["nothing found", "wrongly named", "missed", "wrongly named"]
    listed = misses[1].as_dict()
    assert listed["top"] == {"character": "homer_simpson", "probability": 0.95, "box": [0.0, 0.0, 100.0, 100.0]}
    assert listed["truth"] == [{"character": "bart_simpson", "box": [0.0, 0.0, 100.0, 100.0]}]
    assert "Homer Simpson 0.95 on Bart Simpson" in listed["why"]
    assert len(worst_misses(answers, count=2)) == 2
    answers.paths, answers.truths, answers.found = answers.paths * 5, answers.truths * 5, answers.found * 5
    assert len(worst_misses(answers)) == WORST_COUNT


def test_the_precision_recall_curves_are_cocos():
    truths = [TrueBoxes(np.array([[10, 10, 60, 90]], np.float32), [NAMES[index % 2]]) for index in range(8)]
    perfect = [[found(truth.characters[0], 0.9, tuple(truth.boxes[0]))] for truth in truths]
    scores = score_detections(truths, perfect, NAMES)
    assert set(scores.precision_50) == {"bart_simpson", "homer_simpson"}  # Lisa has no true box: no curve
    for curve in scores.precision_50.values():
        np.testing.assert_allclose(curve, np.ones(len(RECALL_POINTS)))
    half = [[found(truth.characters[0], 0.9 - index / 100, tuple(truth.boxes[0] + (0 if index < 4 else 80)))]
            for index, truth in enumerate(truths)]  # the less probable half far off: recall stops at one half
    scores = score_detections(truths, half, NAMES)
    for name, curve in scores.precision_50.items():
        assert curve[RECALL_POINTS <= 0.5].min() > 0 and np.all(curve[RECALL_POINTS > 0.5] == 0)
        assert np.mean(curve) == pytest.approx(scores.ap_50[name])


def test_evaluate_writes_the_report(capsys, tiny_detector: Path, tmp_path: Path, samples_dir: Path):
    boxes = tmp_path / "annotation.txt"
    lines = [f"{samples_dir / 'bart_simpson_0.jpg'},5,5,60,90,bart_simpson",
             f"{samples_dir / 'lisa_simpson_1.jpg'},10,10,80,120,lisa_simpson",
             f"{samples_dir / 'homer_simpson_0.jpg'},20,10,90,120,homer_simpson",
             f"{samples_dir / 'homer_simpson_0.jpg'},100,10,150,120,bart_simpson",
             f"{samples_dir / 'homer_simpson_1.jpg'},0,0,40,40,homer_simpson",
             f"{samples_dir / 'moe_szyslak_0.jpg'},10,10,50,50,moe_szyslak"]
    boxes.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report"
    code, out, _ = run_cli(capsys, "evaluate", samples_dir, "--boxes", boxes, "--model", tiny_detector,
                           "--report-dir", report, "--json", tmp_path / "scores.json")
    assert code == 0 and f"to {report}" in out
    assert sorted(path.name for path in report.iterdir()) == [
        "precision_recall.png", "scores.json", "worst_misses.json", "worst_misses.png"]  # no partial file left
    scores = json.loads((report / "scores.json").read_text())
    assert scores == json.loads((tmp_path / "scores.json").read_text())
    assert scores["pictures"] == 4 and scores["boxes"] == 5
    for name in ("precision_recall.png", "worst_misses.png"):
        assert drawn_png(report / name).width > 400
    misses = json.loads((report / "worst_misses.json").read_text())
    assert len(misses) == round(scores["pictures"] * (1 - scores["top_box_right"])) >= 1
    truths = {}
    for line in lines[:5]:
        path, *corners, character = line.split(",")
        truths.setdefault(path, []).append(character)
    for miss in misses:
        assert Path(miss["path"]).is_file() and miss["path"] in truths
        assert [box["character"] for box in miss["truth"]] == truths[miss["path"]]
        assert miss["kind"] in ("wrongly named", "badly placed", "missed", "nothing found") and miss["why"]
        assert miss["top"] is None or miss["top"]["character"] in NAMES
    confidences = [miss["top"]["probability"] if miss["top"] else 2.0 for miss in misses]
    assert confidences == sorted(confidences, reverse=True)
