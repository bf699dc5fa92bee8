"""``simpsons serve``: the API with FastAPI's test client (pictures, the detector's boxes, clips, review, limits,
errors) and a fuzz run."""

from __future__ import annotations

import io
import json
import shutil
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from helpers import SAMPLES, TEST_CHARACTERS, character_of, open_sample
from hypothesis import HealthCheck, Phase, settings
from PIL import Image
from schemathesis.checks import not_a_server_error
from test_cli import one_line_error, run_cli
from test_video import FPS, write_clip

from simpsons.bundle import read_description
from simpsons.data import open_rgb
from simpsons.detection.detector import DEFAULT_MIN_PROBABILITY
from simpsons.errors import SimpsonsError
from simpsons.frames import CROPS
from simpsons.labelling import LabelLog, read_log
from simpsons.prediction import Predictor, default_model_path
from simpsons.web import MB, STATIC, ModelThread, create_app

PICTURE_LIMIT = 300_000
CLIP_LIMIT = 3 * MB
EPISODE = Path("/videos/s01e01.mp4")
RECOGNISED = ["bart_simpson_0.jpg", "homer_simpson_0.jpg", "lisa_simpson_0.jpg", "ned_flanders_0.jpg",
              "krusty_the_clown_0.jpg", "sideshow_bob_0.jpg"]


def make_dataset(root: Path) -> Path:
    """Two character folders and four crops waiting for review (the unsure one shows Moe), each with the
    ``auto_*`` log row ``label --auto`` wrote (the waiting Homer repeats homer_simpson/pic_0000.jpg)."""
    layout = {"homer_simpson": ("homer_simpson", 2), "lisa_simpson": ("lisa_simpson", 1),
              "_review/homer_simpson": ("homer_simpson", 1), "_review/bart_simpson": ("bart_simpson", 2),
              "_review/_unsure": ("moe_szyslak", 1)}
    for folder, (character, count) in layout.items():
        (root / folder).mkdir(parents=True)
        for number in range(count):
            shutil.copyfile(SAMPLES / f"{character}_{number}.jpg", root / folder / f"pic_{number:04d}.jpg")
    log = LabelLog(root)
    for frame, crop in enumerate(sorted((root / "_review").rglob("pic_*.jpg"))):
        action, label = ("auto_unsure", "moe_szyslak") if crop.parent.name == "_unsure" else ("auto_kept",
                                                                                              crop.parent.name)
        log.write(action, video=EPISODE, frame=100 * frame, crop=CROPS[frame % 3], label=label, probability=0.9,
                  file=crop)
    log.close()
    return root


def origin(dataset: Path, crop: str) -> dict[str, str]:
    """Video, frame and crop of the ``auto_*`` row of ``_review/<crop>``."""
    row = next(r for r in read_log(dataset) if r["file"] == f"_review/{crop}" and r["action"].startswith("auto_"))
    return {key: row[key] for key in ("video", "frame", "crop")}


def last_row(dataset: Path) -> dict[str, str]:
    """The newest row of ``labels.csv``, less its time and its familiarity (empty: only ``--auto`` rows have one)."""
    row = read_log(dataset)[-1]
    del row["time"]
    assert row.pop("familiarity") == ""
    return row


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("web") / "dataset")


@pytest.fixture(scope="module")
def client(dataset):
    """The shipped model, the dataset's review panel and small limits (300 kB pictures, 3 MB clips)."""
    with TestClient(create_app(None, dataset, PICTURE_LIMIT, CLIP_LIMIT)) as test_client:
        yield test_client


def post_picture(client, data: bytes, name: str = "picture.jpg", **params):
    return client.post("/api/predict", params=params, files={"file": (name, data, "image/jpeg")})


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- page, health, model


