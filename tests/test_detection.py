"""The detector: targets and decoding, placement, mosaics, COCO scores, the bundle, the commands, and learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import one_line_error, run_cli

from simpsons.boxes import read_boxes
from simpsons.cli import main
from simpsons.detection import detector as detector_module
from simpsons.detection.bundle import DetectorBundle, load_detector, read_detector_description, save_detector
from simpsons.detection.decode import decode
from simpsons.detection.detector import Detection, Detector
from simpsons.detection.evaluation import TrueBoxes, iou, score_detections
from simpsons.detection.mosaic import BoxedPicture, alone, compose, random_canvas
from simpsons.detection.placement import PAD_VALUE, letterbox
from simpsons.detection.targets import encode, outputs
from simpsons.errors import SimpsonsError

RED, BLUE = (230, 30, 30), (30, 30, 200)


def perfect_output(target: np.ndarray, num_classes: int) -> np.ndarray:
    """What a network that learnt ``target`` exactly answers: the heatmaps as logits, the box channels as they are."""
    heat = np.clip(target[..., :num_classes], 1e-6, 1 - 1e-6)
    return np.concatenate([np.log(heat / (1 - heat)), target[..., num_classes:-1]], axis=-1)


# --------------------------------------------------------------------------- targets and decoding


@pytest.mark.parametrize("stride", [4, 8])
def test_encoding_then_decoding_gives_the_boxes_back(stride):
    boxes = np.array([[10, 20, 110, 200], [150, 40, 250, 120], [130, 150, 180, 250], [5.5, 3.25, 40.75, 30.5]],
                     np.float32)
    labels = np.array([0, 2, 2, 1])
    target = encode(boxes, labels, num_classes=3, size=256, stride=stride)
    assert target.shape == (256 // stride, 256 // stride, outputs(3) + 1)
    assert target[..., -1].sum() == 4  # one peak per box
    found = decode(perfect_output(target, 3), stride, min_probability=0.5)
    assert len(found.boxes) == 4
    order = [int(np.argmin(np.abs(found.boxes - box).sum(axis=1))) for box in boxes]
    np.testing.assert_allclose(found.boxes[order], boxes, atol=1e-3)
    assert found.labels[order].tolist() == labels.tolist()
    assert np.all(np.diff(found.probabilities) <= 0)


def test_the_heatmap_is_one_at_each_centre_and_falls_off_around_it():
    target = encode(np.array([[64, 64, 192, 192]]), np.array([1]), num_classes=2, size=256, stride=8)
    heat = target[..., 1]
    assert heat[16, 16] == 1.0 and heat.max() == 1.0
    assert 0 < heat[16, 19] < heat[16, 17] < 1.0
    assert target[..., 0].max() == 0.0


def test_decoding_reports_peaks_only_most_probable_first_above_the_threshold():
    output = np.full((8, 8, 2 + 4), -10.0, np.float32)
    output[..., 2:4] = np.log(2.0)  # boxes of 2 x 2 cells, centred on their cells
    output[..., 4:] = 0.0
    output[2:5, 2:5, 0] = 0.0  # a blob of probability 0.5 around a peak of 0.9
    output[3, 3, 0] = np.log(0.9 / 0.1)
    output[6, 6, 1] = np.log(0.6 / 0.4)
    found = decode(output, stride=8, min_probability=0.55)
    assert found.labels.tolist() == [0, 1]
    np.testing.assert_allclose(found.probabilities, [0.9, 0.6], atol=1e-5)
    np.testing.assert_allclose(found.boxes[0], [16, 16, 32, 32])  # centre (3, 3) cells, 2 cells a side
    assert len(decode(output, stride=8, min_probability=0.95).boxes) == 0
    assert len(decode(output, stride=8, min_probability=0.0, max_detections=1).boxes) == 1


def test_letterboxing_keeps_the_aspect_ratio_and_maps_boxes_both_ways():
    picture = Image.new("RGB", (300, 150), RED)
    canvas, placement = letterbox(picture, 256)
    assert canvas.shape == (256, 256, 3)
    assert placement.scale == pytest.approx(256 / 300) and placement.left == 0 and placement.top == pytest.approx(64)
    assert tuple(canvas[10, 128]) == (PAD_VALUE,) * 3 and tuple(canvas[128, 128]) == RED
    box = np.array([[30, 15, 120, 140]], np.float32)
    np.testing.assert_allclose(placement.to_picture(placement.to_canvas(box)), box, atol=1e-4)
    np.testing.assert_allclose(placement.to_picture([[-20, 0, 300, 300]]), [[0, 0, 300, 150]])


# --------------------------------------------------------------------------- mosaics


def boxed_picture(rng: np.random.Generator, label: int, boxes: int = 1) -> BoxedPicture:
    """A blue picture of random size with ``boxes`` red rectangles, each boxed."""
    width, height = int(rng.integers(80, 200)), int(rng.integers(80, 200))
    pixels = np.full((height, width, 3), BLUE, np.uint8)
    corners = []
    for index in range(boxes):
        x1 = int(rng.integers(0, width // 2)) if index == 0 else width // 2 + 2
        y1 = int(rng.integers(0, height // 2))
        x2 = min(width, x1 + int(rng.integers(20, width // 2)))
        y2 = min(height, y1 + int(rng.integers(20, height // 2)))
        pixels[y1:y2, x1:x2] = RED
        corners.append([x1, y1, x2, y2])
    return BoxedPicture(pixels, np.array(corners, np.float32), np.full(boxes, label, np.int64))


def red_share(canvas: np.ndarray, box: np.ndarray) -> float:
    """The share of red pixels inside a box (shrunk by 2 pixels: the resampled edges blend)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    inside = canvas[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].astype(int)
    return float(np.mean((inside[..., 0] > 150) & (inside[..., 2] < 120))) if inside.size else 1.0


