"""Labelling video frames into a one-folder-per-character dataset: by hand, model-assisted, and review.

- ``simpsons label VIDEOS... --into DATASET``: for each video (shuffled), start at a random frame in the
  first minutes, jump a random 100 to 250 frames each time; show each frame (``DATASET/_preview.png``),
  ask where the character is and who it is, save that crop as ``DATASET/<character>/pic_NNNN.jpg``.
- ``--auto``: cut each frame into left, right and full crops, classify them with one model call and put
  the confident ones in ``DATASET/_review/<character>/`` for a human to check.
- ``simpsons label review DATASET``: accept, relabel or reject what ``--auto`` left in ``_review/``.

Every action is appended to ``DATASET/labels.csv``. Frames are read with PyAV.
"""

from __future__ import annotations

import csv
import io
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from simpsons.bundle import write_atomically
from simpsons.data import NEAR_DUPLICATE_DISTANCE, difference_hash, gather_files, hamming_distances, open_rgb
from simpsons.errors import SimpsonsError
from simpsons.video import crop_frame, probe

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
CROPS = ("left", "right", "full")
WHERE_ANSWERS = {"n": "no", "no": "no", "l": "left", "left": "left", "r": "right", "right": "right",
                 "f": "full", "full": "full"}
PICTURE_NAME = re.compile(r"^pic_(\d+)\.jpg$")
VALID_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
LOG_NAME = "labels.csv"
LOG_FIELDS = ["time", "video", "frame", "crop", "label", "probability", "file", "action"]
PREVIEW_NAME = "_preview.png"
REVIEW_DIR = "_review"
UNSURE_DIR = "_unsure"
LARGE_SHORT_SIDE = 900
JPEG_QUALITY = 95
DEFAULT_EVERY = (100, 250)
DEFAULT_START_WITHIN = 180.0
DEFAULT_MIN_PROB = 0.6


class Stop(Exception):
    """The user ended the session: ``stop``, end of input or Ctrl-C."""


# --------------------------------------------------------------------------- answers


def ask(prompt: str) -> str:
    """One answer from ``input()``, stripped and lower-cased; ``stop``, EOF and Ctrl-C raise ``Stop``."""
    try:
        answer = input(prompt).strip().lower()
    except (EOFError, KeyboardInterrupt):
        print()
        raise Stop from None
    if answer == "stop":
        raise Stop
    return answer


def normalise_name(text: str) -> str:
    """``Mr Burns `` -> ``mr_burns``: lower case, spaces become underscores."""
    return "_".join(text.strip().lower().split())


def matching_names(part: str, known: Iterable[str]) -> list[str]:
    """The known names that ``part`` designates: the exact name alone, else every name containing it."""
    part = normalise_name(part)
    names = sorted(set(known))
    if part in names:
        return [part]
    return [name for name in names if part and part in name]


def ask_name(known: set[str], dataset: Path) -> str | None:
    """Ask ``Name?`` until it designates one character (or ``no``); may create a new character folder."""
    while True:
        answer = normalise_name(ask("Name? "))
        if answer in ("", "n", "no"):
            return None
        matches = matching_names(answer, known)
        if len(matches) == 1:
            return matches[0]
        if matches:
            print(f"'{answer}' is ambiguous: {', '.join(matches)}")
            continue
        if not VALID_NAME.match(answer):
            print(f"'{answer}' is not a valid name: use letters, digits and underscores")
            continue
        if ask(f"create new character folder {answer}? [y/n] ") in ("y", "yes"):
            (dataset / answer).mkdir(parents=True, exist_ok=True)
            known.add(answer)
            return answer


# --------------------------------------------------------------------------- videos


def parse_every(text: str) -> tuple[int, int]:
    """``"100-250"`` -> ``(100, 250)``; a single number means a fixed step."""
    try:
        low, _, high = text.partition("-")
        bounds = (int(low), int(high or low))
    except ValueError:
        raise SimpsonsError(f"--every wants FROM-TO frames, like 100-250, not {text!r}") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise SimpsonsError(f"--every wants 1 <= FROM <= TO, not {text!r}")
    return bounds


def frame_plan(frames: int | None, fps: float, every: tuple[int, int], start_within: float,
               rng: random.Random) -> Iterator[int]:
    """Frame numbers to look at: a random start within ``start_within`` seconds, then random steps."""
    latest_start = int(start_within * fps)
    if frames is not None:
        latest_start = min(latest_start, frames - 1)
    index = rng.randint(0, max(0, latest_start))
    while frames is None or index < frames:
        yield index
        index += rng.randint(*every)


def read_frames(path: Path, indices: Iterable[int]) -> Iterator[tuple[int, Image.Image]]:
    """Decode ``path`` and yield ``(number, RGB image)`` for the wanted (increasing) frame numbers."""
    import av

    wanted = iter(indices)
    target = next(wanted, None)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for number, frame in enumerate(container.decode(stream)):
                if target is None:
                    return
                if number == target:
                    yield number, frame.to_image().convert("RGB")
                    target = next(wanted, None)
    except (av.FFmpegError, OSError) as error:
        print(f"stopped reading {path} at a damaged part ({type(error).__name__})")


def shrink_large(image: Image.Image) -> Image.Image:
    """Halve frames whose short side is over 900 pixels (as the original tool did)."""
    if min(image.size) > LARGE_SHORT_SIDE:
        return image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    return image


# --------------------------------------------------------------------------- dataset folders


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


def print_counts(title: str, counts: dict[str, int]) -> None:
    width = max([len(name) for name in counts] + [9])
    print(title)
    for name, count in counts.items():
        print(f"  {name:<{width}}  {count:>5}")


def reserve_picture(folder: Path) -> Path:
    """Claim the next free ``pic_NNNN.jpg`` with ``O_EXCL`` (an empty file), so two runs never clash."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = [int(PICTURE_NAME.match(p.name)[1]) for p in pictures(folder)]
    number = max(existing) + 1 if existing else 0
    while True:
        target = folder / f"pic_{number:04d}.jpg"
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return target
        except FileExistsError:
            number += 1


def jpeg_bytes(image: Image.Image) -> bytes:
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


def move_picture(source: Path, folder: Path) -> Path:
    """Move ``source`` to the next free ``pic_NNNN.jpg`` in ``folder`` (replacing the reserved empty file)."""
    target = reserve_picture(folder)
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


def write_preview(image: Image.Image, root: Path) -> Path:
    """Write the frame to look at as ``DATASET/_preview.png``, atomically."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    target = root / PREVIEW_NAME
    write_atomically(target, buffer.getvalue())
    return target


class HashIndex:
    """Difference hashes of the pictures in each folder, read on first use, to find near-duplicates."""

    def __init__(self) -> None:
        self.folders: dict[Path, dict[Path, np.ndarray]] = {}

    def _of(self, folder: Path) -> dict[Path, np.ndarray]:
        if folder not in self.folders:
            hashes = {}
            for path in pictures(folder):
                try:
                    hashes[path] = difference_hash(open_rgb(path))
                except (OSError, ValueError, SyntaxError):
                    continue  # empty (being written by another run) or damaged
            self.folders[folder] = hashes
        return self.folders[folder]

    def duplicate_of(self, image_hash: np.ndarray, folders: Iterable[Path]) -> Path | None:
        """A picture in ``folders`` within ``NEAR_DUPLICATE_DISTANCE`` bits of ``image_hash``, if any."""
        for folder in folders:
            known = self._of(folder)
            if known:
                paths = list(known)
                distances = hamming_distances(image_hash[None], np.stack([known[p] for p in paths]))[0]
                if distances.min() <= NEAR_DUPLICATE_DISTANCE:
                    return paths[int(distances.argmin())]
        return None

    def add(self, path: Path, image_hash: np.ndarray) -> None:
        self._of(path.parent)[path] = image_hash

    def remove(self, path: Path) -> None:
        self.folders.get(path.parent, {}).pop(path, None)


