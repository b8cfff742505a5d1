"""Placeholder until the book issue lands: says clearly that the book is not built yet."""

from __future__ import annotations

from pathlib import Path


def build_book(build_dir) -> Path:
    raise SystemExit(f"[book] not built yet: the Jupyter Book is delivered by the book issue; the executed "
                     f"notebooks are in {Path(build_dir) / 'notebooks'}")
