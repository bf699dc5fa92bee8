"""Datasets: reading images, the two Kaggle layouts, the disk cache and the shot-aware split.

Two layouts are understood:
- one folder per character (``simpsons_dataset/homer_simpson/pic_0001.jpg``);
- flat, the label in the file name (``kaggle_simpson_testset/homer_simpson_12.jpg``).

Every image becomes an RGB ``uint8`` array squashed to ``size x size`` pixels, as in the
article; scaling to [0, 1] happens inside the model so that a bundle is self-contained.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from simpsons.errors import ParameterError, SimpsonsError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
FLAT_NAME = re.compile(r"^(?P<character>.+?)_(?P<number>\d+)$")
HASH_BITS = 256
NEAR_DUPLICATE_DISTANCE = 64
DEFAULT_MIN_IMAGES = 120
CACHE_VERSION = 2  # 2: paths stored absolute, given back as the caller named them
PACK_SUFFIX = ".pack.npz"
NO_CHARACTER = "no_character"  # the class of frames showing none of the characters (train --background)


@dataclass
class BadFile:
    """A file that was skipped, and why."""

    path: str
    reason: str


@dataclass
class LabelledImages:
    """Decoded images with their labels; ``labels[i]`` indexes ``characters``."""

    images: np.ndarray
    labels: np.ndarray
    characters: list[str]
    paths: list[str]
    hashes: np.ndarray
    bad_files: list[BadFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Images per character, in the order of ``characters``."""
        counted = np.bincount(self.labels, minlength=len(self.characters))
        return dict(zip(self.characters, counted.tolist()))

    def subset(self, indices: np.ndarray) -> LabelledImages:
        """The images at ``indices``, with the same characters."""
        return LabelledImages(
            images=self.images[indices],
            labels=self.labels[indices],
            characters=self.characters,
            paths=[self.paths[i] for i in indices],
            hashes=self.hashes[indices],
            bad_files=self.bad_files,
        )


# --------------------------------------------------------------------------- images