# --------------------------------------------------------------------------- the log


class LabelLog:
    """``DATASET/labels.csv``: one row per action, header written once, flushed after every row."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOG_NAME
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self.handle = open(self.path, "a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.handle, fieldnames=LOG_FIELDS)
        if fresh:
            self.writer.writeheader()
            self.handle.flush()

    def write(self, action: str, *, video: str | Path = "", frame: int | str = "", crop: str = "",
              label: str = "", probability: float | str = "", file: str | Path = "") -> None:
        """Append one row and flush it."""
        self.writer.writerow({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "video": str(video), "frame": frame, "crop": crop,
            "label": label, "probability": f"{probability:.4f}" if isinstance(probability, float) else probability,
            "file": str(file), "action": action,
        })
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def read_log(root: Path) -> list[dict[str, str]]:
    """The rows of ``DATASET/labels.csv`` (empty when there is none)."""
    path = Path(root) / LOG_NAME
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- labelling by hand


@dataclass
class Saved:
    """One picture saved in this session (for ``undo``)."""

    path: Path
    video: Path
    frame: int
    crop: str
    label: str


@dataclass
class Session:
    """What a labelling session keeps between frames."""

    root: Path
    log: LabelLog
    known: set[str]
    hashes: HashIndex = field(default_factory=HashIndex)
    saved: list[Saved] = field(default_factory=list)
    duplicates: int = 0


def undo(session: Session) -> None:
    """Remove the last picture saved in this session and log it."""
    if not session.saved:
        print("nothing to undo")
        return
    last = session.saved.pop()
    last.path.unlink(missing_ok=True)
    session.hashes.remove(last.path)
    session.log.write("undo", video=last.video, frame=last.frame, crop=last.crop, label=last.label, file=last.path)
    print(f"removed {last.path} ({last.label}: {len(pictures(last.path.parent))})")


def ask_where() -> str:
    """Ask where the character is until the answer is no/left/right/full or ``undo``."""
    while True:
        answer = ask("Where is the character? [no/left/right/full] ")
        if answer == "undo" or answer in WHERE_ANSWERS:
            return WHERE_ANSWERS.get(answer, answer)
        print("answer no, left, right or full (n/l/r/f), undo or stop")


def label_frame(session: Session, video: Path, number: int, frame: Image.Image) -> None:
    """Show one frame, ask where and who, and save the crop unless it is a near-duplicate."""
    preview = write_preview(frame, session.root)
    print(f"{video.name} frame {number}: {preview}")
    where = ask_where()
    while where == "undo":
        undo(session)
        where = ask_where()
    if where == "no":
        session.log.write("no_character", video=video, frame=number)
        return
    name = ask_name(session.known, session.root)
    if name is None:
        session.log.write("no_name", video=video, frame=number, crop=where)
        return
    picture = crop_frame(frame, [where])[0]
    image_hash = difference_hash(picture)
    folder = session.root / name
    duplicate = session.hashes.duplicate_of(image_hash, [folder])
    if duplicate is not None:
        session.duplicates += 1
        session.log.write("skipped_duplicate", video=video, frame=number, crop=where, label=name, file=duplicate)
        print(f"skipped: a near-duplicate of {duplicate}")
        return
    path = save_picture(picture, folder)
    session.hashes.add(path, image_hash)
    session.saved.append(Saved(path, video, number, where, name))
    session.log.write("saved", video=video, frame=number, crop=where, label=name, file=path)
    print(f"saved {path} ({name}: {len(pictures(folder))})")


def planned_frames(videos: list[Path], every: tuple[int, int], start_within: float,
                   rng: random.Random) -> Iterator[tuple[Path, int, Image.Image]]:
    """``(video, number, frame)`` for every video in turn, following each one's random plan."""
    for video in videos:
        info = probe(video)
        frames, fps = info.frames or None, info.fps or 25.0
        for number, frame in read_frames(video, frame_plan(frames, fps, every, start_within, rng)):
            yield video, number, shrink_large(frame)


