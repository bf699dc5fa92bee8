"""Checking a boxes file against a detector: each box's verdict, the report, the cleaned file, and
``dataset check-boxes``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_cli import one_line_error, run_cli

from simpsons.boxes import Box, read_boxes
from simpsons.detection.audit import MAX_SCALE, BoxCheck, check_box, clean_lines, report_csv
from simpsons.detection.detector import Detection

BART = Box(Path("/pictures/bart.jpg"), 40, 20, 120, 180, "bart_simpson")
CORNERS = np.array([40, 20, 120, 180], np.float64)


@pytest.mark.parametrize(("detections", "verdict", "scale"), [
    ([Detection("bart_simpson", 0.9, (42, 22, 118, 176))], "agrees", 1.0),
    ([Detection("bart_simpson", 0.9, (80, 40, 240, 360))], "scaled", 0.5),  # the box is the detection halved
    ([Detection("bart_simpson", 0.9, (20, 10, 60, 90))], "elsewhere", 2.0),  # twice the detection: not scaled
    ([Detection("bart_simpson", 0.9, (300, 20, 380, 180)), Detection("bart_simpson", 0.2, (40, 20, 120, 180))],
     "elsewhere", None),  # the most probable box of its character is the one compared
    ([Detection("homer_simpson", 0.9, (40, 20, 120, 180)), Detection("bart_simpson", 0.01, (40, 20, 120, 180))],
     "not found", 1.0),
    ([], "not found", 1.0),
])
def test_the_verdict_on_a_box(detections, verdict: str, scale: float | None):
    check = check_box(BART, CORNERS, detections)
    assert check.verdict == verdict
    if scale is not None:
        assert check.scale == pytest.approx(scale, abs=1e-3)
    if verdict == "scaled":
        assert check.scale <= MAX_SCALE and check.iou < 0.5


def test_the_cleaned_file_drops_the_scaled_boxes_only_and_its_paths_find_the_pictures(tmp_path):
    pictures = tmp_path / "data"
    pictures.mkdir()
    boxes = [Box(pictures / f"{n}.jpg", 1, 2, 30 + n, 40, "bart_simpson") for n in range(4)]
    checks = [BoxCheck(boxes[0], "agrees"), BoxCheck(boxes[1], "scaled", scale=0.5),
              BoxCheck(boxes[2], "elsewhere")]  # the fourth box's picture could not be read: it stays
    out = tmp_path / "clean" / "boxes.txt"
    out.parent.mkdir()
    out.write_text(clean_lines(boxes, checks, out.parent))
    kept = [boxes[0], boxes[2], boxes[3]]
    assert [(box.path.resolve(), box.x2) for box in read_boxes(out)] == [(box.path, box.x2) for box in kept]
    assert out.read_text().startswith("../data/0.jpg,1,2,30,40,bart_simpson\n")
    rows = list(csv.DictReader(report_csv(checks).splitlines()))
    assert [row["verdict"] for row in rows] == ["scaled", "elsewhere"]


def test_check_boxes_finds_a_scaled_box_with_the_shipped_detector(capsys, samples_dir, tmp_path):
    for name in ("bart_simpson_0.jpg", "homer_simpson_1.jpg", "lenny_leonard_0.jpg"):
        shutil.copy(samples_dir / name, tmp_path / name)
    code, out, _ = run_cli(capsys, "detect", tmp_path / "bart_simpson_0.jpg", tmp_path / "homer_simpson_1.jpg", "--json")
    assert code == 0
    bart, homer = (json.loads(line)["detections"][0]["box"] for line in out.splitlines())
    halved = [round(value / 2) for value in homer]
    boxes = tmp_path / "annotation.txt"
    boxes.write_text("bart_simpson_0.jpg," + ",".join(str(round(v)) for v in bart) + ",bart_simpson\n"
                     "homer_simpson_1.jpg," + ",".join(map(str, halved)) + ",homer_simpson\n"
                     "lenny_leonard_0.jpg,10,10,60,90,lenny_leonard\n")
    report, clean = tmp_path / "report.csv", tmp_path / "out" / "clean.txt"
    code, out, _ = run_cli(capsys, "dataset", "check-boxes", boxes, "--report", report, "--clean", clean)
    assert code == 0, out
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if line.split()[0] in ("agrees", "scaled", "elsewhere", "unknown")}
    assert counts == {"agrees": 1, "scaled": 1, "elsewhere": 0, "unknown": 1}
    rows = list(csv.DictReader(report.read_text().splitlines()))
    assert [(Path(row["path"]).name, row["verdict"]) for row in rows] == [
        ("homer_simpson_1.jpg", "scaled"), ("lenny_leonard_0.jpg", "unknown")]
    assert float(rows[0]["scale"]) == pytest.approx(0.5, abs=0.02)
    assert [(box.path.resolve().name, box.character) for box in read_boxes(clean)] == [
        ("bart_simpson_0.jpg", "bart_simpson"), ("lenny_leonard_0.jpg", "lenny_leonard")]


def test_check_boxes_refuses_bad_input_in_one_line(capsys, tmp_path):
    boxes = tmp_path / "annotation.txt"
    boxes.write_text("a.jpg,1,2,3\n")
    code, _, err = run_cli(capsys, "dataset", "check-boxes", boxes)
    assert code == 2 and "line 1" in one_line_error(err)
    boxes.write_text("a.jpg,1,2,30,40,bart_simpson\n")
    code, _, err = run_cli(capsys, "dataset", "check-boxes", boxes, "--clean", boxes)
    assert code == 2 and "overwrite" in one_line_error(err)
    assert boxes.read_text() == "a.jpg,1,2,30,40,bart_simpson\n"
    code, _, err = run_cli(capsys, "dataset", "check-boxes", boxes)
    assert code == 2 and "can be read" in one_line_error(err)
    code, _, err = run_cli(capsys, "dataset", "check-boxes", tmp_path / "missing.txt")
    assert code == 2 and "cannot read" in one_line_error(err)
