"""When to draw a tqdm progress bar.

tqdm reads ``TQDM_DISABLE`` only as a default: an explicit ``disable=False`` wins over it. Headless runs
(``make reproduce`` sets ``TQDM_DISABLE=1``) must not fill the executed notebooks, and so the book, with
hundreds of bar redraws, so every bar in kalm_lib asks here instead of passing its flag straight to tqdm.
"""

from __future__ import annotations

import os


def bar_disabled(wanted: bool) -> bool:
    """``disable=`` for tqdm: True unless a bar is wanted and ``TQDM_DISABLE`` is unset, empty, 0 or false."""
    return not wanted or os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")
