"""A whole series: each episode of a folder is one task for local worker processes or a Dask cluster.

Every episode gets the outputs of one video (timeline JSON, subtitles, chart; the annotated video on request);
the series gets ``series.csv`` (seconds per episode and character), ``series.json`` (totals, episodes, failures)
and ``series.png`` (a heat map). Episodes whose outputs are complete are skipped, so a rerun goes on where an
interrupted one stopped. A broken episode is reported and the others go on; a task whose worker dies runs again
on another worker (the Dask scheduler's retries).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from simpsons.files import remove_partial_files, write_atomically
from simpsons.errors import ParameterError, SimpsonsError
from simpsons.video import DEFAULT_OUTPUTS, Options, Outputs, find_videos, plan_outputs, process_video

if TYPE_CHECKING:  # Dask and the network load only when a series runs
    from distributed import Client, Future

    from simpsons.detection.detector import Detector
    from simpsons.prediction import Predictor

SERIES_FILES = ("series.csv", "series.json", "series.png")
WORKER_WAIT = 60  # seconds a cluster's scheduler may take to have a worker


@dataclass(frozen=True)
class Episode:
    """One video of the series and the files it gets."""

    path: Path
    video: str  # the path below the series folder, as the series files name it
    outputs: Outputs


# --------------------------------------------------------------------------- the plan


def series_outputs(given: Outputs) -> Outputs:
    """The default outputs with the names given instead; the series files read the JSON timeline."""
    if given.timeline is not None and given.timeline.suffix.lower() != ".json":
        raise SimpsonsError(f"a series needs the JSON timeline (its summary reads it): {given.timeline}")
    return Outputs(**{kind: getattr(given, kind) or getattr(DEFAULT_OUTPUTS, kind) for kind in vars(given)})


def plan_series(series_dir: str | Path, out_dir: str | Path, given: Outputs = Outputs()) -> list[Episode]:
    """Every video below ``series_dir`` (none below ``out_dir``) with its outputs under ``out_dir``."""
    root, out = Path(series_dir).absolute(), Path(out_dir).absolute()
    if not root.is_dir():
        raise SimpsonsError(f"no such folder of episodes: {series_dir}")
    if out.is_file():
        raise SimpsonsError(f"the output folder is a file: {out_dir}")
    videos = [(path, name) for path, name in find_videos([root]) if not path.is_relative_to(out)]
    if not videos:
        raise SimpsonsError(f"no video files in {series_dir}")
    plans = plan_outputs(videos, series_outputs(given), out, derive=True)
    return [Episode(path, path.relative_to(root).as_posix(), outputs) for path, outputs in plans]


def is_complete(episode: Episode, settings: dict) -> bool:
    """Whether every output exists and the timeline was made with these settings (files are written whole)."""
    return complete_timeline(episode, settings) is not None


def complete_timeline(episode: Episode, settings: dict) -> dict | None:
    """The episode's JSON timeline when the episode is complete (see ``is_complete``), else ``None``."""
    if not all(path.is_file() for _, path in episode.outputs.items()):
        return None
    try:
        timeline = json.loads(episode.outputs.timeline.read_text())
    except (OSError, ValueError):
        return None
    return timeline if isinstance(timeline, dict) and timeline.get("settings") == settings else None


# --------------------------------------------------------------------------- on a worker


_loading = threading.Lock()


@lru_cache(maxsize=2)
def _cached_model(model: str | None, detect: bool) -> Predictor | Detector:
    if detect:
        from simpsons.detection.detector import Detector

        return Detector.load(model)
    from simpsons.prediction import Predictor

    return Predictor.load(model)


def worker_model(model: str | None, detect: bool = False) -> Predictor | Detector:
    """The classifier, or the detector with ``detect``, loaded once per worker process."""
    with _loading:
        return _cached_model(model, detect)


def analyse_episode(path: Path, outputs: Outputs, options: Options, model: str | None,
                    model_name: str = "default") -> tuple[float, float] | str:
    """One task: analyse the video with ``model`` (the classifier, or the detector when ``options.detect``;
    ``None``: the shipped one) and write its outputs, whose settings name the model ``model_name``.

    Returns the video's and the analysis's seconds, or why the video cannot be analysed (a broken file is an
    answer, not a failure of the worker); other errors raise.
    """
    try:
        result, _ = process_video(path, worker_model(model, options.detect), options, outputs, model_name,
                                  progress=False)
    except SimpsonsError as error:
        return str(error)
    return result.info.duration, result.seconds


