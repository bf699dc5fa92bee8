"""Datasets: both layouts, every image mode, bad files, the cache, near duplicates, the split and packs."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import TEST_CHARACTERS, brighter, character_of, copy_samples_as_folders, open_sample, resaved
from PIL import Image

from simpsons import data as datasets
from simpsons.errors import SimpsonsError

SIZE = 32


# --------------------------------------------------------------------------- layouts


def test_flat_layout_of_the_samples(samples_dir, sample_paths):
    loaded = datasets.load_images(samples_dir, SIZE)

    assert len(loaded) == 60
    assert loaded.characters == sorted(TEST_CHARACTERS)
    assert loaded.counts() == {name: 3 for name in TEST_CHARACTERS}
    assert loaded.bad_files == []
    assert loaded.images.shape == (60, SIZE, SIZE, 3)
    assert loaded.images.dtype == np.uint8
    assert loaded.hashes.shape == (60, datasets.HASH_BITS // 8)
    for path, label in zip(loaded.paths, loaded.labels):
        assert loaded.characters[label] == character_of(Path(path))
    # each image is the sample itself, squashed to 32 x 32
    first = Path(loaded.paths[0])
    expected = datasets.resize_square(open_sample(first), SIZE)
    np.testing.assert_array_equal(loaded.images[0], expected)


def test_folder_layout_gives_the_same_counts_and_pixels(samples_dir, sample_paths, tmp_path):
    root = copy_samples_as_folders(sample_paths, tmp_path / "by_character")
    flat = datasets.load_images(samples_dir, SIZE)
    folders = datasets.load_images(root, SIZE)

    assert folders.characters == flat.characters
    assert folders.counts() == flat.counts()
    assert folders.bad_files == []
    flat_by_name = {Path(p).name: i for i, p in enumerate(flat.paths)}
    for i, path in enumerate(folders.paths):
        path = Path(path)
        original = flat_by_name[f"{path.parent.name}_{path.stem.split('_')[1]}.jpg"]
        assert folders.labels[i] == flat.labels[original]
        np.testing.assert_array_equal(folders.images[i], flat.images[original])
        np.testing.assert_array_equal(folders.hashes[i], flat.hashes[original])


# --------------------------------------------------------------------------- every image mode


@pytest.fixture
def homer(sample_paths) -> Image.Image:
    return open_sample(next(p for p in sample_paths if p.name == "homer_simpson_0.jpg"))


def _rgb(path: Path) -> np.ndarray:
    image = datasets.open_rgb(path)
    assert image.mode == "RGB"
    array = np.asarray(image)
    assert array.dtype == np.uint8
    return array


def test_open_rgb_palette_png(homer, tmp_path):
    path = tmp_path / "palette.png"
    homer.quantize(colors=64).save(path)
    assert Image.open(path).mode == "P"

    array = _rgb(path)
    assert array.shape == (homer.height, homer.width, 3)
    assert np.abs(array.astype(int) - np.asarray(homer, dtype=int)).mean() < 12


def test_open_rgb_transparent_area_becomes_white(homer, tmp_path):
    rgba = homer.convert("RGBA")
    alpha = np.full((homer.height, homer.width), 255, np.uint8)
    alpha[:, : homer.width // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    path = tmp_path / "alpha.png"
    rgba.save(path)

    array = _rgb(path)
    assert array.shape == (homer.height, homer.width, 3)
    assert (array[:, : homer.width // 2] == 255).all()
    np.testing.assert_array_equal(array[:, homer.width // 2 :], np.asarray(homer)[:, homer.width // 2 :])


def test_open_rgb_16_bit_greyscale_is_scaled_not_clipped(homer, tmp_path):
    grey = np.asarray(homer.convert("L"), dtype=np.uint16)
    deep = grey * 257  # 0..255 -> 0..65535
    assert deep.max() > 60000
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    assert Image.open(path).mode in ("I;16", "I", "I;16B")

    array = _rgb(path)
    assert array.shape == (homer.height, homer.width, 3)
    assert (array == 255).mean() < 0.5  # clipping would turn nearly every pixel white
    for channel in range(3):
        assert np.abs(array[..., channel].astype(int) - grey.astype(int)).max() <= 1


def test_open_rgb_greyscale(homer, tmp_path):
    grey = homer.convert("L")
    path = tmp_path / "grey.png"
    grey.save(path)

    array = _rgb(path)
    assert array.shape == (homer.height, homer.width, 3)
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], np.asarray(grey))


def test_open_rgb_bmp(homer, tmp_path):
    path = tmp_path / "picture.bmp"
    homer.save(path)

    np.testing.assert_array_equal(_rgb(path), np.asarray(homer))


def test_open_rgb_webp(homer, tmp_path):
    path = tmp_path / "picture.webp"
    homer.save(path, quality=95)

    array = _rgb(path)
    assert array.shape == (homer.height, homer.width, 3)
    assert np.abs(array.astype(int) - np.asarray(homer, dtype=int)).mean() < 8


def test_open_rgb_cmyk_jpeg(homer, tmp_path):
    path = tmp_path / "cmyk.jpg"
    homer.convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"

    array = _rgb(path)
    assert array.shape == (homer.height, homer.width, 3)
    assert np.abs(array.astype(int) - np.asarray(homer, dtype=int)).mean() < 8


def test_open_rgb_applies_exif_orientation(homer, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to show
    path = tmp_path / "sideways.jpg"
    homer.save(path, exif=exif, quality=95)

    array = _rgb(path)
    assert array.shape == (homer.width, homer.height, 3)


def test_every_mode_loads_as_a_dataset(homer, tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    homer.quantize(colors=64).save(folder / "homer_simpson_1.png")
    homer.convert("RGBA").save(folder / "homer_simpson_2.png")
    Image.fromarray(np.asarray(homer.convert("L"), dtype=np.uint16) * 257).save(folder / "homer_simpson_3.png")
    homer.convert("L").save(folder / "homer_simpson_4.png")
    homer.save(folder / "homer_simpson_5.bmp")
    homer.save(folder / "homer_simpson_6.webp")
    homer.convert("CMYK").save(folder / "homer_simpson_7.jpg")
    homer.save(folder / "homer_simpson_8.gif")
    homer.save(folder / "homer_simpson_9.tiff")

    loaded = datasets.load_images(folder, SIZE)

    assert loaded.bad_files == []
    assert len(loaded) == 9
    assert loaded.images.shape == (9, SIZE, SIZE, 3)
    assert loaded.images.dtype == np.uint8
    colour = datasets.resize_square(homer, SIZE).astype(int)
    grey = datasets.resize_square(homer.convert("L").convert("RGB"), SIZE).astype(int)
    for image, path in zip(loaded.images, loaded.paths):
        reference = grey if path.endswith(("_3.png", "_4.png")) else colour
        assert np.abs(image.astype(int) - reference).mean() < 8, path


# --------------------------------------------------------------------------- bad files


def test_bad_files_are_skipped_and_listed(sample_paths, tmp_path):
    root = copy_samples_as_folders(sample_paths, tmp_path / "dataset", ["bart_simpson", "lisa_simpson"])
    bart = root / "bart_simpson"
    real = (bart / "pic_0.jpg").read_bytes()
    bad = {
        bart / "corrupt.jpg": lambda p: p.write_bytes(os.urandom(4000)),
        bart / "truncated.jpg": lambda p: p.write_bytes(real[: len(real) // 2]),
        root / "lisa_simpson" / "empty.jpg": lambda p: p.write_bytes(b""),
        root / "lisa_simpson" / "notes.jpg": lambda p: p.write_text("this is not a picture\n" * 20),
        bart / "x.jpg": lambda p: p.mkdir(),
    }
    for path, make in bad.items():
        make(path)
    # hidden files: ignored, not reported
    (root / ".DS_Store").write_bytes(os.urandom(100))
    (bart / ".DS_Store").write_bytes(os.urandom(100))
    (bart / "._pic_0.jpg").write_bytes(os.urandom(100))
    # the labelling tool's folders are not characters
    review = root / "_review" / "homer_simpson"
    review.mkdir(parents=True)
    (review / "pic_0000.jpg").write_bytes(real)

    loaded = datasets.load_images(root, SIZE)

    assert len(loaded) == 6
    assert loaded.counts() == {"bart_simpson": 3, "lisa_simpson": 3}
    assert sorted(Path(p).name for p in loaded.paths) == ["pic_0.jpg", "pic_0.jpg", "pic_1.jpg", "pic_1.jpg",
                                                           "pic_2.jpg", "pic_2.jpg"]
    reported = {Path(b.path): b.reason for b in loaded.bad_files}
    assert set(reported) == set(bad)
    assert reported[bart / "x.jpg"] == "is a folder"
    assert reported[root / "lisa_simpson" / "empty.jpg"] == "empty file"
    assert reported[bart / "truncated.jpg"].startswith("unreadable image")
    assert not any(".DS_Store" in b.path or "._pic" in b.path for b in loaded.bad_files)

    report = datasets.describe_bad_files(loaded.bad_files)
    assert report.splitlines()[0].startswith("skipped 5 unreadable file(s)")
    for path in bad:
        assert str(path) in report
    assert datasets.describe_bad_files([]) == ""


def test_bad_files_in_the_flat_layout(sample_paths, tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for path in sample_paths[:6]:
        shutil.copyfile(path, root / path.name)
    (root / "homer_simpson_99.jpg").write_bytes(b"")
    (root / "readme.txt").write_text("hello")
    (root / ".DS_Store").write_bytes(b"\0\1")

    loaded = datasets.load_images(root, SIZE)

    assert len(loaded) == 6
    assert {Path(b.path).name for b in loaded.bad_files} == {"homer_simpson_99.jpg", "readme.txt"}
    assert "homer_simpson" not in loaded.characters


def test_describe_bad_files_limits_the_listing():
    bad = [datasets.BadFile(f"/data/pic_{i}.jpg", "empty file") for i in range(13)]
    report = datasets.describe_bad_files(bad, limit=10)
    lines = report.splitlines()
    assert lines[0] == "skipped 13 unreadable file(s): 13 empty file"
    assert len(lines) == 12
    assert lines[-1] == "  ... and 3 more"


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(SimpsonsError, match="not found"):
        datasets.load_images(tmp_path / "nowhere", SIZE)


def test_a_file_is_not_a_dataset_folder(sample_paths):
    with pytest.raises(SimpsonsError, match="not a folder"):
        datasets.load_images(sample_paths[0], SIZE)


@pytest.mark.parametrize("content", ["nothing", "hidden only", "empty character folders"])
def test_empty_folder_is_an_error(tmp_path, content):
    root = tmp_path / "empty"
    root.mkdir()
    if content == "hidden only":
        (root / ".DS_Store").write_bytes(b"\0")
    elif content == "empty character folders":
        (root / "bart_simpson").mkdir()
        (root / "lisa_simpson").mkdir()
    with pytest.raises(SimpsonsError, match="no images"):
        datasets.load_images(root, SIZE)


# --------------------------------------------------------------------------- selecting characters


@pytest.fixture
def uneven(sample_paths, tmp_path) -> datasets.LabelledImages:
    """bart 6 images, homer 4, lisa 3, marge 1."""
    root = tmp_path / "uneven"
    keep = {"bart_simpson": 6, "homer_simpson": 4, "lisa_simpson": 3, "marge_simpson": 1}
    for character, count in keep.items():
        (root / character).mkdir(parents=True)
        frames = [p for p in sample_paths if character_of(p) == character]
        for n in range(count):
            picture = open_sample(frames[n % 3])
            (brighter(picture, 1.5) if n >= 3 else picture).save(root / character / f"pic_{n}.jpg")
    loaded = datasets.load_images(root, SIZE)
    assert loaded.counts() == keep
    return loaded


def test_select_characters_by_min_images(uneven):
    selected = datasets.select_characters(uneven, min_images=4)

    assert selected.characters == ["bart_simpson", "homer_simpson"]
    assert selected.counts() == {"bart_simpson": 6, "homer_simpson": 4}
    assert len(selected) == 10
    for path, label in zip(selected.paths, selected.labels):
        assert Path(path).parent.name == selected.characters[label]
    kept = [uneven.paths.index(p) for p in selected.paths]
    np.testing.assert_array_equal(selected.images, uneven.images[kept])


def test_select_explicit_characters(uneven):
    selected = datasets.select_characters(uneven, min_images=1000, characters=["marge_simpson", "homer_simpson"])

    assert selected.characters == ["homer_simpson", "marge_simpson"]
    assert selected.counts() == {"homer_simpson": 4, "marge_simpson": 1}


def test_select_unknown_character_is_an_error(uneven):
    with pytest.raises(SimpsonsError, match="unknown character.*ned_flanders"):
        datasets.select_characters(uneven, characters=["homer_simpson", "ned_flanders"])


def test_select_with_nothing_left_is_an_error(uneven):
    with pytest.raises(SimpsonsError, match="no character has at least 7 images.*the most is 6"):
        datasets.select_characters(uneven, min_images=7)


def test_default_selection_drops_small_characters(samples_dir):
    with pytest.raises(SimpsonsError, match=f"at least {datasets.DEFAULT_MIN_IMAGES}"):
        datasets.select_characters(datasets.load_images(samples_dir, SIZE))


# --------------------------------------------------------------------------- cache


def test_second_load_comes_from_the_cache(sample_paths, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPSONS_CACHE_DIR", str(tmp_path / "cache"))
    root = copy_samples_as_folders(sample_paths, tmp_path / "dataset", ["bart_simpson", "homer_simpson"])
    (root / "bart_simpson" / "broken.jpg").write_bytes(b"not a jpeg")
    first = datasets.load_images(root, SIZE)
    assert len(list((tmp_path / "cache").glob("images-*.npz"))) == 1

    class Decoded(Exception):
        pass

    def no_decoding(*args, **kwargs):
        raise Decoded

    monkeypatch.setattr(datasets, "_decode_all", no_decoding)
    second = datasets.load_images(root, SIZE)

    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    np.testing.assert_array_equal(second.hashes, first.hashes)
    assert second.paths == first.paths
    assert second.characters == first.characters
    assert [b.path for b in second.bad_files] == [str(root / "bart_simpson" / "broken.jpg")]

    # another size is another cache entry
    with pytest.raises(Decoded):
        datasets.load_images(root, SIZE + 8)
    # touching one file invalidates the entry
    picture = root / "homer_simpson" / "pic_1.jpg"
    stat = picture.stat()
    os.utime(picture, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    with pytest.raises(Decoded):
        datasets.load_images(root, SIZE)
    # use_cache=False always decodes
    os.utime(picture, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(Decoded):
        datasets.load_images(root, SIZE, use_cache=False)


def test_a_cache_written_from_another_folder_names_files_as_given_now(sample_paths, tmp_path, monkeypatch):
    """A relative path cached from one working directory must still open from another (the evaluation's
    picture grid opens them)."""
    monkeypatch.setenv("SIMPSONS_CACHE_DIR", str(tmp_path / "cache"))
    root = copy_samples_as_folders(sample_paths, tmp_path / "work" / "dataset", ["bart_simpson"])
    (root / "bart_simpson" / "broken.jpg").write_bytes(b"not a jpeg")
    monkeypatch.chdir(tmp_path / "work")
    first = datasets.load_images("dataset", SIZE)
    assert first.paths[0].startswith("dataset")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setattr(datasets, "_decode_all", lambda *args: pytest.fail("decoded again: the cache was not used"))
    for name in ("../work/dataset", str(root)):
        again = datasets.load_images(name, SIZE)
        assert again.paths == [str(Path(name) / Path(path).relative_to("dataset")) for path in first.paths]
        assert all(Path(path).is_file() for path in again.paths)
        assert [b.path for b in again.bad_files] == [str(Path(name) / "bart_simpson" / "broken.jpg")]


def test_changed_file_is_decoded_again(sample_paths, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPSONS_CACHE_DIR", str(tmp_path / "cache"))
    root = copy_samples_as_folders(sample_paths, tmp_path / "dataset", ["bart_simpson"])
    before = datasets.load_images(root, SIZE)
    picture = root / "bart_simpson" / "pic_2.jpg"
    index = before.paths.index(str(picture))
    stat = picture.stat()
    brighter(open_sample(picture), 1.6).save(picture)
    os.utime(picture, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    after = datasets.load_images(root, SIZE)

    assert after.images[index].mean() > before.images[index].mean() + 10
    others = [i for i in range(len(after)) if i != index]
    np.testing.assert_array_equal(after.images[others], before.images[others])


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPSONS_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert datasets.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("SIMPSONS_CACHE_DIR")
    assert datasets.cache_dir() == Path.home() / ".cache" / "simpsons"


# --------------------------------------------------------------------------- near duplicates and split


def _with_copies(sample_paths: list[Path], root: Path, mirrored: bool = False) -> Path:
    """Each sample, a 3% brighter copy and a JPEG re-save (and, optionally, the same for its mirror image)."""
    root.mkdir()
    for path in sample_paths:
        character, number = path.stem.rsplit("_", 1)
        pictures = [open_sample(path)]
        if mirrored:
            pictures.append(pictures[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        for k, picture in enumerate(pictures):
            base = int(number) * 100 + k * 10
            picture.save(root / f"{character}_{base}.png")
            brighter(picture).save(root / f"{character}_{base + 1}.png")
            resaved(picture).save(root / f"{character}_{base + 2}.png")
    return root


def test_near_duplicate_groups(sample_paths, tmp_path):
    loaded = datasets.load_images(_with_copies(sample_paths, tmp_path / "copies"), SIZE)
    assert len(loaded) == 180
    groups = datasets.near_duplicate_groups(loaded.hashes)
    assert groups.shape == (180,)

    by_name = {Path(p).stem: i for i, p in enumerate(loaded.paths)}
    for path in sample_paths:
        character, number = path.stem.rsplit("_", 1)
        original = by_name[f"{character}_{int(number) * 100}"]
        assert groups[by_name[f"{character}_{int(number) * 100 + 1}"]] == groups[original], f"brighter {path.name}"
        assert groups[by_name[f"{character}_{int(number) * 100 + 2}"]] == groups[original], f"re-saved {path.name}"
    different = loaded.labels[:, None] != loaded.labels[None, :]
    assert not (groups[:, None] == groups[None, :])[different].any()
    # at least 40 distinct shots among the 60 samples: not everything is one group
    assert len(set(groups.tolist())) >= 40


def test_hamming_distances(sample_paths):
    hashes = np.stack([datasets.difference_hash(open_sample(p)) for p in sample_paths[:4]])
    distances = datasets.hamming_distances(hashes, hashes)

    assert distances.shape == (4, 4)
    assert (np.diag(distances) == 0).all()
    np.testing.assert_array_equal(distances, distances.T)
    bits = np.unpackbits(hashes, axis=1)
    assert distances[0, 1] == int((bits[0] != bits[1]).sum())
    inverted = np.bitwise_not(hashes[:1])
    assert datasets.hamming_distances(hashes[:1], inverted)[0, 0] == datasets.HASH_BITS


@pytest.fixture(scope="module")
def duplicated(sample_paths, tmp_path_factory) -> datasets.LabelledImages:
    """360 images, 20 characters, 4 to 6 shots each, every shot present 3 times (near duplicates)."""
    return datasets.load_images(_with_copies(sample_paths, tmp_path_factory.mktemp("split") / "set", True), SIZE)


def test_shot_aware_split_keeps_near_duplicates_on_one_side(duplicated):
    train, validation = datasets.shot_aware_split(duplicated, validation_fraction=0.25, seed=0)

    assert len(np.intersect1d(train, validation)) == 0
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(len(duplicated)))
    assert 0.15 < len(validation) / len(duplicated) < 0.35
    distances = datasets.hamming_distances(duplicated.hashes[train], duplicated.hashes[validation])
    assert distances.min() > datasets.NEAR_DUPLICATE_DISTANCE

    # the data has near duplicates: a random split of the same size would cross them
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(duplicated))
    naive = datasets.hamming_distances(duplicated.hashes[shuffled[len(validation):]],
                                       duplicated.hashes[shuffled[: len(validation)]])
    assert naive.min() <= datasets.NEAR_DUPLICATE_DISTANCE


def test_shot_aware_split_has_every_character_on_both_sides(duplicated):
    groups = datasets.near_duplicate_groups(duplicated.hashes)
    shots = Counter(int(duplicated.labels[i]) for i in {g: i for i, g in enumerate(groups)}.values())
    assert min(shots.values()) >= 4  # enough groups for 4 folds

    train, validation = datasets.shot_aware_split(duplicated, validation_fraction=0.25, seed=0)

    assert set(duplicated.labels[train].tolist()) == set(range(20))
    assert set(duplicated.labels[validation].tolist()) == set(range(20))


def test_shot_aware_split_depends_on_the_seed_only(duplicated):
    first = datasets.shot_aware_split(duplicated, validation_fraction=0.25, seed=0)
    again = datasets.shot_aware_split(duplicated, validation_fraction=0.25, seed=0)
    other = datasets.shot_aware_split(duplicated, validation_fraction=0.25, seed=1)

    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])
    distances = datasets.hamming_distances(duplicated.hashes[other[0]], duplicated.hashes[other[1]])
    assert distances.min() > datasets.NEAR_DUPLICATE_DISTANCE


@pytest.mark.parametrize("fraction", [0, 0.5, 0.9, -0.1])
def test_shot_aware_split_rejects_bad_fractions(duplicated, fraction):
    with pytest.raises(SimpsonsError, match="validation fraction"):
        datasets.shot_aware_split(duplicated, validation_fraction=fraction)


@pytest.mark.parametrize(
    "characters",
    [
        ["bart_simpson", "homer_simpson"],  # 6 frames: fewer images than the 7 folds of a 15% split
        None,  # 60 frames, but 3 per character: fewer than 7 in every class
    ],
)
def test_shot_aware_split_of_too_few_images_is_a_clear_error(samples_dir, characters):
    """A set too small for a shot-aware split is a user error (SimpsonsError), not a crash."""
    loaded = datasets.load_images(samples_dir, SIZE)
    small = datasets.select_characters(loaded, min_images=1, characters=characters)
    with pytest.raises(SimpsonsError):
        datasets.shot_aware_split(small, validation_fraction=0.15)


def test_shot_aware_split_with_fewer_shots_than_folds(duplicated):
    """18 frames of one character but 6 shots: still a split, the validation side one whole shot."""
    one = datasets.select_characters(duplicated, characters=["bart_simpson"])
    groups = datasets.near_duplicate_groups(one.hashes)
    assert len(one) == 18 and len(set(groups.tolist())) < 7

    train, validation = datasets.shot_aware_split(one, validation_fraction=0.15)

    assert len(validation) > 0 and len(train) > 0
    assert not set(groups[train].tolist()) & set(groups[validation].tolist())


# --------------------------------------------------------------------------- packs


def test_pack_round_trip(samples_dir, tmp_path):
    loaded = datasets.load_images(samples_dir, 48)
    pack = tmp_path / f"samples{datasets.PACK_SUFFIX}"
    datasets.write_pack(loaded, pack)
    assert pack.stat().st_size < loaded.images.nbytes  # JPEG bytes, not raw pixels

    again = datasets.load_images(pack, 48)

    assert again.characters == loaded.characters
    np.testing.assert_array_equal(again.labels, loaded.labels)
    np.testing.assert_array_equal(again.hashes, loaded.hashes)
    assert again.paths == loaded.paths
    assert again.images.shape == loaded.images.shape
    error = np.abs(again.images.astype(int) - loaded.images.astype(int)).mean(axis=(1, 2, 3))
    assert error.mean() < 8  # JPEG quality 90
    flat_again = again.images.reshape(60, -1).astype(int)
    flat_loaded = loaded.images.reshape(60, -1).astype(int)
    nearest = [int(np.abs(flat_loaded - row).mean(axis=1).argmin()) for row in flat_again]
    assert nearest == list(range(60))

    smaller = datasets.load_images(pack, 24)
    assert smaller.images.shape == (60, 24, 24, 3)
    np.testing.assert_array_equal(smaller.labels, loaded.labels)


def test_pack_keeps_the_selection_and_bad_files(sample_paths, tmp_path):
    root = copy_samples_as_folders(sample_paths, tmp_path / "dataset", ["bart_simpson", "lisa_simpson", "moe_szyslak"])
    (root / "moe_szyslak" / "empty.jpg").write_bytes(b"")
    loaded = datasets.select_characters(datasets.load_images(root, SIZE), characters=["lisa_simpson", "moe_szyslak"])
    pack = tmp_path / f"two{datasets.PACK_SUFFIX}"
    datasets.write_pack(loaded, pack)

    again = datasets.load_images(pack, SIZE)

    assert again.characters == ["lisa_simpson", "moe_szyslak"]
    assert again.counts() == {"lisa_simpson": 3, "moe_szyslak": 3}
    assert [Path(b.path).name for b in again.bad_files] == ["empty.jpg"]


def test_unreadable_pack_is_an_error(tmp_path):
    pack = tmp_path / f"broken{datasets.PACK_SUFFIX}"
    pack.write_bytes(os.urandom(500))
    with pytest.raises(SimpsonsError, match="not a readable image pack"):
        datasets.load_images(pack, SIZE)
    with pytest.raises(SimpsonsError, match="not a readable image pack"):
        datasets.load_images(tmp_path / f"missing{datasets.PACK_SUFFIX}", SIZE)
