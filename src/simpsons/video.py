"""Who is on screen when: sample a video's frames, answer them with the classifier (fixed crops of each frame)
or the detector (boxes anywhere in it), smooth and cut into segments (see ``timeline``), and write the timeline,
subtitles, chart and annotated video."""

from __future__ import annotations

import json
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from simpsons.data import NO_CHARACTER, gather_files
from simpsons.errors import ParameterError, SimpsonsError
from simpsons.files import replacing, write_atomically
from simpsons.frames import (CROPS, VIDEO_SUFFIXES, VideoInfo, crop_frame, demuxed, error_reason, frame_seconds,
                             open_video, probe, sampled_frames, video_info)
from simpsons.prediction import UNKNOWN, Prediction, Predictor
from simpsons.timeline import Segment, find_segments, sample_ends, screen_time, smooth, srt_text, timeline_csv

if TYPE_CHECKING:  # the detector's modules (and SciPy) load when a video is analysed with one
    from simpsons.detection.detector import Detection, Detector
    from simpsons.detection.placement import Placement

DEFAULT_PRESENCE = 0.5
logger = logging.getLogger(__name__)
_DONE = object()


# --------------------------------------------------------------------------- what answers the frames


@dataclass
class Sample:
    """One sampled frame: its time and one prediction per crop (the classifier), or the boxes found in it
    (the detector: ``crops`` is empty; ``boxes`` is ``None`` for the classifier)."""

    time: float
    crops: dict[str, Prediction]
    boxes: list[Detection] | None = None


Presence = tuple[np.ndarray, np.ndarray, list[list[set[str]]]]
Painter = Callable[[Image.Image, int], Image.Image]


class FrameAnswers(Protocol):
    """What answers a batch of sampled frames: ``CropAnswers`` (the classifier on fixed crops of each frame) or
    ``BoxAnswers`` (the detector's boxes). The sampling, batching, timeline and outputs are the same for both."""

    characters: list[str]

    def prepare(self, image: Image.Image) -> Any:
        """One sampled frame ready for the network (called in the decoding thread)."""

    def answer(self, times: list[float], prepared: list[Any]) -> list[Sample]:
        """The samples of a batch of frames, from one network call."""

    def presence(self, samples: list[Sample]) -> Presence:
        """Per sample and character: present?, the best probability naming it, and the crops that did."""

    def painter(self, samples: list[Sample], window: int) -> Painter:
        """What the annotated video draws: ``paint(image, row)`` puts sample ``row``'s answers on a frame (in place
        or on a copy, which it returns); the classifier's are smoothed over ``window`` samples like the presence."""


class CropAnswers:
    """The classifier's answer for each of the named ``crops`` of a frame (``CROPS``)."""

    def __init__(self, predictor: Predictor, crops: tuple[str, ...] = CROPS, min_prob: float | None = None):
        self.predictor, self.crops, self.min_prob = predictor, tuple(crops), min_prob
        self.characters = list(predictor.characters)

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.stack([self.predictor.prepare(part) for part in crop_frame(image, self.crops)])

    def answer(self, times: list[float], prepared: list[np.ndarray]) -> list[Sample]:
        predictions = self.predictor.predict_pixels(np.concatenate(prepared), top_k=1)
        count = len(self.crops)
        return [Sample(seconds, dict(zip(self.crops, predictions[i * count : (i + 1) * count])))
                for i, seconds in enumerate(times)]

    def presence(self, samples: list[Sample]) -> Presence:
        return presence_matrix(samples, self.predictor, self.min_prob)

    def painter(self, samples: list[Sample], window: int) -> Painter:
        labels = crop_labels(samples, self.predictor, self.min_prob, window)

        def paint(image: Image.Image, row: int) -> Image.Image:
            draw_labels(image, labels[row], label_font(image.height))
            return image

        return paint


