"""Showing a frame while labelling: in a window (``simpsons.labelling.viewer``, a child Python) when a display
exists, else as a PNG file whose path is printed and, in a terminal that can show pictures, a small copy inline."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from simpsons.files import write_atomically

TERMINAL_COLUMNS = 48
WINDOW_WIDTH = 480
# A separate Python shows the window: Tk wants the main thread (macOS) and, started in another thread, its input
# hook would block the prompt.
VIEWER = (sys.executable, "-m", "simpsons.labelling.viewer")


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


class Window:
    """A preview window run by a child Python (``simpsons.labelling.viewer``); ``open`` gives ``None`` where it
    cannot start."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    @classmethod
    def open(cls, env: Mapping[str, str], command: Sequence[str] = VIEWER, wait: float = 10.0) -> Window | None:
        """Start the viewer ``command`` (given the window's width) and wait for it to say ``ready`` (no Tk, no
        display: ``None``)."""
        try:
            process = subprocess.Popen([*command, str(WINDOW_WIDTH)], env={**os.environ, **env},
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