def test_page_and_its_files_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert f"/static/{name}" in page.text
        assert client.get(f"/static/{name}").status_code == 200
    for path in STATIC.iterdir():  # no CDN: nothing the page loads comes from elsewhere
        assert "://" not in path.read_text().replace("http://www.w3.org", ""), path
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_health_characters_about_and_schema(client):
    assert client.get("/healthz").json() == {"status": "ok", "characters": 20}
    characters = client.get("/api/characters").json()["characters"]
    assert [c["name"] for c in characters] == TEST_CHARACTERS
    about = client.get("/api/about").json()
    assert about["metrics"]["test_accuracy"] > 0.8 and about["review"] is True
    assert about["test_time_flip"] is False and 0.0 < about["familiarity_threshold"] < 1.0  # the shipped bundle
    shipped = read_description(default_model_path()).prior_correction.strength
    assert about["prior_correction_strength"] == shipped > 0  # what the shipped bundle carries
    assert about["limits"] == {"picture_bytes": PICTURE_LIMIT, "clip_bytes": CLIP_LIMIT}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict", "/api/videos", "/api/videos/{job_id}", "/api/characters", "/healthz"} <= set(paths)
    assert "multipart/form-data" in paths["/api/predict"]["post"]["requestBody"]["content"]


# --------------------------------------------------------------------------- pictures


def test_predictions_match_the_command_line(client):
    direct = Predictor(client.app.state.simpsons.predictor.bundle).predict_files([SAMPLES / n for n in RECOGNISED], 5)
    for name, expected in zip(RECOGNISED, direct):
        answer = post_picture(client, (SAMPLES / name).read_bytes()).json()
        assert answer["character"] == character_of(SAMPLES / name) == expected.character
        assert [n for n, _ in answer["top_k"]] == [n for n, _ in expected.top_k]
        assert answer["probability"] == pytest.approx(expected.probability, abs=1e-4)
        assert set(answer) == {"character", "probability", "best_guess", "top_k", "familiarity", "width", "height"}


def test_heatmap_is_a_normalised_grid(client):
    answer = post_picture(client, (SAMPLES / "homer_simpson_0.jpg").read_bytes(), heatmap="true").json()
    grid = answer["heatmap"]
    assert len(grid) == 32 and {len(row) for row in grid} == {32}
    values = [v for row in grid for v in row]
    assert min(values) >= 0 and max(values) == 1.0 and len(set(values)) > 10


def test_png_with_alpha_and_greyscale_pictures(client):
    homer = open_sample(SAMPLES / "homer_simpson_0.jpg")
    answers = [post_picture(client, png_bytes(image), "x.png") for image in
               (homer.convert("RGBA"), homer.convert("LA"), homer.convert("P"), homer.convert("I;16"))]
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert answers[0].json()["character"] == "homer_simpson"  # the same pixels as the JPEG


def test_not_a_picture_is_415(client, tmp_path):
    assert "not a picture" in post_picture(client, b"hello, world\n" * 20).json()["detail"]
    truncated = (SAMPLES / "homer_simpson_0.jpg").read_bytes()[:1500]
    for data in (b"hello", truncated, b""):
        response = post_picture(client, data)
        assert response.status_code == 415, response.text


