"""Atomic writes, the one helper every module uses for records, configs and pointers: the text goes to a temporary
file in the same folder, then ``os.replace`` swaps it in, so a reader (or a rerun after a kill) sees the old file or
the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` (UTF-8) atomically; makes the parent folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kw) -> Path:
    """``json.dumps(obj, **dumps_kw)`` plus a newline, written with :func:`atomic_write_text`."""
    return atomic_write_text(path, json.dumps(obj, **dumps_kw) + "\n")