def test_mosaic_boxes_stay_on_the_characters_and_inside_the_canvas():
    rng = np.random.default_rng(0)
    pictures = [boxed_picture(rng, label, boxes=1 + label % 2) for label in range(6)]
    counts = set()
    for seed in range(60):
        canvas = random_canvas(pictures, seed % len(pictures), 128, np.random.default_rng(seed))
        assert canvas.pixels.shape == (128, 128, 3) and canvas.pixels.dtype == np.uint8
        assert len(canvas.boxes) == len(canvas.labels) >= 1
        assert np.all(canvas.boxes >= 0) and np.all(canvas.boxes <= 128)
        assert np.all(canvas.boxes[:, 2] > canvas.boxes[:, 0]) and np.all(canvas.boxes[:, 3] > canvas.boxes[:, 1])
        for box in canvas.boxes:
            assert red_share(canvas.pixels, box) > 0.9, (seed, box)
        counts.add(len({int(label) for label in canvas.labels}))
    assert counts >= {1, 2, 3}  # one picture alone and several together


def test_a_mosaic_is_the_same_for_the_same_seed():
    pictures = [boxed_picture(np.random.default_rng(i), i) for i in range(4)]
    first, again, other = (compose(pictures, 96, np.random.default_rng(seed)) for seed in (5, 5, 6))
    np.testing.assert_array_equal(first.pixels, again.pixels)
    np.testing.assert_array_equal(first.boxes, again.boxes)
    assert not np.array_equal(first.pixels, other.pixels)


def test_a_picture_alone_is_letterboxed_whole_with_its_boxes():
    picture = boxed_picture(np.random.default_rng(3), 2, boxes=2)
    canvas = alone(picture, 128)
    assert canvas.labels.tolist() == [2, 2]
    for box in canvas.boxes:
        assert red_share(canvas.pixels, box) > 0.9


def test_mosaic_batches_are_the_same_for_the_same_seed_epoch_and_place():
    from simpsons.detection.training import MosaicBatches

    pictures = [boxed_picture(np.random.default_rng(i), i) for i in range(6)]
    batches = MosaicBatches(pictures, num_classes=6, image_size=64, stride=8, batch_size=4, seed=1)
    assert len(batches) == 2
    pixels, targets = batches[1]
    assert pixels.shape == (2, 64, 64, 3) and targets.shape == (2, 8, 8, 6 + 5)
    np.testing.assert_array_equal(batches[1][0], pixels)
    batches.epoch = 1
    assert not np.array_equal(batches[1][0], pixels)
    assert targets[..., -1].sum() >= 2  # every canvas has at least its lead picture's box


