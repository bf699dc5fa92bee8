"""Boxes files, cut-out masks and the augmentation that puts characters on new backgrounds."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from simpsons.boxes import Box, box_mask, cutout_masks, find_boxes_file, read_boxes
from simpsons.errors import SimpsonsError
from simpsons.models import RandomBackground, build_augmentation, build_resnet_small, build_training_model
from simpsons.training import PRESETS, _cutout_boxes_file, resolve_recipe

SIZE = 32


def character_colour(index: int) -> np.ndarray:
    """The colour of picture ``index``'s character: its own, so that it is told apart from its neighbour's
    (the next picture of a batch can become the background)."""
    return np.array([255.0, 3.0 * index, 255.0], np.float32)


def write_picture(path, width: int, height: int) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (10, 20, 30)).save(path)
    return str(path)


# --------------------------------------------------------------------------- boxes files


def test_read_boxes_resolves_paths_against_the_file_and_skips_blank_lines(tmp_path):
    boxes_file = tmp_path / "annotation.txt"
    boxes_file.write_text("simpsons_dataset/bart_simpson/pic_0001.jpg,1,2,30,40,bart_simpson\n\n"
                          "kaggle_simpson_testset/lisa_simpson_3.jpg, 5, 6, 7.0, 8, lisa_simpson\n")

    boxes = read_boxes(boxes_file)

    assert boxes == [
        Box(tmp_path / "simpsons_dataset/bart_simpson/pic_0001.jpg", 1, 2, 30, 40, "bart_simpson"),
        Box(tmp_path / "kaggle_simpson_testset/lisa_simpson_3.jpg", 5, 6, 7, 8, "lisa_simpson"),
    ]


@pytest.mark.parametrize("line, reason", [
    ("a.jpg,1,2,3,bart", "expected path,x1,y1,x2,y2,character, got 5 field"),
    ("a.jpg,1,two,3,4,bart", "the corners must be numbers"),
    ("a.jpg,30,2,10,40,bart", "is empty or has negative corners"),
    ("a.jpg,-1,2,10,40,bart", "is empty or has negative corners"),
])
def test_a_malformed_line_is_named_with_its_number(tmp_path, line, reason):
    boxes_file = tmp_path / "boxes.txt"
    boxes_file.write_text(f"a.jpg,1,2,3,4,bart\n{line}\n")
    with pytest.raises(SimpsonsError, match=rf"boxes.txt, line 2: .*{reason}"):
        read_boxes(boxes_file)


def test_an_unreadable_boxes_file_is_one_clear_error(tmp_path):
    with pytest.raises(SimpsonsError, match="cannot read the boxes file"):
        read_boxes(tmp_path / "missing.txt")


def test_the_boxes_file_of_the_kaggle_layout_sits_beside_the_training_folder(tmp_path):
    (tmp_path / "simpsons_dataset").mkdir()
    assert find_boxes_file(tmp_path / "simpsons_dataset") is None
    (tmp_path / "annotation.txt").write_text("")
    assert find_boxes_file(tmp_path / "simpsons_dataset") == (tmp_path / "annotation.txt").resolve()


# --------------------------------------------------------------------------- masks


def test_a_box_mask_follows_the_squashed_picture():
    mask = box_mask(Box(None, 50, 0, 100, 30, "bart"), width=200, height=60, size=20)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (0, 10, 5, 10)
    assert set(np.unique(mask)) == {0, 255}


def test_cutout_masks_cover_boxed_pictures_by_their_box_and_the_others_whole(tmp_path):
    boxed = write_picture(tmp_path / "data/bart/a.jpg", 64, 32)
    unboxed = write_picture(tmp_path / "data/bart/b.jpg", 64, 32)
    boxes = [Box((tmp_path / "data/bart/a.jpg"), 0, 0, 32, 16, "bart")]

    masks = cutout_masks([boxed, unboxed], boxes, 16)

    assert masks.shape == (2, 16, 16) and masks.dtype == np.uint8
    assert masks[0, :8, :8].min() == 255 and masks[0, 8:].max() == 0 and masks[0, :, 8:].max() == 0
    assert masks[1].min() == 255


# --------------------------------------------------------------------------- the augmentation


def character_pictures(count: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Grey pictures with a character of its own colour in ``box`` (top, left, bottom, right), and its mask."""
    pictures = np.full((count, SIZE, SIZE, 4), 0.0, np.float32)
    pictures[..., :3] = 90.0
    top, left, bottom, right = box
    for index in range(count):
        pictures[index, top:bottom, left:right, :3] = character_colour(index)
    pictures[:, top:bottom, left:right, 3] = 255.0
    return pictures


def on_character(picture: np.ndarray, index: int) -> np.ndarray:
    """Where picture ``index`` shows its own character's colour."""
    return np.abs(picture - character_colour(index)).max(axis=-1) < 1.0


def character_extent(picture: np.ndarray, index: int) -> tuple[int, int, int, int] | None:
    """Top, left, bottom, right of the character's pixels (None if there are none)."""
    rows, cols = np.nonzero(on_character(picture, index))
    if len(rows) == 0:
        return None
    return rows.min(), cols.min(), rows.max() + 1, cols.max() + 1


