"""``simpsons video``: a clip made from the samples, smoothing, SRT cues, bad input, and the real comic-shop clip."""

from __future__ import annotations

import csv
import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import SAMPLES, open_sample
from test_cli import one_line_error, run_cli, run_installed

from simpsons.prediction import Predictor
from simpsons.video import Segment, analyse_video, smooth, srt_cues, srt_text

FPS = 10
SIZE = (128, 192)  # width, height: both even for yuv420p


def write_clip(path: Path, pictures: list[tuple[str, int]], codec: str = "mpeg4", faststart: bool = False) -> Path:
    """A clip showing each sample picture for its number of frames at ``FPS`` frames per second."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, FPS)
        index = 0
        for name, count in pictures:
            picture = open_sample(SAMPLES / name).resize(SIZE)
            for _ in range(count):
                frame = av.VideoFrame.from_image(picture)
                frame.pts = index
                index += 1
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of Bart, then 2 s of Homer, at 10 fps."""
    folder = tmp_path_factory.mktemp("clips")
    return write_clip(folder / "bart_then_homer.mp4", [("bart_simpson_2.jpg", 2 * FPS), ("homer_simpson_0.jpg", 2 * FPS)])


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


@pytest.fixture(scope="module")
def result(clip, predictor):
    return analyse_video(clip, predictor, sample_fps=4, progress=False)


# --------------------------------------------------------------------------- the generated clip


def main_segments(segments: list[dict]) -> list[dict]:
    """The segments of the two characters on screen, in order."""
    return [s for s in segments if s["character"] in ("bart_simpson", "homer_simpson")]


def test_clip_segments_name_bart_then_homer(result):
    assert result.info.frames == 4 * FPS
    assert result.info.duration == pytest.approx(4.0, abs=0.2)
    assert (result.info.width, result.info.height) == SIZE
    assert len(result.samples) == 16  # 4 samples per second, sampled by timestamp
    segments = [s.as_dict() for s in result.segments]
    ordered = main_segments(segments)
    assert [s["character"] for s in ordered] == ["bart_simpson", "homer_simpson"], segments
    bart, homer = ordered
    assert bart["start"] == pytest.approx(0.0, abs=0.3) and bart["end"] == pytest.approx(2.0, abs=0.3)
    assert homer["start"] == pytest.approx(2.0, abs=0.3) and homer["end"] == pytest.approx(4.0, abs=0.3)
    assert 0.5 <= bart["mean_probability"] <= 1 and 0.5 <= homer["mean_probability"] <= 1
    assert "full" in bart["crops"] and "full" in homer["crops"]
    others = sum(s["duration"] for s in segments if s not in ordered)
    assert others <= 1.0, segments


