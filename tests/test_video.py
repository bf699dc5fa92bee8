"""``simpsons video``: a clip made from the samples, smoothing, SRT cues, bad input, and the real comic-shop clip."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import SAMPLES, open_sample
from PIL import Image
from test_cli import one_line_error, run_cli, run_installed

from simpsons import video
from simpsons.prediction import UNKNOWN, Prediction, Predictor
from simpsons.timeline import Segment, smooth, srt_cues, srt_text
from simpsons.video import CropLabel, Sample, analyse_video, crop_labels, draw_labels, label_font, presence_matrix


FPS = 10
SIZE = (128, 192)  # width, height: both even for yuv420p


def write_clip(path: Path, pictures: list[tuple[str, int]], codec: str = "mpeg4", faststart: bool = False,
               audio: str | None = None, size: tuple[int, int] = SIZE) -> Path:
    """A clip showing each sample picture for its number of frames at ``FPS`` frames per second.

    With ``audio`` (a codec name), a 440 Hz tone as long as the pictures on a mono 8 kHz stream.
    """
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, FPS)
        sound = container.add_stream(audio, rate=8000, layout="mono") if audio else None
        index = 0
        for name, count in pictures:
            picture = open_sample(SAMPLES / name).resize(size)
            for _ in range(count):
                frame = av.VideoFrame.from_image(picture)
                frame.pts = index
                index += 1
                container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if sound:
            write_tone(container, sound, index / FPS)
    return path


def write_tone(container, stream, seconds: float) -> None:
    """``seconds`` of a 440 Hz tone on the audio ``stream``."""
    rate = stream.codec_context.sample_rate
    tone = np.sin(2 * np.pi * 440 * np.arange(round(seconds * rate)) / rate).astype(np.float32)
    for start in range(0, len(tone), 1024):
        frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


@dataclass
class Streams:
    """What a decoder finds in a file: every video frame counted, the rate, the audio codec and length."""

    frames: int
    rate: Fraction
    codec: str
    audio: str | None
    audio_seconds: float


def decode_streams(path: Path) -> Streams:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = sum(1 for _ in container.decode(video))
        seconds = float(audio.duration * audio.time_base) if audio is not None and audio.duration else 0.0
        return Streams(frames, video.average_rate, video.codec_context.name,
                       audio.codec_context.name if audio else None, seconds)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of Bart, then 2 s of Homer, at 10 fps, with a tone in AAC."""
    folder = tmp_path_factory.mktemp("clips")
    pictures = [("bart_simpson_2.jpg", 2 * FPS), ("homer_simpson_0.jpg", 2 * FPS)]
    return write_clip(folder / "bart_then_homer.mp4", pictures, audio="aac")


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


@pytest.mark.slow
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
    crop = timeline["samples"][0]["crops"]["full"]
    assert set(crop) == {"character", "best_guess", "probability", "familiarity"} and 0 <= crop["familiarity"] <= 1
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


# --------------------------------------------------------------------------- the annotated video


