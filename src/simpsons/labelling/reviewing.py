"""The review: accept, relabel or reject each crop that the automatic labelling left in ``DATASET/_review/``;
every decision can be undone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from simpsons.data import difference_hash
from simpsons.errors import SimpsonsError
from simpsons.labelling.prompts import Stop, ask_name, ask_review
from simpsons.labelling.session import Move, Session, open_session
from simpsons.labelling.store import (REJECTED_DIR, REVIEW_DIR, UNSURE_DIR, UnreadablePicture, file_errors,
                                      move_picture, open_dataset, picture_counts, pictures, read_crop, relative,
                                      remove_if_empty, review_folders, review_items, review_sources)

def print_counts(title: str, counts: dict[str, int], before: dict[str, int] | None = None) -> None:
    """A table of pictures per character; with ``before``, the earlier count and the change too."""
    width = max([len(name) for name in counts] + [9])
    print(title)
    for name, count in counts.items():
        change = "" if before is None else f"  (before {before.get(name, 0)}, {count - before.get(name, 0):+d})"
        print(f"  {name:<{width}}  {count:>5}{change}")


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