class BoxAnswers:
    """The detector's boxes in each whole frame: every character it finds at or above ``min_prob`` (default the
    detector's ``DEFAULT_MIN_PROBABILITY``), wherever it stands."""

    def __init__(self, detector: Detector, min_prob: float | None = None):
        from simpsons.detection.detector import DEFAULT_MIN_PROBABILITY

        self.detector = detector
        self.min_prob = DEFAULT_MIN_PROBABILITY if min_prob is None else min_prob
        self.characters = list(detector.characters)

    def prepare(self, image: Image.Image) -> tuple[np.ndarray, Placement]:
        return self.detector.prepare(image)

    def answer(self, times: list[float], prepared: list[tuple[np.ndarray, Placement]]) -> list[Sample]:
        found = self.detector.detect_prepared(np.stack([canvas for canvas, _ in prepared]),
                                              [placement for _, placement in prepared], self.min_prob)
        return [Sample(seconds, {}, boxes) for seconds, boxes in zip(times, found)]

    def presence(self, samples: list[Sample]) -> Presence:
        return box_presence(samples, self.characters)

    def painter(self, samples: list[Sample], window: int) -> Painter:
        from simpsons.detection.drawing import draw_detections  # here: it loads Matplotlib

        return lambda image, row: draw_detections(image, samples[row].boxes or [], self.characters)


def frame_answers(model: Predictor | Detector, crops: tuple[str, ...] | None = None,
                  min_prob: float | None = None) -> FrameAnswers:
    """The classifier's answers on ``crops`` (default ``CROPS``) for a ``Predictor``, else the detector's boxes;
    crops given with a detector raise ``ParameterError``."""
    if isinstance(model, Predictor):
        return CropAnswers(model, CROPS if crops is None else crops, min_prob)
    if crops is not None:
        raise ParameterError("crops", "{name} cut frames for the classifier: a detector looks at whole frames")
    return BoxAnswers(model, min_prob)


def _decode_into(path: Path, sample_fps: float, prepare: Callable[[Image.Image], Any], out: queue.Queue,
                 stop: threading.Event, progress) -> None:
    """Background decoder: puts ``(seconds, prepared frame)`` then ``_DONE`` (or the exception)."""
    try:
        for seconds, image in sampled_frames(path, sample_fps):
            if stop.is_set():
                return
            if progress is not None:
                progress.update(1)
            if image is None:
                continue
            out.put((seconds, prepare(image)))
        out.put(_DONE)
    except BaseException as error:  # handed to the main thread, which re-raises it
        out.put(error)


def answer_video(path: str | Path, answers: FrameAnswers, sample_fps: float = 2.0, batch_frames: int = 16,
                 progress: bool = True, info: VideoInfo | None = None) -> list[Sample]:
    """Decode and prepare the sampled frames in a background thread; ``answers`` takes ``batch_frames`` of them
    per network call."""
    from tqdm import tqdm

    info = info or probe(path)
    bar = tqdm(total=info.frames or None, unit="frame", desc=Path(path).name, disable=None if progress else True,
               leave=False, dynamic_ncols=True)
    frames: queue.Queue = queue.Queue(maxsize=max(4, 2 * batch_frames))
    stop = threading.Event()
    worker = threading.Thread(target=_decode_into, daemon=True,
                              args=(Path(path), sample_fps, answers.prepare, frames, stop, bar))
    worker.start()
    samples: list[Sample] = []
    batch: list[tuple[float, Any]] = []
    try:
        while True:
            item = frames.get()
            if item is not _DONE and not isinstance(item, BaseException):
                batch.append(item)
            if batch and (len(batch) >= batch_frames or item is _DONE or isinstance(item, BaseException)):
                samples += answers.answer([seconds for seconds, _ in batch], [prepared for _, prepared in batch])
                batch = []
            if isinstance(item, BaseException):
                raise item
            if item is _DONE:
                break
    finally:
        stop.set()
        while worker.is_alive():
            try:
                frames.get(timeout=0.05)
            except queue.Empty:
                pass
        bar.close()
    _check_complete(samples, info, sample_fps, path)
    return samples


def sample_period(info: VideoInfo, sample_fps: float) -> float:
    """Seconds between two samples (one frame when every frame is sampled)."""
    return 1.0 / sample_fps if sample_fps > 0 else 1.0 / (info.fps or 25)


def _check_complete(samples: list[Sample], info: VideoInfo, sample_fps: float, path) -> None:
    """No frame at all, or decoding that stops far before the announced duration, is an error."""
    if not samples:
        raise SimpsonsError(f"no frame could be decoded from {path}")
    period = sample_period(info, sample_fps)
    if info.duration > 0 and samples[-1].time + 2 * period + 1.0 < 0.9 * info.duration:
        raise SimpsonsError(f"{path} ends at {samples[-1].time:.1f} s of the {info.duration:.1f} s announced "
                            "(truncated file?)")