def test_real_boxed_pictures_make_mosaics_with_their_boxes(shared_data):
    from simpsons.data import open_rgb

    boxes = read_boxes(shared_data / "simpsons" / "annotation.txt")
    training = [box for box in boxes if "simpsons_dataset" in box.path.parts]
    assert len(boxes) == 5911 and len(training) == 5618
    pictures = [BoxedPicture(np.asarray(open_rgb(box.path)), np.array([[box.x1, box.y1, box.x2, box.y2]], np.float32),
                             np.array([index])) for index, box in enumerate(training[::1500])]
    canvas = compose(pictures, 256, np.random.default_rng(0))
    assert sorted(canvas.labels.tolist()) == list(range(len(pictures)))
    assert np.all(canvas.boxes >= 0) and np.all(canvas.boxes <= 256)


# --------------------------------------------------------------------------- COCO scores


def test_coco_scores_are_one_for_perfect_detections_and_lower_for_shifted_ones():
    characters = ["bart_simpson", "homer_simpson", "lisa_simpson"]
    rng = np.random.default_rng(1)
    truths = []
    for index in range(12):
        x1, y1 = rng.uniform(0, 100, size=2)
        truths.append(TrueBoxes(np.array([[x1, y1, x1 + 60, y1 + 90]], np.float32), [characters[index % 2]]))

    def found(shift: float, name_of=lambda name: name) -> list[list[Detection]]:
        moved = [tuple(float(v) for v in truth.boxes[0] + [shift, 0, shift, 0]) for truth in truths]
        return [[Detection(name_of(truth.characters[0]), 0.9, box)] for truth, box in zip(truths, moved)]

    perfect = score_detections(truths, found(0.0), characters)
    assert perfect.map_50 == pytest.approx(1.0) and perfect.map_50_95 == pytest.approx(1.0)
    assert perfect.top_box_right == 1.0 and perfect.pictures == 12
    assert set(perfect.ap_50) == {"bart_simpson", "homer_simpson"}  # lisa has no true box: not averaged in
    shifted = score_detections(truths, found(15.0), characters)  # IoU 0.6: right at 0.5, wrong from 0.65
    assert shifted.map_50 == pytest.approx(1.0) and shifted.map_50_95 < 0.5
    far = score_detections(truths, found(40.0), characters)  # IoU 0.2
    assert far.map_50 == pytest.approx(0.0) and far.top_box_right == 0.0
    swapped = score_detections(truths, found(0.0, {"bart_simpson": "homer_simpson",
                                                   "homer_simpson": "bart_simpson"}.get), characters)
    assert swapped.map_50 == pytest.approx(0.0) and swapped.top_box_right == 0.0
    nothing = score_detections(truths, [[] for _ in truths], characters)
    assert nothing.map_50 == 0.0 and nothing.top_box_right == 0.0
    assert "mAP@0.5 1.000" in perfect.table() and json.dumps(perfect.as_dict())


def test_iou():
    np.testing.assert_allclose(iou(np.array([0, 0, 10, 10]), [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]),
                               [1.0, 1 / 3, 0.0])


# --------------------------------------------------------------------------- the network and its bundle


def test_the_detector_bundle_saves_and_loads(tiny_detector, tmp_path):
    description = read_detector_description(tiny_detector)
    assert description["format"] == "simpsons-detector-bundle" and description["stride"] == 8
    assert description["preprocessing"]["resize"] == "letterbox"
    loaded = load_detector(tiny_detector)
    assert loaded.characters == ["bart_simpson", "homer_simpson", "lisa_simpson"] and loaded.image_size == 64
    assert loaded.metadata == {"note": "made by the tests"}
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    answer = np.asarray(loaded.model.predict_on_batch(pixels))
    assert answer.shape == (2, 8, 8, 3 + 4)
    copy = tmp_path / "copy.simpsons"
    save_detector(loaded, copy)
    np.testing.assert_allclose(np.asarray(load_detector(copy).model.predict_on_batch(pixels)), answer, atol=1e-5)