def prepare_videos(paths: Iterable[str | Path], rng: random.Random) -> list[Path]:
    """Find the videos, check each one opens, and shuffle them."""
    videos = gather_files(list(paths), VIDEO_SUFFIXES, kind="video file")
    for video in videos:
        probe(video)
    rng.shuffle(videos)
    return videos


def bundle_characters(model: str | Path | None) -> list[str]:
    """The characters of the bundle at ``model`` (none without one); ``SimpsonsError`` if it is not a bundle."""
    if model is None:
        return []
    from simpsons.bundle import read_description

    return list(read_description(model).get("characters", []))


def label_videos(paths: Iterable[str | Path], dataset: str | Path, *, every: tuple[int, int] = DEFAULT_EVERY,
                 seed: int | None = None, start_within: float = DEFAULT_START_WITHIN,
                 model: str | Path | None = None) -> Session:
    """Label frames by hand until the videos end or the user stops; returns the session."""
    rng = random.Random(seed)
    videos = prepare_videos(paths, rng)
    extra = bundle_characters(model)
    root = open_dataset(dataset, create=True)
    session = Session(root, LabelLog(root), set(character_folders(root)) | set(extra))
    try:
        for video, number, frame in planned_frames(videos, every, start_within, rng):
            label_frame(session, video, number, frame)
        print("no more frames")
    except Stop:
        print("stopped")
    finally:
        session.log.close()
    counts = Counter(saved.label for saved in session.saved)
    print(f"saved {len(session.saved)} picture(s) this session"
          + "".join(f"; {name} {count}" for name, count in sorted(counts.items()))
          + f"; {session.duplicates} near-duplicate(s) skipped")
    return session


# --------------------------------------------------------------------------- model-assisted labelling


@dataclass
class AutoReport:
    """What ``--auto`` did."""

    frames: int = 0
    kept: Counter = field(default_factory=Counter)
    unsure: int = 0
    dropped: int = 0
    duplicates: int = 0

    def text(self) -> str:
        lines = [f"frames analysed: {self.frames}", f"crops kept for review: {sum(self.kept.values())}"]
        lines += [f"  {name}: {count}" for name, count in sorted(self.kept.items())]
        lines += [f"unsure crops kept: {self.unsure}", f"crops dropped: {self.dropped}",
                  f"near-duplicates skipped: {self.duplicates}"]
        return "\n".join(lines)


def auto_frame(predictor, session: Session, report: AutoReport, video: Path, number: int, frame: Image.Image,
               min_prob: float, keep_unsure: bool) -> None:
    """Classify the three crops of one frame in one call and file each by its probability."""
    crops = crop_frame(frame, CROPS)
    probabilities = predictor.probabilities(np.stack([predictor.prepare(c) for c in crops]))
    report.frames += 1
    review = session.root / REVIEW_DIR
    for where, picture, prediction in zip(CROPS, crops, predictor.decide(probabilities, top_k=1)):
        name, probability = prediction.best_guess, prediction.probability
        common = {"video": video, "frame": number, "crop": where, "label": name, "probability": probability}
        if probability >= min_prob:
            folders = [review / name, session.root / name]
        elif keep_unsure:
            folders = [review / UNSURE_DIR]
        else:
            report.dropped += 1
            session.log.write("auto_dropped", **common)
            continue
        image_hash = difference_hash(picture)
        duplicate = session.hashes.duplicate_of(image_hash, folders)
        if duplicate is not None:
            report.duplicates += 1
            session.log.write("skipped_duplicate", file=duplicate, **common)
            continue
        path = save_picture(picture, folders[0])
        session.hashes.add(path, image_hash)
        if probability >= min_prob:
            report.kept[name] += 1
            session.log.write("auto_kept", file=path, **common)
        else:
            report.unsure += 1
            session.log.write("auto_unsure", file=path, **common)


