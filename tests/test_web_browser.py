"""``simpsons serve`` on a real uvicorn server: the page in headless Chromium (Debian's ``chromium`` driven by
Playwright) with the detector's boxes, 50 concurrent picture requests, and a body refused before it is read."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from helpers import REPO_ROOT, SAMPLES, drawn_png
from test_video import FPS, write_clip
from test_web import make_dataset

from simpsons.bundle import read_description
from simpsons.prediction import default_model_path
from simpsons.web import create_app, listen, url_of

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT_COPY = "SIMPSONS_SCREENSHOT"  # set to a path (docs/results/web.png) to keep the screenshot there too

pytestmark = pytest.mark.slow  # a real browser drives the app


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_detector):
    """The shipped model with a review dataset and the tiny detector, served by uvicorn in a thread on a free
    loopback port."""
    dataset = make_dataset(tmp_path_factory.mktemp("browser") / "dataset")
    server_socket = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(None, dataset, detector=tiny_detector), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [server_socket]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield url_of(server_socket), dataset
    server.should_exit = True
    thread.join(60)
    server_socket.close()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, through Playwright (which never downloads a browser of its own here)."""
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} is missing: apt-get install chromium (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(live, browser):
    """A fresh page on the app, ready, which fails the test if it asks for anything outside the server."""
    url, _ = live
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    elsewhere = []
    opened.on("request", lambda r: r.url.startswith((url, "blob:", "data:")) or elsewhere.append(r.url))
    opened.goto(url)
    opened.wait_for_selector("body[data-ready=true]")
    yield opened
    context.close()
    assert elsewhere == [], f"the page loaded files from elsewhere: {elsewhere}"


def test_a_shared_test_picture_its_answer_and_heat_map(page, shared_data, tmp_path):
    from playwright.sync_api import expect

    picture = shared_data / "simpsons" / "kaggle_simpson_testset" / "homer_simpson_18.jpg"
    page.set_input_files("#picture-input", str(picture))
    expect(page.locator("#answer")).to_have_text("Homer Simpson", timeout=30_000)
    assert page.locator("#answer").get_attribute("data-character") == "homer_simpson"
    expect(page.locator("#top5 li")).to_have_count(5)
    assert page.locator("#top5 li").first.inner_text().startswith("Homer Simpson")
    assert page.locator("#picture").evaluate("image => image.naturalWidth") > 0

    heatmap = page.locator("#heatmap")
    expect(heatmap).to_be_hidden()
    page.check("#heatmap-toggle")
    expect(heatmap).to_be_visible(timeout=30_000)  # the first picture also has the server load the detector
    painted = heatmap.evaluate("""canvas => {
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        return pixels.filter((value, index) => index % 4 === 3 && value > 0).length;
    }""")
    assert painted > 0
    page.screenshot(path=tmp_path / "web.png")
    assert drawn_png(tmp_path / "web.png").size == tuple(page.viewport_size.values())
    if os.environ.get(SCREENSHOT_COPY):
        shutil.copyfile(tmp_path / "web.png", REPO_ROOT / os.environ[SCREENSHOT_COPY])
    page.uncheck("#heatmap-toggle")
    expect(heatmap).to_be_hidden()


def test_the_detectors_boxes_are_drawn_over_the_picture(page):
    """Every box of the detector's answer, named and placed over the picture as shown (the detector's random
    weights answer with low probabilities: the page's request asks for every box)."""
    from playwright.sync_api import expect

    page.route("**/api/detect", lambda route: route.continue_(url=f"{route.request.url}?min_prob=0"))
    with page.expect_response("**/api/detect?min_prob=0", timeout=60_000) as detected:
        page.set_input_files("#picture-input", str(SAMPLES / "bart_simpson_0.jpg"))
    answer = detected.value.json()
    boxes = page.locator("#boxes li.box")
    expect(boxes).to_have_count(len(answer["detections"]))
    assert len(answer["detections"]) > 0
    expect(page.locator("#answer")).not_to_be_empty()  # the classifier's answer stays
    first = answer["detections"][0]
    label = f"{first['character'].replace('_', ' ').title()} {100 * first['probability']:.1f} %"
    expect(boxes.first).to_have_attribute("aria-label", label)
    expect(page.locator("#detections")).to_contain_text(f"The detector finds: {label}")
    picture = page.locator("#picture").bounding_box()
    scale = picture["width"] / answer["width"]
    x1, y1, x2, y2 = first["box"]
    shown = boxes.first.bounding_box()
    assert shown["x"] == pytest.approx(picture["x"] + x1 * scale, abs=1.5)
    assert shown["y"] == pytest.approx(picture["y"] + y1 * scale, abs=1.5)
    assert shown["width"] == pytest.approx((x2 - x1) * scale, abs=1.5)
    assert shown["height"] == pytest.approx((y2 - y1) * scale, abs=1.5)


def test_the_about_panel_names_the_stranger_detector_and_prior_correction(page):
    from playwright.sync_api import expect

    page.click('nav button[data-panel="about"]')
    facts = page.locator("#about-model")
    shipped = read_description(default_model_path())
    expect(facts).to_contain_text(f"unknown below familiarity {shipped.stranger_detector.threshold:.3f}")
    expect(facts).to_contain_text("mirror image")
    strength = shipped.prior_correction.strength
    expect(facts).to_contain_text(f"strength {strength:g}: every character counted as equally likely")
    expect(page.locator("#about-characters li")).to_have_count(20)


def test_a_clip_with_progress_then_timeline_and_links(page, tmp_path):
    from playwright.sync_api import expect

    clip = write_clip(tmp_path / "clip.mp4", [("bart_simpson_2.jpg", 2 * FPS), ("homer_simpson_0.jpg", 2 * FPS)])
    page.click("nav button[data-panel=clip]")
    page.set_input_files("#clip-input", str(clip))
    expect(page.locator("#clip-result")).to_be_visible(timeout=90_000)
    table = page.locator("#screen-time tbody").inner_text()
    assert "Bart Simpson" in table and "Homer Simpson" in table
    assert page.locator("#clip-chart").evaluate("image => image.complete && image.naturalWidth") > 0
    for link in ("#clip-timeline", "#clip-subtitles", "#clip-annotated"):
        response = page.request.get(page.locator(link).evaluate("anchor => anchor.href"))
        assert response.ok, link
    assert page.locator("#clip-progress").evaluate("bar => bar.value") == 1


def test_review_with_keyboard_shortcuts_name_completion_and_undo(page, live):
    from playwright.sync_api import expect

    _, dataset = live
    page.click("nav button[data-panel=review]")
    crops, message = page.locator(".crop"), page.locator("#review-message")
    expect(crops).to_have_count(4)
    expect(crops.first).to_have_class("crop selected")
    page.keyboard.press("a")  # bart_simpson/pic_0000.jpg accepted
    expect(page.locator("#review-counts tr[data-character=bart_simpson] td.number")).to_have_text("1")
    expect(crops).to_have_count(3)
    expect(message).to_have_text("moved to bart_simpson/pic_0000.jpg")
    page.keyboard.press("r")  # bart_simpson/pic_0001.jpg relabelled
    page.keyboard.type("burns")
    page.keyboard.press("Enter")
    expect(page.locator("#review-counts tr[data-character=charles_montgomery_burns] td.number")).to_have_text("1")
    page.keyboard.press("a")  # homer_simpson/pic_0000.jpg repeats a picture of Homer: refused, and said so
    expect(message).to_have_text("not accepted: a near-duplicate of homer_simpson/pic_0000.jpg "
                                 "(moved to _review/_rejected/pic_0000.jpg)")
    expect(message).to_have_class("warning")
    expect(crops).to_have_count(1)
    expect(page.locator("#review-counts tr[data-character=homer_simpson] td.number")).to_have_text("2")
    page.keyboard.press("x")  # the unsure crop rejected
    expect(page.locator("#review-empty")).to_be_visible()
    assert sorted(p.name for p in (dataset / "_review" / "_rejected").iterdir()) == ["pic_0000.jpg", "pic_0001.jpg"]

    page.keyboard.press("u")  # the unsure crop waits again, selected
    expect(message).to_have_text("undone: _review/_unsure/pic_0000.jpg is waiting again")
    expect(page.locator(".crop.selected")).to_have_attribute("data-item", "_unsure/pic_0000.jpg")
    page.click("#review-undo")  # and so does the refused Homer
    expect(crops).to_have_count(2)
    expect(page.locator(".crop.selected")).to_have_attribute("data-item", "homer_simpson/pic_0000.jpg")
    assert sorted(p.name for p in (dataset / "charles_montgomery_burns").iterdir()) == ["pic_0000.jpg"]
    assert not (dataset / "_review" / "_rejected").exists()  # emptied by the undos, then removed


def load_bench():
    spec = importlib.util.spec_from_file_location("web_load", REPO_ROOT / "bench" / "web_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fifty_concurrent_pictures_are_all_answered_right(live):
    url, _ = live
    bench = load_bench()
    pictures = bench.recognised_pictures(url)
    assert len(pictures) >= 40
    result = bench.load(url, pictures, requests=50, concurrency=50)
    assert result["wrong"] == [] and result["p95_ms"] < 60_000, result


def test_an_oversized_body_is_refused_before_it_is_read(live):
    """Content-Length over the limit: 413 at once, though not one byte of the 10 GB body is sent."""
    url, _ = live
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000000\r\n"
                           b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        reply = connection.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply
