"""The real book, as a reader sees it: headless Chromium opens every page of the latest built book.

Which book: $KALM_BOOK_HTML (a built book's html/ folder), else the newest
``build/<profile>/book/_build/html/`` that `make reproduce` / `make book` left. It skips, saying why, when no
book has been built or no Chromium is installed (`make book-deps`). The checks themselves (and that they can
fail) are tested on a fake run in tests/test_book.py.

Per page (kalm_lib.book.check_book): no broken internal link or anchor, no missing image, script or style, no
request leaving the book, no JavaScript error; every notebook chapter shows at least one figure; every math
element is rendered by MathJax (no raw ``$$`` or ``\\(``, no TeX error); no error output or traceback; no
placeholder text. Legibility: no figure shown below 60 % of its width, no output cut off. A full-page screenshot of every page goes to ``build/<profile>/book/screenshots/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kalm_lib import book

ROOT = Path(__file__).resolve().parents[1]


def _latest_book() -> Path | None:
    env = os.environ.get("KALM_BOOK_HTML")
    if env:
        return Path(env)
    built = sorted((ROOT / "build").glob("*/book/_build/html/index.html"), key=lambda p: p.stat().st_mtime)
    return built[-1].parent if built else None


@pytest.mark.slow
def test_every_page_of_the_built_book_reads_right():
    html = _latest_book()
    if html is None or not (html / "index.html").is_file():
        pytest.skip("no built book: run `make reproduce` (or `make book` after it) first; "
                    "or set KALM_BOOK_HTML to a built book's html/ folder")
    chrome = book.find_chromium()
    if chrome is None:
        pytest.skip("no Chromium for the browser check: run `make book-deps` (Debian package `chromium`)")
    shots = html.parents[1] / "screenshots"           # build/<profile>/book/screenshots
    report = book.check_book(html, shots, chrome=chrome)
    print(report.summary())
    assert report.problems == [], "\n".join(report.problems)
    # Legibility: a figure shrunk below 60 % of its width, or a table scrolling sideways, is hard to read
    # although nothing is broken: reported as a warning (pytest -ra lists it), not a failure.
    if report.warnings:
        import warnings
        warnings.warn("legibility: " + "\n".join(report.warnings))
    pages = {p.page for p in report.pages}
    chapters = [f"{c}.html" for c in book.notebook_chapters(ROOT / "book" / "_toc.yml")]
    assert set(chapters) <= pages and {"intro.html", "results.html", "references.html"} <= pages
    assert sorted(p.name for p in shots.glob("*.png")) == sorted(
        p.replace("/", "__").removesuffix(".html") + ".png" for p in pages)
