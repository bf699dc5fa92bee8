"""Labelling by hand: show each planned frame, ask where the character is and who, save that crop."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from simpsons.data import difference_hash
from simpsons.frames import crop_frame
from simpsons.labelling.plan import (DEFAULT_EVERY, DEFAULT_START_WITHIN, announce_resume, check_start_within,
                                     planned_frames, prepare_videos)
from simpsons.labelling.prompts import Stop, ask_name, ask_where
from simpsons.labelling.session import Saved, Session, bundle_characters, open_session
from simpsons.labelling.store import file_errors, open_dataset, pictures, read_log, save_picture, seen_frames, video_key

def undo(session: Session) -> None:
    """Remove the last picture saved by hand (this run's, then earlier runs') and log it."""
    if not session.saved:
        print("nothing to undo")
        return
    last = session.saved.pop()
    last.path.unlink(missing_ok=True)
    session.log.write("undo", video=last.video, frame=last.frame, crop=last.crop, label=last.label, file=last.path)
    print(f"removed {last.path} ({last.label}: {len(pictures(last.path.parent))})")


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