def test_annotated_video_has_every_frame_the_rate_the_audio_and_the_labels(capsys, clip, tmp_path):
    out = tmp_path / "annotated.mp4"
    code, stdout, _ = run_cli(capsys, "video", clip, "--out", out, "--sample-fps", 4)
    assert code == 0 and f"wrote {out}" in stdout
    source, made = decode_streams(clip), decode_streams(out)
    assert made.frames == source.frames == 4 * FPS
    assert made.rate == source.rate == FPS
    assert made.codec == "h264"
    assert made.audio == "aac" and made.audio_seconds == pytest.approx(source.audio_seconds, abs=0.15)
    before, after = first_frame(clip), first_frame(out)
    changed = np.abs(after.astype(int) - before.astype(int)).mean(axis=2) > 60
    height = SIZE[1]
    assert changed[: height // 8, : SIZE[0] // 2].mean() > 0.2  # the full frame's label, top left
    assert changed[-height // 8 :].mean() > 0.2  # the halves' labels, bottom
    assert changed[height // 4 : -height // 4].mean() < 0.01  # the picture itself
    assert [p.name for p in tmp_path.iterdir()] == ["annotated.mp4"]


def first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


@pytest.mark.slow
def test_silent_odd_sized_mkv_and_pcm_audio(capsys, tmp_path):
    silent = write_clip(tmp_path / "silent.mkv", [("lisa_simpson_0.jpg", 7)], size=(129, 97))
    code, _, _ = run_cli(capsys, "video", silent, "--out", tmp_path / "silent.mp4", "--crops", "full")
    assert code == 0
    made = decode_streams(tmp_path / "silent.mp4")
    assert (made.frames, made.rate, made.audio) == (7, FPS, None)
    pcm = write_clip(tmp_path / "pcm.mkv", [("lisa_simpson_0.jpg", 12)], audio="pcm_s16le")
    code, _, _ = run_cli(capsys, "video", pcm, "--out", tmp_path / "pcm.mp4")
    assert code == 0
    made = decode_streams(tmp_path / "pcm.mp4")
    assert (made.frames, made.audio) == (12, "aac")  # PCM is re-encoded: MP4 players expect AAC
    assert made.audio_seconds == pytest.approx(1.2, abs=0.15)


def test_without_h264_the_video_is_mpeg4_with_a_warning(capsys, clip, tmp_path, monkeypatch):
    monkeypatch.setattr(video, "H264_ENCODERS", ())
    code, _, err = run_cli(capsys, "video", clip, "--out", tmp_path / "a.mp4", "--crops", "full")
    assert code == 0 and "warning" in err and "MPEG-4" in err
    made = decode_streams(tmp_path / "a.mp4")
    assert (made.codec, made.frames, made.rate) == ("mpeg4", 4 * FPS, FPS)


def test_a_failure_while_encoding_leaves_no_partial_video(capsys, clip, tmp_path, monkeypatch):
    calls = itertools.count()

    def failing(*args):
        if next(calls) == 5:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(video, "draw_labels", failing)
    line = expect_error(capsys, clip, "--out", tmp_path / "a.mp4", "--srt", tmp_path / "s.srt")
    assert "a.mp4" in line and "No space left" in line
    assert [p.name for p in tmp_path.iterdir()] == ["s.srt"]  # complete: written before the video


def prediction(name: str, probability: float) -> Prediction:
    return Prediction(name, probability, [(name, probability)], name)


def test_crop_labels_follow_the_majority_of_neighbouring_samples(predictor):
    full = [("bart_simpson", 0.9), ("bart_simpson", 0.8), ("homer_simpson", 0.95), ("bart_simpson", 0.7),
            ("bart_simpson", 0.9)]
    samples = [Sample(i / 2, {"full": prediction(*answer), "left": prediction("lisa_simpson", 0.3)})
               for i, answer in enumerate(full)]
    labels = crop_labels(samples, predictor, min_prob=0.5, window=3)
    assert [label["full"].character for label in labels] == ["bart_simpson"] * 5  # one odd sample is outvoted
    assert labels[2]["full"].probability == pytest.approx(0.75)  # the mean of the two Bart neighbours
    assert all(label["left"] == CropLabel(UNKNOWN) for label in labels)  # below the presence threshold
    assert [label["full"].character for label in crop_labels(samples, predictor, 0.5, window=1)][2] == "homer_simpson"


def test_no_character_answers_put_nobody_on_screen(predictor):
    samples = [Sample(i / 2, {"full": prediction("no_character", 0.99), "left": prediction("bart_simpson", 0.9)})
               for i in range(3)]
    present, _, sides = presence_matrix(samples, predictor, min_prob=0.5)
    assert present.sum() == 3 and present[:, predictor.characters.index("bart_simpson")].all()
    assert all(sides[row][predictor.characters.index("bart_simpson")] == {"left"} for row in range(3))
    assert all(label["full"] == CropLabel(UNKNOWN) for label in crop_labels(samples, predictor, 0.5, window=3))


def test_unfamiliar_crops_put_nobody_on_screen(predictor):
    """The shipped stranger detector vetoes a sure answer on a crop it finds unfamiliar."""
    threshold = predictor.stranger_detector.threshold
    sure = Prediction("bart_simpson", 0.99, [("bart_simpson", 0.99)], "bart_simpson")
    samples = [Sample(0.0, {"full": replace(sure, familiarity=threshold / 2),
                            "left": replace(sure, familiarity=min(1.0, threshold * 2))})]
    present, _, sides = presence_matrix(samples, predictor, min_prob=0.5)
    assert present.sum() == 1 and sides[0][predictor.characters.index("bart_simpson")] == {"left"}


def test_labels_are_drawn_on_their_halves():
    image = Image.new("RGB", (320, 240), (0, 160, 0))
    labels = {"full": CropLabel("bart_simpson", 0.93), "left": CropLabel(UNKNOWN),
              "right": CropLabel("marge_simpson", 0.8)}
    draw_labels(image, labels, label_font(240))
    pixels = np.asarray(image).astype(int)
    boxed = (pixels == 0).all(axis=2)  # the black boxes behind the text
    grey = (pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])  # the text: white or grey
    lightest = np.where(grey, pixels[..., 0], 0)
    assert boxed[:20, :100].any() and lightest[:20, :100].max() > 220 and not boxed[:20, 220:].any()  # full: top left
    assert boxed[-20:, :60].any() and 120 < lightest[-20:, :60].max() <= 170  # unknown, in grey
    assert boxed[-20:, -60:].any() and lightest[-20:, -60:].max() > 220  # right half: bottom right
    assert not boxed[40:-40].any()


# --------------------------------------------------------------------------- a folder of videos


@pytest.mark.slow
def test_a_folder_gives_one_output_set_per_video_and_reports_the_broken(capsys, clip, tmp_path):
    videos = tmp_path / "videos"
    (videos / "season1").mkdir(parents=True)
    shutil.copy(clip, videos / "bart_then_homer.mp4")
    write_clip(videos / "season1" / "homer.mkv", [("homer_simpson_0.jpg", 10)])
    (videos / "broken.mp4").write_text("not a video")
    (videos / "notes.txt").write_text("not a video either, and not taken for one")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "video", videos, "--out-dir", out, "--sample-fps", 4)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "skipped" in lines[0] and "broken.mp4" in lines[0]
    assert lines[1] == "simpsons: error: 1 of 3 videos failed: broken.mp4"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [f"{name}.{kind}" for name in ("bart_then_homer", "season1/homer")
                       for kind in ("subtitles.srt", "timeline.json", "timeline.png")] + [
                           "series.csv", "series.json", "series.png"]
    timeline = json.loads((out / "bart_then_homer.timeline.json").read_text())
    assert [s["character"] for s in main_segments(timeline["segments"])] == ["bart_simpson", "homer_simpson"]
    assert stdout.count("wrote ") == 3

    subs = tmp_path / "subs"
    code, _, _ = run_cli(capsys, "video", videos / "bart_then_homer.mp4", videos / "season1", "--srt",
                         subs / "cues.srt", "--out", subs / "annotated.mp4", "--sample-fps", 2)
    assert code == 0
    assert sorted(p.relative_to(subs).as_posix() for p in subs.rglob("*") if p.is_file()) == [
        "bart_then_homer.annotated.mp4", "bart_then_homer.cues.srt", "homer.annotated.mp4", "homer.cues.srt"]
    assert decode_streams(subs / "homer.annotated.mp4").frames == 10


def test_several_videos_refuse_outputs_that_collide(capsys, clip, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(clip, tmp_path / folder / "same.mp4")
    line = expect_error(capsys, tmp_path / "a" / "same.mp4", tmp_path / "b" / "same.mp4", "--srt", tmp_path / "s.srt")
    assert "same.s.srt" in line and "twice" in line
    assert not (tmp_path / "same.s.srt").exists()
    assert "nowhere" in expect_error(capsys, tmp_path / "nowhere", "--out-dir", tmp_path / "out")


@pytest.mark.slow
def test_exported_onnx_model_gives_the_same_timeline(capsys, clip, tiny_bundle, tmp_path):
    onnx = tmp_path / "tiny.onnx"
    assert run_cli(capsys, "export", tiny_bundle, "--onnx", onnx)[0] == 0
    for model in (tiny_bundle, onnx):
        code, _, _ = run_cli(capsys, "video", clip, "--model", model, "--timeline", tmp_path / f"{model.suffix}.json")
        assert code == 0
    from_keras, from_onnx = (json.loads((tmp_path / f"{suffix}.json").read_text())["samples"]
                             for suffix in (".simpsons", ".onnx"))
    assert len(from_keras) == len(from_onnx) == 8
    for ours, theirs in zip(from_keras, from_onnx):
        for crop in ("full", "left", "right"):
            assert ours["crops"][crop]["best_guess"] == theirs["crops"][crop]["best_guess"]
            assert ours["crops"][crop]["probability"] == pytest.approx(theirs["crops"][crop]["probability"], abs=1e-4)


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
        write_tone(container, container.add_stream("aac", rate=8000, layout="mono"), 1.0)
    assert "no video stream" in expect_error(capsys, audio, "--out", tmp_path / "a.mp4")
    for suffix, message in ((".avi", "no frame could be decoded"), (".mp4", "no video stream")):
        empty = tmp_path / f"empty{suffix}"  # the header of a video stream, no frame
        with av.open(str(empty), "w") as container:
            stream = container.add_stream("mpeg4", rate=FPS)
            stream.width, stream.height = SIZE
            container.start_encoding()
        line = expect_error(capsys, empty, "--out", tmp_path / "a.mp4")
        assert empty.name in line and message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio_only.mp4", "empty.avi", "empty.mp4"]


def test_truncated_file_exits_2_and_writes_nothing(capsys, clip, tmp_path):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    line = expect_error(capsys, truncated, "--timeline", tmp_path / "t.json", "--srt", tmp_path / "s.srt",
                        "--out", tmp_path / "a.mp4")
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
    assert "file.txt" in expect_error(capsys, clip, "--out", blocker / "a.mp4")
    assert "must end in" in expect_error(capsys, clip, "--timeline", tmp_path / "t.txt")
    assert "must end in .mp4" in expect_error(capsys, clip, "--out", tmp_path / "a.avi")
    assert "crops" in expect_error(capsys, clip, "--crops", "full,top")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    assert "overwrite an input" in expect_error(capsys, clip, "--out", clip)


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.shared
def test_annotated_real_clip_keeps_every_frame_the_rate_and_the_audio(shared_data, capsys, tmp_path):
    clip = shared_data / "videos" / "skateboard_opening.mp4"
    code, _, _ = run_cli(capsys, "video", clip, "--out", tmp_path / "annotated.mp4", "--sample-fps", 1)
    assert code == 0
    source, made = decode_streams(clip), decode_streams(tmp_path / "annotated.mp4")
    assert made.frames == source.frames == 329
    assert made.rate == source.rate == Fraction(30000, 1001)
    assert made.audio == source.audio == "aac"
    assert made.audio_seconds == pytest.approx(source.audio_seconds, abs=0.05)
