"""What a labelling or review session keeps between pictures: the dataset's log, the known names, the preview,
the hashes, and what can be undone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from simpsons.labelling.preview import Preview
from simpsons.labelling.store import HashIndex, LabelLog, character_folders, kept_saves, logged_picture, read_log

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


def bundle_characters(model: str | Path | None) -> list[str]:
    """The characters of the bundle at ``model`` (none without one); ``SimpsonsError`` if it is not a bundle."""
    if model is None:
        return []
    from simpsons.bundle import read_description

    return list(read_description(model).characters)
