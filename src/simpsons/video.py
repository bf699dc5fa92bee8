"""Who is on screen when: sample a video's frames, classify crops of them, smooth and cut into segments (see
``timeline``), and write the timeline, subtitles, chart and annotated video."""

from __future__ import annotations

import json
import logging
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from simpsons.data import NO_CHARACTER, gather_files
from simpsons.errors import SimpsonsError
from simpsons.files import replacing, write_atomically
from simpsons.frames import (CROPS, VIDEO_SUFFIXES, VideoInfo, crop_frame, demuxed, error_reason, frame_seconds,
                             open_video, probe, sampled_frames, video_info)
from simpsons.prediction import UNKNOWN, Prediction, Predictor
from simpsons.timeline import Segment, find_segments, sample_ends, screen_time, smooth, srt_text, timeline_csv

DEFAULT_PRESENCE = 0.5
logger = logging.getLogger(__name__)
_DONE = object()


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
    ends = sample_ends(times, sample_period(info, sample_fps), info.duration)
    segments = find_segments(times, ends, smoothed, best, sides, list(predictor.characters))
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

    container, stream = open_video(Path(path))
    stream.thread_type = "AUTO"
    total = video_info(container, stream, Path(path)).frames
    bar = tqdm(total=total or None, unit="frame", desc=f"annotating {Path(path).name}", leave=False,
               disable=None if progress else True, dynamic_ncols=True)
    try:
        with replacing(target) as partial, av.open(str(partial), "w", format="mp4") as output:
            annotator = _Annotator(output, stream, times, labels)
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
