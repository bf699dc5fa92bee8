"""Labelling video frames into a one-folder-per-character dataset: by hand, model-assisted, and review.

- ``simpsons label VIDEOS... --into DATASET``: for each video (shuffled), seek to a random frame in the
  first minutes, then jump a random 100 to 250 frames each time; show each frame, ask where the character
  is and who it is, save that crop as ``DATASET/<character>/pic_NNNN.jpg``.
- ``--auto``: cut each frame into left, right and full crops, classify them with one model call and put
  the confident ones in ``DATASET/_review/<character>/`` for a human to check.
- ``simpsons label review DATASET``: accept, relabel or reject what ``--auto`` left in ``_review/``.

Every action is appended to ``DATASET/labels.csv`` (files relative to the dataset); frames already
there are skipped, so a second run resumes. Pictures are claimed with ``O_EXCL`` and written atomically,
so two runs into one dataset never clash. Frames are read with PyAV.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Container, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from simpsons.bundle import write_atomically
from simpsons.data import NEAR_DUPLICATE_DISTANCE, difference_hash, gather_files, hamming_distances, open_rgb
from simpsons.errors import SimpsonsError
from simpsons.video import VIDEO_SUFFIXES, crop_frame, probe

CROPS = ("left", "right", "full")
WHERE_ANSWERS = {"n": "no", "no": "no", "l": "left", "left": "left", "r": "right", "right": "right",
                 "f": "full", "full": "full", "u": "undo", "undo": "undo"}
PICTURE_NAME = re.compile(r"^pic_(\d+)\.jpg$")
VALID_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
LOG_NAME = "labels.csv"
LOG_FIELDS = ["time", "video", "frame", "crop", "label", "probability", "file", "action", "source", "familiarity"]
REVIEW_DIR = "_review"
UNSURE_DIR = "_unsure"
REJECTED_DIR = "_rejected"
LARGE_SHORT_SIDE = 900
JPEG_QUALITY = 95
DEFAULT_EVERY = (100, 250)
DEFAULT_START_WITHIN = 180.0
DEFAULT_MIN_PROB = 0.6
SEEK_AFTER_SECONDS = 2.0
TERMINAL_COLUMNS = 48
WINDOW_WIDTH = 480


class Stop(Exception):
    """The user ended the session: ``stop``, end of input or Ctrl-C."""


class UnreadablePicture(SimpsonsError):
    """A crop waiting for review that cannot be read as a picture; it is left where it was."""


@contextmanager
def file_errors(root: Path) -> Iterator[None]:
    """Turn a failed write in the dataset (disk full, permissions) into a one-line ``SimpsonsError``."""
    try:
        yield
    except OSError as error:
        raise SimpsonsError(f"cannot write in {root}: {error.strerror or error}") from None


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


# --------------------------------------------------------------------------- preview


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def display_available(env: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Whether a window can be opened: macOS and Windows always, elsewhere an X11 or Wayland display."""
    return platform in ("darwin", "win32") or bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def terminal_graphics(env: Mapping[str, str]) -> str | None:
    """How this terminal can show a picture: ``kitty``, ``iterm``, ``truecolor`` (half blocks) or ``None``."""
    if "kitty" in env.get("TERM", "") or env.get("KITTY_WINDOW_ID"):
        return "kitty"
    if env.get("TERM_PROGRAM") in ("iTerm.app", "WezTerm"):
        return "iterm"
    if env.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return "truecolor"
    return None


def terminal_image(image: Image.Image, kind: str, columns: int = TERMINAL_COLUMNS) -> str:
    """``image`` as escape codes for a terminal of ``kind``, ``columns`` characters wide."""
    image = image.convert("RGB")
    if kind == "truecolor":
        return half_blocks(image, columns)
    small = image.copy()
    small.thumbnail((columns * 10, columns * 10))
    raw = png_bytes(small)
    data = base64.b64encode(raw).decode("ascii")
    if kind == "iterm":
        return f"\x1b]1337;File=inline=1;size={len(raw)};width={columns};preserveAspectRatio=1:{data}\x07"
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    first = f"a=T,f=100,c={columns},"
    return "".join(f"\x1b_G{first if i == 0 else ''}m={int(i < len(chunks) - 1)};{chunk}\x1b\\"
                   for i, chunk in enumerate(chunks))


