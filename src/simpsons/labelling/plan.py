"""Which frames of which videos to label: the videos shuffled, then in each a random start within the first
minutes and random steps, leaving out the frames the log already has."""

from __future__ import annotations

import random
from collections.abc import Container, Iterable, Iterator
from pathlib import Path

from PIL import Image

from simpsons.data import gather_files
from simpsons.errors import ParameterError
from simpsons.frames import VIDEO_SUFFIXES, probe, read_frames
from simpsons.labelling.store import LOG_NAME, video_key

LARGE_SHORT_SIDE = 900
DEFAULT_EVERY = (100, 250)
DEFAULT_START_WITHIN = 180.0


def parse_every(text: str) -> tuple[int, int]:
    """``"100-250"`` -> ``(100, 250)``; a single number means a fixed step."""
    try:
        low, _, high = text.partition("-")
        bounds = (int(low), int(high or low))
    except ValueError:
        raise ParameterError("every", f"{{name}} wants FROM-TO frames, like 100-250, not {text!r}") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise ParameterError("every", f"{{name}} wants 1 <= FROM <= TO, not {text!r}")
    return bounds


def frame_plan(frames: int | None, fps: float, every: tuple[int, int], start_within: float,
               rng: random.Random) -> Iterator[int]:
    """Frame numbers to look at: a random start within ``start_within`` seconds, then random steps."""
    latest_start = int(start_within * fps)
    if frames is not None:
        latest_start = min(latest_start, frames - 1)
    index = rng.randint(0, max(0, latest_start))
    while frames is None or index < frames:
        yield index
        index += rng.randint(*every)


def shrink_large(image: Image.Image) -> Image.Image:
    """Halve frames whose short side is over 900 pixels (as the original tool did)."""
    if min(image.size) > LARGE_SHORT_SIDE:
        return image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    return image


def planned_frames(videos: list[Path], every: tuple[int, int], start_within: float, rng: random.Random,
                   seen: Container[tuple[str, int]] = frozenset()) -> Iterator[tuple[Path, int, Image.Image]]:
    """``(video, number, frame)`` for every video in turn, following each one's random plan and
    leaving out the ``seen`` ``(video, frame)`` pairs."""
    for video in videos:
        info = probe(video)
        key = video_key(video)
        plan = frame_plan(info.frames or None, info.fps or 25.0, every, start_within, rng)
        for number, frame in read_frames(video, (n for n in plan if (key, n) not in seen)):
            yield video, number, shrink_large(frame)


def prepare_videos(paths: Iterable[str | Path], rng: random.Random) -> list[Path]:
    """Find the videos, check each one opens, and shuffle them."""
    videos = gather_files(list(paths), VIDEO_SUFFIXES, kind="video file")
    for video in videos:
        probe(video)
    rng.shuffle(videos)
    return videos


def check_start_within(seconds: float) -> None:
    """``--start-within`` must be a number of seconds, 0 or more."""
    if not seconds >= 0:
        raise ParameterError("start_within", f"{{name}} must be 0 seconds or more, not {seconds}")


def announce_resume(videos: list[Path], seen: set[tuple[str, int]]) -> None:
    """Say how many frames of these videos the log already has (they are skipped)."""
    keys = {video_key(v) for v in videos}
    count = sum(1 for video, _ in seen if video in keys)
    if count:
        print(f"resuming: {count} frame(s) of these videos already in {LOG_NAME} are skipped")
