"""``simpsons video --detect``: screen time from a detector's boxes, through the same timeline, subtitles, chart
and annotated video as the classifier's crops; its bad options; the Python API and a series' episode."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from test_cli import one_line_error, run_cli
from test_video import FPS, SIZE, decode_streams, parse_srt, write_clip

import simpsons
from simpsons.detection import detector as detector_module
from simpsons.detection.detector import DEFAULT_MIN_PROBABILITY, Detection
from simpsons.errors import SimpsonsError
from simpsons.series import analyse_episode
from simpsons.video import Options, Outputs, Sample, box_presence

CHARACTERS = ["bart_simpson", "homer_simpson", "lisa_simpson"]  # the tiny detector's


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s of Bart, then 1 s of Homer, at 10 fps."""
    pictures = [("bart_simpson_2.jpg", FPS), ("homer_simpson_0.jpg", FPS)]
    return write_clip(tmp_path_factory.mktemp("clips") / "bart_then_homer.mp4", pictures)


def frame_of(path: Path, number: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == number:
                return frame.to_ndarray(format="rgb24").astype(int)
    raise AssertionError(f"{path} has no frame {number}")


def test_detect_writes_the_timeline_subtitles_chart_and_a_video_with_the_boxes(capsys, clip, tiny_detector,
                                                                                tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "video", clip, "--detect", "--detector", tiny_detector, "--min-prob", 0,
                                "--sample-fps", 4, "--batch-frames", 3, "--timeline", out / "t.json",
                                "--srt", out / "s.srt", "--chart", out / "c.png", "--out", out / "boxes.mp4")
    assert code == 0, err
    assert "8 samples through the detector" in stdout

    timeline = json.loads((out / "t.json").read_text())
    assert timeline["settings"] == {"model": str(tiny_detector), "detect": True, "sample_fps": 4.0, "crops": [],
                                    "min_prob": 0.0, "smoothing_window": 3}
    samples = timeline["samples"]
    assert len(samples) == 8 and all(set(s) == {"time", "crops", "present", "boxes"} for s in samples)
    assert all(s["crops"] == {} for s in samples)
    width, height = SIZE
    for sample in samples:
        for box in sample["boxes"]:
            assert box["character"] in CHARACTERS and 0 <= box["probability"] <= 1
            x1, y1, x2, y2 = box["box"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, box  # the frame's pixels, not the canvas's
    named = [{box["character"] for box in s["boxes"]} for s in samples]
    assert max(len(names) for names in named) >= 2  # several characters in one frame
    assert {s["character"] for s in timeline["segments"]} == set().union(*named)
    for segment in timeline["segments"]:  # the segments agree with the smoothed presence of the samples
        assert segment["crops"] == []
        inside = [s for s in samples if segment["start"] <= s["time"] < segment["end"]]
        assert inside and all(segment["character"] in s["present"] for s in inside)

    cues = parse_srt((out / "s.srt").read_text())
    assert cues and all(start < end for start, end, _ in cues)
    assert (out / "c.png").read_bytes().startswith(b"\x89PNG")

    code, _, err = run_cli(capsys, "video", clip, "--crops", "full", "--out", out / "names.mp4")
    assert code == 0, err
    boxed, named_video, source = (decode_streams(path) for path in (out / "boxes.mp4", out / "names.mp4", clip))
    assert boxed.frames == named_video.frames == source.frames == 2 * FPS
    assert boxed.rate == source.rate and boxed.codec == "h264"
    changed = np.abs(frame_of(out / "boxes.mp4", 0) - frame_of(clip, 0)).mean(axis=2) > 60
    assert changed.mean() > 0.02  # the boxes and names drawn over the picture
    assert sorted(p.name for p in out.iterdir()) == ["boxes.mp4", "c.png", "names.mp4", "s.srt", "t.json"]


def expect_error(capsys, *argv) -> str:
    code, _, err = run_cli(capsys, "video", *argv)
    assert code == 2
    return one_line_error(err)


def test_detect_refuses_the_classifiers_options_and_a_bundle_that_is_no_detector(capsys, clip, tiny_bundle,
                                                                                  tiny_detector, tmp_path,
                                                                                  monkeypatch):
    srt = tmp_path / "s.srt"
    assert "--crops" in expect_error(capsys, clip, "--detect", "--crops", "full", "--srt", srt)
    assert "--detector BUNDLE" in expect_error(capsys, clip, "--detect", "--model", tiny_bundle, "--srt", srt)
    assert "--detect" in expect_error(capsys, clip, "--detector", tiny_detector, "--srt", srt)
    assert "nowhere.simpsons" in expect_error(capsys, clip, "--detect", "--detector", tmp_path / "nowhere.simpsons",
                                              "--srt", srt)
    assert "is a classifier" in expect_error(capsys, clip, "--detect", "--detector", tiny_bundle, "--srt", srt)
    monkeypatch.setattr(detector_module, "default_detector_path", lambda: tmp_path / "none.detector.simpsons")
    line = expect_error(capsys, clip, "--detect", "--srt", srt)
    assert "no detector ships" in line and "give it as --detector" in line
    folder = tmp_path / "episodes"
    folder.mkdir()
    (folder / "one.mp4").write_bytes(clip.read_bytes())
    line = expect_error(capsys, folder, "--detect", "--detector", tiny_bundle, "--out-dir", tmp_path / "out")
    assert "is a classifier" in line  # before any worker starts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episodes"]


def test_a_sample_puts_on_screen_every_character_it_has_a_box_of():
    boxes = [Detection("homer_simpson", 0.4, (0, 0, 10, 10)), Detection("bart_simpson", 0.9, (20, 0, 30, 10)),
             Detection("homer_simpson", 0.7, (40, 0, 50, 10))]
    samples = [Sample(0.0, {}, boxes), Sample(0.5, {}, []), Sample(1.0, {}, boxes[:1])]
    present, best, sides = box_presence(samples, CHARACTERS)
    assert present.tolist() == [[True, True, False], [False, False, False], [False, True, False]]
    assert best[0].tolist() == pytest.approx([0.9, 0.7, 0.0]) and best[2, 1] == pytest.approx(0.4)
    assert sides == [[set(), set(), set()]] * 3


def test_the_api_detects_with_the_same_pipeline(clip, tiny_detector):
    timeline = simpsons.analyse_video(clip, sample_fps=2, detect=True, detector=tiny_detector, min_prob=0)
    assert len(timeline.samples) == 4 and all(s.crops == {} for s in timeline.samples)
    assert all(isinstance(box, Detection) for s in timeline.samples for box in s.boxes)
    assert set(timeline.screen_time) <= set(CHARACTERS) and timeline.screen_time
    sure = simpsons.analyse_video(clip, sample_fps=2, detect=True, detector=tiny_detector)
    assert all(box.probability >= DEFAULT_MIN_PROBABILITY for s in sure.samples for box in s.boxes)
    with pytest.raises(SimpsonsError, match="classifier"):
        simpsons.analyse_video(clip, detect=True, detector=tiny_detector, crops=["full"])
    with pytest.raises(SimpsonsError, match="detect=True"):
        simpsons.analyse_video(clip, detector=tiny_detector)


def test_an_episode_of_a_series_is_analysed_with_the_detector(clip, tiny_detector, tmp_path):
    outputs = Outputs(tmp_path / "one.timeline.json", video=tmp_path / "one.mp4")
    options = Options(sample_fps=2, min_prob=0, detect=True)
    answer = analyse_episode(clip, outputs, options, str(tiny_detector), "tiny")
    assert isinstance(answer, tuple), answer
    timeline = json.loads(outputs.timeline.read_text())
    assert timeline["settings"] == options.settings("tiny") and timeline["settings"]["detect"]
    assert all("boxes" in sample for sample in timeline["samples"])
    assert decode_streams(outputs.video).frames == 2 * FPS
    assert "detect" not in Options().settings("default")  # the classifier's settings keep their keys
