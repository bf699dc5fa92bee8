"""``simpsons video SERIES_DIR``: the series files rebuilt from the timelines, the plan, and whole runs on local
worker processes (the shared clips, a broken file, a killed worker, a rerun that skips, Ctrl-C)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from test_cli import one_line_error, run_cli

from simpsons.errors import SimpsonsError
from simpsons.files import remove_partial_files
from simpsons.series import (Episode, analyse_episode, dask_client, is_complete, plan_series, plot_series,
                             run_episodes, series_csv, summarise, write_series)
from simpsons.video import Options, Outputs

REPO_ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Options().settings("default")
FAST = Options(sample_fps=1.0, crops=("full",))


# --------------------------------------------------------------------------- the series files from the timelines


def finished_episode(out: Path, video: str, screen_time: dict[str, float], duration: float = 1200.0,
                     settings: dict = SETTINGS) -> Episode:
    """An episode whose three outputs are on disk, its timeline recording ``screen_time``."""
    name = Path(video).with_suffix("").as_posix()
    outputs = Outputs(*(out / f"{name}.{kind}" for kind in ("timeline.json", "subtitles.srt", "timeline.png")))
    outputs.timeline.parent.mkdir(parents=True, exist_ok=True)
    outputs.timeline.write_text(json.dumps({"video": {"duration": duration}, "settings": settings,
                                            "screen_time": screen_time, "segments": [], "samples": []}))
    outputs.srt.write_text("")
    Image.new("RGB", (4, 4)).save(outputs.chart)
    return Episode(Path("/series") / video, video, outputs)


def test_the_summary_adds_up_the_complete_episodes_and_lists_the_others(tmp_path):
    one = finished_episode(tmp_path, "s1/e1.mp4", {"homer_simpson": 300.0, "bart_simpson": 60.0})
    two = finished_episode(tmp_path, "s1/e2.mkv", {"bart_simpson": 500.0, "lisa_simpson": 30.0}, duration=1300.0)
    half = finished_episode(tmp_path, "s2/e1.mp4", {"moe_szyslak": 10.0})
    half.outputs.chart.unlink()  # interrupted before its chart
    other = finished_episode(tmp_path, "s2/e2.mp4", {"ned_flanders": 99.0}, settings={**SETTINGS, "sample_fps": 1.0})
    broken = Episode(Path("/series/s2/broken.mp4"), "s2/broken.mp4", Outputs(tmp_path / "s2/broken.timeline.json"))

    summary = summarise("/series", tmp_path, [one, two, half, other, broken], SETTINGS,
                        {"s2/broken.mp4": "not a readable video"})

    assert summary["counts"] == {"episodes": 5, "complete": 2, "failed": 1, "unfinished": 2}
    assert summary["screen_time"] == {"bart_simpson": 560.0, "homer_simpson": 300.0, "lisa_simpson": 30.0}
    assert list(summary["screen_time"]) == ["bart_simpson", "homer_simpson", "lisa_simpson"]  # most first
    assert summary["video_seconds"] == 2500.0
    assert [row["video"] for row in summary["episodes"]] == ["s1/e1.mp4", "s1/e2.mkv"]
    assert summary["episodes"][1]["timeline"] == "s1/e2.timeline.json"
    assert summary["failures"] == [{"video": "s2/broken.mp4", "error": "not a readable video"}]
    assert summary["unfinished"] == ["s2/e1.mp4", "s2/e2.mp4"]  # the second made with other settings

    rows = list(csv.DictReader(io.StringIO(series_csv(summary))))
    assert [(r["video"], r["character"], float(r["seconds"])) for r in rows] == [
        ("s1/e1.mp4", "bart_simpson", 60.0), ("s1/e1.mp4", "homer_simpson", 300.0), ("s1/e1.mp4", "lisa_simpson", 0.0),
        ("s1/e2.mkv", "bart_simpson", 500.0), ("s1/e2.mkv", "homer_simpson", 0.0), ("s1/e2.mkv", "lisa_simpson", 30.0)]


def test_an_episode_is_complete_with_every_output_and_the_same_settings(tmp_path):
    episode = finished_episode(tmp_path, "e1.mp4", {"homer_simpson": 3.0})
    assert is_complete(episode, SETTINGS)
    assert not is_complete(episode, {**SETTINGS, "crops": ["full"]})
    episode.outputs.timeline.write_text('{"settings": ')  # a timeline written by something else, cut short
    assert not is_complete(episode, SETTINGS)
    finished_episode(tmp_path, "e1.mp4", {"homer_simpson": 3.0})
    episode.outputs.srt.unlink()
    assert not is_complete(episode, SETTINGS)


def test_the_series_files_are_written_whole_and_replaced(tmp_path):
    episodes = [finished_episode(tmp_path / "out", f"season{s}/e{e}.mp4",
                                 {"homer_simpson": 200.0 + e, "bart_simpson": 10.0 * e, "lisa_simpson": 5.0 * s})
                for s in (1, 2, 3) for e in range(1, 23)]  # three seasons of 22 episodes
    out = tmp_path / "out"
    (out / "series.csv").write_text("an older summary")
    written = write_series(summarise(tmp_path / "The Series", out, episodes, SETTINGS, {}), out)

    assert [p.name for p in written] == ["series.csv", "series.json", "series.png"]
    assert len((out / "series.csv").read_text().splitlines()) == 1 + 66 * 3
    assert json.loads((out / "series.json").read_text())["counts"]["complete"] == 66
    with Image.open(out / "series.png") as chart:
        assert chart.width > 800 and chart.height > 200
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_series_with_nobody_or_no_complete_episode_still_gets_a_chart(tmp_path):
    empty = summarise("/series", tmp_path, [], SETTINGS, {})
    plot_series(empty, tmp_path / "empty.png")
    nobody = summarise("/series", tmp_path, [finished_episode(tmp_path, "e.mp4", {})], SETTINGS, {})
    plot_series(nobody, tmp_path / "nobody.png")
    assert series_csv(nobody) == "video,character,seconds\n"
    for name in ("empty.png", "nobody.png"):
        with Image.open(tmp_path / name) as chart:
            assert chart.format == "PNG"


# --------------------------------------------------------------------------- the plan


def test_the_plan_mirrors_the_folders_and_leaves_out_the_output_folder(tmp_path):
    series = tmp_path / "series"
    for name in ("season1/e1.mp4", "season1/e2.mkv", "season2/e1.mp4", "out/season1/e1.annotated.mp4"):
        (series / name).parent.mkdir(parents=True, exist_ok=True)
        (series / name).write_bytes(b"")
    (series / "season1" / "notes.txt").write_text("not a video")

    episodes = plan_series(series, series / "out", Outputs(video=Path("annotated.mp4")))

    assert [e.video for e in episodes] == ["season1/e1.mp4", "season1/e2.mkv", "season2/e1.mp4"]
    outputs = episodes[1].outputs
    assert outputs.timeline == series / "out" / "season1" / "e2.timeline.json"
    assert (outputs.srt.name, outputs.chart.name, outputs.video.name) == (
        "e2.subtitles.srt", "e2.timeline.png", "e2.annotated.mp4")
    assert all(e.path.is_absolute() and e.outputs.timeline.is_absolute() for e in episodes)


def test_the_plan_refuses_a_csv_timeline_and_a_folder_without_videos(tmp_path):
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "e1.mp4").write_bytes(b"")
    with pytest.raises(SimpsonsError, match="JSON timeline"):
        plan_series(tmp_path / "series", tmp_path / "out", Outputs(timeline=Path("t.csv")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SimpsonsError, match="no video files"):
        plan_series(tmp_path / "empty", tmp_path / "out")


def test_the_series_options_are_refused_in_one_line(capsys, tmp_path):
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "e1.mp4").write_bytes(b"")
    cases = [(["video", tmp_path / "series"], "--out-dir"),
             (["video", tmp_path / "series" / "e1.mp4", "--workers", 2], "one folder"),
             (["video", tmp_path / "series", "--out-dir", tmp_path / "out", "--workers", 2, "--cluster",
               "tcp://127.0.0.1:1"], "--workers is for local workers: the workers of a --cluster are started")]
    for argv, expected in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and expected in one_line_error(err)
    assert not (tmp_path / "out").exists()


def test_an_unreachable_scheduler_is_one_line(capsys, tmp_path):
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "e1.mp4").write_bytes(b"")
    code, _, err = run_cli(capsys, "video", tmp_path / "series", "--out-dir", tmp_path / "out", "--cluster",
                           "tcp://127.0.0.1:9")
    assert code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in one_line_error(err)


# --------------------------------------------------------------------------- whole runs on worker processes


@pytest.fixture
def series_dir(shared_data: Path, tmp_path: Path) -> Path:
    """The shared clips as a series in nested folders, with a file that is not a video."""
    clips = shared_data / "videos"
    series = tmp_path / "The Series"
    for name, clip in (("season1/comic_shop.mp4", "comic_shop.mp4"), ("season1/opening.mp4", "skateboard_opening.mp4"),
                       ("season2/extras/opening.mp4", "skateboard_opening.mp4")):
        (series / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips / clip, series / name)
    (series / "season2" / "broken.mp4").write_text("not a video")
    return series


@pytest.mark.slow
@pytest.mark.shared
def test_a_series_on_local_workers_reports_the_broken_file_and_a_rerun_skips(capsys, series_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["video", series_dir, "--out-dir", out, "--workers", 2, "--sample-fps", 1, "--crops", "full"]

    code, stdout, err = run_cli(capsys, *argv)

    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert "skipped" in lines[0] and "broken.mp4" in lines[0]
    assert lines[-1] == "simpsons: error: 1 of 4 videos failed: season2/broken.mp4"
    assert "4 episodes in" in stdout and "0 already complete" in stdout
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["season1/comic_shop.subtitles.srt", "season1/comic_shop.timeline.json",
                       "season1/comic_shop.timeline.png", "season1/opening.subtitles.srt",
                       "season1/opening.timeline.json", "season1/opening.timeline.png",
                       "season2/extras/opening.subtitles.srt", "season2/extras/opening.timeline.json",
                       "season2/extras/opening.timeline.png", "series.csv", "series.json", "series.png"]
    summary = json.loads((out / "series.json").read_text())
    assert summary["counts"] == {"episodes": 4, "complete": 3, "failed": 1, "unfinished": 0}
    assert summary["failures"][0]["video"] == "season2/broken.mp4"
    assert list(summary["screen_time"])[0] == "bart_simpson"  # Bart leads the comic shop and the opening
    rows = list(csv.DictReader((out / "series.csv").open()))
    assert {r["video"] for r in rows} == {"season1/comic_shop.mp4", "season1/opening.mp4",
                                           "season2/extras/opening.mp4"}
    shop = {r["character"]: float(r["seconds"]) for r in rows if r["video"] == "season1/comic_shop.mp4"}
    timeline = json.loads((out / "season1/comic_shop.timeline.json").read_text())
    assert {k: v for k, v in shop.items() if v} == timeline["screen_time"]
    openings = [{r["character"]: r["seconds"] for r in rows if r["video"] == v}
                for v in ("season1/opening.mp4", "season2/extras/opening.mp4")]
    assert openings[0] == openings[1]  # the same clip gives the same answer on any worker

    (series_dir / "season2" / "broken.mp4").unlink()
    (out / "series.csv").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.timeline.json")}
    code, stdout, err = run_cli(capsys, *argv)

    assert code == 0, err
    assert "3 episodes in" in stdout and "3 already complete (skipped), 0 to analyse" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.timeline.json")} == stamps
    assert (out / "series.csv").read_text().splitlines() == ["video,character,seconds"] + [
        f"{r['video']},{r['character']},{r['seconds']}" for r in rows]
    assert json.loads((out / "series.json").read_text())["failures"] == []


@pytest.mark.slow
@pytest.mark.shared
def test_a_worker_killed_in_the_middle_of_an_episode_has_it_run_again(series_dir, tmp_path):
    (series_dir / "season2" / "broken.mp4").unlink()
    episodes = plan_series(series_dir, tmp_path / "out")
    killed: list[tuple[int, bool]] = []

    def kill_the_first_busy_worker(client) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            busy = [address for address, keys in client.processing().items() if keys]
            if busy:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, any(e.outputs.timeline.exists() for e in episodes)))
                return
            time.sleep(0.05)

    with dask_client(workers=2) as client:
        killer = threading.Thread(target=kill_the_first_busy_worker, args=(client,))
        killer.start()
        outcome = run_episodes(client, episodes, FAST, None, progress=False)
        killer.join()
        pids = set(client.run(os.getpid).values())

    assert killed and not killed[0][1], "the worker was killed before any episode was finished"
    assert killed[0][0] not in pids
    assert outcome.failures == {} and not outcome.interrupted and len(outcome.timings) == 3
    assert all(is_complete(episode, FAST.settings("default")) for episode in episodes)


@pytest.mark.slow
def test_a_broken_episode_is_an_answer_not_a_worker_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    answer = analyse_episode(broken, Outputs(tmp_path / "b.timeline.json"), FAST, None)
    assert isinstance(answer, str) and "not a readable video" in answer
    assert not (tmp_path / "b.timeline.json").exists()


def test_the_partial_files_a_killed_worker_left_are_removed_and_nothing_else(tmp_path):
    names = [".ep[1].png.k2j.partial", ".ep[1].png.x9.partial", ".ep[2].png.a1.partial", "ep[1].png",
             ".ep[1].png.notes", "ep[1].png.partial"]
    for name in names:
        (tmp_path / name).write_text("x")
    remove_partial_files(tmp_path / "ep[1].png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


COPIES_FOR_CTRL_C = 10  # episodes enough that the series cannot end between the first one and the Ctrl-C
# the command with Ctrl-C raising KeyboardInterrupt, as from a terminal, even if the test's own process ignores
# SIGINT (a child inherits an ignored signal, and Python then keeps it ignored)
AS_FROM_A_TERMINAL = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      "from simpsons.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.slow
@pytest.mark.shared
def test_ctrl_c_keeps_every_finished_episode(series_dir, tmp_path):
    (series_dir / "season2" / "broken.mp4").unlink()
    for copy in range(COPIES_FOR_CTRL_C):
        shutil.copyfile(series_dir / "season1" / "comic_shop.mp4", series_dir / "season2" / f"shop{copy}.mp4")
    episodes = 3 + COPIES_FOR_CTRL_C
    out = tmp_path / "out"
    command = [sys.executable, "-c", AS_FROM_A_TERMINAL, "video", str(series_dir), "--out-dir", str(out),
               "--workers", "1", "--sample-fps", "0", "--crops", "full"]  # every frame: no run ends before Ctrl-C
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own process group, as a terminal's
    deadline = time.monotonic() + 300
    while not list(out.rglob("*.timeline.png")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches every process of the terminal's group
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, f"stdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr and "simpsons: interrupted" in stderr
    summary = json.loads((out / "series.json").read_text())
    finished = [p for p in out.rglob("*.timeline.png")]
    assert 1 <= summary["counts"]["complete"] == len(finished) < episodes
    assert summary["counts"]["unfinished"] == episodes - len(finished)
    assert f"kept {len(finished)} complete episode" in stderr
    assert not [p for p in out.rglob(".*")]  # no partial file left