# --------------------------------------------------------------------------- presence of the characters


def presence_threshold(predictor: Predictor, character: str, min_prob: float | None) -> float:
    """``--min-prob`` when given, else the bundle's threshold for the character but at least 0.5.

    The bundle's thresholds are chosen on pictures of characters; a video's crops often show nobody,
    where a lower threshold (down to 0 for a character never confused in that study) finds people that are not there.
    """
    if min_prob is not None:
        return min_prob
    return max(DEFAULT_PRESENCE, predictor.threshold_for(character) or 0.0)


def names_someone(prediction: Prediction, predictor: Predictor, min_prob: float | None) -> bool:
    """Whether a crop's answer puts a character on screen: not ``no_character``, sure enough, and
    familiar to the bundle's stranger detector when it has one."""
    return (prediction.best_guess != NO_CHARACTER
            and prediction.probability >= presence_threshold(predictor, prediction.best_guess, min_prob)
            and predictor.is_familiar(prediction.familiarity))


def presence_matrix(samples: list[Sample], predictor: Predictor, min_prob: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[list[set[str]]]]:
    """Per sample and character: present?, the best probability among crops naming it, and those crops."""
    index = {name: i for i, name in enumerate(predictor.characters)}
    present = np.zeros((len(samples), len(index)), bool)
    best = np.zeros((len(samples), len(index)), np.float32)
    sides: list[list[set[str]]] = [[set() for _ in index] for _ in samples]
    for row, sample in enumerate(samples):
        for crop, prediction in sample.crops.items():
            if names_someone(prediction, predictor, min_prob):
                column = index[prediction.best_guess]
                present[row, column] = True
                best[row, column] = max(best[row, column], prediction.probability)
                sides[row][column].add(crop)
    return present, best, sides


def box_presence(samples: list[Sample], characters: list[str]) -> Presence:
    """Per sample and character: present when it has a box, the best box's probability, and no crops."""
    index = {name: i for i, name in enumerate(characters)}
    present = np.zeros((len(samples), len(index)), bool)
    best = np.zeros((len(samples), len(index)), np.float32)
    for row, sample in enumerate(samples):
        for box in sample.boxes or []:
            column = index[box.character]
            present[row, column] = True
            best[row, column] = max(best[row, column], box.probability)
    return present, best, [[set() for _ in index] for _ in samples]


# --------------------------------------------------------------------------- outputs


def summary_table(segments: list[Segment], info: VideoInfo) -> str:
    """Screen time per character, most first, as a text table."""
    from simpsons.plots import pretty

    totals = screen_time(segments)
    if not totals:
        return f"nobody recognised in {info.duration:.1f} s of video"
    width = max(len(pretty(name)) for name in totals) + 2
    lines = [f"{'character':<{width}}{'seconds':>9}{'share':>8}{'segments':>10}{'mean prob':>11}"]
    for name, seconds in totals.items():
        mine = [s for s in segments if s.character == name]
        mean = sum(s.mean_probability * s.duration for s in mine) / max(seconds, 1e-9)
        share = 100 * seconds / info.duration if info.duration else 0.0
        lines.append(f"{pretty(name):<{width}}{seconds:>9.1f}{share:>7.0f}%{len(mine):>10}{mean:>11.2f}")
    return "\n".join(lines)


def timeline_payload(info: VideoInfo, samples: list[Sample], segments: list[Segment], smoothed: np.ndarray,
                     characters: list[str], settings: dict) -> dict:
    """The JSON timeline: the video, the settings, the segments and every sample's per-crop predictions (and,
    from the detector, its boxes in the frame's pixels)."""
    return {
        "video": info.as_dict(),
        "settings": settings,
        "screen_time": {name: round(seconds, 3) for name, seconds in screen_time(segments).items()},
        "segments": [segment.as_dict() for segment in segments],
        "samples": [sample_payload(sample, [characters[c] for c in np.flatnonzero(smoothed[row])])
                    for row, sample in enumerate(samples)],
    }


def sample_payload(sample: Sample, present: list[str]) -> dict:
    """One sample in the JSON timeline: its time, crops (and boxes) and who is on screen after smoothing."""
    payload = {"time": round(sample.time, 4),
               "crops": {crop: {key: value for key, value in p.as_dict().items() if key != "top_k"}
                         for crop, p in sample.crops.items()},
               "present": present}
    if sample.boxes is not None:
        payload["boxes"] = [box.as_dict() for box in sample.boxes]
    return payload


def plot_timeline(segments: list[Segment], info: VideoInfo, path: str | Path) -> None:
    """One lane per character (most screen time on top) with a bar per segment."""
    import matplotlib.pyplot as plt

    from simpsons.plots import pretty, save_figure

    names = list(screen_time(segments))
    figure, axes = plt.subplots(figsize=(10, 1.2 + 0.45 * max(1, len(names))))
    colours = plt.get_cmap("tab20")
    for lane, name in enumerate(names):
        bars = [(s.start, s.duration) for s in segments if s.character == name]
        axes.broken_barh(bars, (lane - 0.4, 0.8), facecolors=colours(lane % 20))
    axes.set_yticks(range(len(names)), [pretty(n) for n in names])
    axes.set_ylim(len(names) - 0.5, -0.5) if names else axes.set_yticks([])
    axes.set_xlim(0, max([info.duration] + [s.end for s in segments]) or 1)
    axes.set_xlabel("time (seconds)")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(f"Who is on screen: {Path(info.path).name}" + ("" if names else " (nobody recognised)"))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path)


def check_writable(path: str | Path, suffixes: tuple[str, ...], what: str) -> Path:
    """Refuse an output path with the wrong suffix, or one whose folder cannot be created or written."""
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise SimpsonsError(f"the {what} file must end in {' or '.join(suffixes)}: {target}")
    if target.is_dir():
        raise SimpsonsError(f"the {what} path is a folder: {target}")
    folder = target.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise SimpsonsError(f"cannot write the {what} {target}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise SimpsonsError(f"cannot write the {what} {target}: {error_reason(error)}") from None
    return target


def write_outputs(info: VideoInfo, samples: list[Sample], segments: list[Segment], smoothed: np.ndarray,
                  characters: list[str], settings: dict, timeline: str | Path | None, srt: str | Path | None,
                  chart: str | Path | None) -> list[str | Path]:
    """Write the requested files atomically; returns their paths."""
    written = []
    if timeline:
        if Path(timeline).suffix.lower() == ".csv":
            write_atomically(timeline, timeline_csv(segments).encode())
        else:
            payload = timeline_payload(info, samples, segments, smoothed, characters, settings)
            write_atomically(timeline, (json.dumps(payload, indent=2) + "\n").encode())
        written.append(timeline)
    if srt:
        write_atomically(srt, srt_text(segments).encode())
        written.append(srt)
    if chart:
        plot_timeline(segments, info, chart)
        written.append(chart)
    return written


@dataclass
class VideoResult:
    """Everything ``analyse_video`` found."""

    info: VideoInfo
    samples: list[Sample]
    segments: list[Segment]
    smoothed: np.ndarray
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.info.frames / self.seconds if self.seconds > 0 else float("nan")


def analyse_video(path: str | Path, model: Predictor | Detector, sample_fps: float = 2.0,
                  crops: tuple[str, ...] | None = None, batch_frames: int = 16, min_prob: float | None = None,
                  window: int = 3, progress: bool = True) -> VideoResult:
    """Sample, answer, smooth and cut a video into segments: with a ``Predictor``, the classifier on ``crops``
    (default ``CROPS``) of each frame; with a ``Detector``, its boxes in the whole frame (see ``frame_answers``)."""
    return analyse_with(path, frame_answers(model, crops, min_prob), sample_fps, batch_frames, window, progress)


def analyse_with(path: str | Path, answers: FrameAnswers, sample_fps: float = 2.0, batch_frames: int = 16,
                 window: int = 3, progress: bool = True) -> VideoResult:
    """Sample a video, have ``answers`` answer the frames, smooth and cut into segments."""
    began = time.perf_counter()
    info = probe(path)
    samples = answer_video(path, answers, sample_fps, batch_frames, progress, info)
    present, best, sides = answers.presence(samples)
    smoothed = smooth(present, window)
    times = [s.time for s in samples]
    ends = sample_ends(times, sample_period(info, sample_fps), info.duration)
    segments = find_segments(times, ends, smoothed, best, sides, answers.characters)
    return VideoResult(info, samples, segments, smoothed, time.perf_counter() - began)


def parse_crops(value: str) -> tuple[str, ...]:
    """``full,left`` -> ``("full", "left")``; unknown names raise ``ValueError``."""
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in CROPS]
    if not names or unknown:
        raise ValueError(f"crops are a comma-separated choice of {', '.join(CROPS)}")
    return names


