"""The questions asked on the terminal while labelling: where the character is, who it is, what to do with a
crop waiting for review; ``stop``, end of input and Ctrl-C end the session."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from simpsons.labelling.store import UNSURE_DIR, VALID_NAME

WHERE_ANSWERS = {"n": "no", "no": "no", "l": "left", "left": "left", "r": "right", "right": "right",
                 "f": "full", "full": "full", "u": "undo", "undo": "undo"}


class Stop(Exception):
    """The user ended the session: ``stop``, end of input or Ctrl-C."""


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


def ask_where() -> str:
    """Ask where the character is until the answer is no/left/right/full or undo."""
    while True:
        answer = ask("Where is the character? [no/left/right/full, undo, stop] ")
        if answer in WHERE_ANSWERS:
            return WHERE_ANSWERS[answer]
        print("answer no, left, right or full (n/l/r/f), undo or stop")


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
