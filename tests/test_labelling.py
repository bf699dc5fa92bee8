"""``simpsons label``: scripted sessions over a generated clip and a real one."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import SAMPLES, TEST_CHARACTERS, make_bundle, open_sample
from PIL import Image
from test_cli import one_line_error, run_cli

from simpsons import labelling
from simpsons.prediction import default_model_path

WIDTH, HEIGHT = 160, 120
SEGMENT = 5  # frames 0-4 show homer, 5-9 bart, 10-14 homer...


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s at 10 fps; the picture switches between two characters every 5 frames."""
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    pictures = [np.asarray(open_sample(SAMPLES / f"{name}_0.jpg").resize((WIDTH, HEIGHT)))
                for name in ("homer_simpson", "bart_simpson")]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = 2_000_000
        for number in range(30):
            frame = av.VideoFrame.from_ndarray(pictures[(number // SEGMENT) % 2], format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


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


def test_reserve_never_overwrites(tmp_path):
    folder = tmp_path / "homer_simpson"
    folder.mkdir()
    (folder / "pic_0003.jpg").write_bytes(b"old")
    first = labelling.reserve_picture(folder)
    second = labelling.reserve_picture(folder)
    assert (first.name, second.name) == ("pic_0004.jpg", "pic_0005.jpg")
    assert (folder / "pic_0003.jpg").read_bytes() == b"old"


def test_concurrent_reservations_get_distinct_files(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda _: labelling.reserve_picture(tmp_path).name, range(80)))
    assert len(set(names)) == 80 and len(list(tmp_path.iterdir())) == 80


# --------------------------------------------------------------------------- labelling by hand


def test_scripted_session_crops_names_and_log(capsys, monkeypatch, clip, tmp_path):
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
    assert str(dataset / "_preview.png") in out and (dataset / "_preview.png").is_file()
    assert "(homer_simpson: 2)" in out
    rows = log_rows(dataset)
    assert [(r["frame"], r["crop"], r["label"], r["action"]) for r in rows] == [
        ("0", "left", "homer_simpson", "saved"), ("5", "right", "bart_simpson", "saved"),
        ("10", "", "", "no_character"), ("15", "full", "charles_montgomery_burns", "saved")]
    saved = {Path(r["file"]) for r in rows if r["action"] == "saved"}
    assert saved == {p for p in dataset.glob("*/pic_*.jpg") if p.name != "pic_0000.jpg" or "homer" not in str(p)}
    assert all(r["video"] == str(clip) for r in rows)


def test_undo_duplicates_and_end_of_input(capsys, monkeypatch, clip, tmp_path):
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
    actions = [(r["frame"], r["action"], Path(r["file"]).name) for r in log_rows(dataset)]
    assert actions == [("0", "saved", "pic_0000.jpg"), ("5", "saved", "pic_0001.jpg"),
                       ("5", "undo", "pic_0001.jpg"), ("10", "skipped_duplicate", "pic_0000.jpg"),
                       ("15", "saved", "pic_0001.jpg")]
    # a second run appends to the log under the one header and continues the numbering
    answers(monkeypatch, "l", "homer")
    label(capsys, clip, dataset)
    assert files_in(dataset / "homer_simpson") == ["pic_0000.jpg", "pic_0001.jpg", "pic_0002.jpg"]
    assert (dataset / "labels.csv").read_text().count("time,video") == 1


def test_model_names_complete_partial_answers(capsys, monkeypatch, clip, tmp_path, tiny_bundle):
    dataset = tmp_path / "set"
    answers(monkeypatch, "r", "wiggum")
    code, out, err = label(capsys, clip, dataset, "--model", tiny_bundle)
    assert code == 0, err
    assert files_in(dataset / "chief_wiggum") == ["pic_0000.jpg"]


# --------------------------------------------------------------------------- model-assisted and review


def test_auto_respects_threshold_and_batches_crops(capsys, monkeypatch, clip, tmp_path, tiny_bundle):
    from simpsons.prediction import Predictor

    calls = []
    original = Predictor.probabilities
    def counted(self, pixels):
        calls.append(len(pixels))
        return original(self, pixels)

    monkeypatch.setattr(Predictor, "probabilities", counted)
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
        assert Path(row["file"]).is_file() and Path(row["file"]).parent.name == row["label"]
        assert Path(row["file"]).parent.parent.name == "_review"
    assert sorted(Path(r["file"]) for r in kept) == sorted((dataset / "_review").glob("*/*.jpg"))

    dataset = tmp_path / "dropped"
    label(capsys, clip, dataset, "--auto", "--model", tiny_bundle, "--min-prob", "0.99")
    assert not list((dataset).glob("_review/*/*.jpg"))
    assert {r["action"] for r in log_rows(dataset)} == {"auto_dropped"}


def test_review_accepts_relabels_and_rejects(capsys, monkeypatch, clip, tmp_path, tiny_bundle):
    dataset = tmp_path / "set"
    label(capsys, clip, dataset, "--auto", "--model", tiny_bundle, "--min-prob", "0")
    waiting = labelling.review_items(dataset)
    assert len(waiting) == 6
    (dataset / "homer_simpson").mkdir()
    (dataset / "homer_simpson" / "pic_0000.jpg").write_bytes(b"mine")
    answers(monkeypatch, "a", "r", "homer", "x", "q", "stop")
    code, out, err = run_cli(capsys, "label", "review", dataset)

    assert code == 0, err
    assert "before review" in out and "after review" in out
    first, second, third = waiting[:3]
    assert files_in(dataset / first[0])[-1].startswith("pic_") and not first[1].exists()
    assert (dataset / "homer_simpson" / "pic_0000.jpg").read_bytes() == b"mine"
    assert len(files_in(dataset / "homer_simpson")) == 2 + (first[0] == "homer_simpson")
    assert not second[1].exists() and not third[1].exists()
    assert len(labelling.review_items(dataset)) == 3
    actions = [r["action"] for r in log_rows(dataset) if r["action"].startswith("review")]
    assert actions == ["review_accepted", "review_relabelled", "review_rejected"]
    accepted = [r for r in log_rows(dataset) if r["action"] == "review_accepted"][0]
    assert accepted["video"] == str(clip) and Path(accepted["file"]).is_file()


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_exit_2(capsys, clip, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    broken = tmp_path / "broken.simpsons"
    broken.write_bytes(b"junk")
    cases = [
        (("label", tmp_path / "missing.mp4", "--into", tmp_path / "d"), "missing.mp4"),
        (("label", text, "--into", tmp_path / "d"), "not a readable video"),
        (("label", clip, "--into", blocker / "sub"), "cannot create dataset folder"),
        (("label", clip, "--into", blocker), "not a folder"),
        (("label", clip), "--into"),
        (("label", clip, "--into", tmp_path / "d", "--model", broken), "not a simpsons model bundle"),
        (("label", clip, "--into", tmp_path / "d", "--auto", "--model", broken), "not a simpsons model bundle"),
        (("label", clip, "--into", tmp_path / "d", "--every", "9-3"), "--every"),
        (("label", "review", tmp_path / "nowhere"), "dataset folder not found"),
    ]
    for argv, expected in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert expected in one_line_error(err), argv


# --------------------------------------------------------------------------- a real clip


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
        with Image.open(row["file"]) as picture, av.open(row["video"]) as container:
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
    for row in rows:
        assert (float(row["probability"]) >= 0.6) == (row["action"] == "auto_kept")
