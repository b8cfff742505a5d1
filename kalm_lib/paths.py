"""Where the local data mirror is: the one owner of that lookup (``data_dir=`` or ``$KALM_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``data_dir`` or ``$KALM_DATA_DIR`` when it names a folder, else None (callers with a fallback)."""
    d = data_dir if data_dir is not None else os.environ.get("KALM_DATA_DIR")
    return Path(d) if d and Path(d).is_dir() else None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` or ``$KALM_DATA_DIR``; a FileNotFoundError saying what to set when neither names a folder."""
    d = data_dir if data_dir is not None else os.environ.get("KALM_DATA_DIR")
    if not d:
        raise FileNotFoundError("no data folder: pass data_dir= or set KALM_DATA_DIR (e.g. ../shared/data)")
    p = Path(d)
    if not p.is_dir():
        raise FileNotFoundError(f"data folder {p} does not exist (data_dir / KALM_DATA_DIR)")
    return p
