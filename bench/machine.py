"""The machine line every benchmark records; imports nothing heavy, so any bench can use it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

VECTOR_EXTENSIONS = ("avx512_vnni", "avx512f", "avx_vnni", "avx2")  # the widest first


def machine() -> str:
    """The processor, its number of cores and its widest vector extension (what ONNX Runtime's int8 and
    float kernels run on), for the benchmark's record."""
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    widest = next((extension for extension in VECTOR_EXTENSIONS if extension in flags), None)
    return f"{name}, {os.cpu_count()} cores" + (f", {widest.upper()}" if widest else "")