def auto_label(paths: Iterable[str | Path], dataset: str | Path, *, every: tuple[int, int] = DEFAULT_EVERY,
               seed: int | None = None, start_within: float = DEFAULT_START_WITHIN, model: str | Path | None = None,
               min_prob: float = DEFAULT_MIN_PROB, keep_unsure: bool = False) -> AutoReport:
    """Model-assisted labelling: confident crops go to ``DATASET/_review/<character>/``."""
    from simpsons.prediction import Predictor

    if not 0.0 <= min_prob <= 1.0:
        raise SimpsonsError(f"--min-prob must be between 0 and 1, not {min_prob}")
    rng = random.Random(seed)
    videos = prepare_videos(paths, rng)
    if model is not None:
        bundle_characters(model)  # a clear error before loading the network
    predictor = Predictor.load(model)
    root = open_dataset(dataset, create=True)
    session = Session(root, LabelLog(root), set(character_folders(root)))
    report = AutoReport()
    try:
        for video, number, frame in planned_frames(videos, every, start_within, rng):
            auto_frame(predictor, session, report, video, number, frame, min_prob, keep_unsure)
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        session.log.close()
    print(report.text())
    return report


# --------------------------------------------------------------------------- review


def review_items(root: Path) -> list[tuple[str, Path]]:
    """``(folder name, picture)`` for every picture waiting in ``DATASET/_review/``."""
    review = root / REVIEW_DIR
    if not review.is_dir():
        return []
    folders = sorted((p for p in review.iterdir() if p.is_dir()), key=lambda p: (p.name == UNSURE_DIR, p.name))
    return [(folder.name, path) for folder in folders for path in pictures(folder)]


def ask_review(suggested: str) -> str:
    """Ask accept / relabel / reject until the answer is one of them."""
    choices = "[a]ccept / [r]elabel / reject [x] / stop" if suggested != UNSURE_DIR else "[r]elabel / reject [x] / stop"
    while True:
        answer = ask(f"{suggested}? {choices} ")
        if answer in ("r", "relabel", "x", "reject") or (answer in ("a", "accept") and suggested != UNSURE_DIR):
            return answer[0]
        print(f"answer {choices}")


def review_one(session: Session, sources: dict[str, dict[str, str]], suggested: str, path: Path) -> None:
    """Show one waiting crop and accept, relabel or reject it."""
    preview = write_preview(open_rgb(path), session.root)
    source = sources.get(str(path), {})
    guess = f"; model: {source['label']} {source['probability']}" if source.get("probability") else ""
    print(f"{path} (suggested: {suggested}{guess}): {preview}")
    answer = ask_review(suggested)
    common = {"video": source.get("video", ""), "frame": source.get("frame", ""), "crop": source.get("crop", "")}
    if answer == "x":
        path.unlink()
        session.log.write("review_rejected", label="" if suggested == UNSURE_DIR else suggested, file=path, **common)
        print(f"rejected {path}")
        return
    name = suggested if answer == "a" else ask_name(session.known, session.root)
    if name is None:
        print("kept for later")
        return
    target = move_picture(path, session.root / name)
    session.log.write("review_accepted" if answer == "a" else "review_relabelled", label=name, file=target, **common)
    print(f"moved to {target} ({name}: {len(pictures(target.parent))})")


def review(dataset: str | Path) -> dict[str, int]:
    """Walk ``DATASET/_review/`` asking about each crop; returns the counts afterwards."""
    root = open_dataset(dataset, create=False)
    items = review_items(root)
    before = picture_counts(root)
    print_counts("pictures per character before review:", before)
    print(f"{len(items)} crop(s) to review")
    sources = {row["file"]: row for row in read_log(root) if row.get("action") in ("auto_kept", "auto_unsure")}
    session = Session(root, LabelLog(root), set(character_folders(root)) | {n for n, _ in items if n != UNSURE_DIR})
    try:
        for suggested, path in items:
            if path.exists():
                review_one(session, sources, suggested, path)
    except Stop:
        print("stopped")
    finally:
        session.log.close()
    for folder in (root / REVIEW_DIR).glob("*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    after = picture_counts(root)
    print_counts("pictures per character after review:", after)
    return after