def test_a_classifier_or_a_broken_file_is_not_a_detector(tiny_bundle, tmp_path):
    with pytest.raises(SimpsonsError, match="is a classifier"):
        read_detector_description(tiny_bundle)
    broken = tmp_path / "broken.simpsons"
    broken.write_bytes(b"not a zip")
    with pytest.raises(SimpsonsError, match="not a simpsons detector bundle"):
        load_detector(broken)
    with pytest.raises(SimpsonsError, match="detector bundle not found"):
        load_detector(tmp_path / "missing.simpsons")


def test_the_trunk_starts_from_a_classifiers_weights():
    from simpsons.detection.model import build_detector
    from simpsons.models import build_article_cnn, build_resnet_small

    classifier = build_resnet_small(5, 96)
    detector = build_detector(2, 64, arch="resnet_small", width=16, init=classifier)
    first_convolution = next(w for w in detector.weights if len(w.shape) == 4)
    np.testing.assert_array_equal(np.asarray(first_convolution), np.asarray(classifier.weights[0]))
    with pytest.raises(SimpsonsError, match="trunk"):
        build_detector(2, 64, arch="article_cnn", init=build_article_cnn(5, 64))
    with pytest.raises(SimpsonsError, match="multiple of 32"):
        build_detector(2, 100)


def test_the_detector_answers_in_the_pictures_own_pixels(tiny_detector):
    detector = Detector.load(tiny_detector)
    pictures = [Image.new("RGB", (160, 90), RED), Image.new("RGB", (50, 120), BLUE)]
    found = detector.detect_images(pictures, min_probability=0.0)
    assert len(found) == 2
    for picture, detections in zip(pictures, found):
        assert detections, "a threshold of 0 reports every peak"
        probabilities = [d.probability for d in detections]
        assert probabilities == sorted(probabilities, reverse=True)
        for detection in detections:
            x1, y1, x2, y2 = detection.box
            assert 0 <= x1 < x2 <= picture.width and 0 <= y1 < y2 <= picture.height
            assert detection.character in detector.characters


# --------------------------------------------------------------------------- the commands