# --------------------------------------------------------------------------- the annotated video

H264_ENCODERS = ("libx264", "libopenh264")
ENCODER_OPTIONS = {"libx264": {"preset": "veryfast", "crf": "21"}, "libopenh264": {"b": "2M"}, "mpeg4": {"b": "2M"}}
COPIED_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac"}  # any MP4 player plays these; other audio is re-encoded to AAC


@dataclass(frozen=True)
class CropLabel:
    """What the annotated video shows for one crop: a character or ``unknown``, and its probability."""

    character: str
    probability: float = 0.0

    def text(self, crop: str) -> str:
        from simpsons.plots import pretty

        if self.character == UNKNOWN:
            return f"{crop}: unknown"
        return f"{crop}: {pretty(self.character)} {self.probability:.2f}"


def crop_labels(samples: list[Sample], predictor: Predictor, min_prob: float | None = None,
                window: int = 3) -> list[dict[str, CropLabel]]:
    """Per sample, each crop's answer smoothed like the presence: the majority over ``window`` samples.

    An answer below the presence threshold counts as ``unknown``, and so does a window without a majority;
    the probability is the mean over the window's samples that gave the winning answer.
    """
    crops = list(samples[0].crops) if samples else []
    columns = {crop: _majority([s.crops[crop] for s in samples], predictor, min_prob, window) for crop in crops}
    return [{crop: columns[crop][row] for crop in crops} for row in range(len(samples))]


def _majority(predictions: list[Prediction], predictor: Predictor, min_prob: float | None,
              window: int) -> list[CropLabel]:
    """One crop's smoothed answers (see ``crop_labels``)."""
    names = [p.best_guess if names_someone(p, predictor, min_prob) else UNKNOWN for p in predictions]
    vocabulary = sorted(set(names))
    half = window // 2
    codes = sliding_window_view(np.pad([vocabulary.index(n) for n in names], half, mode="edge"), window)
    probabilities = sliding_window_view(np.pad([p.probability for p in predictions], half, mode="edge"), window)
    votes = (codes[:, :, None] == codes[:, None, :]).sum(axis=2)
    labels = []
    for row, column in enumerate(votes.argmax(axis=1)):
        winner = codes[row, column]
        if votes[row, column] <= half or vocabulary[winner] == UNKNOWN:
            labels.append(CropLabel(UNKNOWN))
        else:
            labels.append(CropLabel(vocabulary[winner], float(probabilities[row][codes[row] == winner].mean())))
    return labels


