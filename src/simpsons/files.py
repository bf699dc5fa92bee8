"""Atomic file writes: a temporary file beside the target, renamed into place, so a reader never sees half a file
and a failed write never loses the old one."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARTIAL_SUFFIX = ".partial"  # a file being written is ``.NAME.<random>.partial`` beside its target NAME


@contextmanager
def replacing(target: str | Path) -> Iterator[Path]:
    """A temporary file beside ``target`` that replaces it when the block succeeds, and is removed otherwise."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=target.parent)
    os.close(handle)
    try:
        yield Path(partial)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def remove_partial_files(target: str | Path) -> None:
    """Remove what writes of ``target`` left beside it when their process was killed before it could clean up."""
    target = Path(target)
    for partial in target.parent.glob(f".{glob.escape(target.name)}.*{PARTIAL_SUFFIX}"):
        partial.unlink(missing_ok=True)


def write_atomically(target: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target``, then rename it into place."""
    with replacing(target) as partial:
        partial.write_bytes(data)


def write_json(payload: Any, path: str | Path) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_atomically(path, (json.dumps(payload, indent=2) + "\n").encode())
