"""The dataset store: one folder per character of ``pic_NNNN.jpg`` pictures, claimed with ``O_EXCL`` and written
atomically so two runs never clash; the difference hashes that keep near-duplicates out; the ``labels.csv`` log,
appended one row per write; and the ``_review/`` folders where crops wait for a human."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from PIL import Image

from simpsons.data import NEAR_DUPLICATE_DISTANCE, difference_hash, hamming_distances, open_rgb
from simpsons.errors import SimpsonsError
from simpsons.files import write_atomically

PICTURE_NAME = re.compile(r"^pic_(\d+)\.jpg$")
VALID_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
LOG_NAME = "labels.csv"
LOG_FIELDS = ["time", "video", "frame", "crop", "label", "probability", "file", "action", "source", "familiarity"]
REVIEW_DIR = "_review"
UNSURE_DIR = "_unsure"
REJECTED_DIR = "_rejected"
JPEG_QUALITY = 95


class UnreadablePicture(SimpsonsError):
    """A crop waiting for review that cannot be read as a picture; it is left where it was."""


@contextmanager
def file_errors(root: Path) -> Iterator[None]:
    """Turn a failed write in the dataset (disk full, permissions) into a one-line ``SimpsonsError``."""
    try:
        yield
    except OSError as error:
        raise SimpsonsError(f"cannot write in {root}: {error.strerror or error}") from None


def video_key(video: str | Path) -> str:
    """How a video is written in the log: its absolute path."""
    return str(Path(video).absolute())


def open_dataset(path: str | Path, create: bool) -> Path:
    """The dataset folder, created when asked; ``SimpsonsError`` when missing or impossible to create."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise SimpsonsError(f"not a folder: {root}")
    if not root.exists():
        if not create:
            raise SimpsonsError(f"dataset folder not found: {root}")
        try:
            root.mkdir(parents=True)
        except OSError as error:
            raise SimpsonsError(f"cannot create dataset folder {root}: {error.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise SimpsonsError(f"cannot write in dataset folder {root}")
    return root


def character_folders(root: Path) -> list[str]:
    """Character folder names: every sub-folder not starting with ``_`` or ``.``."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def pictures(folder: Path) -> list[Path]:
    """The ``pic_NNNN.jpg`` files of a folder, in number order."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if PICTURE_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(PICTURE_NAME.match(p.name)[1]))


def picture_counts(root: Path) -> dict[str, int]:
    """Pictures per character folder."""
    return {name: len(pictures(root / name)) for name in character_folders(root)}


def relative(root: Path, path: Path) -> str:
    """``path`` as written in the log: relative to the dataset when inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def reserve_picture(folder: Path, preferred: str | None = None) -> Path:
    """Claim ``preferred`` or the next free ``pic_NNNN.jpg`` with ``O_EXCL`` (an empty file), so two runs
    never clash and nothing is overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    if preferred and PICTURE_NAME.match(preferred) and _claim(folder / preferred):
        return folder / preferred
    existing = [int(PICTURE_NAME.match(p.name)[1]) for p in pictures(folder)]
    number = max(existing) + 1 if existing else 0
    while not _claim(folder / f"pic_{number:04d}.jpg"):
        number += 1
    return folder / f"pic_{number:04d}.jpg"


def _claim(target: Path) -> bool:
    """Create ``target`` empty unless it exists; whether this call created it."""
    try:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        return False


def jpeg_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as JPEG at ``JPEG_QUALITY``."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def save_picture(image: Image.Image, folder: Path) -> Path:
    """Write ``image`` atomically as the next free ``pic_NNNN.jpg`` in ``folder``."""
    target = reserve_picture(folder)
    try:
        write_atomically(target, jpeg_bytes(image))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def move_picture(source: Path, folder: Path, preferred: str | None = None) -> Path:
    """Move ``source`` to ``preferred`` or the next free ``pic_NNNN.jpg`` in ``folder`` (replacing the
    reserved empty file)."""
    target = reserve_picture(folder, preferred)
    try:
        os.replace(source, target)
    except OSError:
        try:
            shutil.copyfile(source, target)  # another file system
            source.unlink()
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return target


class HashIndex:
    """Difference hashes of the pictures in folders, refreshed on every look, so pictures saved or
    removed by another run count too."""

    def __init__(self) -> None:
        self.known: dict[Path, tuple[tuple[int, int], np.ndarray | None]] = {}

    def hashes(self, folder: Path) -> list[tuple[Path, np.ndarray]]:
        """``(picture, hash)`` for the readable pictures now in ``folder``."""
        found = []
        for path in pictures(folder):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            stamp = (stat.st_ino, stat.st_mtime_ns)
            if path not in self.known or self.known[path][0] != stamp:
                self.known[path] = (stamp, _hash_file(path))
            if self.known[path][1] is not None:
                found.append((path, self.known[path][1]))
        return found

    def duplicate_of(self, image_hash: np.ndarray, folders: Iterable[Path]) -> Path | None:
        """A picture in ``folders`` within ``NEAR_DUPLICATE_DISTANCE`` bits of ``image_hash``, if any."""
        for folder in folders:
            known = self.hashes(folder)
            if known:
                distances = hamming_distances(image_hash[None], np.stack([h for _, h in known]))[0]
                if distances.min() <= NEAR_DUPLICATE_DISTANCE:
                    return known[int(distances.argmin())][0]
        return None


def _hash_file(path: Path) -> np.ndarray | None:
    """The picture's difference hash; ``None`` when it cannot be read."""
    try:
        return difference_hash(open_rgb(path))
    except (OSError, ValueError, SyntaxError):
        return None  # empty (claimed by a run that is writing it) or damaged


class LabelLog:
    """``DATASET/labels.csv``: one row per action, each appended with a single write, so runs can share it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / LOG_NAME
        try:
            self.fields = _log_fields(self.path)
            self.descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except (OSError, csv.Error, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or error
            raise SimpsonsError(f"cannot use the log {self.path}: {reason}") from None

    def write(self, action: str, *, video: str | Path = "", frame: int | str = "", crop: str = "",
              label: str = "", probability: float | str = "", file: str | Path = "",
              source: str | Path = "", familiarity: float | None = None) -> None:
        """Append one row: the video as an absolute path, files relative to the dataset."""
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "video": video_key(video) if video else "",
               "frame": frame, "crop": crop, "label": label,
               "probability": f"{probability:.4f}" if isinstance(probability, float) else probability,
               "file": relative(self.root, Path(file)) if file else "", "action": action,
               "source": relative(self.root, Path(source)) if source else "",
               "familiarity": "" if familiarity is None else f"{familiarity:.4f}"}
        _append(self.descriptor, _csv_line(self.fields, row))

    def close(self) -> None:
        """Close the log's file descriptor."""
        os.close(self.descriptor)


def _csv_line(fields: list[str], row: dict) -> bytes:
    """One CSV row (``fields`` only) as UTF-8 bytes."""
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore").writerow(row)
    return buffer.getvalue().encode("utf-8")


def _append(descriptor: int, data: bytes) -> None:
    """Write all of ``data`` (one ``write`` for a log row)."""
    while data:
        data = data[os.write(descriptor, data):]


def _log_fields(path: Path) -> list[str]:
    """The log's columns: a new log appears with its header already in it (linked into place); an
    older log keeps its own columns."""
    header = _csv_line(LOG_FIELDS, dict(zip(LOG_FIELDS, LOG_FIELDS)))
    if not path.exists():
        _create_with(path, header)
    with open(path, newline="", encoding="utf-8") as handle:
        fields = next(csv.reader(handle), [])
    if not fields:
        with open(path, "ab") as handle:
            handle.write(header)
    return fields or LOG_FIELDS


def _create_with(path: Path, header: bytes) -> None:
    """Create ``path`` holding ``header`` unless it exists: linked into place, so no run ever sees it empty
    (where hard links are missing, created with ``O_EXCL`` and written at once)."""
    handle, partial = tempfile.mkstemp(prefix=".labels.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(header)
        os.chmod(partial, 0o644)
        os.link(partial, path)
    except FileExistsError:
        pass  # another run created it first
    except OSError:
        if _claim(path):
            with open(path, "ab") as out:
                out.write(header)
    finally:
        Path(partial).unlink(missing_ok=True)


def read_log(root: str | Path) -> list[dict[str, str]]:
    """The rows of ``DATASET/labels.csv`` (empty when there is none)."""
    path = Path(root) / LOG_NAME
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (csv.Error, UnicodeDecodeError) as error:
        raise SimpsonsError(f"cannot read the log {path}: {error}") from None


def seen_frames(rows: Iterable[dict[str, str]]) -> set[tuple[str, int]]:
    """``(video, frame)`` of every logged frame: a new run skips them (resuming)."""
    return {(row["video"], int(row["frame"])) for row in rows
            if row.get("video") and (row.get("frame") or "").isdigit()}


def kept_saves(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The ``saved`` rows not undone since, oldest first (what ``undo`` can still remove)."""
    live: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.get("action") in ("saved", "undo"):
            live.pop(row.get("file", ""), None)
        if row.get("action") == "saved":
            live[row.get("file", "")] = row
    return list(live.values())


def logged_picture(root: Path, text: str) -> Path | None:
    """The ``pic_NNNN.jpg`` a log row names, if it exists inside the dataset (a log is never trusted further)."""
    path = root / text
    inside = path.resolve().is_relative_to(root.resolve())
    return path if text and inside and PICTURE_NAME.match(path.name) and path.is_file() else None


def waiting_folder(name: str) -> bool:
    """Whether ``_review/<name>/`` is a folder of crops to review: a valid character name or ``_unsure``,
    never ``_rejected``, another ``_`` folder or a hidden one."""
    return bool(VALID_NAME.match(name)) or name == UNSURE_DIR


def review_folders(root: Path) -> list[Path]:
    """The folders of ``DATASET/_review/`` holding crops to review, characters first, ``_unsure`` last;
    a symlinked folder is never one (it would lead outside ``_review/``)."""
    review = root / REVIEW_DIR
    if not review.is_dir():
        return []
    folders = [p for p in review.iterdir() if waiting_folder(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(folders, key=lambda p: (p.name == UNSURE_DIR, p.name))


def review_items(root: Path) -> list[tuple[str, Path]]:
    """``(folder name, picture)`` for every crop waiting in the review folders: plain files only, so a
    crop never leads outside ``_review/``."""
    return [(folder.name, path) for folder in review_folders(root) for path in pictures(folder)
            if path.is_file() and not path.is_symlink()]


def read_crop(path: Path) -> Image.Image:
    """The crop at ``path`` as RGB; ``UnreadablePicture`` when it cannot be read as a picture."""
    try:
        return open_rgb(path)
    except (OSError, ValueError, SyntaxError):
        raise UnreadablePicture(f"not a readable picture: {path}") from None


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` when it is an empty folder (kept when another run has filled it meanwhile)."""
    with suppress(OSError):
        folder.rmdir()


def review_sources(root: Path) -> dict[str, dict[str, str]]:
    """The ``auto_*`` log row of each crop ``--auto`` saved, by its file (relative to the dataset)."""
    return {row["file"]: row for row in read_log(root) if row.get("action") in ("auto_kept", "auto_unsure")}