# --------------------------------------------------------------------------- the workers


@contextmanager
def dask_client(workers: int | None = None, cluster: str | None = None) -> Iterator[Client]:
    """A client of the Dask scheduler at ``cluster``, else of ``workers`` local worker processes (default: cores).

    Local workers get one task at a time and a share of the cores each; they ignore Ctrl-C, which the caller
    handles, and a worker that dies is restarted (quietly: only errors are logged).
    """
    import dask
    from distributed import Client, LocalCluster

    if cluster:
        try:
            client = Client(cluster, timeout="15s")
        except (OSError, TimeoutError, ValueError) as error:
            raise SimpsonsError(f"cannot reach the Dask scheduler at {cluster}: {_one_line(error)}") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT)
            except TimeoutError:
                raise SimpsonsError(f"no worker joined the Dask scheduler at {cluster} in {WORKER_WAIT} s") from None
            yield client
        return
    cores = os.cpu_count() or 1
    count = workers or cores
    threads = str(max(1, cores // count))
    environment = {"TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads, "TF_CPP_MIN_LOG_LEVEL": "3"}
    spawn_environment = {**dask.config.get("distributed.nanny.pre-spawn-environ"),
                         "DASK_LOGGING__DISTRIBUTED": "critical"}  # the workers' own logs: a worker closing late
    with _sigint_ignored(), dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_environment}):
        local = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=None, memory_limit=0, env=environment, silence_logs=logging.ERROR)
    with local, Client(local) as client:
        yield client


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Processes started in the block ignore SIGINT: Ctrl-C reaches the whole terminal's process group."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Outcome:
    """What became of the tasks: why episodes failed, (video, analysis) seconds of the rest, and Ctrl-C."""

    failures: dict[str, str] = field(default_factory=dict)
    timings: list[tuple[float, float]] = field(default_factory=list)
    interrupted: bool = False


def run_episodes(client: Client, episodes: list[Episode], options: Options, model: str | None,
                 progress: bool = True) -> Outcome:
    """Each episode as one task, with a progress bar over the episodes; Ctrl-C cancels the tasks not finished
    (finished episodes keep their files)."""
    from distributed import as_completed
    from tqdm import tqdm

    path = str(Path(model).absolute()) if model else None  # the same on a worker started in another folder
    futures = {client.submit(analyse_episode, e.path, e.outputs, options, path, str(model or "default"),
                             pure=False, key=f"{e.video}-{uuid.uuid4().hex}"): e for e in episodes}
    outcome = Outcome()
    bar = tqdm(total=len(episodes), unit="episode", desc="episodes", disable=None if progress else True,
               dynamic_ncols=True)
    try:
        for future in as_completed(futures):
            episode = futures.pop(future)
            answer = _failure(future, episode) or future.result()
            if isinstance(answer, str):
                outcome.failures[episode.video] = answer
                bar.write(f"simpsons: skipped: {answer}", file=sys.stderr)
            else:
                outcome.timings.append(answer)
            future.release()
            bar.update(1)
    except KeyboardInterrupt:
        client.cancel(list(futures))
        outcome.interrupted = True
    finally:
        bar.close()
    return outcome


def _failure(future: Future, episode: Episode) -> str | None:
    """Why the task failed (raised, or its workers died), in one line; ``None`` when it ran to the end."""
    from distributed import KilledWorker

    if future.status == "finished":
        return None
    if future.status == "cancelled":
        return f"{episode.path}: the task was cancelled"
    error = future.exception()
    if isinstance(error, KilledWorker):
        return f"{episode.path}: the workers running it died each time (too little memory?)"
    return f"{episode.path}: {type(error).__name__}: {_one_line(error)}"


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


# --------------------------------------------------------------------------- the series files