def test_detect_json_gives_one_object_per_picture(capsys, tiny_detector, sample_paths, tmp_path):
    chosen = sample_paths[:3]
    code, out, _ = run_cli(capsys, "detect", *chosen, "--model", tiny_detector, "--json", "--min-prob", "0.05",
                           "--out-dir", tmp_path / "drawn")
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    assert [answer["path"] for answer in answers] == [str(path) for path in chosen]
    for path, answer in zip(chosen, answers):
        assert set(answer) == {"path", "detections"}
        width, height = Image.open(path).size
        probabilities = [d["probability"] for d in answer["detections"]]
        assert probabilities == sorted(probabilities, reverse=True) and min(probabilities, default=1) >= 0.05
        for detection in answer["detections"]:
            assert set(detection) == {"character", "probability", "box"}
            x1, y1, x2, y2 = detection["box"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    drawn = sorted((tmp_path / "drawn").iterdir())
    assert [p.name for p in drawn] == sorted(f"{path.stem}.png" for path in chosen)
    assert Image.open(drawn[0]).size == Image.open(chosen[0]).size


def test_detect_prints_a_table(capsys, tiny_detector, sample_paths):
    code, out, _ = run_cli(capsys, "detect", sample_paths[0], "--model", tiny_detector, "--min-prob", "1")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["image", "character", "prob"]
    assert "(nothing found)" in out.splitlines()[1]


def test_detect_without_a_shipped_detector_says_how_to_train_one(capsys, monkeypatch, tmp_path, sample_paths):
    monkeypatch.setattr(detector_module, "default_detector_path", lambda: tmp_path / "none.simpsons")
    code, _, err = run_cli(capsys, "detect", sample_paths[0])
    assert code == 2
    assert "simpsons train DATA --boxes annotation.txt" in one_line_error(err)


def test_detect_bad_input_is_one_line(capsys, tiny_detector, tiny_bundle, tmp_path, sample_paths):
    code, _, err = run_cli(capsys, "detect", tmp_path / "missing.jpg", "--model", tiny_detector)
    assert code == 2 and "no such picture" in one_line_error(err)
    code, _, err = run_cli(capsys, "detect", sample_paths[0], "--model", tiny_bundle)
    assert code == 2 and "is a classifier" in one_line_error(err)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a picture")
    code, _, err = run_cli(capsys, "detect", junk, "--model", tiny_detector)
    assert code == 2 and "no readable picture" in one_line_error(err)
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.new("RGB", (40, 40), RED).save(folder / "red.png")
    code, _, err = run_cli(capsys, "detect", folder, "--model", tiny_detector, "--out-dir", folder)
    assert code == 2 and "would overwrite the picture" in one_line_error(err)
    with pytest.raises(SystemExit) as exit_info:
        main(["detect", str(sample_paths[0]), "--min-prob", "1.5"])
    assert exit_info.value.code == 2


def test_evaluate_and_train_refuse_what_a_detector_does_not_take(capsys, tiny_detector, tmp_path, samples_dir):
    boxes = tmp_path / "annotation.txt"
    boxes.write_text(f"{samples_dir / 'bart_simpson_0.jpg'},5,5,60,90,bart_simpson\n")
    code, _, err = run_cli(capsys, "evaluate", samples_dir, "--boxes", boxes, "--model", tiny_detector, "--write")
    assert code == 2 and "--write" in one_line_error(err)
    code, _, err = run_cli(capsys, "evaluate", tmp_path, "--boxes", boxes, "--model", tiny_detector)
    assert code == 2 and "none of the boxes" in one_line_error(err)
    code, _, err = run_cli(capsys, "train", samples_dir, "--boxes", boxes, "--out", tmp_path / "run",
                           "--mixing", "cutmix")
    assert code == 2 and "--mixing" in one_line_error(err)
    code, _, err = run_cli(capsys, "train", samples_dir, "--boxes", boxes, "--out", tmp_path / "run",
                           "--image-size", "100")
    assert code == 2 and "multiple of 32" in one_line_error(err)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{samples_dir / 'bart_simpson_0.jpg'},5,5,60\n")
    code, _, err = run_cli(capsys, "evaluate", samples_dir, "--boxes", bad, "--model", tiny_detector)
    assert code == 2 and "line 1" in one_line_error(err)


def test_evaluate_boxes_prints_the_coco_table_and_writes_json(capsys, tiny_detector, tmp_path, samples_dir):
    boxes = tmp_path / "annotation.txt"
    boxes.write_text(f"{samples_dir / 'bart_simpson_0.jpg'},5,5,60,90,bart_simpson\n"
                     f"{samples_dir / 'lisa_simpson_1.jpg'},10,10,2000,2000,lisa_simpson\n"
                     f"{samples_dir / 'moe_szyslak_0.jpg'},10,10,50,50,moe_szyslak\n")
    code, out, _ = run_cli(capsys, "evaluate", samples_dir, "--boxes", boxes, "--model", tiny_detector,
                           "--json", tmp_path / "scores.json")
    assert code == 0
    assert "mAP@0.5" in out and "bart_simpson" in out and "not counted: 1 picture" in out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["pictures"] == 2 and scores["boxes"] == 2
    assert 0 <= scores["map_50"] <= 1 and set(scores["per_character"]) == {"bart_simpson", "lisa_simpson"}


# --------------------------------------------------------------------------- learning


def shapes_picture(rng: np.random.Generator, size: int = 64) -> BoxedPicture:
    """A noisy picture with one or two shapes: a red square (character 0) or a green disc (character 1)."""
    pixels = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
    boxes, labels = [], []
    for index in range(int(rng.integers(1, 3))):
        side = int(rng.integers(14, 24))
        x1 = int(rng.integers(0, size // 2 - side // 2)) + index * size // 2
        y1 = int(rng.integers(0, size - side))
        label = int(rng.integers(0, 2))
        if label == 0:
            pixels[y1 : y1 + side, x1 : x1 + side] = (230, 40, 40)
        else:
            rows, cols = np.ogrid[:size, :size]
            disc = (rows - y1 - side / 2) ** 2 + (cols - x1 - side / 2) ** 2 <= (side / 2) ** 2
            pixels[disc] = (40, 220, 40)
        boxes.append([x1, y1, x1 + side, y1 + side])
        labels.append(label)
    return BoxedPicture(pixels, np.array(boxes, np.float32), np.array(labels, np.int64))


@pytest.mark.slow
def test_a_tiny_detector_learns_to_find_shapes():
    import keras

    from simpsons.detection.model import build_detector, compile_detector
    from simpsons.detection.targets import encode_batch

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    pictures = [shapes_picture(rng) for _ in range(8)]
    canvases = [alone(picture, 64) for picture in pictures]
    pixels = np.stack([c.pixels for c in canvases]).astype(np.float32)
    targets = encode_batch([c.boxes for c in canvases], [c.labels for c in canvases], 2, 64, 8)
    model = build_detector(2, 64, width=32)
    compile_detector(model, keras.optimizers.Adam(3e-3))
    history = model.fit(pixels, targets, batch_size=8, epochs=80, verbose=0).history["loss"]
    assert history[-1] < 0.2 * history[0], history[::10]
    detector = Detector(DetectorBundle(model, ["square", "disc"], 64, 8))
    found = detector.detect_images([Image.fromarray(p.pixels) for p in pictures], min_probability=0.3)
    scores = score_detections([TrueBoxes(p.boxes, [["square", "disc"][i] for i in p.labels]) for p in pictures],
                              found, ["square", "disc"])
    assert scores.map_50 > 0.9 and scores.top_box_right == 1.0, scores.table()


def write_shapes_dataset(root: Path, per_character: int = 12) -> Path:
    """A training folder of two "characters" (squares and discs, one per picture) and its annotation.txt."""
    rng = np.random.default_rng(7)
    lines = []
    for label, name in enumerate(("disc_person", "square_person")):
        (root / "train" / name).mkdir(parents=True)
        for number in range(per_character):
            while True:
                picture = shapes_picture(rng, 96)
                if len(picture.labels) == 1:
                    break
            pixels = picture.pixels.copy()
            colour = (40, 220, 40) if label == 0 else (230, 40, 40)
            x1, y1, x2, y2 = picture.boxes[0].astype(int)
            pixels[y1:y2, x1:x2] = pixels[y1:y2, x1:x2] // 2
            pixels[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2] = colour
            relative = f"train/{name}/pic_{number:04d}.png"
            Image.fromarray(pixels).save(root / relative)
            lines.append(f"{relative},{x1},{y1},{x2},{y2},{name}")
    (root / "annotation.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
def test_train_stop_resume_and_evaluate_a_detector_end_to_end(capsys, tmp_path):
    data = write_shapes_dataset(tmp_path / "data")
    run = tmp_path / "run"
    options = ["--boxes", data / "annotation.txt", "--image-size", "64", "--batch-size", "4", "--min-images", "1"]
    code, out, err = run_cli(capsys, "train", data / "train", "--out", run, "--epochs", "2", "--time-limit", "0.0001",
                             "--test", data / "train", *options)
    assert code == 0 and "time limit reached after epoch 1" in err  # progress is logged on stderr
    assert json.loads((run / "run.json").read_text())["task"] == "detection"
    assert len((run / "history.csv").read_text().splitlines()) == 2
    code, out, _ = run_cli(capsys, "train", "--resume", run)
    assert code == 0
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val_heatmap_loss" in history[0]
    assert (run / "learning_curve.png").stat().st_size > 0
    bundle = load_detector(run / "detector.simpsons")
    assert bundle.characters == ["disc_person", "square_person"]
    metrics = bundle.metadata["metrics"]
    assert metrics["epochs_done"] == 2 and 0 <= metrics["validation_map_50"] <= 1 and metrics["test_pictures"] == 24
    code, out, _ = run_cli(capsys, "evaluate", data / "train", "--boxes", data / "annotation.txt", "--model",
                           run / "detector.simpsons")
    assert code == 0 and "mAP@0.5" in out and "of 24 pictures" in out


def test_the_shipped_detector_boxes_the_character_of_a_sample_through_onnx(capsys, samples_dir):
    detector = Detector.load()
    assert type(detector.bundle.model).__name__ == "OnnxNetwork", "the export beside the shipped bundle is up to date"
    code, out, _ = run_cli(capsys, "detect", samples_dir / "bart_simpson_0.jpg", samples_dir / "homer_simpson_1.jpg",
                           "--json")
    assert code == 0
    for line, character in zip(out.splitlines(), ("bart_simpson", "homer_simpson")):
        top = json.loads(line)["detections"][0]
        assert top["character"] == character and top["probability"] >= 0.3
