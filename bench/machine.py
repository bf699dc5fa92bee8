"""The machine line every benchmark records; imports nothing heavy, so any bench can use it."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """The processor and its number of cores, for the benchmark's record."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