def half_blocks(image: Image.Image, columns: int) -> str:
    """24-bit colour upper-half blocks: each character shows two pixels, one above the other."""
    rows = max(1, round(columns * image.height / image.width / 2))
    pixels = np.asarray(image.resize((columns, 2 * rows), Image.Resampling.BILINEAR))
    lines = ["".join(f"\x1b[38;2;{a[0]};{a[1]};{a[2]};48;2;{b[0]};{b[1]};{b[2]}m\u2580" for a, b in zip(top, bottom))
             + "\x1b[0m" for top, bottom in zip(pixels[0::2], pixels[1::2])]
    return "\n".join(lines)


# A separate Python shows the window: Tk wants the main thread (macOS) and, started in another thread,
# its input hook would block the prompt. It reads "PNG path<TAB>title" lines and ends at end of input;
# small pictures are zoomed to about the width given as its argument.
VIEWER = r"""
import queue, sys, threading, tkinter
root = tkinter.Tk()
label = tkinter.Label(root)
label.pack()
lines = queue.Queue()
threading.Thread(target=lambda: [lines.put(line) for line in sys.stdin] + [lines.put(None)], daemon=True).start()
print("ready", flush=True)
def poll():
    try:
        while True:
            line = lines.get_nowait()
            if line is None:
                return root.destroy()
            path, _, title = line.rstrip("\n").partition("\t")
            photo = tkinter.PhotoImage(file=path)
            photo = photo.zoom(max(1, int(sys.argv[1]) // photo.width()))
            label.configure(image=photo)
            label.image = photo
            root.title(title)
    except (queue.Empty, tkinter.TclError):
        root.after(50, poll)
poll()
root.mainloop()
"""


class Window:
    """A preview window run by a child Python (see ``VIEWER``); ``open`` gives ``None`` where it cannot start."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    @classmethod
    def open(cls, env: Mapping[str, str], script: str = VIEWER, wait: float = 10.0) -> Window | None:
        """Start the viewer and wait for it to say ``ready`` (no Tk, no display: ``None``)."""
        try:
            process = subprocess.Popen([sys.executable, "-c", script, str(WINDOW_WIDTH)], env={**os.environ, **env},
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       text=True)
        except OSError:
            return None
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(wait)
        if answer == ["ready\n"]:
            return cls(process)
        process.kill()
        process.wait()
        return None

    def show(self, path: Path, title: str) -> bool:
        """Ask the window to show the PNG at ``path``; ``False`` once the window is gone."""
        try:
            self.process.stdin.write(f"{path}\t{' '.join(title.split())}\n")
            self.process.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        """End the viewer (it closes its window at end of input)."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