def open_rgb(path: str | Path) -> Image.Image:
    """Open any image Pillow reads as RGB: palette, alpha, 16-bit, greyscale and CMYK included.

    Transparent areas become white; EXIF orientation is applied. Raises ``OSError`` or
    ``ValueError`` for files that are not readable images.
    """
    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a Pillow image of any mode to RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max() > 255 else 255.0 if values.max() > 1 else 1.0
        image = Image.fromarray(np.clip(values * 255.0 / peak, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Squash an RGB image to ``size x size`` (the article's resize) as a uint8 array."""
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def difference_hash(image: Image.Image) -> np.ndarray:
    """The 256-bit difference hash used to find near-duplicate frames, packed in 32 bytes."""
    import imagehash  # imported here: only decoding from image files needs it

    bits = imagehash.dhash(image, hash_size=16).hash.reshape(-1)
    return np.packbits(bits)


def read_image(path: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode one file into its resized pixels and its perceptual hash."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = open_rgb(path)
    return resize_square(image, size), difference_hash(image)


# --------------------------------------------------------------------------- layouts


def _visible(entries: list[Path]) -> list[Path]:
    return sorted(e for e in entries if not e.name.startswith("."))


def list_images(root: str | Path) -> tuple[list[tuple[str, str]], list[BadFile]]:
    """Find ``(path, character)`` pairs in either layout, and entries that cannot be images.

    Raises ``SimpsonsError`` when the folder does not exist or holds nothing.
    """
    root = Path(root)
    if not root.exists():
        raise SimpsonsError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise SimpsonsError(f"not a folder: {root}")
    entries = _visible(list(root.iterdir()))
    # folders starting with "_" belong to the tools (the labeller's _review), not to characters
    entries = [e for e in entries if not (e.is_dir() and e.name.startswith("_"))]
    folders = [e for e in entries if e.is_dir() and e.suffix.lower() not in IMAGE_SUFFIXES]
    found: list[tuple[str, str]] = []
    bad: list[BadFile] = []
    if folders:
        for folder in folders:
            for entry in _visible(list(folder.iterdir())):
                if entry.is_dir():
                    bad.append(BadFile(str(entry), "is a folder"))
                else:
                    found.append((str(entry), folder.name))
    else:
        for entry in entries:
            match = FLAT_NAME.match(entry.stem)
            if entry.is_dir():
                bad.append(BadFile(str(entry), "is a folder"))
            elif match is None:
                bad.append(BadFile(str(entry), "name is not <character>_<n>.<ext>"))
            else:
                found.append((str(entry), match["character"]))
    if not found and not bad:
        raise SimpsonsError(f"no images in {root}: expected one folder per character or <character>_<n>.jpg files")
    return found, bad


def gather_files(paths: list[str | Path], suffixes: set[str] | None = None, kind: str = "file") -> list[Path]:
    """Files given directly, and the visible files (with one of ``suffixes``) under given folders.

    A missing path, or a folder with no such file, raises ``SimpsonsError`` naming the ``kind``.
    """
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and (suffixes is None or p.suffix.lower() in suffixes))
            if not found:
                raise SimpsonsError(f"no {kind}s in {given}")
            files += found
        elif given.is_file():
            files.append(given)
        else:
            raise SimpsonsError(f"no such {kind} or folder: {given}")
    return files


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Where decoded arrays are kept: ``$SIMPSONS_CACHE_DIR`` or ``~/.cache/simpsons``."""
    return Path(os.environ.get("SIMPSONS_CACHE_DIR", Path.home() / ".cache" / "simpsons"))


def cache_key(files: list[tuple[str, str]], size: int) -> str:
    """A fingerprint of the file list, each file's size and mtime, and the image size."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{size}".encode())
    for path, character in files:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}|{character}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _write_npz_atomically(target: Path, **arrays: np.ndarray) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(partial, target)


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as cached:
            return {name: cached[name] for name in cached.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None


# --------------------------------------------------------------------------- loading


def _decode_all(files: list[tuple[str, str]], size: int, workers: int) -> tuple[list, list[BadFile]]:
    paths = [path for path, _ in files]
    decoded: list = [None] * len(paths)
    bad: list[BadFile] = []
    chunk = max(1, min(64, len(paths) // (workers * 8) or 1))
    progress = tqdm(total=len(paths), desc="decoding images", unit="img", disable=True if len(paths) < 200 else None)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for index, result in enumerate(pool.map(_safe_read, paths, [size] * len(paths), chunksize=chunk)):
            if isinstance(result, str):
                bad.append(BadFile(paths[index], result))
            else:
                decoded[index] = result
            progress.update()
    progress.close()
    return decoded, bad


def _safe_read(path: str, size: int) -> tuple[np.ndarray, np.ndarray] | str:
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        return read_image(path, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"unreadable image ({type(error).__name__}: {str(error)[:80]})"


def load_images(root: str | Path, size: int, *, use_cache: bool = True, workers: int | None = None) -> LabelledImages:
    """Decode every image under ``root`` (either layout, or a pack file), through the disk cache.

    Characters are sorted by name; unreadable files are listed in ``bad_files``.
    """
    if str(root).endswith(PACK_SUFFIX):
        return _labelled(read_pack(root, size), [])
    files, bad_entries = list_images(root)
    return _load_files(files, bad_entries, size, use_cache, workers)


def load_background(folder: str | Path, size: int, *, use_cache: bool = True) -> LabelledImages:
    """Every picture under ``folder`` (any names, any depth) as the one class ``NO_CHARACTER``."""
    files = [(str(path), NO_CHARACTER) for path in gather_files([folder], IMAGE_SUFFIXES, kind="picture")]
    return _load_files(files, [], size, use_cache, None)


def with_background(data: LabelledImages, background: LabelledImages) -> LabelledImages:
    """``data`` and the background pictures together, ``NO_CHARACTER`` sorted in among the characters."""
    characters = sorted(set(data.characters) | {NO_CHARACTER})
    index = {name: i for i, name in enumerate(characters)}
    relabelled = [np.array([index[parts.characters[label]] for label in parts.labels], dtype=np.int64)
                  for parts in (data, background)]
    return LabelledImages(
        images=np.concatenate([data.images, background.images]),
        labels=np.concatenate(relabelled),
        characters=characters,
        paths=data.paths + background.paths,
        hashes=np.concatenate([data.hashes, background.hashes]),
        bad_files=data.bad_files + background.bad_files,
    )


def _load_files(files: list[tuple[str, str]], bad_entries: list[BadFile], size: int, use_cache: bool,
                workers: int | None) -> LabelledImages:
    """Decode ``(path, character)`` pairs through the disk cache."""
    key = cache_key(files, size)
    cache_file = cache_dir() / f"images-{key}.npz"
    cached = _read_cache(cache_file) if use_cache else None
    if cached is None:
        decoded, bad_images = _decode_all(files, size, workers or min(4, os.cpu_count() or 1))
        good = [i for i, item in enumerate(decoded) if item is not None]
        cached = {
            "images": np.stack([decoded[i][0] for i in good]) if good else np.zeros((0, size, size, 3), np.uint8),
            "hashes": np.stack([decoded[i][1] for i in good]) if good else np.zeros((0, HASH_BITS // 8), np.uint8),
            "paths": np.array([os.path.abspath(files[i][0]) for i in good], dtype=str),
            "names": np.array([files[i][1] for i in good], dtype=str),
            "bad": np.array(json.dumps([{**b.__dict__, "path": os.path.abspath(b.path)} for b in bad_images])),
        }
        if use_cache:
            _write_npz_atomically(cache_file, **cached)
    return _labelled(_as_named(cached, files), bad_entries)


def _as_named(cached: dict[str, np.ndarray], files: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """The cache's arrays with each path as ``files`` names it now (the cache holds absolute paths, so that
    a cache written from another working directory still names files that open from this one)."""
    named = {os.path.abspath(path): path for path, _ in files}
    bad = [{**item, "path": named.get(item["path"], item["path"])} for item in json.loads(str(cached["bad"]))]
    return {**cached, "paths": np.array([named.get(str(path), str(path)) for path in cached["paths"]], dtype=str),
            "bad": np.array(json.dumps(bad))}


def _labelled(arrays: dict[str, np.ndarray], bad_entries: list[BadFile]) -> LabelledImages:
    bad = bad_entries + [BadFile(**item) for item in json.loads(str(arrays["bad"]))]
    names = [str(n) for n in arrays["names"]]
    characters = sorted(set(names))
    index = {name: i for i, name in enumerate(characters)}
    return LabelledImages(
        images=arrays["images"],
        labels=np.array([index[n] for n in names], dtype=np.int64),
        characters=characters,
        paths=[str(p) for p in arrays["paths"]],
        hashes=arrays["hashes"],
        bad_files=bad,
    )


def fingerprint(data: LabelledImages) -> str:
    """A short digest of the images' hashes, labels and character names."""
    digest = hashlib.sha256(json.dumps(data.characters).encode())
    digest.update(np.ascontiguousarray(data.hashes).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- packs



def write_pack(data: LabelledImages, target: str | Path, quality: int = 90) -> None:
    """Store decoded images as JPEG bytes in one ``.pack.npz``: a compact copy to train elsewhere."""
    encoded = []
    for pixels in tqdm(data.images, desc="packing", unit="img", disable=True if len(data) < 200 else None):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    _write_npz_atomically(
        Path(target),
        jpeg=np.concatenate(encoded) if encoded else np.zeros(0, np.uint8),
        offsets=np.cumsum([0] + [len(e) for e in encoded]),
        hashes=data.hashes,
        paths=np.array(data.paths, dtype=str),
        names=np.array([data.characters[i] for i in data.labels], dtype=str),
        bad=np.array(json.dumps([b.__dict__ for b in data.bad_files])),
    )


def read_pack(path: str | Path, size: int) -> dict[str, np.ndarray]:
    """Decode a pack written by ``write_pack``, resized to ``size``."""
    arrays = _read_cache(Path(path))
    if arrays is None or "jpeg" not in arrays:
        raise SimpsonsError(f"not a readable image pack: {path}")
    jpeg, offsets = arrays.pop("jpeg"), arrays.pop("offsets")
    images = np.zeros((len(offsets) - 1, size, size, 3), np.uint8)
    for i in range(len(images)):
        with Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())) as image:
            images[i] = resize_square(image.convert("RGB"), size)
    arrays["images"] = images
    return arrays


def select_characters(
    data: LabelledImages, *, min_images: int = DEFAULT_MIN_IMAGES, characters: list[str] | None = None
) -> LabelledImages:
    """Keep the named characters, or those with at least ``min_images`` images.

    The default of 120 keeps the 20 characters of the Kaggle test set and drops the
    fragmentary ones. Raises ``SimpsonsError`` when nothing is left.
    """
    counts = data.counts()
    if characters:
        unknown = [c for c in characters if c not in counts]
        if unknown:
            raise SimpsonsError(f"unknown character(s): {', '.join(unknown)}; the dataset has {', '.join(counts)}")
        kept = sorted(characters)
    else:
        kept = [c for c, n in counts.items() if n >= min_images]
    if not kept:
        most = max(counts.values(), default=0)
        raise ParameterError("min_images",
                             f"no character has at least {min_images} images (the most is {most}); lower {{name}}")
    return relabel(data, kept)


def relabel(data: LabelledImages, characters: list[str]) -> LabelledImages:
    """Keep only images of ``characters`` and number labels in that order."""
    old_to_new = {data.characters.index(c): i for i, c in enumerate(characters) if c in data.characters}
    keep = np.array([i for i, label in enumerate(data.labels) if int(label) in old_to_new], dtype=np.int64)
    subset = data.subset(keep)
    subset.labels = np.array([old_to_new[int(label)] for label in subset.labels], dtype=np.int64)
    subset.characters = list(characters)
    return subset


def answer_in_batches(prepared: Iterable[tuple[Path, Any]], batch_size: int,
                      answer: Callable[[list[Any]], list[Any]]) -> tuple[list[Path], list[Any], list[BadFile]]:
    """Answer prepared files ``batch_size`` at a time: ``prepared`` yields ``(path, item)``, or ``(path, reason)``
    (a string) for a file that could not be read; returns the readable paths, one answer each, and the skipped."""
    readable, batch, answers, bad = [], [], [], []
    for path, item in prepared:
        if isinstance(item, str):
            bad.append(BadFile(str(path), item))
            continue
        readable.append(path)
        batch.append(item)
        if len(batch) == batch_size:
            answers += answer(batch)
            batch = []
    if batch:
        answers += answer(batch)
    return readable, answers, bad


def describe_bad_files(bad: list[BadFile], limit: int = 10) -> str:
    """One report of the skipped files: their count and their paths."""
    if not bad:
        return ""
    reasons = Counter(b.reason.split(" (")[0] for b in bad)
    lines = [f"skipped {len(bad)} unreadable file(s): " + ", ".join(f"{n} {r}" for r, n in reasons.items())]
    lines += [f"  {b.path}: {b.reason}" for b in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------- near duplicates and split


def near_duplicate_groups(hashes: np.ndarray, max_distance: int = NEAR_DUPLICATE_DISTANCE) -> np.ndarray:
    """Group frames whose difference hashes are within ``max_distance`` bits (transitively).

    Returns one group id per image. Pairs are found with a matrix product of +-1 bit vectors.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count = len(hashes)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    signs = _signs(hashes)
    min_agreement = HASH_BITS - 2 * max_distance
    rows, cols = [], []
    for start in range(0, count, 2048):
        agreement = signs[start : start + 2048] @ signs.T
        r, c = np.nonzero(agreement >= min_agreement)
        rows.append(r + start)
        cols.append(c)
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows_all), dtype=np.int8), (rows_all, cols_all)), shape=(count, count))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _signs(hashes: np.ndarray) -> np.ndarray:
    """Packed hashes as +-1 vectors: the dot product of two is HASH_BITS - 2 * their distance."""
    return np.unpackbits(hashes, axis=1).astype(np.float32) * 2 - 1


def hamming_distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two sets of packed hashes."""
    return ((HASH_BITS - _signs(first) @ _signs(second).T) / 2).round().astype(np.int64)


def shot_aware_split(
    data: LabelledImages, *, validation_fraction: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices: stratified by character, near-duplicate groups kept whole."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < validation_fraction < 0.5:
        raise SimpsonsError("the validation fraction must be between 0 and 0.5")
    groups = near_duplicate_groups(data.hashes)
    folds = StratifiedGroupKFold(n_splits=max(2, round(1 / validation_fraction)), shuffle=True, random_state=seed)
    try:
        train, validation = next(folds.split(np.zeros(len(data)), data.labels, groups))
    except ValueError as error:
        raise SimpsonsError(f"too few images for a shot-aware validation split of {validation_fraction:.0%} "
                            f"({len(data)} images, {len(set(groups.tolist()))} shots): {error}") from None
    return np.sort(train), np.sort(validation)