def test_cli_writes_timeline_srt_and_chart(capsys, clip, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "video", clip, "--timeline", out / "t.json", "--srt", out / "s.srt",
                              "--chart", out / "c.png", "--sample-fps", 5, "--batch-frames", 3)
    assert code == 0
    table = stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("character"))
    assert {table[header + 1].split()[0], table[header + 2].split()[0]} == {"Bart", "Homer"}

    timeline = json.loads((out / "t.json").read_text())
    assert timeline["video"]["frames"] == 4 * FPS and timeline["video"]["fps"] == pytest.approx(FPS)
    assert {"width", "height", "duration"} <= set(timeline["video"])
    assert len(timeline["samples"]) == 20
    assert set(timeline["samples"][0]["crops"]) == {"full", "left", "right"}
    assert [s["character"] for s in main_segments(timeline["segments"])] == ["bart_simpson", "homer_simpson"]
    for segment in timeline["segments"]:  # the segments agree with the smoothed presence of the samples
        inside = [s for s in timeline["samples"] if segment["start"] <= s["time"] < segment["end"]]
        assert inside and all(segment["character"] in s["present"] for s in inside)
    for name, seconds in timeline["screen_time"].items():
        assert seconds == pytest.approx(sum(s["duration"] for s in timeline["segments"] if s["character"] == name),
                                        abs=0.01)

    cues = parse_srt((out / "s.srt").read_text())
    assert cues and cues[0][2] == "Bart Simpson" and any("Homer Simpson" in text for *_, text in cues)
    assert all(start < end for start, end, _ in cues)
    assert all(a[1] <= b[0] for a, b in zip(cues, cues[1:]))

    png = (out / "c.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert not [p.name for p in out.iterdir() if "partial" in p.name]

    code, _, _ = run_cli(capsys, "video", clip, "--timeline", out / "t.csv", "--sample-fps", 5, "--crops", "full")
    assert code == 0
    rows = list(csv.DictReader((out / "t.csv").open()))
    assert [r["character"] for r in rows if r["character"] in ("bart_simpson", "homer_simpson")] == [
        "bart_simpson", "homer_simpson"]
    assert all(float(r["start"]) < float(r["end"]) and r["crops"] == "full" for r in rows)


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    """SRT blocks as ``(start, end, text)``; fails on a malformed block or index."""
    def seconds(stamp: str) -> float:
        h, m, rest = stamp.split(":")
        s, ms = rest.split(",")
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    cues = []
    for number, block in enumerate(text.strip().split("\n\n"), start=1):
        lines = block.splitlines()
        assert lines[0] == str(number), block
        match = re.fullmatch(r"(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)", lines[1])
        assert match, block
        assert len(lines) == 3 and lines[2].strip(), block
        cues.append((seconds(match[1]), seconds(match[2]), lines[2]))
    return cues


# --------------------------------------------------------------------------- smoothing and cues


def test_smoothing_removes_a_single_odd_sample_and_fills_a_single_gap():
    present = np.zeros((9, 2), bool)
    present[4, 0] = True  # one stray sample of character 0
    present[:, 1] = True
    present[3, 1] = False  # one missed sample of character 1
    smoothed = smooth(present, 3)
    assert not smoothed[:, 0].any()
    assert smoothed[:, 1].all()
    two = np.zeros((6, 1), bool)
    two[2:4] = True  # two samples in a row are kept
    assert smooth(two, 3)[:, 0].tolist() == two[:, 0].tolist()
    assert smooth(present, 1).tolist() == present.tolist()


def test_overlapping_segments_merge_into_cues_listing_all_names():
    segments = [Segment("bart_simpson", 0.0, 2.0, 0.9), Segment("marge_simpson", 1.0, 3.0, 0.8),
                Segment("bart_simpson", 2.0, 2.5, 0.7)]
    assert srt_cues(segments) == [(0.0, 1.0, ["bart_simpson"]), (1.0, 2.5, ["bart_simpson", "marge_simpson"]),
                                  (2.5, 3.0, ["marge_simpson"])]
    cues = parse_srt(srt_text(segments))
    assert cues[1] == (1.0, 2.5, "Bart Simpson, Marge Simpson")


# --------------------------------------------------------------------------- bad input


def expect_error(capsys, *argv) -> str:
    code, stdout, err = run_cli(capsys, "video", *argv)
    assert code == 2
    return one_line_error(err)


def test_missing_file_exits_2(capsys, tmp_path):
    assert "nowhere.mp4" in expect_error(capsys, tmp_path / "nowhere.mp4")


def test_text_file_and_jpeg_are_not_videos(capsys, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    assert "notes.mp4" in expect_error(capsys, text)
    assert "still image" in expect_error(capsys, SAMPLES / "bart_simpson_0.jpg")


def test_no_video_stream_and_zero_frames_exit_2(capsys, tmp_path):
    audio = tmp_path / "audio_only.mp4"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert "no video stream" in expect_error(capsys, audio)
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
    assert "empty.mp4" in expect_error(capsys, empty)


def test_truncated_file_exits_2_and_writes_nothing(capsys, clip, tmp_path):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    line = expect_error(capsys, truncated, "--timeline", tmp_path / "t.json", "--srt", tmp_path / "s.srt")
    assert "truncated.mp4" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truncated.mp4"]
    # the index first (faststart): the file opens, then decoding stops early
    whole = write_clip(tmp_path / "whole.mp4", [("homer_simpson_0.jpg", 4 * FPS)], codec="libx264", faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    line = expect_error(capsys, cut, "--srt", tmp_path / "s.srt")
    assert "cut.mp4" in line and "truncated" in line
    assert not (tmp_path / "s.srt").exists()


def test_unwritable_output_exits_2_before_decoding(capsys, clip, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert "file.txt" in expect_error(capsys, clip, "--timeline", blocker / "sub" / "t.json")
    assert "file.txt" in expect_error(capsys, clip, "--chart", blocker / "c.png")
    assert "must end in" in expect_error(capsys, clip, "--timeline", tmp_path / "t.txt")
    assert "crops" in expect_error(capsys, clip, "--crops", "full,top")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_subprocess_not_a_video_exits_2(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    result = run_installed("video", str(text), cwd=tmp_path)
    assert result.returncode == 2
    assert "notes.txt" in one_line_error(result.stderr)
    assert result.stdout == ""


# --------------------------------------------------------------------------- the real clips


@pytest.mark.shared
def test_comic_shop_clip_shows_bart_and_marge(shared_data, predictor):
    clip = shared_data / "videos" / "comic_shop.mp4"
    found = analyse_video(clip, predictor, progress=False)
    assert (found.info.width, found.info.height) == (400, 300)
    names = {segment.character for segment in found.segments}
    assert {"bart_simpson", "marge_simpson"} <= names
    assert next(iter(found.segments[0:1])).start >= 0