def test_the_character_keeps_its_shape_lands_inside_the_canvas_at_the_drawn_size():
    pictures = character_pictures(32, (4, 6, 20, 14))  # 16 rows by 8 columns
    layer = RandomBackground(rate=1.0, scale=(0.5, 1.0), seed=3)

    moved = keras.ops.convert_to_numpy(layer(pictures, training=True))

    assert moved.shape == (32, SIZE, SIZE, 3)
    extents = [character_extent(picture, index) for index, picture in enumerate(moved)]
    assert all(extent is not None for extent in extents)
    heights = np.array([bottom - top for top, _, bottom, _ in extents])
    widths = np.array([right - left for _, left, _, right in extents])
    assert heights.min() >= 0.5 * SIZE - 2 and heights.max() <= SIZE  # the longer side spans 50-100%
    assert np.all(np.abs(heights / widths - 2.0) < 0.5)  # the box keeps its proportions
    assert len(set(extents)) > 16  # sizes and places vary
    for index, (picture, (top, left, bottom, right)) in enumerate(zip(moved, extents)):
        assert on_character(picture, index)[top + 1:bottom - 1, left + 1:right - 1].all()  # nothing shows through


def background_of(picture: np.ndarray, index: int) -> np.ndarray:
    """The pixels more than one pixel away from the character's rectangle (its edges blend with the background)."""
    top, left, bottom, right = character_extent(picture, index)
    away = np.ones(picture.shape[:2], bool)
    away[max(top - 1, 0):bottom + 1, max(left - 1, 0):right + 1] = False
    return picture[away]


def test_the_backgrounds_are_new_and_of_every_kind():
    pictures = character_pictures(64, (8, 8, 24, 24))
    moved = keras.ops.convert_to_numpy(RandomBackground(rate=1.0, scale=(0.5, 0.5), seed=0)(pictures, training=True))
    outside = [background_of(picture, index) for index, picture in enumerate(moved)]

    assert not any(np.allclose(pixels, 90.0) for pixels in outside)  # the old grey set is gone
    spread = np.array([pixels.std(axis=0).max() for pixels in outside])  # within each channel
    white = [np.allclose(pixels, 255.0) for pixels in outside]
    assert any(white) and (spread < 1e-3).sum() > sum(white)  # white and other plain colours
    assert (spread > 50).any()  # noise


def test_a_picture_without_a_box_is_shrunk_whole():
    pictures = character_pictures(4, (0, 0, SIZE, SIZE))
    moved = keras.ops.convert_to_numpy(RandomBackground(rate=1.0, scale=(0.5, 0.5), seed=1)(pictures, training=True))
    for index, picture in enumerate(moved):
        top, left, bottom, right = character_extent(picture, index)
        assert (bottom - top, right - left) == (SIZE // 2, SIZE // 2)


def test_the_same_seed_draws_the_same_pictures_and_another_seed_others():
    pictures = character_pictures(8, (4, 4, 20, 28))

    def drawn(seed: int) -> np.ndarray:
        return keras.ops.convert_to_numpy(RandomBackground(rate=0.5, seed=seed)(pictures, training=True))

    np.testing.assert_array_equal(drawn(7), drawn(7))
    assert not np.allclose(drawn(7), drawn(8))


def test_outside_training_and_at_rate_0_the_pictures_only_lose_their_mask():
    pictures = character_pictures(4, (4, 4, 20, 28))
    for layer, training in ((RandomBackground(rate=1.0, seed=0), False), (RandomBackground(rate=0.0, seed=0), True)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(pictures, training=training)), pictures[..., :3])


def test_the_layer_survives_a_save_and_load(tmp_path):
    model = keras.Sequential([keras.Input((SIZE, SIZE, 4)), RandomBackground(0.3, (0.6, 0.9), seed=2)])
    model.save(tmp_path / "augment.keras")
    config = keras.saving.load_model(tmp_path / "augment.keras").layers[0].get_config()
    assert (config["rate"], config["scale"]) == (0.3, [0.6, 0.9])


def test_a_composite_training_model_reads_the_mask_and_ships_a_three_channel_classifier():
    classifier = build_resnet_small(3, SIZE)
    model = build_training_model(classifier, build_augmentation("composite", SIZE, seed=0))
    pictures = character_pictures(2, (4, 4, 20, 28))

    assert model.input_shape == (None, SIZE, SIZE, 4)
    assert classifier.input_shape == (None, SIZE, SIZE, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(pictures, training=False)),
                               keras.ops.convert_to_numpy(classifier(pictures[..., :3], training=False)), atol=1e-5)


# --------------------------------------------------------------------------- recipes


def test_fine_tuning_a_composite_model_keeps_its_cut_outs():
    assert resolve_recipe("fixres", None, init_augmentation="composite").augmentation == "light_composite"
    assert resolve_recipe("fixres", None, init_augmentation="robust").augmentation == "light_robust"
    assert resolve_recipe("fixres", None, init_augmentation="strong").augmentation == "light"


def test_a_cutting_out_recipe_without_boxes_is_refused(tmp_path):
    (tmp_path / "simpsons_dataset").mkdir()
    with pytest.raises(SimpsonsError, match="cuts characters out along their boxes: give cutout_boxes"):
        _cutout_boxes_file(PRESETS["wide"], str(tmp_path / "simpsons_dataset"), None)
    assert _cutout_boxes_file(PRESETS["laptop"], str(tmp_path / "simpsons_dataset"), None) is None