@lru_cache(maxsize=4)
def label_font(height: int):  # -> PIL.ImageFont.FreeTypeFont
    """Pillow's default font at a size readable on a frame ``height`` pixels high."""
    from PIL import ImageFont

    return ImageFont.load_default(size=max(9, height // 22))


def draw_labels(image: Image.Image, labels: dict[str, CropLabel], font) -> None:
    """The full frame's answer at the top left, the left and right halves' answers in their bottom corners."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    width, height = image.size
    margin = max(2, height // 80)
    for crop, label in labels.items():
        text = label.text(crop)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = width - 2 * margin - (right - left) if crop == "right" else 2 * margin
        y = 2 * margin if crop == "full" else height - 2 * margin - (bottom - top)
        draw.rectangle((x - margin, y - margin, x + right - left + margin, y + bottom - top + margin), fill=(0, 0, 0))
        colour = (170, 170, 170) if label.character == UNKNOWN else (255, 255, 255)
        draw.text((x - left, y - top), text, font=font, fill=colour)


def video_encoder() -> str:
    """The first H.264 encoder PyAV has, else MPEG-4 part 2 (with a warning)."""
    import av

    for name in H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
            return name
        except av.codec.codec.UnknownCodecError:
            continue
    logger.warning("this PyAV has no H.264 encoder: the annotated video is MPEG-4 part 2")
    return "mpeg4"


class _Annotator:
    """Encodes each frame with the latest sample's answers painted on it, keeping the frame's timestamp."""

    def __init__(self, output, stream, times: list[float], paint: Painter):
        codec = video_encoder()
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        time_base = stream.time_base
        if codec == "mpeg4" and time_base.denominator > 65535:  # the MPEG-4 part 2 limit
            time_base = Fraction(1, 60000)
        self.out = output.add_stream(codec, rate=rate, time_base=time_base, options=ENCODER_OPTIONS.get(codec, {}))
        self.size = (max(2, stream.codec_context.width // 2 * 2), max(2, stream.codec_context.height // 2 * 2))
        self.out.width, self.out.height = self.size
        self.out.pix_fmt = "yuv420p"
        self.stream, self.times, self.paint = stream, times, paint
        self.frames, self.sample, self.last_pts = 0, -1, None

    def encode(self, frame) -> list:  # -> list[av.Packet]
        """The packets for one decoded frame."""
        import av

        seconds = frame_seconds(frame, self.stream, self.frames)
        while self.sample + 1 < len(self.times) and self.times[self.sample + 1] <= seconds + 1e-6:
            self.sample += 1
        image = frame.to_image().crop((0, 0, *self.size))
        if self.sample >= 0:
            image = self.paint(image, self.sample)
        out = av.VideoFrame.from_image(image)
        pts = frame.pts if frame.pts is not None else round(seconds / self.stream.time_base)
        out.pts = pts if self.last_pts is None else max(pts, self.last_pts + 1)  # strictly increasing for the encoder
        out.time_base = self.stream.time_base
        self.frames, self.last_pts = self.frames + 1, out.pts
        return self.out.encode(out)

    def flush(self) -> list:
        return self.out.encode()


def _add_audio(output, container):  # -> tuple[input stream, output stream, re-encode?] or (None, None, False)
    """The input's first audio stream and its output stream: copied when MP4 players know it, else AAC stereo/mono."""
    if not container.streams.audio:
        return None, None, False
    audio = container.streams.audio[0]
    if audio.codec_context.codec.canonical_name in COPIED_AUDIO:
        return audio, output.add_stream_from_template(audio), False
    out = output.add_stream("aac", rate=audio.codec_context.sample_rate or 48000)
    out.layout = "mono" if audio.codec_context.channels == 1 else "stereo"
    return audio, out, True


def write_annotated(path: str | Path, target: str | Path, times: list[float], paint: Painter,
                    progress: bool = True) -> None:
    """Every frame of the video with the latest sample's answers painted on it (``paint(image, sample)``), as an
    MP4 with the input's audio.

    Frames keep their timestamps (same count and rate). Written to a temporary file, renamed when complete.
    """
    import av
    from tqdm import tqdm

    container, stream = open_video(Path(path))
    stream.thread_type = "AUTO"
    total = video_info(container, stream, Path(path)).frames
    bar = tqdm(total=total or None, unit="frame", desc=f"annotating {Path(path).name}", leave=False,
               disable=None if progress else True, dynamic_ncols=True)
    try:
        with replacing(target) as partial, av.open(str(partial), "w", format="mp4") as output:
            annotator = _Annotator(output, stream, times, paint)
            audio, audio_out, reencode = _add_audio(output, container)
            for is_video, item in demuxed(container, stream, audio, reencode, path):
                if is_video:
                    output.mux(annotator.encode(item))
                    bar.update(1)
                elif reencode:
                    output.mux(audio_out.encode(item))
                else:
                    item.stream = audio_out
                    output.mux(item)
            output.mux(annotator.flush())
            if reencode:
                output.mux(audio_out.encode())
    except (av.FFmpegError, OSError, ValueError) as error:
        raise SimpsonsError(f"cannot write the annotated video {target}: {error_reason(error)}") from None
    finally:
        bar.close()
        container.close()


# --------------------------------------------------------------------------- one video or a folder of them

OUTPUT_KINDS = {"timeline": ((".json", ".csv"), "timeline"), "srt": ((".srt",), "subtitle"),
                "chart": ((".png",), "chart"), "video": ((".mp4",), "annotated video")}


@dataclass(frozen=True)
class Outputs:
    """The files written for one video (``None``: not asked for)."""

    timeline: Path | None = None
    srt: Path | None = None
    chart: Path | None = None
    video: Path | None = None

    def items(self) -> list[tuple[str, Path]]:
        """The outputs asked for, as ``(kind, path)``."""
        return [(kind, path) for kind, path in vars(self).items() if path is not None]


DEFAULT_OUTPUTS = Outputs(Path("timeline.json"), Path("subtitles.srt"), Path("timeline.png"))


@dataclass(frozen=True)
class Options:
    """How videos are analysed: ``detect`` answers with a detector's boxes (``crops`` unused), else with the
    classifier on ``crops``."""

    sample_fps: float = 2.0
    crops: tuple[str, ...] = CROPS
    batch_frames: int = 16
    min_prob: float | None = None
    window: int = 3
    detect: bool = False

    def settings(self, model: str) -> dict:
        """The settings as the JSON timeline records them (with ``detect``: the threshold used, and no crops)."""
        if self.detect:
            from simpsons.detection.detector import DEFAULT_MIN_PROBABILITY

            threshold = DEFAULT_MIN_PROBABILITY if self.min_prob is None else self.min_prob
            return {"model": model, "detect": True, "sample_fps": self.sample_fps, "crops": [],
                    "min_prob": threshold, "smoothing_window": self.window}
        return {"model": model, "sample_fps": self.sample_fps, "crops": list(self.crops),
                "min_prob": self.min_prob, "smoothing_window": self.window}


def find_videos(paths: list[str | Path]) -> list[tuple[Path, str]]:
    """Each video with the name its outputs get: a file's stem, or its path below a given folder without suffix.

    Files are taken as given (a missing or broken one fails when it is read); folders are searched.
    """
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            found += [(path, path.relative_to(given).with_suffix("").as_posix())
                      for path in gather_files([given], VIDEO_SUFFIXES, kind="video file")]
        else:
            found.append((given, given.stem))
    return found


def derived_outputs(given: Outputs, name: str, out_dir: Path | None) -> Outputs:
    """``--srt subs/x.srt`` for the video named ``season1/ep1`` -> ``OUT_DIR/subs/season1/ep1.x.srt``."""
    folder = out_dir or Path()
    return Outputs(**{kind: folder / path.parent / f"{name}.{path.name}" for kind, path in given.items()})


def plan_outputs(videos: list[tuple[Path, str]], given: Outputs, out_dir: Path | None,
                 derive: bool) -> list[tuple[Path, Outputs]]:
    """Each video with its outputs: ``given`` for a single video, else derived from the video's name.

    ``--out-dir`` without any output asks for ``DEFAULT_OUTPUTS``. Refuses a wrong suffix, a folder that
    cannot be written, two outputs with one name and an output that would overwrite an input.
    """
    if out_dir is not None and not given.items():
        given = DEFAULT_OUTPUTS
    plans = [(video, derived_outputs(given, name, out_dir) if derive else given) for video, name in videos]
    taken = {video.resolve() for video, _ in videos}
    for _, outputs in plans:
        for kind, path in outputs.items():
            check_writable(path, *OUTPUT_KINDS[kind])
            if path.resolve() in taken:
                raise SimpsonsError(f"{path} would be written twice, or overwrite an input video")
            taken.add(path.resolve())
    return plans


def process_video(path: Path, model: Predictor | Detector, options: Options, outputs: Outputs,
                  model_name: str = "default", progress: bool = True) -> tuple[VideoResult, list[Path]]:
    """Analyse one video with the classifier, or the detector when ``options.detect``, and write its outputs (the
    annotated video last); the settings name the model ``model_name``. Returns the result and the files."""
    if options.detect == isinstance(model, Predictor):
        raise ParameterError("model", "{name} must be a Detector when the options detect, else a Predictor")
    answers = frame_answers(model, None if options.detect else options.crops, options.min_prob)
    result = analyse_with(path, answers, options.sample_fps, options.batch_frames, options.window, progress)
    written = write_outputs(result.info, result.samples, result.segments, result.smoothed, answers.characters,
                            options.settings(model_name), outputs.timeline, outputs.srt, outputs.chart)
    if outputs.video:
        paint = answers.painter(result.samples, options.window)
        write_annotated(path, outputs.video, [s.time for s in result.samples], paint, progress)
        written.append(outputs.video)
    return result, written