def test_bodies_that_are_not_a_form_with_a_file(client):
    response = client.post("/api/predict", json={"file": "homer.jpg"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]
    response = client.post("/api/predict", data={"file": "homer.jpg"}, files={"other": ("a.jpg", b"x")})
    assert response.status_code == 422 and "field named 'file'" in response.json()["detail"]
    broken = client.post("/api/predict", content=b"--nope\r\n\r\n",
                         headers={"content-type": "multipart/form-data"})
    assert broken.status_code == 422 and "multipart" in broken.json()["detail"]
    two_files = client.post("/api/predict", files=[("file", ("a.jpg", b"1")), ("file", ("b.jpg", b"2"))])
    assert two_files.status_code == 422


def test_large_pictures_are_413(client):
    response = post_picture(client, b"\xff" * (PICTURE_LIMIT + 1))
    assert response.status_code == 413 and "0.286102 MB" in response.json()["detail"]


def test_a_streamed_body_is_cut_at_the_limit(client):
    """No Content-Length: the server stops reading once the body passes the limit."""
    boundary = "limit-test"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(40):  # 2.5 MB in all
            yield b"\0" * 65536

    response = client.post("/api/predict", content=body(),
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413
    assert "content-length" not in response.request.headers


def test_too_many_pixels_is_413_before_decoding(client):
    """A PNG whose header claims 20000 x 20000 pixels (400 MP) is refused from its header alone."""
    data = bytearray(png_bytes(Image.new("L", (8, 8))))
    header = b"IHDR" + struct.pack(">II", 20000, 20000) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    response = post_picture(client, bytes(data), "huge.png")
    assert response.status_code == 413 and "megapixels" in response.json()["detail"]


def test_client_file_names_never_become_paths(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = client.app.state.simpsons.work
    before = sorted(p.name for p in work.rglob("*"))
    for name in ("../../escape.jpg", "/tmp/escape.jpg", "..\\..\\escape.jpg", "escape.jpg\0.png"):
        assert post_picture(client, (SAMPLES / "bart_simpson_0.jpg").read_bytes(), name).status_code == 200
    assert not list(tmp_path.rglob("escape*")) and not Path("/tmp/escape.jpg").exists()
    assert not [p for p in work.rglob("*") if "escape" in p.name] and sorted(p.name for p in work.rglob("*")) == before


# --------------------------------------------------------------------------- the detector's boxes


@pytest.fixture(scope="module")
def detecting(tiny_bundle, tiny_detector):
    """The 32 px classifier with the 64 px detector, no dataset, small limits."""
    with TestClient(create_app(tiny_bundle, None, PICTURE_LIMIT, CLIP_LIMIT, detector=tiny_detector)) as test_client:
        yield test_client


def post_detect(client, data: bytes, name: str = "picture.jpg", **params):
    return client.post("/api/detect", params=params, files={"file": (name, data, "image/jpeg")})


def test_detect_answers_like_detect_json_with_the_picture_size(detecting, tiny_detector, capsys):
    picture = SAMPLES / "homer_simpson_0.jpg"
    image = open_rgb(picture)
    answer = post_detect(detecting, picture.read_bytes(), min_prob=0).json()
    assert set(answer) == {"detections", "width", "height"}
    assert (answer["width"], answer["height"]) == image.size
    found = answer["detections"]
    assert found and [d["probability"] for d in found] == sorted((d["probability"] for d in found), reverse=True)
    for detection in found:
        x1, y1, x2, y2 = detection["box"]
        assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height, detection
        assert detection["character"] in ("bart_simpson", "homer_simpson", "lisa_simpson")
    code, out, _ = run_cli(capsys, "detect", picture, "--model", tiny_detector, "--json", "--min-prob", 0)
    assert code == 0 and json.loads(out)["detections"] == found


def test_detect_keeps_the_boxes_at_or_above_min_prob(detecting):
    picture = (SAMPLES / "bart_simpson_0.jpg").read_bytes()
    everything = post_detect(detecting, picture, min_prob=0).json()["detections"]
    top = sorted({d["probability"] for d in everything}, reverse=True)[:10]
    high, low = max(zip(top, top[1:]), key=lambda pair: pair[0] - pair[1])
    cut = (high + low) / 2  # between two answers, far from either
    kept = post_detect(detecting, picture, min_prob=cut).json()["detections"]
    assert kept == [d for d in everything if d["probability"] >= cut] and 0 < len(kept) < len(everything)
    default = post_detect(detecting, picture).json()["detections"]
    assert default == [d for d in everything if d["probability"] >= DEFAULT_MIN_PROBABILITY]
    for bad in (-0.1, 1.5, "most"):
        response = post_detect(detecting, picture, min_prob=bad)
        assert response.status_code == 422 and "min_prob" in response.text, bad


def test_detect_refuses_what_predict_refuses(detecting):
    for data, status, words in ((b"hello, world\n" * 20, 415, "not a picture"),
                                (b"\xff" * (PICTURE_LIMIT + 1), 413, "larger than the limit")):
        for endpoint in ("/api/predict", "/api/detect"):
            response = detecting.post(endpoint, files={"file": ("a.jpg", data, "image/jpeg")})
            assert response.status_code == status and words in response.json()["detail"], (endpoint, response.text)
    missing = detecting.post("/api/detect", data={"file": "homer.jpg"}, files={"other": ("a.jpg", b"x")})
    assert missing.status_code == 422 and "field named 'file'" in missing.json()["detail"]
    about = detecting.get("/api/about").json()["detector"]
    assert about["characters"] == ["bart_simpson", "homer_simpson", "lisa_simpson"]
    assert about["min_probability"] == DEFAULT_MIN_PROBABILITY and about["image_size"] == 64


def test_the_detector_by_default_and_without_one(tiny_bundle, tiny_detector, tmp_path, monkeypatch):
    monkeypatch.setattr("simpsons.detection.detector.default_detector_path", lambda: tmp_path / "default.detector.simpsons")
    with TestClient(create_app(tiny_bundle)) as client:  # no shipped detector in this install
        assert client.get("/api/about").json()["detector"] is None
        response = post_detect(client, (SAMPLES / "bart_simpson_0.jpg").read_bytes())
        assert response.status_code == 404 and "simpsons serve --detector BUNDLE" in response.json()["detail"]
        assert client.post("/api/detect", content=b"not even a form").status_code == 404
    monkeypatch.setattr("simpsons.detection.detector.default_detector_path", lambda: tiny_detector)
    with TestClient(create_app(tiny_bundle)) as client:  # the shipped detector, when the install has one
        assert client.get("/api/about").json()["detector"]["characters"][0] == "bart_simpson"
        served = client.app.state.simpsons.detector
        assert served._detector is None  # its network waits for the first detection
        assert post_detect(client, (SAMPLES / "bart_simpson_0.jpg").read_bytes()).status_code == 200
        assert served._detector is not None
    assert served._detector is None  # and its thread stops with the server
    with TestClient(create_app(tiny_bundle, detector=False)) as client:
        assert client.get("/api/about").json()["detector"] is None
    with pytest.raises(SimpsonsError, match="is a classifier"):
        create_app(tiny_bundle, detector=tiny_bundle)


def test_the_model_thread_gathers_waiting_requests_into_one_call():
    """While the model answers one request, the requests that arrive wait and then go through in one call; an
    error of that call reaches each of them."""
    entered, gate, calls = threading.Semaphore(0), threading.Event(), []

    def run(rows: np.ndarray) -> np.ndarray:
        calls.append(rows.tolist())
        entered.release()
        gate.wait(10)
        if -1 in rows:
            raise ValueError("refused")
        return rows * 10

    def while_busy(first: list[int], then: list[list[int]]) -> tuple[Future, list[Future]]:
        gate.clear()
        busy = pool.submit(model.answer, np.array(first))
        assert entered.acquire(timeout=10)
        waiting = [pool.submit(model.answer, np.array(rows)) for rows in then]
        while model._waiting.qsize() < len(then):
            time.sleep(0.01)
        gate.set()
        assert entered.acquire(timeout=10)  # the gathered call has started
        return busy, waiting

    model = ModelThread(run, batch_size=8, name="test-model")
    with ThreadPoolExecutor(4) as pool:
        busy, waiting = while_busy([1], [[2, 3], [4], [5, 6, 7]])
        assert busy.result().tolist() == [10]
        assert [future.result().tolist() for future in waiting] == [[20, 30], [40], [50, 60, 70]]
        busy, waiting = while_busy([0], [[-1], [8]])
        assert busy.result().tolist() == [0]
        for future in waiting:
            with pytest.raises(ValueError, match="refused"):
                future.result()
    model.close()
    assert calls == [[1], [2, 3, 4, 5, 6, 7], [0], [-1, 8]]


# --------------------------------------------------------------------------- clips


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("web-clips")
    return write_clip(folder / "bart_then_homer.mp4",
                      [("bart_simpson_2.jpg", 2 * FPS), ("homer_simpson_0.jpg", 2 * FPS)])


def finished(client, job_id: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    progress = []
    while time.monotonic() < deadline:
        job = client.get(f"/api/videos/{job_id}").json()
        progress.append(job["progress"])
        if job["status"] in ("done", "failed"):
            assert progress == sorted(progress)
            return job
        time.sleep(0.2)
    raise AssertionError(f"the video job did not finish in {seconds} s")


def test_clip_job_progress_then_timeline(client, clip):
    response = client.post("/api/videos", params={"sample_fps": 4}, files={"file": ("../../x.mp4", clip.read_bytes())})
    assert response.status_code == 202, response.text
    job = finished(client, response.json()["id"])
    assert job["status"] == "done" and job["progress"] == 1.0, job
    result = job["result"]
    assert [row["character"] for row in result["screen_time"]][:2] in (["bart_simpson", "homer_simpson"],
                                                                       ["homer_simpson", "bart_simpson"])
    assert result["segments"][0]["character"] == "bart_simpson"
    assert result["video"]["path"] == "clip" and result["video"]["duration"] == pytest.approx(4.0, abs=0.2)
    chart = client.get(result["files"]["chart.png"])
    assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")
    timeline = client.get(result["files"]["timeline.json"]).json()
    assert timeline["segments"] == result["segments"]
    annotated = client.get(f"/api/videos/{job['id']}/annotated.mp4")
    assert ("annotated.mp4" in result["files"]) == (annotated.status_code == 200)
    folder = client.app.state.simpsons.jobs[job["id"]].folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(result["files"])  # the clip itself is deleted


def test_clip_errors(client, clip):
    picture = client.post("/api/videos", files={"file": ("a.mp4", (SAMPLES / "bart_simpson_0.jpg").read_bytes())})
    assert picture.status_code == 415 and "not a video" in picture.json()["detail"]
    assert "/" not in picture.json()["detail"].split(":", 1)[1]  # the server's folders are not named
    text = client.post("/api/videos", files={"file": ("a.mp4", b"not a video at all" * 100)})
    assert text.status_code == 415
    truncated = client.post("/api/videos", files={"file": ("a.mp4", clip.read_bytes()[: clip.stat().st_size // 3])})
    if truncated.status_code == 202:  # the header survived: the job reports the damage
        job = finished(client, truncated.json()["id"])
        assert job["status"] == "failed" and job["error"], job
    else:
        assert truncated.status_code == 415
    large = client.post("/api/videos", files={"file": ("a.mp4", b"\0" * (CLIP_LIMIT + 1))})
    assert large.status_code == 413 and "clip" in large.json()["detail"]
    assert client.post("/api/videos", params={"sample_fps": 0}, files={"file": ("a.mp4", b"x")}).status_code == 422
    assert client.get("/api/videos/" + "0" * 32).status_code == 404
    assert client.get("/api/videos/..%2F..%2Fetc").status_code in (404, 422)
    assert client.get("/api/videos/" + "0" * 32 + "/passwd").status_code == 422


# --------------------------------------------------------------------------- review


def act(client, item: str, **body):
    return client.post(f"/api/review/{item}", json=body)


def items_of(listing: dict) -> list[str]:
    return [f"{item['folder']}/{item['name']}" for item in listing["items"]]


def test_review_lists_only_the_crops_waiting(client, dataset):
    old = dataset / "_review" / "_old"
    old.mkdir()
    shutil.copyfile(SAMPLES / "lisa_simpson_2.jpg", old / "pic_0000.jpg")
    try:
        listing = client.get("/api/review").json()
        assert items_of(listing) == ["bart_simpson/pic_0000.jpg", "bart_simpson/pic_0001.jpg",
                                     "homer_simpson/pic_0000.jpg", "_unsure/pic_0000.jpg"]
        assert listing["counts"] == {"homer_simpson": 2, "lisa_simpson": 1}
        assert "charles_montgomery_burns" in listing["names"]
        assert not [name for name in listing["names"] if name.startswith("_")]
        image = client.get(listing["items"][0]["url"])
        assert image.status_code == 200 and image.content == (SAMPLES / "bart_simpson_0.jpg").read_bytes()
        assert client.get("/api/review/_old/pic_0000.jpg").status_code == 404
        assert act(client, "_old/pic_0000.jpg", action="reject").status_code == 404
    finally:
        shutil.rmtree(old)


def test_review_accept_and_relabel_log_where_the_crop_came_from(client, dataset):
    bart = origin(dataset, "bart_simpson/pic_0000.jpg")
    assert bart == {"video": str(EPISODE), "frame": "100", "crop": "right"}
    accepted = act(client, "bart_simpson/pic_0000.jpg", action="accept").json()
    assert accepted["moved_to"] == "bart_simpson/pic_0000.jpg" and accepted["duplicate_of"] is None
    assert accepted["message"] == "moved to bart_simpson/pic_0000.jpg" and accepted["counts"]["bart_simpson"] == 1
    assert last_row(dataset) == {**bart, "label": "bart_simpson", "probability": "", "action": "review_accepted",
                                 "file": "bart_simpson/pic_0000.jpg", "source": "_review/bart_simpson/pic_0000.jpg"}

    ambiguous = act(client, "bart_simpson/pic_0001.jpg", action="relabel", name="simpson")
    assert ambiguous.status_code == 422 and "ambiguous" in ambiguous.json()["detail"]
    new = act(client, "bart_simpson/pic_0001.jpg", action="relabel", name="Mr Teeny")
    assert new.status_code == 409 and "mr_teeny" in new.json()["detail"]
    assert act(client, "bart_simpson/pic_0001.jpg", action="relabel", name="").status_code == 422
    relabelled = act(client, "bart_simpson/pic_0001.jpg", action="relabel", name="burns").json()
    assert relabelled["moved_to"] == "charles_montgomery_burns/pic_0000.jpg"
    assert relabelled["counts"]["charles_montgomery_burns"] == 1
    assert last_row(dataset) == {**origin(dataset, "bart_simpson/pic_0001.jpg"), "label": "charles_montgomery_burns",
                                 "probability": "", "action": "review_relabelled",
                                 "file": "charles_montgomery_burns/pic_0000.jpg",
                                 "source": "_review/bart_simpson/pic_0001.jpg"}
    assert not (dataset / "_review" / "bart_simpson").exists()


def test_a_near_duplicate_accept_is_refused_and_said_so(client, dataset):
    refused = act(client, "homer_simpson/pic_0000.jpg", action="accept")
    assert refused.status_code == 200, refused.text
    answer = refused.json()
    assert answer["duplicate_of"] == "homer_simpson/pic_0000.jpg"
    assert answer["moved_to"] == "_review/_rejected/pic_0000.jpg"
    assert answer["message"] == ("not accepted: a near-duplicate of homer_simpson/pic_0000.jpg "
                                 "(moved to _review/_rejected/pic_0000.jpg)")
    assert answer["counts"]["homer_simpson"] == 2 and items_of(answer) == ["_unsure/pic_0000.jpg"]
    assert (dataset / "_review" / "_rejected" / "pic_0000.jpg").is_file()
    assert last_row(dataset) == {**origin(dataset, "homer_simpson/pic_0000.jpg"), "label": "homer_simpson",
                                 "probability": "", "action": "review_duplicate",
                                 "file": "_review/_rejected/pic_0000.jpg",
                                 "source": "_review/homer_simpson/pic_0000.jpg"}
    assert client.get("/api/review/_rejected/pic_0000.jpg").status_code == 404
    assert act(client, "_rejected/pic_0000.jpg", action="accept").status_code == 404


def test_reject_keeps_the_crop_and_undo_restores_it(client, dataset):
    rejected, moe = dataset / "_review" / "_rejected", (SAMPLES / "moe_szyslak_0.jpg").read_bytes()
    assert act(client, "_unsure/pic_0000.jpg", action="accept").status_code == 422
    answer = act(client, "_unsure/pic_0000.jpg", action="reject").json()
    assert answer["moved_to"] == "_review/_rejected/pic_0001.jpg" and answer["items"] == []
    assert answer["message"] == "rejected: kept in _review/_rejected/pic_0001.jpg"
    assert (rejected / "pic_0001.jpg").read_bytes() == moe
    assert last_row(dataset) == {**origin(dataset, "_unsure/pic_0000.jpg"), "label": "", "probability": "",
                                 "action": "review_rejected", "file": "_review/_rejected/pic_0001.jpg",
                                 "source": "_review/_unsure/pic_0000.jpg"}
    assert act(client, "_unsure/pic_0000.jpg", action="reject").status_code == 404

    undone = client.post("/api/review/undo").json()
    assert undone["restored"] == {"folder": "_unsure", "name": "pic_0000.jpg"}
    assert undone["message"] == "undone: _review/_unsure/pic_0000.jpg is waiting again"
    assert (dataset / "_review" / "_unsure" / "pic_0000.jpg").read_bytes() == moe
    assert not (rejected / "pic_0001.jpg").exists() and items_of(undone) == ["_unsure/pic_0000.jpg"]
    assert last_row(dataset) == {"video": "", "frame": "", "crop": "", "label": "", "probability": "",
                                 "action": "review_undo", "file": "_review/_unsure/pic_0000.jpg",
                                 "source": "_review/_rejected/pic_0001.jpg"}
    undone = client.post("/api/review/undo").json()  # then the refused near-duplicate
    assert undone["restored"] == {"folder": "homer_simpson", "name": "pic_0000.jpg"}
    assert items_of(undone) == ["homer_simpson/pic_0000.jpg", "_unsure/pic_0000.jpg"]

    created = act(client, "_unsure/pic_0000.jpg", action="relabel", name="Mr Teeny", create=True).json()
    assert created["moved_to"] == "mr_teeny/pic_0000.jpg" and created["counts"]["mr_teeny"] == 1
    assert act(client, "homer_simpson/pic_0000.jpg", action="reject").json()["items"] == []
    assert sorted(p.relative_to(dataset).as_posix() for p in (dataset / "_review").rglob("*.jpg")) == [
        "_review/_rejected/pic_0000.jpg"]
    assert [row["action"] for row in read_log(dataset)] == [
        "auto_unsure", "auto_kept", "auto_kept", "auto_kept", "review_accepted", "review_relabelled",
        "review_duplicate", "review_rejected", "review_undo", "review_undo", "review_relabelled", "review_rejected"]


def test_undo_with_nothing_to_undo_or_the_crop_gone(tiny_bundle, tmp_path):
    """Undo reaches what this server reviewed; a crop removed meanwhile is a one-line error, and the undo
    works once it is back; an unreadable crop is refused and stays."""
    dataset = make_dataset(tmp_path / "dataset")
    with TestClient(create_app(tiny_bundle, dataset)) as client:
        nothing = client.post("/api/review/undo")
        assert nothing.status_code == 409 and nothing.json()["detail"] == "nothing to undo"
        act(client, "bart_simpson/pic_0000.jpg", action="reject")
        rejected = dataset / "_review" / "_rejected" / "pic_0000.jpg"
        aside = rejected.rename(tmp_path / "aside.jpg")
        gone = client.post("/api/review/undo")
        assert gone.status_code == 500 and gone.json()["detail"].startswith(
            "cannot undo: the dataset/_review/_rejected/pic_0000.jpg is no longer there")
        assert str(tmp_path) not in gone.text and "Traceback" not in gone.text
        aside.rename(rejected)
        assert client.post("/api/review/undo").json()["restored"] == {"folder": "bart_simpson", "name": "pic_0000.jpg"}
        assert not rejected.parent.exists()
        crop = dataset / "_review" / "bart_simpson" / "pic_0001.jpg"
        crop.write_bytes(b"not a picture")
        unreadable = act(client, "bart_simpson/pic_0001.jpg", action="accept")
        assert unreadable.status_code == 422 and unreadable.json()["detail"] == "the crop is not a readable picture"
        assert crop.read_bytes() == b"not a picture"
    assert client.app.state.simpsons.reviewing is None  # the log is closed with the server


def test_review_paths_stay_inside_the_dataset(client, dataset, tmp_path):
    crop = dataset / "_review" / "lisa_simpson" / "pic_0000.jpg"
    crop.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLES / "lisa_simpson_0.jpg", crop)
    outside = tmp_path / "outside"
    outside.mkdir()
    (dataset / "elsewhere").symlink_to(outside)
    (dataset / "_review" / "linked").symlink_to(outside)
    shutil.copyfile(SAMPLES / "lisa_simpson_1.jpg", outside / "pic_0000.jpg")
    try:
        assert items_of(client.get("/api/review").json()) == ["lisa_simpson/pic_0000.jpg"]
        for item in ("..%2F..%2Fetc/passwd", "lisa_simpson/..%2F..%2Fhomer_simpson%2Fpic_0000.jpg",
                     "linked/pic_0000.jpg", "lisa_simpson/labels.csv", "Lisa/pic_0000.jpg", "_rejected/pic_0000.jpg"):
            assert client.get(f"/api/review/{item}").status_code == 404, item
            assert act(client, item, action="reject").status_code == 404, item
        for name in ("../../evil", "/tmp/evil", "lisa/../../evil"):
            response = act(client, "lisa_simpson/pic_0000.jpg", action="relabel", name=name, create=True)
            assert response.status_code == 422, (name, response.text)
        response = act(client, "lisa_simpson/pic_0000.jpg", action="relabel", name="elsewhere")
        assert response.status_code == 422 and "outside the dataset" in response.json()["detail"]
        assert act(client, "lisa_simpson/pic_0000.jpg", action="delete").status_code == 422
        assert sorted(p.name for p in outside.iterdir()) == ["pic_0000.jpg"] and crop.exists()
    finally:
        (dataset / "elsewhere").unlink()
        (dataset / "_review" / "linked").unlink()


# --------------------------------------------------------------------------- without a dataset, and the fuzz run


@pytest.fixture(scope="module")
def tiny_app(tiny_bundle, tiny_detector):
    """A 32 px untrained bundle and the 64 px detector, no dataset: quick answers for the fuzz run."""
    app = create_app(tiny_bundle, None, PICTURE_LIMIT, CLIP_LIMIT, detector=tiny_detector)
    with TestClient(app):
        yield app


def test_review_needs_a_dataset(tiny_app):
    client = TestClient(tiny_app)
    assert client.get("/api/about").json()["review"] is False
    response = client.get("/api/review")
    assert response.status_code == 404 and "--dataset" in response.json()["detail"]
    assert client.post("/api/review/undo").status_code == 404


@pytest.fixture(scope="module")
def api_schema(tiny_app):
    return schemathesis.openapi.from_asgi("/openapi.json", tiny_app)


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@fuzzed.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
def test_fuzzed_requests_get_no_server_error(case):
    case.call_and_validate(checks=[not_a_server_error])


# --------------------------------------------------------------------------- the command line


def test_serve_bad_input_is_one_line_exit_2(capsys, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        code, _, err = run_cli(capsys, "serve", "--port", port)
        assert code == 2 and "already in use" in one_line_error(err)
    finally:
        taken.close()
    code, _, err = run_cli(capsys, "serve", "--port", 0, "--model", tmp_path / "missing.simpsons")
    assert code == 2 and "missing.simpsons" in one_line_error(err)
    code, _, err = run_cli(capsys, "serve", "--port", 0, "--dataset", tmp_path / "nowhere")
    assert code == 2 and "nowhere" in one_line_error(err)
    code, _, err = run_cli(capsys, "serve", "--port", 0, "--detector", tmp_path / "missing.detector.simpsons")
    assert code == 2 and "missing.detector.simpsons" in one_line_error(err)
    code, _, err = run_cli(capsys, "serve", "--port", 70000)
    assert code == 2 and "65535" in one_line_error(err)
    code, _, err = run_cli(capsys, "serve", "--port", 0, "--host", "no-such-host.invalid")
    assert code == 2 and "no-such-host.invalid" in one_line_error(err)


def test_a_video_job_counts_frames_through_the_shared_network(tiny_bundle, tmp_path):
    import threading

    import numpy as np

    from simpsons.video import Options
    from simpsons.web import VideoJob, _JobPredictor

    shared = Predictor.load(tiny_bundle)
    job = VideoJob("job", tmp_path, Options(), annotate=False, expected=2)
    stopping = threading.Event()
    counting = _JobPredictor(shared, job, crops=3, stopping=stopping)
    pixels = np.random.default_rng(0).integers(0, 256, (6, shared.image_size, shared.image_size, 3), np.uint8)
    np.testing.assert_allclose(counting.score(pixels).probabilities, shared.score(pixels).probabilities)
    assert job.classified == 2  # six crops: two frames of three crops
    assert "network" not in vars(counting)  # one network for the server: the job never builds its own
    stopping.set()
    with pytest.raises(SimpsonsError, match="the server stopped"):
        counting.score(pixels)
