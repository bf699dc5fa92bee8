"""Reading videos with PyAV: what a file holds, its frames (every one, sampled by time or picked by number) and
the named crops of a frame that the video analysis and the labelling share."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from simpsons.errors import SimpsonsError

CROPS = ("left", "right", "full")
IMAGE_FORMATS = {"image2", "gif", "apng", "webp_pipe"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
SEEK_AFTER_SECONDS = 2.0

logger = logging.getLogger(__name__)


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


def open_video(path: Path):  # -> tuple[av.container.InputContainer, av.VideoStream]
    """Open ``path`` with PyAV and return the container and its first video stream."""
    import av

    if not path.exists():
        raise SimpsonsError(f"no such video file: {path}")
    if not path.is_file():
        raise SimpsonsError(f"not a video file: {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise SimpsonsError(f"not a readable video: {path} ({error_reason(error)})") from None
    name = container.format.name
    if not container.streams.video or name in IMAGE_FORMATS or name.endswith("_pipe"):
        what = "a still image" if container.streams.video else "no video stream"
        container.close()
        raise SimpsonsError(f"not a video: {path} ({what}, format {name})")
    return container, container.streams.video[0]


def error_reason(error: BaseException) -> str:
    """The first line of what went wrong, short enough for a one-line error."""
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
    container, stream = open_video(Path(path))
    try:
        info = video_info(container, stream, Path(path))
    finally:
        container.close()
    if info.width <= 0 or info.height <= 0:
        raise SimpsonsError(f"not a video: {path} (no picture size)")
    return info


def sampled_frames(path: str | Path, sample_fps: float) -> Iterator[tuple[float, Image.Image | None]]:
    """Every decoded frame as ``(seconds, image)``; the image is ``None`` for frames the sampling skips.

    A frame is sampled when its timestamp reaches the next multiple of ``1 / sample_fps``
    (``sample_fps == 0``: every frame). Decoding errors (a truncated file) raise ``SimpsonsError``.
    """
    container, stream = open_video(Path(path))
    stream.thread_type = "AUTO"
    step = 1.0 / sample_fps if sample_fps > 0 else 0.0
    following = 0.0
    try:
        for index, (_, frame) in enumerate(demuxed(container, stream, None, False, path)):
            seconds = frame_seconds(frame, stream, index)
            if seconds + 1e-6 >= following:
                following = seconds if step == 0 else (np.floor(seconds / step + 1e-6) + 1) * step
                yield seconds, frame.to_image()
            else:
                yield seconds, None
    finally:
        container.close()


def demuxed(container, video, audio, decode_audio: bool, path) -> Iterator[tuple[bool, object]]:
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
        raise SimpsonsError(f"cannot decode {path}: {error_reason(error)} (truncated or damaged file?)") from None


def frame_seconds(frame, stream, index: int) -> float:
    """The frame's time from the stream's start; ``index / fps`` when it has no timestamp."""
    if frame.pts is not None and frame.time_base is not None:
        return float((frame.pts - (stream.start_time or 0)) * frame.time_base)
    return index / float(stream.average_rate or 25)


def read_frames(path: Path, indices: Iterable[int],
                seek_after: float = SEEK_AFTER_SECONDS) -> Iterator[tuple[int, Image.Image]]:
    """Yield ``(number, RGB image)`` for the wanted (increasing) frame numbers.

    A frame more than ``seek_after`` seconds ahead is reached by seeking to the keyframe before it and
    decoding forward; nearer ones by decoding on. A damaged part ends the video with a message.
    """
    import av

    container, stream = open_video(Path(path))
    stream.thread_type = "AUTO"
    try:
        yield from _frames_at(container, stream, indices, seek_after)
    except (av.FFmpegError, OSError, ValueError) as error:
        logger.warning("stopped reading %s at a damaged part (%s)", path, type(error).__name__)
    finally:
        container.close()


def _frames_at(container, stream, indices: Iterable[int], seek_after: float) -> Iterator[tuple[int, Image.Image]]:
    """The seeking decoder behind ``read_frames``: frame numbers come from the timestamps."""
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    start, unit = stream.start_time or 0, stream.time_base
    decoded, position = None, -1
    for target in indices:
        if target <= position:
            continue
        far = unit is not None and target - position > seek_after * fps
        if far:
            container.seek(start + int(target / fps / unit), stream=stream)
        if far or decoded is None:
            decoded = container.decode(stream)
        for frame in decoded:
            position = frame_number(frame, stream, fps, position)
            if position >= target:
                yield position, frame.to_image().convert("RGB")
                break
        else:
            return


def frame_number(frame, stream, fps: float, previous: int) -> int:
    """The frame's number from its timestamp (the one after ``previous`` when it has none)."""
    if frame.pts is None or frame.time_base is None:
        return previous + 1
    return round(frame_seconds(frame, stream, previous + 1) * fps)


def crop_frame(image: Image.Image, crops: tuple[str, ...] | list[str]) -> list[Image.Image]:
    """The named crops of one frame (``CROPS``): its left half, its right half, the full frame."""
    width, height = image.size
    boxes = {"full": (0, 0, width, height), "left": (0, 0, max(1, width // 2), height),
             "right": (width // 2, 0, width, height)}
    return [image if name == "full" else image.crop(boxes[name]) for name in crops]
