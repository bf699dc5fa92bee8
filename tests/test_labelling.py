"""``simpsons label``: scripted labelling runs over a generated clip and the shared ones."""

from __future__ import annotations

import builtins
import csv
import io
import os
import random
import re
import shutil
import sys
import threading
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import SAMPLES, TEST_CHARACTERS, open_sample
from PIL import Image
from test_cli import one_line_error, run_cli

from simpsons import frames, labelling
from simpsons.bundle import StrangerDetector, load_bundle
from simpsons.errors import SimpsonsError
from simpsons.labelling import store
from simpsons.prediction import default_model_path

WIDTH, HEIGHT = 160, 120
SEGMENT = 5  # frames 0-4 show homer, 5-9 bart, 10-14 homer...
PREVIEW = f"_preview_{os.getpid()}.png"


@pytest.fixture(autouse=True)
def no_display(monkeypatch):
    """No test opens a window, even on a desktop."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def switching_clip(path: Path, width: int, height: int) -> Path:
    """3 s at 10 fps; the picture switches between two characters every 5 frames."""
    pictures = [np.asarray(open_sample(SAMPLES / f"{name}_0.jpg").resize((width, height)))
                for name in ("homer_simpson", "bart_simpson")]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 2_000_000
        for number in range(30):
            frame = av.VideoFrame.from_ndarray(pictures[(number // SEGMENT) % 2], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return switching_clip(tmp_path_factory.mktemp("videos") / "clip.mp4", WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same at 320 x 240: the tiny detector's boxes there are some under, some over ``MIN_BOX_SIDE``."""
    return switching_clip(tmp_path_factory.mktemp("videos") / "wide.mp4", 2 * WIDTH, 2 * HEIGHT)


def answers(monkeypatch, *lines: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{line}\n" for line in lines)))


def label(capsys, clip: Path, dataset: Path, *extra: str) -> tuple[int, str, str]:
    """Frames 0, 5, 10, 15, 20, 25: homer, bart, homer, bart, homer, bart."""
    return run_cli(capsys, "label", clip, "--into", dataset, "--every", "5-5", "--start-within", "0",
                   "--seed", "1", *extra)


def log_rows(dataset: Path) -> list[dict[str, str]]:
    with open(dataset / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.jpg"))


def kept_by_hand(dataset: Path) -> set[Path]:
    """The pictures the log says were saved by hand and not undone."""
    return {dataset / row["file"] for row in labelling.kept_saves(log_rows(dataset))}


# --------------------------------------------------------------------------- pure functions


def test_partial_names_and_every():
    known = ["charles_montgomery_burns", "homer_simpson", "bart_simpson", "bart"]
    assert labelling.matching_names("burns", known) == ["charles_montgomery_burns"]
    assert labelling.matching_names("Montgomery Burns", known) == ["charles_montgomery_burns"]
    assert labelling.matching_names("simpson", known) == ["bart_simpson", "homer_simpson"]
    assert labelling.matching_names("bart", known) == ["bart"]
    assert labelling.matching_names("nobody", known) == []
    assert labelling.parse_every("100-250") == (100, 250)
    assert labelling.parse_every("7") == (7, 7)


def test_frame_plan_is_bounded_and_seeded():
    plan = list(labelling.frame_plan(774, 29.9, (100, 250), 180, random.Random(3)))
    assert plan == list(labelling.frame_plan(774, 29.9, (100, 250), 180, random.Random(3)))
    assert 0 <= plan[0] < 774 and all(100 <= b - a <= 250 for a, b in zip(plan, plan[1:])) and plan[-1] < 774
    assert next(labelling.frame_plan(1000, 25, (5, 5), 2, random.Random(0))) <= 50


def test_seeking_reads_the_frames_that_decoding_on_reads(clip):
    wanted = [3, 14, 15, 27]
    seeking = list(frames.read_frames(clip, wanted, seek_after=0))
    decoding = list(frames.read_frames(clip, wanted, seek_after=float("inf")))
    assert [n for n, _ in seeking] == [n for n, _ in decoding] == wanted
    for (_, first), (_, second) in zip(seeking, decoding):
        assert np.array_equal(np.asarray(first), np.asarray(second))
    assert [n for n, _ in frames.read_frames(clip, [28, 40, 50], seek_after=0)] == [28]


def test_reserve_never_overwrites(tmp_path):
    folder = tmp_path / "homer_simpson"
    folder.mkdir()
    (folder / "pic_0003.jpg").write_bytes(b"old")
    first = labelling.reserve_picture(folder)
    second = labelling.reserve_picture(folder, preferred="pic_0001.jpg")
    third = labelling.reserve_picture(folder, preferred="pic_0003.jpg")
    assert (first.name, second.name, third.name) == ("pic_0004.jpg", "pic_0001.jpg", "pic_0005.jpg")
    assert (folder / "pic_0003.jpg").read_bytes() == b"old"


def test_concurrent_reservations_and_log_writers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda _: labelling.reserve_picture(tmp_path / "pics").name, range(80)))
    assert len(set(names)) == 80 and len(list((tmp_path / "pics").iterdir())) == 80

    start = threading.Barrier(8)
    def writer(number: int) -> None:
        start.wait()
        log = labelling.LabelLog(tmp_path)
        for row in range(25):
            log.write("saved", label=f"w{number}", frame=row, file=tmp_path / "x" / f"pic_{row:04d}.jpg")
        log.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    rows = log_rows(tmp_path)
    assert (tmp_path / "labels.csv").read_text().count("time,video") == 1
    assert len(rows) == 200 and all(r["action"] == "saved" and r["file"].startswith("x/pic_") for r in rows)
    assert Counter(r["label"] for r in rows) == {f"w{n}": 25 for n in range(8)}


