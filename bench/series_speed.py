"""Speed of a series: local worker processes (1 and 2) against a loopback Dask cluster, and the hours for a
whole series worked out from the measured cost per episode.

The episodes are copies of one clip built from ../shared/data/videos/*.mp4 (see bench/video_speed.py) in a
temporary folder. Each setting starts from an empty output folder; its wall time counts the workers' start
(local only: the loopback cluster, ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, is started
beforehand, as a cluster is), the model's loading in each worker and every episode.

Usage: python bench/series_speed.py [--episodes 4] [--minutes 1] [--series-hours 275] [--series-episodes 750]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from machine import machine  # noqa: E402  (bench/machine.py, beside this script)
from video_speed import VIDEOS, build_clip  # noqa: E402

from simpsons.series import dask_client, plan_series, run_episodes  # noqa: E402
from simpsons.video import Options  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loopback_cluster(workers: int) -> tuple[str, list[subprocess.Popen]]:
    """``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes on 127.0.0.1."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads,
           "DASK_LOGGING__DISTRIBUTED": "error"}
    dask = str(Path(sys.executable).parent / "dask")  # the command that comes with distributed
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], **quiet)]
    processes += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                                    "--no-dashboard"], **quiet) for _ in range(workers)]
    return address, processes


def run(series: Path, out: Path, options: Options, workers: int | None = None, cluster: str | None = None) -> dict:
    """One setting from an empty output folder: seconds to start, to finish, and each worker's real-time factor."""
    shutil.rmtree(out, ignore_errors=True)
    episodes = plan_series(series, out)
    began = time.perf_counter()
    with dask_client(workers, cluster) as client:
        started = time.perf_counter()
        outcome = run_episodes(client, episodes, options, None, progress=False)
    ended = time.perf_counter()
    assert not outcome.failures, outcome.failures
    video, busy = (sum(column) for column in zip(*outcome.timings))
    return {"start_s": round(started - began, 1), "wall_s": round(ended - began, 1),
            "video_s": round(video, 1), "analysis_s_summed_over_episodes": round(busy, 1),
            "x_real_time_overall": round(video / (ended - began), 1),
            "x_real_time_per_worker_busy": round(video / busy, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=1.0, help="minutes per episode")
    parser.add_argument("--series-hours", type=float, default=275.0)
    parser.add_argument("--series-episodes", type=int, default=750)
    args = parser.parse_args()
    options = Options()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        clip = build_clip(sorted(VIDEOS.glob("*.mp4")), folder / "clip.mp4", args.minutes)
        series = folder / "series"
        for number in range(args.episodes):
            (series / f"season{number % 2 + 1}").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip, series / f"season{number % 2 + 1}" / f"episode{number}.mp4")
        results = {"local, 1 worker": run(series, folder / "out", options, workers=1),
                   "local, 2 workers": run(series, folder / "out", options, workers=2)}
        address, processes = loopback_cluster(2)
        try:
            results["loopback Dask cluster, 2 workers"] = run(series, folder / "out", options, cluster=address)
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=60)
    one = results["local, 1 worker"]
    cost = one["analysis_s_summed_over_episodes"] / one["video_s"]  # seconds of work per second of video
    per_episode_s = cost * args.series_hours * 3600 / args.series_episodes
    hours = {str(workers): round(args.series_episodes * per_episode_s / workers / 3600, 2) for workers in (1, 8, 64)}
    print(json.dumps({"machine": machine(), "episodes": args.episodes, "minutes_per_episode": args.minutes,
                      "settings": options.settings("default"), "results": results,
                      "series": {"episodes": args.series_episodes, "hours_of_video": args.series_hours,
                                 "seconds_per_episode_one_worker": round(per_episode_s, 1),
                                 "hours_on_workers_like_the_one_worker_here": hours}}, indent=2))


if __name__ == "__main__":
    main()