def summarise(series_dir: str | Path, out_dir: str | Path, episodes: list[Episode], settings: dict,
              failures: dict[str, str]) -> dict:
    """What ``series.json`` holds, from the timelines on disk: totals, one row per complete episode, failures."""
    rows, unfinished = [], []
    for episode in episodes:
        timeline = complete_timeline(episode, settings)
        if timeline is None:
            if episode.video not in failures:
                unfinished.append(episode.video)
            continue
        rows.append({"video": episode.video, "duration": timeline["video"]["duration"],
                     "screen_time": timeline["screen_time"],
                     "timeline": episode.outputs.timeline.relative_to(Path(out_dir).absolute()).as_posix()})
    totals: dict[str, float] = {}
    for row in rows:
        for name, seconds in row["screen_time"].items():
            totals[name] = totals.get(name, 0.0) + seconds
    return {
        "series": str(series_dir),
        "settings": settings,
        "counts": {"episodes": len(episodes), "complete": len(rows), "failed": len(failures),
                   "unfinished": len(unfinished)},
        "video_seconds": round(sum(row["duration"] for row in rows), 3),
        "screen_time": {name: round(seconds, 3)
                        for name, seconds in sorted(totals.items(), key=lambda item: (-item[1], item[0]))},
        "episodes": rows,
        "failures": [{"video": video, "error": reason} for video, reason in sorted(failures.items())],
        "unfinished": unfinished,
    }


def series_csv(summary: dict) -> str:
    """``video,character,seconds``: every complete episode with every character seen in the series (0: absent)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "character", "seconds"])
    for row in summary["episodes"]:
        for name in summary["screen_time"]:
            writer.writerow([row["video"], name, round(row["screen_time"].get(name, 0.0), 3)])
    return buffer.getvalue()


def plot_series(summary: dict, path: str | Path) -> None:
    """A heat map of screen time: one row per character (most in total on top), one column per episode.

    Episodes in different folders (seasons) are parted by white lines; each row names its total, and with few
    episodes each cell its value.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from simpsons.plots import pretty, save_figure

    names, rows = list(summary["screen_time"]), summary["episodes"]
    seconds = np.array([[row["screen_time"].get(name, 0.0) for row in rows] for name in names]).reshape(
        len(names), len(rows))
    scale, unit = (60, "minutes") if seconds.size and seconds.max() >= 120 else (1, "seconds")
    width = min(22.0, max(8.0, 4.5 + 0.45 * len(rows)))
    figure, axes = plt.subplots(figsize=(width, max(4.0, 1.8 + 0.36 * len(names))))
    if names and rows:
        values = seconds / scale
        image = axes.imshow(np.ma.masked_equal(values, 0), aspect="auto", cmap="viridis", interpolation="nearest",
                            vmin=0, vmax=max(values.max(), 1e-9))
        axes.set_facecolor("#eeeeee")  # not on screen at all
        figure.colorbar(image, ax=axes, pad=0.01, fraction=0.03).set_label(f"{unit} on screen")
        axes.set_yticks(range(len(names)), [f"{pretty(n)}  {_duration(summary['screen_time'][n])}" for n in names])
        _episode_axis(axes, [row["video"] for row in rows])
        if len(rows) <= 24:
            _label_cells(axes, values)
    else:
        axes.set_axis_off()
        axes.text(0.5, 0.5, "nobody recognised" if rows else "no complete episode", ha="center", va="center")
    axes.set_title(f"Screen time per episode in {Path(summary['series']).name}: {len(rows)} episodes, "
                   f"{_duration(summary['video_seconds'])} of video")
    save_figure(figure, path)


def _label_cells(axes, values) -> None:
    """Each non-zero cell's value, dark on the bright end of the colour map."""
    top = values.max() or 1
    for row, column in zip(*values.nonzero()):
        value = values[row, column]
        axes.text(column, row, f"{value:.0f}" if value >= 10 else f"{value:.1f}", ha="center", va="center",
                  fontsize=7, color="black" if value > 0.6 * top else "white")