def test_an_older_log_keeps_its_columns(tmp_path):
    old = ("time,video,frame,crop,label,probability,file,action\r\n"
           "2024-01-01T00:00:00,v.mp4,3,left,bart,,b/p.jpg,saved\r\n")
    (tmp_path / "labels.csv").write_text(old, newline="")
    log = labelling.LabelLog(tmp_path)
    log.write("undo", video="v.mp4", frame=3, label="bart", file=tmp_path / "b" / "p.jpg", source="ignored")
    log.close()
    rows = log_rows(tmp_path)
    assert (tmp_path / "labels.csv").read_bytes().decode().startswith(old)
    assert [r["action"] for r in rows] == ["saved", "undo"] and all(None not in r for r in rows)
    assert labelling.kept_saves(rows) == []


# --------------------------------------------------------------------------- preview


def test_preview_kinds_from_the_environment():
    assert not labelling.display_available({}, "linux")
    assert labelling.display_available({"DISPLAY": ":0"}, "linux")
    assert labelling.display_available({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert labelling.display_available({}, "darwin")
    assert labelling.terminal_graphics({"TERM": "xterm-kitty"}) == "kitty"
    assert labelling.terminal_graphics({"TERM_PROGRAM": "iTerm.app"}) == "iterm"
    assert labelling.terminal_graphics({"TERM": "xterm-256color", "COLORTERM": "truecolor"}) == "truecolor"
    assert labelling.terminal_graphics({"TERM": "xterm-256color"}) is None


def test_terminal_pictures():
    image = Image.new("RGB", (400, 300), (255, 0, 0))
    image.paste((0, 0, 255), (0, 150, 400, 300))
    blocks = labelling.terminal_image(image, "truecolor", columns=20).splitlines()
    assert len(blocks) == 8 and all(line.count("\u2580") == 20 for line in blocks)
    assert "38;2;255;0;0;48;2;255;0;0m" in blocks[0] and "38;2;0;0;255;48;2;0;0;255m" in blocks[-1]
    kitty = labelling.terminal_image(Image.effect_noise((600, 400), 80).convert("RGB"), "kitty")
    chunks = kitty.split("\x1b\\")[:-1]
    assert kitty.startswith("\x1b_Ga=T,f=100,c=48,m=1;") and len(chunks) > 1
    assert all(len(c.split(";", 1)[1]) <= 4096 for c in chunks) and chunks[-1].startswith("\x1b_Gm=0;")
    assert labelling.terminal_image(image, "iterm").startswith("\x1b]1337;File=inline=1;")


def test_preview_without_a_display_writes_a_png(tmp_path, capsys, monkeypatch):
    image = Image.new("RGB", (64, 48), (10, 200, 30))
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    preview = labelling.Preview(tmp_path, env={"COLORTERM": "truecolor"})
    assert preview.window is None and preview.show(image, "frame 7") == tmp_path / PREVIEW
    out = capsys.readouterr().out
    assert f"frame 7: {tmp_path / PREVIEW}" in out and "\u2580" in out
    with Image.open(tmp_path / PREVIEW) as written:
        assert written.size == (64, 48)
    preview.close()
    assert not (tmp_path / PREVIEW).exists()


def test_a_display_that_cannot_be_reached_falls_back(tmp_path, capsys):
    preview = labelling.Preview(tmp_path, env={"DISPLAY": "127.0.0.1:97", "TERM": "dumb"})
    assert preview.window is None and preview.graphics is None
    preview.show(Image.new("RGB", (8, 8)), "frame 1")
    out = capsys.readouterr().out
    assert f"frame 1: {tmp_path / PREVIEW}" in out and "\x1b" not in out
    preview.close()


def test_the_window_is_told_each_picture(tmp_path):
    """The viewer protocol, with a stand-in viewer that writes down what it is told instead of drawing."""
    told = tmp_path / "told.txt"
    recorder = f"import sys\nprint('ready', flush=True)\nopen({str(told)!r}, 'w').writelines(sys.stdin)\n"
    window = labelling.Window.open({}, command=[sys.executable, "-c", recorder])
    assert window is not None
    assert window.show(tmp_path / "a.png", "clip.mp4\tframe\n3") and window.show(tmp_path / "b.png", "frame 4")
    window.close()
    assert told.read_text() == f"{tmp_path / 'a.png'}\tclip.mp4 frame 3\n{tmp_path / 'b.png'}\tframe 4\n"
    assert not window.show(tmp_path / "c.png", "gone")
    assert labelling.Window.open({}, command=[sys.executable, "-c", "raise SystemExit(1)"]) is None


# --------------------------------------------------------------------------- labelling by hand


def test_scripted_run_crops_names_and_log(capsys, monkeypatch, clip, tmp_path):
    dataset = tmp_path / "set"
    (dataset / "charles_montgomery_burns").mkdir(parents=True)
    (dataset / "homer_simpson").mkdir()
    (dataset / "marge_simpson").mkdir()
    (dataset / "homer_simpson" / "pic_0000.jpg").write_bytes(b"not overwritten")  # unreadable: no hash
    answers(monkeypatch,
            "l", "homer",                                  # frame 0 -> homer_simpson/pic_0001.jpg
            "maybe", "right", "simpson", "bart simpson", "y",     # frame 5: bad answer, ambiguity, then a new folder
            "n",                                           # frame 10: nobody
            "full", "Mr Burns", "n", "burns",              # frame 15: unknown name refused, then burns
            "stop")
    code, out, err = label(capsys, clip, dataset)

    assert code == 0, err
    assert (dataset / "homer_simpson" / "pic_0000.jpg").read_bytes() == b"not overwritten"
    with Image.open(dataset / "homer_simpson" / "pic_0001.jpg") as left:
        assert left.size == (WIDTH // 2, HEIGHT)
    with Image.open(dataset / "bart_simpson" / "pic_0000.jpg") as right:
        assert right.size == (WIDTH // 2, HEIGHT)
    with Image.open(dataset / "charles_montgomery_burns" / "pic_0000.jpg") as full:
        assert full.size == (WIDTH, HEIGHT)
    assert "ambiguous: homer_simpson, marge_simpson" in out
    assert "create new character folder bart_simpson? [y/n]" in out
    assert "create new character folder mr_burns? [y/n]" in out
    assert not (dataset / "mr_burns").exists() and not list((dataset / "marge_simpson").iterdir())
    assert "answer no, left, right or full" in out
    assert f"clip.mp4 frame 15: {dataset / PREVIEW}" in out and not (dataset / PREVIEW).exists()
    assert "(homer_simpson: 2)" in out and "saved 3 picture(s) this session" in out
    rows = log_rows(dataset)
    assert [(r["frame"], r["crop"], r["label"], r["action"]) for r in rows] == [
        ("0", "left", "homer_simpson", "saved"), ("5", "right", "bart_simpson", "saved"),
        ("10", "", "", "no_character"), ("15", "full", "charles_montgomery_burns", "saved")]
    assert kept_by_hand(dataset) == set(dataset.glob("*/pic_*.jpg")) - {dataset / "homer_simpson" / "pic_0000.jpg"}
    assert all(r["video"] == str(clip.absolute()) for r in rows)


def test_undo_duplicates_and_resume(capsys, monkeypatch, clip, tmp_path):
    dataset = tmp_path / "set"
    (dataset / "homer_simpson").mkdir(parents=True)
    answers(monkeypatch,
            "f", "homer",      # frame 0 (homer) saved as pic_0000
            "f", "homer",      # frame 5 (bart) saved as pic_0001
            "undo", "f", "homer",  # removes pic_0001; frame 10 (homer again): near-duplicate of pic_0000
            "f", "homer")      # frame 15 (bart) saved as pic_0001 again; then end of input
    code, out, err = label(capsys, clip, dataset)

    assert code == 0, err
    assert files_in(dataset / "homer_simpson") == ["pic_0000.jpg", "pic_0001.jpg"]
    assert "skipped: a near-duplicate of" in out and "removed" in out
    actions = [(r["frame"], r["action"], r["file"]) for r in log_rows(dataset)]
    first, second = "homer_simpson/pic_0000.jpg", "homer_simpson/pic_0001.jpg"
    assert actions == [("0", "saved", first), ("5", "saved", second), ("5", "undo", second),
                       ("10", "skipped_duplicate", first), ("15", "saved", second)]
    assert kept_by_hand(dataset) == set((dataset / "homer_simpson").glob("*.jpg"))

    # the same seed again resumes after the logged frames; undo reaches the earlier run's last picture
    answers(monkeypatch, "u", "n", "r", "bart simpson", "y", "stop")  # frame 20: nobody; frame 25: bart
    code, out, err = label(capsys, clip, dataset)
    assert code == 0, err
    assert "resuming: 4 frame(s)" in out and "clip.mp4 frame 20" in out and "frame 0:" not in out
    assert "removed" in out and files_in(dataset / "homer_simpson") == ["pic_0000.jpg"]
    assert files_in(dataset / "bart_simpson") == ["pic_0000.jpg"]
    assert (dataset / "labels.csv").read_text().count("time,video") == 1
    assert kept_by_hand(dataset) == set(dataset.glob("*/*.jpg"))


def test_undo_never_reaches_outside_the_dataset(capsys, monkeypatch, clip, tmp_path):
    outside = tmp_path / "outside" / "pic_0000.jpg"
    outside.parent.mkdir()
    outside.write_bytes(b"keep me")
    dataset = tmp_path / "set"
    dataset.mkdir()
    (dataset / "labels.csv").write_text("time,video,frame,crop,label,probability,file,action,source\n"
                                        ",,1,left,x,,../outside/pic_0000.jpg,saved,\n")
    answers(monkeypatch, "undo", "stop")
    code, out, err = label(capsys, clip, dataset)
    assert code == 0, err
    assert "nothing to undo" in out and outside.read_bytes() == b"keep me"


def test_model_names_complete_partial_answers(capsys, monkeypatch, clip, tmp_path, tiny_bundle):
    dataset = tmp_path / "set"
    answers(monkeypatch, "r", "wiggum")
    code, out, err = label(capsys, clip, dataset, "--model", tiny_bundle)
    assert code == 0, err
    assert files_in(dataset / "chief_wiggum") == ["pic_0000.jpg"]


def test_two_runs_at_once_do_not_clash(capsys, monkeypatch, clip, tmp_path):
    dataset = tmp_path / "set"
    (dataset / "homer_simpson").mkdir(parents=True)
    scripts = {"left": iter(["l", "homer"] * 3 + ["stop"]), "right": iter(["r", "homer"] * 3 + ["stop"])}
    first_question, asked = threading.Barrier(2), set()

    def scripted_input(prompt: str = "") -> str:
        name = threading.current_thread().name
        if name not in asked:  # both runs have read the log and are labelling before either answers
            asked.add(name)
            first_question.wait(timeout=30)
        return next(scripts[name])

    monkeypatch.setattr(builtins, "input", scripted_input)
    runs = [threading.Thread(target=labelling.label_videos, name=name, args=([clip], dataset),
                             kwargs={"every": (5, 5), "start_within": 0, "seed": 1}) for name in scripts]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=60)
    saved = sorted(dataset.glob("homer_simpson/*.jpg"))
    assert [p.name for p in saved] == [f"pic_{n:04d}.jpg" for n in range(len(saved))] and len(saved) >= 4
    for path in saved:
        with Image.open(path) as picture:
            assert picture.size == (WIDTH // 2, HEIGHT)
    rows = log_rows(dataset)
    assert (dataset / "labels.csv").read_text().count("time,video") == 1
    assert kept_by_hand(dataset) == set(saved)
    assert sorted(r["crop"] for r in rows if r["action"] == "saved").count("left") >= 2


# --------------------------------------------------------------------------- model-assisted and review


def test_auto_respects_threshold_and_batches_crops(capsys, monkeypatch, clip, tmp_path, tiny_bundle):
    from simpsons.prediction import Predictor

    calls = []
    original = Predictor.score
    def counted(self, pixels):
        calls.append(len(pixels))
        return original(self, pixels)

    monkeypatch.setattr(Predictor, "score", counted)
    dataset = tmp_path / "set"
    code, out, err = label(capsys, clip, dataset, "--auto", "--model", tiny_bundle, "--min-prob", "0.99",
                           "--keep-unsure")
    assert code == 0, err
    assert calls == [3] * 6
    assert "frames analysed: 6" in out and "crops kept for review: 0" in out
    unsure = files_in(dataset / "_review" / "_unsure")
    assert len(unsure) == 6  # 2 pictures x 3 crops; the rest are near-duplicates
    assert "near-duplicates skipped: 12" in out

    dataset = tmp_path / "low"
    code, out, err = label(capsys, clip, dataset, "--auto", "--model", tiny_bundle, "--min-prob", "0")
    rows = log_rows(dataset)
    kept = [r for r in rows if r["action"] == "auto_kept"]
    assert len(kept) == 6 and all(r["label"] in TEST_CHARACTERS for r in kept)
    for row in kept:
        assert Path(row["file"]).parts == ("_review", row["label"], Path(row["file"]).name)
        assert float(row["probability"]) >= 0 and row["familiarity"] == ""  # the bundle has no stranger detector
    assert sorted(dataset / r["file"] for r in kept) == sorted((dataset / "_review").glob("*/*.jpg"))

    dataset = tmp_path / "dropped"
    label(capsys, clip, dataset, "--auto", "--model", tiny_bundle, "--min-prob", "0.99")
    assert not list((dataset).glob("_review/*/*.jpg"))
    assert {r["action"] for r in log_rows(dataset)} == {"auto_dropped"}
    code, out, err = label(capsys, clip, dataset, "--auto", "--model", tiny_bundle, "--min-prob", "0.99")
    assert "resuming: 6 frame(s)" in out and "frames analysed: 0" in out


def test_auto_files_unfamiliar_crops_as_unsure(capsys, clip, tmp_path, tiny_bundle):
    """A stranger detector that finds nothing familiar sends even sure crops to _unsure."""
    from simpsons.bundle import load_bundle, save_bundle
    from simpsons.prediction import Predictor

    bundle = load_bundle(tiny_bundle)
    width = Predictor(bundle).features(np.zeros((1, bundle.image_size, bundle.image_size, 3), np.uint8)).shape[1]
    bundle.stranger_detector = StrangerDetector(np.zeros(width), 0.0, 0.9)  # familiarity 0.5
    wary = tmp_path / "wary.simpsons"
    save_bundle(bundle, wary)
    dataset = tmp_path / "set"
    code, out, err = label(capsys, clip, dataset, "--auto", "--model", wary, "--min-prob", "0", "--keep-unsure")
    assert code == 0, err
    assert "crops kept for review: 0" in out and len(files_in(dataset / "_review" / "_unsure")) == 6


def test_review_accept_relabel_reject_undo_and_duplicates(capsys, monkeypatch, clip, tmp_path, tiny_bundle):
    dataset = tmp_path / "set"
    label(capsys, clip, dataset, "--auto", "--model", tiny_bundle, "--min-prob", "0")
    waiting = labelling.review_items(dataset)
    assert len(waiting) == 6
    (dataset / "homer_simpson").mkdir()
    (dataset / "homer_simpson" / "pic_0000.jpg").write_bytes(b"mine")
    copy = dataset / waiting[3][0] / "pic_0100.jpg"  # item 3 is already in its character's folder
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(waiting[3][1], copy)
    answers(monkeypatch,
            "a",            # item 0 accepted
            "r", "homer",   # item 1 relabelled homer_simpson
            "x",            # item 2 rejected
            "u", "a",       # undo: item 2 is back, and accepted this time
            "a",            # item 3: a near-duplicate of the copy, not accepted
            "a", "u",       # item 4 accepted, then undone
            "q", "stop")    # item 4 again: a wrong answer, then stop
    code, out, err = run_cli(capsys, "label", "review", dataset)

    assert code == 0, err
    (s0, p0), (_, p1), (s2, p2), (s3, p3), (s4, p4), (_, p5) = waiting
    assert not p0.exists() and not p1.exists() and not p2.exists() and not p3.exists()
    assert p4.exists() and p5.exists() and labelling.review_items(dataset) == waiting[4:]
    assert (dataset / "homer_simpson" / "pic_0000.jpg").read_bytes() == b"mine"
    assert "not accepted: a near-duplicate of" in out and "undone:" in out
    assert files_in(dataset / "_review" / "_rejected") == ["pic_0000.jpg"]
    rows = [r for r in log_rows(dataset) if r["action"].startswith("review")]
    assert [r["action"] for r in rows] == ["review_accepted", "review_relabelled", "review_rejected", "review_undo",
                                           "review_accepted", "review_duplicate", "review_accepted", "review_undo"]
    assert [r["source"] for r in rows[:3]] == [labelling.relative(dataset, p) for p in (p0, p1, p2)]
    assert rows[1]["label"] == "homer_simpson" and (dataset / rows[1]["file"]).parent.name == "homer_simpson"
    assert rows[3]["file"] == rows[2]["source"] and rows[7]["file"] == rows[6]["source"]
    assert rows[0]["video"] == str(clip.absolute()) and (dataset / rows[0]["file"]).is_file()
    assert not (dataset / rows[6]["file"]).exists()
    for row in (rows[0], rows[4]):
        assert (dataset / row["file"]).parent.name == row["label"]
    before, after = out.split("before review:")[1].split("after review:")
    counts = labelling.picture_counts(dataset)
    assert counts["homer_simpson"] == 2 and re.search(r"homer_simpson +1\n", before)
    assert re.search(r"homer_simpson +2  \(before 1, \+1\)", after)
    assert all(re.search(rf"{name} +{count}  \(before \d+, \+\d+\)", after) for name, count in counts.items())


def waiting(dataset: Path, folder: str, sample: str, name: str = "pic_0000.jpg") -> Path:
    """A copy of ``samples/<sample>.jpg`` waiting in ``_review/<folder>/``."""
    crop = dataset / "_review" / folder / name
    crop.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLES / f"{sample}.jpg", crop)
    return crop


def test_review_offers_only_character_and_unsure_folders(capsys, monkeypatch, tmp_path):
    dataset = tmp_path / "set"
    offered = [waiting(dataset, "homer_simpson", "homer_simpson_0"), waiting(dataset, "_unsure", "bart_simpson_0")]
    for folder in ("_rejected", "_other", ".hidden", "Homer", "mr-burns"):
        waiting(dataset, folder, "lisa_simpson_0")
    outside = tmp_path / "outside"
    (outside / "empty").mkdir(parents=True)
    shutil.copyfile(SAMPLES / "lisa_simpson_1.jpg", outside / "pic_0000.jpg")
    (dataset / "_review" / "lisa_simpson").symlink_to(outside)
    (dataset / "_review" / "marge_simpson").symlink_to(outside / "empty")
    (dataset / "_review" / "homer_simpson" / "pic_0001.jpg").symlink_to(outside / "pic_0000.jpg")
    (dataset / "_review" / "homer_simpson" / "pic_0002.jpg").mkdir()
    assert labelling.review_items(dataset) == [("homer_simpson", offered[0]), ("_unsure", offered[1])]

    answers(monkeypatch, "x", "x")
    code, out, err = run_cli(capsys, "label", "review", dataset)
    assert code == 0, err
    assert "2 crop(s) to review" in out and labelling.review_items(dataset) == []
    assert sorted(p.name for p in (dataset / "_review").iterdir()) == [
        ".hidden", "Homer", "_other", "_rejected", "homer_simpson", "lisa_simpson", "marge_simpson", "mr-burns"]
    assert sorted(p.name for p in outside.iterdir()) == ["empty", "pic_0000.jpg"]


def test_an_unreadable_crop_is_refused_and_stays(capsys, monkeypatch, tmp_path):
    dataset = tmp_path / "set"
    broken = dataset / "_review" / "homer_simpson" / "pic_0000.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a picture")
    with labelling.open_session(dataset) as review:
        with pytest.raises(labelling.UnreadablePicture) as refused:
            labelling.accept_crop(review, broken, "homer_simpson")
    assert isinstance(refused.value, SimpsonsError) and str(refused.value) == f"not a readable picture: {broken}"
    assert broken.read_bytes() == b"not a picture" and not (dataset / "homer_simpson").exists()
    assert review.moves == [] and log_rows(dataset) == []

    good = waiting(dataset, "homer_simpson", "homer_simpson_0", "pic_0001.jpg")
    answers(monkeypatch, "a")
    code, out, err = run_cli(capsys, "label", "review", dataset)
    assert code == 0, err
    assert f"skipped: not a readable picture: {broken}" in out and broken.read_bytes() == b"not a picture"
    assert not good.exists() and files_in(dataset / "homer_simpson") == ["pic_0000.jpg"]


def test_undo_keeps_a_decision_whose_crop_is_gone_and_removes_an_emptied_rejected(tmp_path):
    dataset = tmp_path / "set"
    first = waiting(dataset, "_unsure", "homer_simpson_0")
    second = waiting(dataset, "_unsure", "bart_simpson_0", "pic_0001.jpg")
    rejected = dataset / "_review" / "_rejected"
    with labelling.open_session(dataset) as review:
        moved = [labelling.reject_crop(review, first), labelling.reject_crop(review, second)]
        aside = moved[1].rename(tmp_path / "aside.jpg")
        with pytest.raises(SimpsonsError, match=r"^cannot undo: .*_rejected/pic_0001\.jpg is no longer there"):
            labelling.undo_review(review)
        assert len(review.moves) == 2 and first.parent.is_dir() and not second.exists()
        aside.rename(moved[1])  # put back: the undo can be retried
        assert labelling.undo_review(review) == second and second.is_file()
        assert files_in(rejected) == ["pic_0000.jpg"]  # not empty: kept
        (rejected / "notes.txt").write_text("mine")
        waiting_again = labelling.undo_review(review)
        assert waiting_again == first and first.is_file() and (rejected / "notes.txt").read_text() == "mine"
        (rejected / "notes.txt").unlink()
        labelling.reject_crop(review, first)
        assert labelling.undo_review(review) == first and not rejected.exists()
        assert labelling.undo_review(review) is None
    assert [r["action"] for r in log_rows(dataset)] == ["review_rejected", "review_rejected", "review_undo",
                                                    "review_undo", "review_rejected", "review_undo"]


def test_review_goes_on_after_an_undo_that_failed(capsys, monkeypatch, tmp_path):
    dataset = tmp_path / "set"
    first = waiting(dataset, "_unsure", "homer_simpson_0")
    second = waiting(dataset, "_unsure", "bart_simpson_0", "pic_0001.jpg")
    gone = dataset / "_review" / "_rejected" / "pic_0000.jpg"
    script = iter([lambda: "x", lambda: gone.unlink() or "u", lambda: "x"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(script)())
    code, out, err = run_cli(capsys, "label", "review", dataset)
    assert code == 0, err
    assert f"cannot undo: {gone} is no longer there" in out and not first.exists() and not second.exists()
    assert len(files_in(dataset / "_review" / "_rejected")) == 1  # the second crop; the first is lost


# --------------------------------------------------------------------------- the detector's boxes for review


LABELLED_FRAMES = [0, 5, 10, 15, 20, 25]  # what `label` looks at (see its docstring)


def detector_crops(detector_path: Path, clip: Path, min_prob: float) -> list[tuple[str, str, str, bool, float]]:
    """``(frame, crop, label, sure, probability)`` of each box the detector finds in the labelled frames, from the
    detector itself: the box with its margin, sure when neither side is under ``MIN_BOX_SIDE``."""
    from simpsons.detection.detector import Detector
    from simpsons.labelling.automatic import MIN_BOX_SIDE, crop_box

    detector = Detector.load(detector_path)
    expected = []
    for number, frame in frames.read_frames(clip, LABELLED_FRAMES):
        for found in detector.detect_images([frame], min_prob)[0]:
            x1, y1, x2, y2 = found.box
            where = ",".join(map(str, crop_box(found.box, frame.size)))
            expected.append((str(number), where, found.character, min(x2 - x1, y2 - y1) >= MIN_BOX_SIDE,
                             found.probability))
    return expected


def test_crop_box_adds_a_margin_within_the_frame():
    from simpsons.labelling.automatic import crop_box

    assert crop_box((10, 20, 50, 100), (60, 200)) == (6, 12, 54, 108)  # a tenth of the box on each side
    assert crop_box((2.5, 0, 60, 40), (60, 40)) == (0, 0, 60, 40)
    assert crop_box((10.2, 10.2, 19.8, 19.8), (100, 100), margin=0) == (10, 10, 20, 20)  # whole pixels around it


def test_auto_detect_files_a_crop_per_box(capsys, wide_clip, tmp_path, tiny_detector):
    from simpsons.labelling.automatic import MIN_BOX_SIDE

    dataset = tmp_path / "set"
    code, out, err = label(capsys, wide_clip, dataset, "--auto", "--detect", "--detector", tiny_detector,
                           "--min-prob", "0")
    assert code == 0, err
    expected = [crop[:4] for crop in detector_crops(tiny_detector, wide_clip, 0)]
    assert {sure for *_, sure in expected} == {True, False}  # boxes too small, and boxes to file
    rows = log_rows(dataset)
    assert sorted((r["frame"], r["crop"], r["label"], r["action"] != "auto_dropped") for r in rows) == sorted(expected)
    kept = [r for r in rows if r["action"] == "auto_kept"]
    assert kept and {r["action"] for r in rows} == {"auto_kept", "auto_dropped", "skipped_duplicate"}
    for row in kept:
        path = dataset / row["file"]
        assert Path(row["file"]).parts[:2] == ("_review", row["label"]) and labelling.PICTURE_NAME.match(path.name)
        x1, y1, x2, y2 = map(int, row["crop"].split(","))
        assert Image.open(path).size == (x2 - x1, y2 - y1) and min(x2 - x1, y2 - y1) >= MIN_BOX_SIDE
    assert sorted(dataset / r["file"] for r in kept) == sorted((dataset / "_review").glob("*/*.jpg"))
    dropped = sum(not sure for *_, sure in expected)
    assert f"frames analysed: 6\ncrops kept for review: {len(kept)}\n" in out and f"crops dropped: {dropped}" in out


def test_auto_detect_keeps_the_boxes_at_or_above_min_prob(capsys, wide_clip, tmp_path, tiny_detector):
    found = sorted({crop[4] for crop in detector_crops(tiny_detector, wide_clip, 0)}, reverse=True)[:20]
    high, low = max(zip(found, found[1:]), key=lambda pair: pair[0] - pair[1])
    cut = (high + low) / 2  # between two of the detector's answers, far from either
    dataset = tmp_path / "set"
    code, out, err = label(capsys, wide_clip, dataset, "--auto", "--detect", "--detector", tiny_detector,
                           "--min-prob", str(cut))
    assert code == 0, err
    rows = [r for r in log_rows(dataset) if r["action"] != "auto_empty"]
    expected = detector_crops(tiny_detector, wide_clip, cut)
    assert sorted((r["frame"], r["crop"], r["label"]) for r in rows) == sorted(e[:3] for e in expected)
    assert rows and all(float(r["probability"]) > cut for r in rows)
    empty = {r["frame"] for r in log_rows(dataset) if r["action"] == "auto_empty"}
    assert empty == {str(n) for n in LABELLED_FRAMES} - {e[0] for e in expected}

    nobody = tmp_path / "nobody"  # no box is that sure: every frame is logged, and a second run skips them all
    label(capsys, wide_clip, nobody, "--auto", "--detect", "--detector", tiny_detector, "--min-prob", "1")
    assert [r["action"] for r in log_rows(nobody)] == ["auto_empty"] * 6 and not (nobody / "_review").exists()
    code, out, err = label(capsys, wide_clip, nobody, "--auto", "--detect", "--detector", tiny_detector,
                           "--min-prob", "1")
    assert "resuming: 6 frame(s)" in out and "frames analysed: 0" in out


def test_auto_detect_bad_input_is_one_line_exit_2(capsys, monkeypatch, clip, tmp_path, tiny_detector, tiny_bundle):
    from simpsons.detection import detector as detector_module

    monkeypatch.setattr(detector_module, "default_detector_path", lambda: tmp_path / "none.detector.simpsons")
    into = ("--into", tmp_path / "d")
    cases = [
        (("--detect",), "--detect works with --auto"),
        (("--detector", tiny_detector), "--detector works with --auto"),
        (("--auto", "--detector", tiny_detector), "--detector is the detector of --detect: add --detect"),
        (("--auto", "--detect", "--model", tiny_bundle), "--model is for the classifier; --detect files the boxes"),
        (("--auto", "--detect", "--keep-unsure"), "--keep-unsure is for the classifier"),
        (("--auto", "--detect", "--detector", tiny_bundle), "is a classifier"),
        (("--auto", "--detect", "--detector", tmp_path / "missing.detector.simpsons"), "missing.detector.simpsons"),
        (("--auto", "--detect"), "no detector ships with this install"),
        (("--auto", "--detect", "--detector", tiny_detector, "--min-prob", "-0.5"), "--min-prob"),
    ]
    for extra, expected in cases:
        code, out, err = run_cli(capsys, "label", clip, *into, *extra)
        assert code == 2, extra
        assert expected in one_line_error(err), extra
    _, _, err = run_cli(capsys, "label", clip, *into, "--auto", "--detect")
    assert "--detector RUN/detector.simpsons" in err
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_exit_2(capsys, clip, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    broken = tmp_path / "broken.simpsons"
    broken.write_bytes(b"junk")
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "labels.csv").write_bytes(b"time,video\n\xff\xfe\x00junk\n")
    cases = [
        (("label", tmp_path / "missing.mp4", "--into", tmp_path / "d"), "missing.mp4"),
        (("label", text, "--into", tmp_path / "d"), "not a readable video"),
        (("label", clip, "--into", blocker / "sub"), "cannot create dataset folder"),
        (("label", clip, "--into", blocker), "not a folder"),
        (("label", clip), "--into"),
        (("label", clip, "--into", tmp_path / "d", "--model", broken), "not a simpsons model bundle"),
        (("label", clip, "--into", tmp_path / "d", "--auto", "--model", broken), "not a simpsons model bundle"),
        (("label", clip, "--into", tmp_path / "d", "--every", "9-3"), "--every"),
        (("label", clip, "--into", tmp_path / "d", "--start-within", "-1"), "--start-within"),
        (("label", clip, "--into", tmp_path / "d", "--auto", "--min-prob", "2"), "--min-prob"),
        (("label", "review", tmp_path / "nowhere"), "dataset folder not found"),
        (("label", clip, "--into", garbled), "cannot read the log"),
    ]
    for argv, expected in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert expected in one_line_error(err), argv


def test_a_full_disk_is_one_line_and_leaves_no_empty_picture(capsys, monkeypatch, clip, tmp_path):
    original = store.write_atomically
    def full(target, data):
        if str(target).endswith(".jpg"):
            raise OSError(28, "No space left on device")
        original(target, data)

    monkeypatch.setattr(store, "write_atomically", full)
    dataset = tmp_path / "set"
    (dataset / "homer_simpson").mkdir(parents=True)
    answers(monkeypatch, "l", "homer")
    code, out, err = label(capsys, clip, dataset)
    assert code == 2 and "No space left on device" in one_line_error(err)
    assert files_in(dataset / "homer_simpson") == []


# --------------------------------------------------------------------------- the shared clips


@pytest.mark.shared
@pytest.mark.parametrize("name, wanted", [("comic_shop.mp4", [2, 150, 151, 420, 700]),
                                          ("skateboard_opening.mp4", [1, 40, 129, 130, 200, 328])])
def test_seeking_in_the_shared_clips(shared_data, name, wanted):
    clip = shared_data / "videos" / name
    seeking = list(frames.read_frames(clip, wanted, seek_after=0))
    decoding = list(frames.read_frames(clip, wanted, seek_after=float("inf")))
    assert [n for n, _ in seeking] == [n for n, _ in decoding] == wanted
    for (_, first), (_, second) in zip(seeking, decoding):
        assert np.array_equal(np.asarray(first), np.asarray(second))


@pytest.mark.slow
@pytest.mark.shared
def test_real_clip_by_hand_and_with_the_shipped_model(capsys, monkeypatch, shared_data, tmp_path):
    videos = shared_data / "videos"
    dataset = tmp_path / "set"
    answers(monkeypatch, *["r", "lisa"] * 3)
    code, out, err = run_cli(capsys, "label", videos, "--into", dataset, "--seed", "0", "--model", default_model_path())
    assert code == 0, err
    saved = [r for r in log_rows(dataset) if r["action"] == "saved"]
    assert 1 <= len(saved) <= 3 and files_in(dataset / "lisa_simpson")
    for row in saved:
        with Image.open(dataset / row["file"]) as picture, av.open(row["video"]) as container:
            width = container.streams.video[0].codec_context.width
            assert picture.width == width - width // 2

    code, out, err = run_cli(capsys, "label", videos / "comic_shop.mp4", "--into", dataset, "--auto",
                             "--seed", "0", "--every", "50-100")
    assert code == 0, err
    rows = [r for r in log_rows(dataset) if r["action"].startswith("auto")]
    analysed = int(out.split("frames analysed: ")[1].split()[0])
    assert analysed >= 1
    kept = sum(int(line.split(": ")[1]) for line in out.split("crops kept for review: ")[1].splitlines()[1:]
               if line.startswith("  "))
    assert kept == len([r for r in rows if r["action"] == "auto_kept"])
    familiar = load_bundle(default_model_path()).stranger_detector.threshold
    for row in rows:  # kept: probability at least 0.6 and familiar to the shipped stranger detector
        sure = float(row["probability"]) >= 0.6 and float(row["familiarity"]) >= familiar
        assert sure == (row["action"] == "auto_kept")
