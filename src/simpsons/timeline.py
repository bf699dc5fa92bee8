"""The timeline arithmetic of a video's samples: smoothing presence, cutting it into segments, screen time,
and the segments as CSV and SRT subtitles. Pure functions of numbers and names: no media, no model."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from simpsons.errors import SimpsonsError
from simpsons.frames import CROPS


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


def sample_ends(times: list[float], period: float, duration: float) -> list[float]:
    """Where each sample's stretch of time ends: the next sample's time; for the last, one ``period`` later but
    not past the video's ``duration`` (when that is after it)."""
    if not times:
        return []
    last_end = times[-1] + period
    if duration > times[-1]:
        last_end = min(last_end, duration)
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
    from simpsons.plots import pretty

    blocks = [f"{i}\n{srt_time(start)} --> {srt_time(end)}\n{', '.join(pretty(n) for n in names)}\n"
              for i, (start, end, names) in enumerate(srt_cues(segments), start=1)]
    return "\n".join(blocks)