class Preview:
    """Shows frames: in a window when a display exists, else as a PNG file (path printed) and, in a
    terminal that can show pictures, a small copy inline."""

    def __init__(self, root: Path, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.path = root / f"_preview_{os.getpid()}.png"  # one per run: two runs may share a dataset
        self.window = Window.open(env) if display_available(env) else None
        self.graphics = terminal_graphics(env) if self.window is None and sys.stdout.isatty() else None

    def show(self, image: Image.Image, caption: str) -> Path:
        """Write the preview PNG, then show it in the window or print its path (and the inline picture)."""
        write_atomically(self.path, png_bytes(image))
        if self.window is not None and self.window.show(self.path, caption):
            print(caption)
            return self.path
        print(f"{caption}: {self.path}")
        if self.graphics:
            print(terminal_image(image, self.graphics))
        return self.path

    def close(self) -> None:
        """Close the window and remove this run's preview file."""
        if self.window is not None:
            self.window.close()
        self.path.unlink(missing_ok=True)


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


def read_frames(path: Path, indices: Iterable[int],
                seek_after: float = SEEK_AFTER_SECONDS) -> Iterator[tuple[int, Image.Image]]:
    """Yield ``(number, RGB image)`` for the wanted (increasing) frame numbers.

    A frame more than ``seek_after`` seconds ahead is reached by seeking to the keyframe before it and
    decoding forward; nearer ones by decoding on. A damaged part ends the video with a message.
    """
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            yield from _frames_at(container, stream, indices, seek_after)
    except (av.FFmpegError, OSError, ValueError) as error:
        print(f"stopped reading {path} at a damaged part ({type(error).__name__})")


def _frames_at(container, stream, indices: Iterable[int], seek_after: float) -> Iterator[tuple[int, Image.Image]]:
    """The seeking decoder behind ``read_frames``: frame numbers come from the timestamps."""
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    start, unit = stream.start_time or 0, stream.time_base
    decoded, position = None, -1
    for target in indices:
        if target <= position:
            continue
        far = unit is not None and target - position > seek_after * fps
        if far:
            container.seek(start + int(target / fps / unit), stream=stream)
        if far or decoded is None:
            decoded = container.decode(stream)
        for frame in decoded:
            position = frame_number(frame, start, fps, position)
            if position >= target:
                yield position, frame.to_image().convert("RGB")
                break
        else:
            return


def frame_number(frame, start: int, fps: float, previous: int) -> int:
    """The frame's number from its timestamp (the one after ``previous`` when it has none)."""
    if frame.pts is None or frame.time_base is None:
        return previous + 1
    return round(float((frame.pts - start) * frame.time_base) * fps)


def shrink_large(image: Image.Image) -> Image.Image:
    """Halve frames whose short side is over 900 pixels (as the original tool did)."""
    if min(image.size) > LARGE_SHORT_SIDE:
        return image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    return image


def video_key(video: str | Path) -> str:
    """How a video is written in the log: its absolute path."""
    return str(Path(video).absolute())


def planned_frames(videos: list[Path], every: tuple[int, int], start_within: float, rng: random.Random,
                   seen: Container[tuple[str, int]] = frozenset()) -> Iterator[tuple[Path, int, Image.Image]]:
    """``(video, number, frame)`` for every video in turn, following each one's random plan and
    leaving out the ``seen`` ``(video, frame)`` pairs."""
    for video in videos:
        info = probe(video)
        key = video_key(video)
        plan = frame_plan(info.frames or None, info.fps or 25.0, every, start_within, rng)
        for number, frame in read_frames(video, (n for n in plan if (key, n) not in seen)):
            yield video, number, shrink_large(frame)


def prepare_videos(paths: Iterable[str | Path], rng: random.Random) -> list[Path]:
    """Find the videos, check each one opens, and shuffle them."""
    videos = gather_files(list(paths), VIDEO_SUFFIXES, kind="video file")
    for video in videos:
        probe(video)
    rng.shuffle(videos)
    return videos


def check_start_within(seconds: float) -> None:
    """``--start-within`` must be a number of seconds, 0 or more."""
    if not seconds >= 0:
        raise SimpsonsError(f"--start-within must be 0 seconds or more, not {seconds}")


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


def print_counts(title: str, counts: dict[str, int], before: dict[str, int] | None = None) -> None:
    """A table of pictures per character; with ``before``, the earlier count and the change too."""
    width = max([len(name) for name in counts] + [9])
    print(title)
    for name, count in counts.items():
        change = "" if before is None else f"  (before {before.get(name, 0)}, {count - before.get(name, 0):+d})"
        print(f"  {name:<{width}}  {count:>5}{change}")


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


# --------------------------------------------------------------------------- the log


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


# --------------------------------------------------------------------------- sessions


@dataclass
class Saved:
    """One picture saved by hand (for ``undo``); ``earlier`` when an earlier run saved it."""

    path: Path
    video: str
    frame: int | str
    crop: str
    label: str
    earlier: bool = False


@dataclass
class Move:
    """One review decision: a crop moved from ``source`` to ``target`` (for ``undo``)."""

    source: Path
    target: Path
    label: str


@dataclass
class Session:
    """What a labelling or review session keeps between pictures; close it (or use ``with``)."""

    root: Path
    log: LabelLog
    known: set[str]
    preview: Preview | None = None
    hashes: HashIndex = field(default_factory=HashIndex)
    saved: list[Saved] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    duplicates: int = 0

    def show(self, image: Image.Image, caption: str) -> None:
        """Show a picture through the preview (or only print the caption without one)."""
        if self.preview is None:
            print(caption)
        else:
            self.preview.show(image, caption)

    def close(self) -> None:
        """Close the log and the preview."""
        self.log.close()
        if self.preview is not None:
            self.preview.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_session(root: Path, names: Iterable[str] = (), preview: bool = False) -> Session:
    """A session on the dataset at ``root``: its log, the known names, and a preview when asked."""
    earlier = [(logged_picture(root, row.get("file", "")), row) for row in kept_saves(read_log(root))]
    session = Session(root, LabelLog(root), set(character_folders(root)) | set(names),
                      Preview(root) if preview else None)
    session.saved = [Saved(path, row.get("video", ""), row.get("frame", ""), row.get("crop", ""),
                           row.get("label", ""), earlier=True) for path, row in earlier if path is not None]
    return session


# --------------------------------------------------------------------------- labelling by hand


def undo(session: Session) -> None:
    """Remove the last picture saved by hand (this run's, then earlier runs') and log it."""
    if not session.saved:
        print("nothing to undo")
        return
    last = session.saved.pop()
    last.path.unlink(missing_ok=True)
    session.log.write("undo", video=last.video, frame=last.frame, crop=last.crop, label=last.label, file=last.path)
    print(f"removed {last.path} ({last.label}: {len(pictures(last.path.parent))})")


def ask_where() -> str:
    """Ask where the character is until the answer is no/left/right/full or undo."""
    while True:
        answer = ask("Where is the character? [no/left/right/full, undo, stop] ")
        if answer in WHERE_ANSWERS:
            return WHERE_ANSWERS[answer]
        print("answer no, left, right or full (n/l/r/f), undo or stop")


def label_frame(session: Session, video: Path, number: int, frame: Image.Image) -> None:
    """Show one frame, ask where and who, and save the crop unless it is a near-duplicate."""
    session.show(frame, f"{video.name} frame {number}")
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
    save_crop(session, crop_frame(frame, [where])[0], video, number, where, name)


def save_crop(session: Session, picture: Image.Image, video: Path, number: int, where: str, name: str) -> Path | None:
    """Save one labelled crop as the next ``pic_NNNN.jpg`` of ``name``, unless it is a near-duplicate."""
    folder = session.root / name
    duplicate = session.hashes.duplicate_of(difference_hash(picture), [folder])
    if duplicate is not None:
        session.duplicates += 1
        session.log.write("skipped_duplicate", video=video, frame=number, crop=where, label=name, file=duplicate)
        print(f"skipped: a near-duplicate of {duplicate}")
        return None
    path = save_picture(picture, folder)
    session.saved.append(Saved(path, video_key(video), number, where, name))
    session.log.write("saved", video=video, frame=number, crop=where, label=name, file=path)
    print(f"saved {path} ({name}: {len(pictures(folder))})")
    return path


def announce_resume(videos: list[Path], seen: set[tuple[str, int]]) -> None:
    """Say how many frames of these videos the log already has (they are skipped)."""
    keys = {video_key(v) for v in videos}
    count = sum(1 for video, _ in seen if video in keys)
    if count:
        print(f"resuming: {count} frame(s) of these videos already in {LOG_NAME} are skipped")


def bundle_characters(model: str | Path | None) -> list[str]:
    """The characters of the bundle at ``model`` (none without one); ``SimpsonsError`` if it is not a bundle."""
    if model is None:
        return []
    from simpsons.bundle import read_description

    return list(read_description(model).get("characters", []))


def label_videos(paths: Iterable[str | Path], dataset: str | Path, *, every: tuple[int, int] = DEFAULT_EVERY,
                 seed: int | None = None, start_within: float = DEFAULT_START_WITHIN,
                 model: str | Path | None = None) -> Session:
    """Label frames by hand until the videos end or the user stops; returns the (closed) session."""
    check_start_within(start_within)
    rng = random.Random(seed)
    videos = prepare_videos(paths, rng)
    extra = bundle_characters(model)
    root = open_dataset(dataset, create=True)
    seen = seen_frames(read_log(root))
    announce_resume(videos, seen)
    with file_errors(root), open_session(root, extra, preview=True) as session:
        try:
            for video, number, frame in planned_frames(videos, every, start_within, rng, seen):
                label_frame(session, video, number, frame)
            print("no more frames")
        except (Stop, KeyboardInterrupt):
            print("stopped")
    mine = Counter(saved.label for saved in session.saved if not saved.earlier)
    print(f"saved {sum(mine.values())} picture(s) this session"
          + "".join(f"; {name} {count}" for name, count in sorted(mine.items()))
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
        """The end-of-run report, one figure per line."""
        lines = [f"frames analysed: {self.frames}", f"crops kept for review: {sum(self.kept.values())}"]
        lines += [f"  {name}: {count}" for name, count in sorted(self.kept.items())]
        lines += [f"unsure crops kept: {self.unsure}", f"crops dropped: {self.dropped}",
                  f"near-duplicates skipped: {self.duplicates}"]
        return "\n".join(lines)


def auto_frame(predictor, session: Session, report: AutoReport, video: Path, number: int, frame: Image.Image,
               min_prob: float, keep_unsure: bool) -> None:
    """Classify the three crops of one frame in one call and file each by its probability."""
    crops = crop_frame(frame, CROPS)
    predictions = predictor.predict_pixels(np.stack([predictor.prepare(c) for c in crops]), top_k=1)
    report.frames += 1
    review = session.root / REVIEW_DIR
    for where, picture, prediction in zip(CROPS, crops, predictions):
        name, probability = prediction.best_guess, prediction.probability
        common = {"video": video, "frame": number, "crop": where, "label": name, "probability": probability,
                  "familiarity": prediction.familiarity}
        sure = probability >= min_prob and predictor.is_familiar(prediction.familiarity)
        if not sure and not keep_unsure:
            report.dropped += 1
            session.log.write("auto_dropped", **common)
            continue
        folders = [review / name, session.root / name] if sure else [review / UNSURE_DIR]
        duplicate = session.hashes.duplicate_of(difference_hash(picture), folders + [review / REJECTED_DIR])
        if duplicate is not None:
            report.duplicates += 1
            session.log.write("skipped_duplicate", file=duplicate, **common)
            continue
        path = save_picture(picture, folders[0])
        if sure:
            report.kept[name] += 1
        else:
            report.unsure += 1
        session.log.write("auto_kept" if sure else "auto_unsure", file=path, **common)


def auto_label(paths: Iterable[str | Path], dataset: str | Path, *, every: tuple[int, int] = DEFAULT_EVERY,
               seed: int | None = None, start_within: float = DEFAULT_START_WITHIN, model: str | Path | None = None,
               min_prob: float = DEFAULT_MIN_PROB, keep_unsure: bool = False, backend: str | None = None) -> AutoReport:
    """Model-assisted labelling: confident crops go to ``DATASET/_review/<character>/`` (``backend``:
    ``Predictor.load``'s)."""
    from simpsons.prediction import Predictor

    if not 0.0 <= min_prob <= 1.0:
        raise SimpsonsError(f"--min-prob must be between 0 and 1, not {min_prob}")
    check_start_within(start_within)
    rng = random.Random(seed)
    videos = prepare_videos(paths, rng)
    if model is not None:
        bundle_characters(model)  # a clear error before loading the network
    predictor = Predictor.load(model, backend)
    root = open_dataset(dataset, create=True)
    seen = seen_frames(read_log(root))
    announce_resume(videos, seen)
    report = AutoReport()
    with file_errors(root), open_session(root) as session:
        try:
            for video, number, frame in planned_frames(videos, every, start_within, rng, seen):
                auto_frame(predictor, session, report, video, number, frame, min_prob, keep_unsure)
        except KeyboardInterrupt:
            print("interrupted")
    print(report.text())
    return report


# --------------------------------------------------------------------------- review


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


def ask_review(suggested: str) -> str:
    """Ask accept / relabel / reject / undo until the answer is one of them; returns its first letter."""
    choices = "[r]elabel / reject [x] / [u]ndo / stop"
    if suggested != UNSURE_DIR:
        choices = "[a]ccept / " + choices
    while True:
        answer = ask(f"{suggested}? {choices} ")
        if answer in ("r", "relabel", "x", "reject", "u", "undo") or (
                answer in ("a", "accept") and suggested != UNSURE_DIR):
            return answer[0]
        print(f"answer {choices}")


def review_sources(root: Path) -> dict[str, dict[str, str]]:
    """The ``auto_*`` log row of each crop ``--auto`` saved, by its file (relative to the dataset)."""
    return {row["file"]: row for row in read_log(root) if row.get("action") in ("auto_kept", "auto_unsure")}


def _origin(source: Mapping[str, str] | None) -> dict[str, str]:
    """Video, frame and crop of a waiting crop, from its ``auto_*`` log row."""
    source = source or {}
    return {key: source.get(key, "") for key in ("video", "frame", "crop")}


def _review_move(session: Session, path: Path, folder: Path, action: str, label: str,
                 source: Mapping[str, str] | None) -> Path:
    """Move a waiting crop into ``folder``, remember it for ``undo`` and log it."""
    target = move_picture(path, folder)
    session.moves.append(Move(path, target, label))
    session.log.write(action, label=label, file=target, source=path, **_origin(source))
    return target


def accept_crop(session: Session, path: Path, name: str, source: Mapping[str, str] | None = None,
                relabelled: bool = False) -> tuple[Path, Path | None]:
    """Move a waiting crop into ``name``'s folder; returns ``(where it went, None)``. A near-duplicate of a
    picture there goes to ``_review/_rejected/`` instead: ``(where it went, that picture)``. A crop that is
    not a picture raises ``UnreadablePicture`` and stays where it was."""
    duplicate = session.hashes.duplicate_of(difference_hash(read_crop(path)), [session.root / name])
    if duplicate is not None:
        rejected = session.root / REVIEW_DIR / REJECTED_DIR
        return _review_move(session, path, rejected, "review_duplicate", name, source), duplicate
    action = "review_relabelled" if relabelled else "review_accepted"
    return _review_move(session, path, session.root / name, action, name, source), None


def reject_crop(session: Session, path: Path, label: str = "", source: Mapping[str, str] | None = None) -> Path:
    """Move a waiting crop to ``_review/_rejected/`` (kept, so it can be undone and is not proposed again)."""
    return _review_move(session, path, session.root / REVIEW_DIR / REJECTED_DIR, "review_rejected", label, source)


def undo_review(session: Session) -> Path | None:
    """Put the last reviewed crop back where it waited and return its path (``None``: nothing to undo).

    The decision leaves the history only once its crop is back, so a failed undo can be retried: a crop
    removed meanwhile is a ``SimpsonsError`` (and undo stays there until it is put back). An emptied
    ``_review/_rejected/`` is removed.
    """
    if not session.moves:
        return None
    move = session.moves[-1]
    if not move.target.is_file():
        raise SimpsonsError(f"cannot undo: {move.target} is no longer there (put it back to undo this decision)")
    back = move_picture(move.target, move.source.parent, preferred=move.source.name)
    session.moves.pop()
    if move.target.parent == session.root / REVIEW_DIR / REJECTED_DIR:
        remove_if_empty(move.target.parent)
    session.log.write("review_undo", label=move.label, file=back, source=move.target)
    return back


def review_one(session: Session, sources: dict[str, dict[str, str]], suggested: str, path: Path) -> str:
    """Show one waiting crop and accept, relabel or reject it; returns the answer (``u``: undo asked)."""
    source = sources.get(relative(session.root, path), {})
    guess = f"; model: {source['label']} {source['probability']}" if source.get("probability") else ""
    session.show(read_crop(path), f"{path} (suggested: {suggested}{guess})")
    answer = ask_review(suggested)
    if answer == "x":
        reject_crop(session, path, "" if suggested == UNSURE_DIR else suggested, source)
        print(f"rejected {path}")
    elif answer in ("a", "r"):
        name = suggested if answer == "a" else ask_name(session.known, session.root)
        if name is None:
            print("kept for later")
        else:
            target, duplicate = accept_crop(session, path, name, source, relabelled=answer == "r")
            print(f"not accepted: a near-duplicate of {duplicate} (moved to {target})" if duplicate
                  else f"moved to {target} ({name}: {len(pictures(target.parent))})")
    return answer


def review_waiting(session: Session, items: list[tuple[str, Path]]) -> None:
    """Ask about each waiting crop in turn; ``undo`` puts the last decision back and asks again. An
    unreadable crop is skipped (left where it is)."""
    sources = review_sources(session.root)
    pending = list(reversed(items))
    while pending:
        suggested, path = pending.pop()
        if not path.exists():
            continue  # another run took it
        try:
            answer = review_one(session, sources, suggested, path)
        except UnreadablePicture as error:
            print(f"skipped: {error}")
            continue
        if answer == "u":
            pending.append((suggested, path))
            pending.extend(undo_one(session))


def undo_one(session: Session) -> list[tuple[str, Path]]:
    """``undo`` during the review, said on the terminal: the crop now waiting again, if any."""
    try:
        back = undo_review(session)
    except SimpsonsError as error:
        print(error)
        return []
    print("nothing to undo" if back is None else f"undone: {back} is waiting again")
    return [] if back is None else [(back.parent.name, back)]


def remove_empty_review_folders(root: Path) -> None:
    """Remove the folders of ``_review/`` that the review emptied."""
    for folder in review_folders(root) + [root / REVIEW_DIR / REJECTED_DIR]:
        remove_if_empty(folder)


def review(dataset: str | Path) -> dict[str, int]:
    """Walk ``DATASET/_review/`` asking about each crop; prints and returns the counts afterwards."""
    root = open_dataset(dataset, create=False)
    items = review_items(root)
    before = picture_counts(root)
    print_counts("pictures per character before review:", before)
    print(f"{len(items)} crop(s) to review")
    names = {name for name, _ in items if name != UNSURE_DIR}
    with file_errors(root), open_session(root, names, preview=bool(items)) as session:
        try:
            review_waiting(session, items)
        except (Stop, KeyboardInterrupt):
            print("stopped")
    remove_empty_review_folders(root)
    after = picture_counts(root)
    print_counts("pictures per character after review:", after, before)
    return after