def _episode_axis(axes, videos: list[str]) -> None:
    """Episode names under the columns (few episodes), else the folders' names; white lines between folders."""
    folders = [str(Path(video).parent) for video in videos]
    starts = [i for i in range(len(videos)) if i == 0 or folders[i] != folders[i - 1]]
    for start in starts[1:]:
        axes.axvline(start - 0.5, color="white", linewidth=2)
    if len(videos) <= 40:
        axes.set_xticks(range(len(videos)), [Path(v).with_suffix("").as_posix() for v in videos], rotation=60,
                        ha="right", fontsize=8)
    elif len(starts) > 1:
        ends = starts[1:] + [len(videos)]
        axes.set_xticks([(a + b - 1) / 2 for a, b in zip(starts, ends)], [folders[a] for a in starts],
                        rotation=0 if len(starts) <= 16 else 60, ha="center" if len(starts) <= 16 else "right")
        axes.set_xlabel(f"{len(videos)} episodes, by folder")
    else:
        axes.set_xlabel(f"{len(videos)} episodes")


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _duration(seconds: float) -> str:
    """``4980`` -> ``1 h 23 min``; ``95`` -> ``1.6 min``; ``42`` -> ``42 s``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60):02d} min"
    return f"{seconds / 60:.1f} min"


def write_series(summary: dict, out_dir: str | Path) -> list[Path]:
    """``series.csv``, ``series.json`` and ``series.png`` in ``out_dir``, each written atomically."""
    folder = Path(out_dir)
    paths = [folder / name for name in SERIES_FILES]
    write_atomically(paths[0], series_csv(summary).encode())
    write_atomically(paths[1], (json.dumps(summary, indent=2) + "\n").encode())
    plot_series(summary, paths[2])
    return paths


# --------------------------------------------------------------------------- the whole run


def run_series(series_dir: str | Path, out_dir: str | Path | None, given: Outputs, options: Options,
               model: str | None = None, workers: int | None = None, cluster: str | None = None,
               progress: bool = True) -> dict:
    """Analyse the episodes not complete yet, then rebuild the series files from all; returns the summary.

    Prints what it skipped and wrote; raises ``SimpsonsError`` naming the episodes that failed (after writing
    the series files), and ``KeyboardInterrupt`` on Ctrl-C once the finished episodes are summarised.
    """
    if out_dir is None:
        raise ParameterError("out_dir", "a folder of episodes needs {name} for their outputs and the series files")
    if workers is not None and cluster:
        raise ParameterError("workers", "{name} is for local workers: the workers of a {cluster} are started with "
                                        "`dask worker`", mentions=("cluster",))
    episodes = plan_series(series_dir, out_dir, given)
    settings = options.settings(str(model or "default"))
    todo = [episode for episode in episodes if not is_complete(episode, settings)]
    print(f"{_count(len(episodes), 'episode')} in {series_dir}: {len(episodes) - len(todo)} already complete "
          f"(skipped), {len(todo)} to analyse")
    outcome = Outcome()
    began = time.perf_counter()
    if todo:
        with dask_client(workers, cluster) as client:
            outcome = run_episodes(client, todo, options, model, progress)
        if outcome.interrupted:  # a worker stopped in the middle of a write leaves its partial file behind
            for episode in todo:
                for _, path in episode.outputs.items():
                    remove_partial_files(path)
        _print_speed(outcome.timings, time.perf_counter() - began)
    summary = summarise(series_dir, out_dir, episodes, settings, outcome.failures)
    _print_summary(summary, write_series(summary, out_dir))
    if outcome.interrupted:
        print(f"simpsons: kept {_count(summary['counts']['complete'], 'complete episode')}; the same command "
              "goes on", file=sys.stderr)
        raise KeyboardInterrupt
    failures = outcome.failures
    if failures:
        raise SimpsonsError(f"{len(failures)} of {len(episodes)} videos failed: {', '.join(sorted(failures))}")
    return summary


def _print_speed(timings: list[tuple[float, float]], wall: float) -> None:
    """The wall time (with the workers' start and the model's loading) and each worker's speed."""
    if timings:
        video, busy = (sum(column) for column in zip(*timings))
        print(f"analysed {_count(len(timings), 'episode')} ({_duration(video)} of video) in {wall:.1f} s; "
              f"a worker analyses {video / max(busy, 1e-9):.0f}x faster than real time")


def _print_summary(summary: dict, written: list[Path]) -> None:
    from simpsons.plots import pretty

    counts = summary["counts"]
    print(f"screen time over {_count(counts['complete'], 'episode')} ({_duration(summary['video_seconds'])} of video):")
    for name, seconds in list(summary["screen_time"].items())[:10]:
        print(f"  {pretty(name):<28}{_duration(seconds):>14}")
    for path in written:
        print(f"wrote {path}")
