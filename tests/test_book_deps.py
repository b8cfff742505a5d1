"""The book builds without root, npm or Chromium (issue 15, item 3): `make book-deps` (kalm_lib.book.book_deps)
warns and goes on, and build_book then loads MathJax 3 from its CDN and skips the browser check, saying so."""

from __future__ import annotations

from pathlib import Path

import pytest

from kalm_lib import book

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bare_machine(tmp_path, monkeypatch):
    """No npm, no Chromium, no fc-list, no apt-get (an empty PATH), no local MathJax."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("KALM_CHROMIUM", raising=False)
    monkeypatch.delenv("KALM_MATHJAX_DIR", raising=False)
    monkeypatch.setattr(book, "DEPS_DIR", tmp_path / "_deps")
    return tmp_path


def test_book_deps_warns_and_continues_without_npm_or_chromium(bare_machine, capsys):
    got = book.book_deps()
    out = capsys.readouterr().out
    assert got["mathjax"] is None and got["chromium"] is None and got["cjk_font"] is False
    assert len(got["warnings"]) == 3 and out.count("book-deps: WARNING:") == 3
    assert "npm is missing" in out and f"loads MathJax 3 from {book.MATHJAX_CDN}" in out
    assert "no Chromium" in out and "without its browser page check and screenshots" in out
    assert not (bare_machine / "_deps").exists()


def test_book_deps_finds_a_local_mathjax_without_npm(bare_machine, monkeypatch, capsys):
    es5 = bare_machine / "mj" / "es5"
    es5.mkdir(parents=True)
    (es5 / "tex-chtml.js").write_text("// MathJax")
    monkeypatch.setenv("KALM_MATHJAX_DIR", str(es5))
    got = book.book_deps()
    assert got["mathjax"] == es5
    assert "MathJax" not in capsys.readouterr().out


def test_make_book_deps_never_fails():
    mk = (ROOT / "Makefile").read_text()
    recipe = mk[mk.index("\nbook-deps:"):].split("\n\n")[0]
    assert "book_deps()" in recipe and "exit 1" not in recipe


def test_static_check_accepts_the_cdn_only_when_told(tmp_path):
    page = ('<html><script src="{}"></script><span class="math">x</span>'
            '<script src="https://example.org/x.js"></script></html>')
    (tmp_path / "a.html").write_text(page.format(book.MATHJAX_CDN))
    cdn = book.check_static_html(tmp_path, mathjax_src=book.MATHJAX_CDN)
    assert cdn == ["a.html: loads https://example.org/x.js from the network"]
    local = book.check_static_html(tmp_path)
    assert any(book.MATHJAX_CDN in p for p in local) and any("does not load the book's MathJax" in p for p in local)


@pytest.mark.slow
def test_build_book_without_npm_or_chromium(bare_machine, capsys):
    from test_book import make_fake_build

    build = make_fake_build(bare_machine / "run")
    index = book.build_book(build)           # check=None: the browser check runs when a Chromium is found
    out = capsys.readouterr().out
    assert index.is_file()
    assert "npm is missing" in out and f"this book loads MathJax 3 from {book.MATHJAX_CDN}" in out
    assert "no Chromium" in out and "skipped the browser page check and the screenshots" in out
    html = index.parent
    assert not (html / "_static" / "mathjax").exists()
    assert book.MATHJAX_CDN in (html / "intro.html").read_text()
    assert not (build / "book" / "screenshots").exists()
