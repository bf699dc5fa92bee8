"""Who is on screen when: sample a video's frames, classify crops of them, smooth and cut into segments."""

from __future__ import annotations

import csv
import io
import json
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from simpsons.bundle import replacing, write_atomically
from simpsons.data import NO_CHARACTER, gather_files
from simpsons.errors import SimpsonsError
from simpsons.prediction import UNKNOWN, Prediction, Predictor

CROPS = ("full", "left", "right")
DEFAULT_PRESENCE = 0.5
IMAGE_FORMATS = {"image2", "gif", "apng", "webp_pipe"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
_DONE = object()


# --------------------------------------------------------------------------- the video and its frames


@dataclass
class VideoInfo:
    """What the container says about the video stream."""

    path: str
    fps: float
    frames: int
    duration: float
    width: int
    height: int
    codec: str

    def as_dict(self) -> dict:
        return {"path": self.path, "fps": round(self.fps, 6), "frames": self.frames,
                "duration": round(self.duration, 6), "width": self.width, "height": self.height, "codec": self.codec}


def _open(path: Path):  # -> tuple[av.container.InputContainer, av.VideoStream]
    """Open ``path`` with PyAV and return the container and its first video stream."""
    import av

    if not path.exists():
        raise SimpsonsError(f"no such video file: {path}")
    if not path.is_file():
        raise SimpsonsError(f"not a video file: {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise SimpsonsError(f"not a readable video: {path} ({_reason(error)})") from None
    name = container.format.name
    if not container.streams.video or name in IMAGE_FORMATS or name.endswith("_pipe"):
        what = "a still image" if container.streams.video else "no video stream"
        container.close()
        raise SimpsonsError(f"not a video: {path} ({what}, format {name})")
    return container, container.streams.video[0]


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0][:120]


def video_info(container, stream, path: Path) -> VideoInfo:
    """Frame rate, frame count, duration and size, estimated from the stream or the container."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    frames = int(stream.frames or round(duration * fps))
    return VideoInfo(str(path), fps, frames, duration, stream.codec_context.width, stream.codec_context.height,
                     stream.codec_context.name)


def probe(path: str | Path) -> VideoInfo:
    """The video's information; a missing file or a file that is not a video raises ``SimpsonsError``."""
    container, stream = _open(Path(path))
    try:
        info = video_info(container, stream, Path(path))
    finally:
        container.close()
    if info.width <= 0 or info.height <= 0:
        raise SimpsonsError(f"not a video: {path} (no picture size)")
    return info


def crop_frame(image: Image.Image, crops: tuple[str, ...] | list[str]) -> list[Image.Image]:
    """The article's crops of one frame: the full frame, its left half and its right half."""
    width, height = image.size
    boxes = {"full": (0, 0, width, height), "left": (0, 0, max(1, width // 2), height),
             "right": (width // 2, 0, width, height)}
    return [image if name == "full" else image.crop(boxes[name]) for name in crops]


def sampled_frames(path: str | Path, sample_fps: float) -> Iterator[tuple[float, Image.Image | None]]:
    """Every decoded frame as ``(seconds, image)``; the image is ``None`` for frames the sampling skips.

    A frame is sampled when its timestamp reaches the next multiple of ``1 / sample_fps``
    (``sample_fps == 0``: every frame). Decoding errors (a truncated file) raise ``SimpsonsError``.
    """
    container, stream = _open(Path(path))
    stream.thread_type = "AUTO"
    step = 1.0 / sample_fps if sample_fps > 0 else 0.0
    following = 0.0
    try:
        for index, (_, frame) in enumerate(_demuxed(container, stream, None, False, path)):
            seconds = frame_seconds(frame, stream, index)
            if seconds + 1e-6 >= following:
                following = seconds if step == 0 else (np.floor(seconds / step + 1e-6) + 1) * step
                yield seconds, frame.to_image()
            else:
                yield seconds, None
    finally:
        container.close()


def _demuxed(container, video, audio, decode_audio: bool, path) -> Iterator[tuple[bool, object]]:
    """``(True, video frame)`` and ``(False, audio packet, or frame with decode_audio)`` in file order.

    Decoding errors (a truncated file) raise ``SimpsonsError``.
    """
    import av

    streams = [video] if audio is None else [video, audio]
    try:
        for packet in container.demux(*streams):
            if packet.stream.type == "video":
                yield from ((True, frame) for frame in packet.decode())
            elif decode_audio:
                yield from ((False, frame) for frame in packet.decode())
            elif packet.dts is not None:  # not the empty packet that ends the stream
                yield False, packet
    except (av.FFmpegError, OSError, ValueError) as error:
        raise SimpsonsError(f"cannot decode {path}: {_reason(error)} (truncated or damaged file?)") from None


def frame_seconds(frame, stream, index: int) -> float:
    """The frame's time from the stream's start; ``index / fps`` when it has no timestamp."""
    if frame.pts is not None and frame.time_base is not None:
        return float((frame.pts - (stream.start_time or 0)) * frame.time_base)
    return index / float(stream.average_rate or 25)


# --------------------------------------------------------------------------- classification


@dataclass
class Sample:
    """One sampled frame: its time and one prediction per crop."""

    time: float
    crops: dict[str, Prediction]


def _decode_into(path: Path, sample_fps: float, crops: tuple[str, ...], predictor: Predictor,
                 out: queue.Queue, stop: threading.Event, progress) -> None:
    """Background decoder: puts ``(seconds, pixels of the crops)`` then ``_DONE`` (or the exception)."""
    try:
        for seconds, image in sampled_frames(path, sample_fps):
            if stop.is_set():
                return
            if progress is not None:
                progress.update(1)
            if image is None:
                continue
            pixels = np.stack([predictor.prepare(part) for part in crop_frame(image, crops)])
            out.put((seconds, pixels))
        out.put(_DONE)
    except BaseException as error:  # handed to the main thread, which re-raises it
        out.put(error)


def classify_video(path: str | Path, predictor: Predictor, sample_fps: float = 2.0,
                   crops: tuple[str, ...] = CROPS, batch_frames: int = 16, progress: bool = True,
                   info: VideoInfo | None = None) -> list[Sample]:
    """Decode in a background thread and classify all crops of ``batch_frames`` frames per model call."""
    from tqdm import tqdm

    info = info or probe(path)
    bar = tqdm(total=info.frames or None, unit="frame", desc=Path(path).name, disable=None if progress else True,
               leave=False, dynamic_ncols=True)
    frames: queue.Queue = queue.Queue(maxsize=max(4, 2 * batch_frames))
    stop = threading.Event()
    worker = threading.Thread(target=_decode_into, daemon=True,
                              args=(Path(path), sample_fps, tuple(crops), predictor, frames, stop, bar))
    worker.start()
    samples: list[Sample] = []
    batch: list[tuple[float, np.ndarray]] = []
    try:
        while True:
            item = frames.get()
            if item is not _DONE and not isinstance(item, BaseException):
                batch.append(item)
            if batch and (len(batch) >= batch_frames or item is _DONE or isinstance(item, BaseException)):
                samples += _classify_batch(batch, predictor, crops)
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


def _classify_batch(batch: list[tuple[float, np.ndarray]], predictor: Predictor, crops) -> list[Sample]:
    """One network call for every crop of every frame in the batch."""
    pixels = np.concatenate([crop_pixels for _, crop_pixels in batch])
    predictions = predictor.predict_pixels(pixels, top_k=1)
    count = len(crops)
    return [Sample(seconds, dict(zip(crops, predictions[i * count : (i + 1) * count])))
            for i, (seconds, _) in enumerate(batch)]


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


# --------------------------------------------------------------------------- presence, smoothing, segments


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


def smooth(present: np.ndarray, window: int = 3) -> np.ndarray:
    """Majority (median) filter over ``window`` neighbouring samples, per character column.

    One odd sample neither creates nor breaks a character; the ends repeat the edge samples.
    """
    present = np.asarray(present, bool)
    if window <= 1 or len(present) == 0:
        return present.copy()
    if window % 2 == 0:
        raise SimpsonsError("the smoothing window must be an odd number of samples")
    half = window // 2
    column_view = present.reshape(len(present), -1)
    padded = np.pad(column_view, ((half, half), (0, 0)), mode="edge").astype(np.int32)
    counts = sliding_window_view(padded, window, axis=0).sum(axis=-1)
    return (counts > half).reshape(present.shape)


@dataclass
class Segment:
    """One character on screen from ``start`` to ``end`` seconds."""

    character: str
    start: float
    end: float
    mean_probability: float
    crops: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.end - self.start

    def as_dict(self) -> dict:
        return {"character": self.character, "start": round(self.start, 3), "end": round(self.end, 3),
                "duration": round(self.duration, 3), "mean_probability": round(self.mean_probability, 4),
                "crops": self.crops}


def sample_ends(times: list[float], info: VideoInfo, sample_fps: float) -> list[float]:
    """Where each sample's stretch of time ends: the next sample's time, the video's end for the last."""
    if not times:
        return []
    period = sample_period(info, sample_fps)
    last_end = times[-1] + period
    if info.duration > times[-1]:
        last_end = min(last_end, info.duration)
    return list(times[1:]) + [last_end]


def find_segments(times: list[float], ends: list[float], smoothed: np.ndarray, best: np.ndarray,
                  sides: list[list[set[str]]], characters: list[str]) -> list[Segment]:
    """Runs of smoothed presence per character, ordered by start time."""
    segments = []
    for column, name in enumerate(characters):
        row = 0
        while row < len(times):
            if not smoothed[row, column]:
                row += 1
                continue
            first = row
            while row < len(times) and smoothed[row, column]:
                row += 1
            seen = best[first:row, column]
            if not (seen > 0).any():  # filled in by smoothing between two stray samples only
                continue
            crops = sorted({c for r in range(first, row) for c in sides[r][column]}, key=CROPS.index)
            segments.append(Segment(name, times[first], ends[row - 1],
                                    float(seen[seen > 0].mean()), crops))
    return sorted(segments, key=lambda s: (s.start, s.character))


def screen_time(segments: list[Segment]) -> dict[str, float]:
    """Seconds on screen per character, most first."""
    totals: dict[str, float] = {}
    for segment in segments:
        totals[segment.character] = totals.get(segment.character, 0.0) + segment.duration
    return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


# --------------------------------------------------------------------------- outputs


def summary_table(segments: list[Segment], info: VideoInfo) -> str:
    """Screen time per character, most first, as a text table."""
    from simpsons.evaluation import pretty

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
    """The JSON timeline: the video, the settings, the segments and every sample's per-crop predictions."""
    return {
        "video": info.as_dict(),
        "settings": settings,
        "screen_time": {name: round(seconds, 3) for name, seconds in screen_time(segments).items()},
        "segments": [segment.as_dict() for segment in segments],
        "samples": [{"time": round(sample.time, 4),
                     "crops": {crop: {key: value for key, value in p.as_dict().items() if key != "top_k"}
                               for crop, p in sample.crops.items()},
                     "present": [characters[c] for c in np.flatnonzero(smoothed[row])]}
                    for row, sample in enumerate(samples)],
    }


def timeline_csv(segments: list[Segment]) -> str:
    """The segments as CSV: character, start, end, duration, mean probability, crops."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["character", "start", "end", "duration", "mean_probability", "crops"])
    for s in segments:
        row = s.as_dict()
        writer.writerow([s.character, row["start"], row["end"], row["duration"], row["mean_probability"],
                         " ".join(s.crops)])
    return buffer.getvalue()


def srt_time(seconds: float) -> str:
    """``83.5`` -> ``00:01:23,500``."""
    millis = int(round(max(seconds, 0.0) * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d},{rest % 1000:03d}"


def srt_cues(segments: list[Segment]) -> list[tuple[float, float, list[str]]]:
    """Non-overlapping cues ``(start, end, names)``: overlapping segments merged into one cue listing all names."""
    edges = sorted({t for s in segments for t in (s.start, s.end)})
    cues: list[tuple[float, float, list[str]]] = []
    for start, end in zip(edges, edges[1:]):
        names = sorted({s.character for s in segments if s.start <= start and s.end >= end})
        if not names:
            continue
        if cues and cues[-1][2] == names and cues[-1][1] == start:
            cues[-1] = (cues[-1][0], end, names)
        else:
            cues.append((start, end, names))
    return cues


def srt_text(segments: list[Segment]) -> str:
    """SRT subtitles naming who is on screen."""
    from simpsons.evaluation import pretty

    blocks = [f"{i}\n{srt_time(start)} --> {srt_time(end)}\n{', '.join(pretty(n) for n in names)}\n"
              for i, (start, end, names) in enumerate(srt_cues(segments), start=1)]
    return "\n".join(blocks)


def plot_timeline(segments: list[Segment], info: VideoInfo, path: str | Path) -> None:
    """One lane per character (most screen time on top) with a bar per segment."""
    import matplotlib.pyplot as plt

    from simpsons.evaluation import pretty, save_figure

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
        raise SimpsonsError(f"cannot write the {what} {target}: {_reason(error)}") from None
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


def analyse_video(path: str | Path, predictor: Predictor, sample_fps: float = 2.0, crops: tuple[str, ...] = CROPS,
                  batch_frames: int = 16, min_prob: float | None = None, window: int = 3,
                  progress: bool = True) -> VideoResult:
    """Sample, classify, smooth and cut a video into segments."""
    began = time.perf_counter()
    info = probe(path)
    samples = classify_video(path, predictor, sample_fps, crops, batch_frames, progress, info)
    present, best, sides = presence_matrix(samples, predictor, min_prob)
    smoothed = smooth(present, window)
    times = [s.time for s in samples]
    segments = find_segments(times, sample_ends(times, info, sample_fps), smoothed, best, sides,
                             list(predictor.characters))
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
        from simpsons.evaluation import pretty

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
    print("simpsons: warning: this PyAV has no H.264 encoder: the annotated video is MPEG-4 part 2", file=sys.stderr)
    return "mpeg4"


class _Annotator:
    """Encodes each frame with the latest sample's labels drawn on it, keeping the frame's timestamp."""

    def __init__(self, output, stream, times: list[float], labels: list[dict[str, CropLabel]]):
        codec = video_encoder()
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        time_base = stream.time_base
        if codec == "mpeg4" and time_base.denominator > 65535:  # the MPEG-4 part 2 limit
            time_base = Fraction(1, 60000)
        self.out = output.add_stream(codec, rate=rate, time_base=time_base, options=ENCODER_OPTIONS.get(codec, {}))
        self.size = (max(2, stream.codec_context.width // 2 * 2), max(2, stream.codec_context.height // 2 * 2))
        self.out.width, self.out.height = self.size
        self.out.pix_fmt = "yuv420p"
        self.stream, self.times, self.labels = stream, times, labels
        self.font = label_font(self.size[1])
        self.frames, self.sample, self.last_pts = 0, -1, None

    def encode(self, frame) -> list:  # -> list[av.Packet]
        """The packets for one decoded frame."""
        import av

        seconds = frame_seconds(frame, self.stream, self.frames)
        while self.sample + 1 < len(self.times) and self.times[self.sample + 1] <= seconds + 1e-6:
            self.sample += 1
        image = frame.to_image().crop((0, 0, *self.size))
        if self.sample >= 0:
            draw_labels(image, self.labels[self.sample], self.font)
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


def write_annotated(path: str | Path, target: str | Path, times: list[float], labels: list[dict[str, CropLabel]],
                    progress: bool = True) -> None:
    """Every frame of the video with the latest sample's ``labels`` drawn on it, as an MP4 with the input's audio.

    Frames keep their timestamps (same count and rate). Written to a temporary file, renamed when complete.
    """
    import av
    from tqdm import tqdm

    container, stream = _open(Path(path))
    stream.thread_type = "AUTO"
    total = video_info(container, stream, Path(path)).frames
    bar = tqdm(total=total or None, unit="frame", desc=f"annotating {Path(path).name}", leave=False,
               disable=None if progress else True, dynamic_ncols=True)
    try:
        with replacing(target) as partial, av.open(str(partial), "w", format="mp4") as output:
            annotator = _Annotator(output, stream, times, labels)
            audio, audio_out, reencode = _add_audio(output, container)
            for is_video, item in _demuxed(container, stream, audio, reencode, path):
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
        raise SimpsonsError(f"cannot write the annotated video {target}: {_reason(error)}") from None
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
    """How videos are analysed."""

    sample_fps: float = 2.0
    crops: tuple[str, ...] = CROPS
    batch_frames: int = 16
    min_prob: float | None = None
    window: int = 3

    def settings(self, model: str) -> dict:
        """The settings as the JSON timeline records them."""
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


def process_video(path: Path, predictor: Predictor, options: Options, outputs: Outputs, model: str = "default",
                  progress: bool = True) -> tuple[VideoResult, list[Path]]:
    """Analyse one video and write its outputs (the annotated video last); returns the result and the files."""
    result = analyse_video(path, predictor, options.sample_fps, options.crops, options.batch_frames,
                           options.min_prob, options.window, progress)
    written = write_outputs(result.info, result.samples, result.segments, result.smoothed,
                            list(predictor.characters), options.settings(model), outputs.timeline, outputs.srt,
                            outputs.chart)
    if outputs.video:
        labels = crop_labels(result.samples, predictor, options.min_prob, options.window)
        write_annotated(path, outputs.video, [s.time for s in result.samples], labels, progress)
        written.append(outputs.video)
    return result, written
