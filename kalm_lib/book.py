"""Build the Jupyter Book of one ``make reproduce`` run, then open every page in a headless browser.

``build_book(build_dir)`` turns the output of ``python -m kalm_lib reproduce --build-dir <build_dir>`` into a
book, without executing anything:

1. copies ``book/`` (prose, ``_config.yml``, ``_toc.yml``, ``references.bib``) to ``<build_dir>/book/`` and the
   executed notebooks ``<build_dir>/notebooks/*.ipynb`` to ``<build_dir>/book/notebooks/``; nothing is ever
   written into ``book/`` or ``notebooks/``;
2. refuses a notebook with an error output, and puts a "which run made these numbers" note (profile, dates,
   machine, commit, the notebook's own wall time, all from ``run_info.json``) under each chapter's title;
3. writes ``_generated/run_note.md`` and ``_generated/results_tables.md`` (our evaluation scores from
   ``run/eval/`` beside the paper's published ones from ``kalm_lib/evaluation/paper_results.csv``, laid out by
   ``kalm_lib/evaluation/book_tables.py``);
4. copies MathJax 3 (npm ``mathjax@3``, installed by ``make book-deps`` under ``build/_deps/``) into the
   book, so equations render with no network;
5. runs ``jupyter-book build -W -n --keep-going`` (Jupyter Book 1.x, execution off): any warning fails;
6. if a Chromium is installed, ``check_book`` (kalm_lib/book_check.py) opens every page through the Chrome
   DevTools protocol, checks links, images, figures, rendered math and cell errors, and saves a full-page
   screenshot of each page in ``<build_dir>/book/screenshots/``.

Returns the path of the built ``index.html``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from kalm_lib.book_check import (LOCAL_MATHJAX_SRC, BookError, book_pages, check_book,  # noqa: F401 (re-exported)
                                 check_static_html, find_chromium)

ROOT = Path(__file__).resolve().parents[1]
BOOK_SRC = ROOT / "book"
DEPS_DIR = ROOT / "build" / "_deps"           # npm packages for the book (git-ignored), see `make book-deps`
MATHJAX_NPM = "mathjax@3"
# Where the book loads MathJax 3 from when no local copy exists (no npm, no KALM_MATHJAX_DIR): equations then
# render only with a network connection, and the browser check reports math problems as warnings.
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"
# What the book needs from MathJax's es5/ folder: the TeX→CHTML bundle, its fonts, the TeX extensions it loads
# on demand, and the menu's accessibility components (about 7 MB instead of the whole 24 MB package).
MATHJAX_PARTS = ["tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "a11y", "ui", "sre",
                 "adaptors"]
PLACEHOLDER_RE = re.compile(r"\b(TODO|TBD|FIXME|XXX|lorem ipsum|placeholder)\b", re.IGNORECASE)


# ============================================================================ build
def build_book(build_dir: str | os.PathLike, *, check: bool | None = None, quiet: bool = False) -> Path:
    """Build ``<build_dir>/book/_build/html/index.html`` from a ``make reproduce`` output folder.

    ``check``: None = run the browser check when a Chromium is installed (else say how to get one);
    True = require it; False = skip it. A failed check raises ``BookError`` listing every problem.
    """
    t0 = time.perf_counter()
    build = Path(build_dir).resolve()
    info = read_run_info(build)
    dst = build / "book"
    if dst.exists():
        shutil.rmtree(dst)                    # a stale page must never survive into a new build
    shutil.copytree(BOOK_SRC, dst, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints", "__pycache__"))

    chapters = notebook_chapters(dst / "_toc.yml")
    missing = [c for c in chapters if not (build / f"{c}.ipynb").is_file()]
    if missing:
        raise BookError(f"the book's table of contents (book/_toc.yml) lists {', '.join(missing)}, but "
                        f"{build / 'notebooks'} has no executed copy of {'it' if len(missing) == 1 else 'them'}: "
                        f"run `make reproduce PROFILE={info['profile']}` to completion first")
    for chapter in chapters:
        name = Path(chapter).name
        prepare_notebook(build / f"{chapter}.ipynb", dst / f"{chapter}.ipynb", run_note(info, name))

    gen = dst / "_generated"
    gen.mkdir(exist_ok=True)
    _write(gen / "run_note.md", run_note(info))
    _write(gen / "results_tables.md", results_markdown(build / "run", info))
    mathjax_cdn = None if copy_mathjax(dst / "_assets" / "mathjax") else MATHJAX_CDN
    if mathjax_cdn:
        use_mathjax_cdn(dst / "_config.yml", mathjax_cdn)
        print(f"[book] WARNING: {MATHJAX_MISSING}: this book loads MathJax 3 from {mathjax_cdn}, so its equations "
              f"render only online", flush=True)

    index = run_jupyter_book(dst, quiet=quiet)
    static_problems = check_static_html(index.parent, mathjax_src=mathjax_cdn or LOCAL_MATHJAX_SRC)
    if static_problems:
        raise BookError("the built HTML is not self-contained:\n  " + "\n  ".join(static_problems))
    secs = time.perf_counter() - t0
    print(f"[book] built {index} in {secs:.0f}s", flush=True)

    chrome = find_chromium()
    if check is False:
        return index
    if chrome is None:
        if check:
            raise BookError("no Chromium found for the browser check: run `make book-deps` (Debian package "
                            "`chromium`) or set KALM_CHROMIUM to a Chrome/Chromium binary")
        print("[book] WARNING: no Chromium (none on PATH, KALM_CHROMIUM unset): skipped the browser page check "
              "and the screenshots (`make book-deps` as root installs Debian's chromium)", flush=True)
        return index
    report = check_book(index.parent, dst / "screenshots", chrome=chrome, mathjax_cdn=mathjax_cdn)
    print(report.summary(), flush=True)
    if report.problems:
        raise BookError(f"the browser check found {len(report.problems)} problem(s) (listed above); the "
                        f"screenshots are in {dst / 'screenshots'}")
    if report.warnings:
        print(f"[book] {len(report.warnings)} legibility warning(s) (listed above): the book is built, but these "
              f"figures or tables are hard to read in {dst / 'screenshots'}", flush=True)
    return index


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_run_info(build: Path) -> dict:
    """``run_info.json`` of a reproduce run; a missing, failed or unfinished run is an error naming the file."""
    path = build / "run_info.json"
    if not path.is_file():
        raise BookError(f"{path} does not exist: the book is built from a `make reproduce` output folder; run "
                        f"`make reproduce PROFILE=<profile>` first (it writes {build}/notebooks and run_info.json)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BookError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    for key in ("profile", "started", "machine", "commit", "notebooks"):
        if key not in info:
            raise BookError(f"{path}: field {key!r} is missing (written by kalm_lib/reproduce.py)")
    if info.get("failed"):
        raise BookError(f"{path}: notebook {info['failed']!r} failed in this run, so the run is incomplete; its "
                        f"executed copy with the traceback is {build / 'notebooks' / (info['failed'] + '.ipynb')}")
    if not info.get("finished"):
        # Executed copies from an older run may still sit beside this run's: a book of both would lie.
        raise BookError(f"{path}: the run started {info['started']} has not finished (field 'finished' is "
                        f"missing): wait for `make reproduce PROFILE={info['profile']}` to end, or rerun it")
    return info


def notebook_chapters(toc_path: Path) -> list[str]:
    """The ``notebooks/<name>`` entries of a Jupyter Book ``_toc.yml``, in reading order."""
    import yaml

    out: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and f.startswith("notebooks/"):
                out.append(f.removesuffix(".ipynb"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(toc_path.read_text()))
    return out


# ---------------------------------------------------------------------------- notebooks
def notebook_errors(nb, path: Path) -> list[str]:
    """Every error a reader would see in an executed notebook: error outputs, tracebacks on stderr,
    papermill's error banner."""
    errs = []
    for i, cell in enumerate(nb.cells):
        src = cell.source.strip().splitlines()
        where = f"{path}: cell {i} ({src[0][:60] if src else 'empty'!r})"
        if cell.cell_type == "markdown" and "papermill-error-cell" in cell.source:
            errs.append(f"{where}: papermill marked an execution error here")
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                errs.append(f"{where}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and "Traceback (most recent call last)" in out.get("text", ""):
                errs.append(f"{where}: a traceback on {out.get('name')}")
    return errs


def prepare_notebook(src: Path, dst: Path, note_md: str) -> None:
    """Copy an executed notebook into the book with the run note under its title; refuse one with errors."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    errs = notebook_errors(nb, src)
    if errs:
        raise BookError("an executed notebook shows errors, so its chapter would too:\n  " + "\n  ".join(errs))
    title = next((i for i, c in enumerate(nb.cells)
                  if c.cell_type == "markdown" and c.source.lstrip().startswith("# ")), None)
    if title is None:
        raise BookError(f"{src}: no markdown cell starts with a '# ' title, which the chapter needs as its name")
    # The note goes right under the title line: split a title cell that carries more text.
    head, _, rest = nb.cells[title].source.lstrip().partition("\n")
    new = [nbformat.v4.new_markdown_cell(note_md, metadata={"tags": ["kalm-run-note"]})]
    if rest.strip():
        nb.cells[title].source = head
        new.append(nbformat.v4.new_markdown_cell(rest.strip("\n"), metadata=dict(nb.cells[title].metadata)))
    nb.cells[title + 1:title + 1] = new
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)


def _when(iso: str | None) -> str:
    if not iso:
        return "?"
    try:
        d = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return d.strftime("%d %b %Y, %H:%M ") + (d.tzname() or "")


def _duration(secs: float) -> str:
    secs = float(secs)
    if secs < 90:
        return f"{secs:.0f} s"
    if secs < 5400:
        return f"{secs / 60:.1f} min"
    return f"{secs / 3600:.1f} h"


def _profile_description(profile: str) -> str:
    try:
        from kalm_lib.config import load_profile

        return str(load_profile(profile).description or "")
    except Exception:  # an unknown profile still gets a book; the note just lacks the description
        return ""


def run_note(info: dict, notebook: str | None = None) -> str:
    """The "which run made these numbers" box (MyST), for one chapter or (``notebook=None``) the whole run."""
    p = info["profile"]
    desc = _profile_description(p)
    nbs = info.get("notebooks", {})
    total = sum(float(v.get("seconds", 0)) for v in nbs.values())
    when = f"started {_when(info['started'])}"
    when += f", finished {_when(info['finished'])}" if info.get("finished") else " (not finished)"
    lines = [":::{admonition} Which run made these numbers", ":class: note kalm-run",
             f"Profile **`{p}`**" + (f" ({desc})" if desc else "") + f", executed by "
             f"`make reproduce PROFILE={p}`; {when}; machine: {info['machine']}; code at commit "
             f"`{info['commit']}`" + (f", Python {info['python']}" if info.get("python") else "") + "."
             + (f" Data: {info['data']}." if info.get("data") else "")]
    if notebook is not None:
        secs = nbs.get(notebook, {}).get("seconds")
        lines.append(f"This notebook ran in {_duration(secs)}" + (f" of the run's {_duration(total)}." if total
                                                                   else ".") if secs is not None else
                     "This notebook's run time was not recorded.")
    elif nbs:
        lines.append("Notebook run times: " + ", ".join(f"{k} {_duration(v.get('seconds', 0))}"
                                                        for k, v in nbs.items()) + f"; {_duration(total)} in all.")
    earlier = {k: v for k, v in nbs.items() if v.get("earlier_run")}
    if earlier and (notebook is None or notebook in earlier):
        # `make reproduce FROM=...` re-ran only the later notebooks: say where the others come from
        runs = sorted({(v["earlier_run"], v.get("commit") or "?") for v in earlier.values()})
        lines.append(f"Re-run from a later notebook on (`FROM=`): {', '.join(earlier)} "
                     + ("is" if len(earlier) == 1 else "are") + " from the earlier run "
                     + "; ".join(f"started {_when(r)} at commit `{c}`" for r, c in runs) + ".")
    lines += ["Rebuild this book from the same outputs with `make book PROFILE=" + p + "`.", ":::", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- results chapter
def results_markdown(run_dir: Path, info: dict) -> str:
    """The generated part of the results chapter (``kalm_lib.evaluation.book_tables.results_markdown``); a run
    without usable evaluation results is a ``BookError``."""
    from kalm_lib.evaluation.book_tables import ResultsError
    from kalm_lib.evaluation.book_tables import results_markdown as tables_markdown

    try:
        return tables_markdown(run_dir, info)
    except ResultsError as err:
        raise BookError(str(err)) from None


# ---------------------------------------------------------------------------- MathJax
def mathjax_dir() -> Path | None:
    """MathJax 3's es5/ folder: $KALM_MATHJAX_DIR, else build/_deps/node_modules/mathjax/es5."""
    for d in [os.environ.get("KALM_MATHJAX_DIR"), DEPS_DIR / "node_modules" / "mathjax" / "es5"]:
        if d and (Path(d) / "tex-chtml.js").is_file():
            return Path(d)
    return None


MATHJAX_MISSING = ("MathJax 3 is not installed (no build/_deps/node_modules/mathjax, KALM_MATHJAX_DIR unset) and "
                   "npm is missing")


def install_mathjax() -> Path:
    """``npm install mathjax@3`` into build/_deps (what ``make book-deps`` does); idempotent."""
    found = mathjax_dir()
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise BookError(f"{MATHJAX_MISSING}: install Node.js/npm and run `make book-deps`, or set KALM_MATHJAX_DIR "
                        f"to the es5/ folder of an npm mathjax@3 package")
    DEPS_DIR.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(DEPS_DIR),
                        MATHJAX_NPM], capture_output=True, text=True)
    found = mathjax_dir()
    if r.returncode != 0 or found is None:
        raise BookError(f"`npm install {MATHJAX_NPM}` into {DEPS_DIR} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return found


def copy_mathjax(dst: Path) -> bool:
    """Copy the local MathJax 3 (installed with npm when npm is there) into the book; False when there is none,
    after a warning (the book then loads it from :data:`MATHJAX_CDN`)."""
    try:
        src = install_mathjax()
    except BookError as err:
        print(f"[book] WARNING: {str(err).removeprefix('[book] ')}", flush=True)
        return False
    for part in MATHJAX_PARTS:
        s = src / part
        if s.is_dir():
            shutil.copytree(s, dst / part)
        elif s.is_file():
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, dst / part)
        elif part == "tex-chtml.js":
            raise BookError(f"{s} is missing: reinstall with `rm -rf {DEPS_DIR} && make book-deps`")
    return True


def use_mathjax_cdn(config_yml: Path, url: str = MATHJAX_CDN) -> None:
    """Point the copied book's ``sphinx.config.mathjax_path`` at ``url`` (the book's own _config.yml names the
    local copy)."""
    import yaml

    cfg = yaml.safe_load(config_yml.read_text(encoding="utf-8"))
    cfg.setdefault("sphinx", {}).setdefault("config", {})["mathjax_path"] = url
    _write(config_yml, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))


# ---------------------------------------------------------------------------- make book-deps
def book_deps(*, apt: bool | None = None) -> dict:
    """What ``make book-deps`` installs, each part optional: a warning says what the book does without it, and
    nothing here fails (``make reproduce`` goes on).

    * MathJax 3 under build/_deps (npm ``mathjax@3``): without npm the book loads it from :data:`MATHJAX_CDN`;
    * Debian's ``chromium`` and a CJK font (``fonts-wqy-zenhei``), with apt-get when running as root (``apt``:
      None = when root and apt-get is on PATH): without Chromium the browser page check and the screenshots
      are skipped; without the font the screenshots show boxes for Chinese text.

    Returns ``{"mathjax": path or None, "chromium": path or None, "cjk_font": bool, "warnings": [...]}``.
    """
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        print(f"book-deps: WARNING: {msg}", flush=True)

    mathjax = mathjax_dir()
    if mathjax is None:
        try:
            mathjax = install_mathjax()
        except BookError as err:
            warn(f"{str(err).removeprefix('[book] ')}. Without it the book loads MathJax 3 from {MATHJAX_CDN}: "
                 f"its equations render only online")
    chrome, font = find_chromium(), _has_cjk_font()
    pkgs = ([] if chrome else ["chromium"]) + ([] if font else ["fonts-wqy-zenhei"])
    if apt is None:
        apt = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None
    if pkgs and apt:
        cmd = f"apt-get update -qq && apt-get install -y -qq {' '.join(pkgs)}"
        try:
            r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                warn(f"`{cmd}` failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
        except (OSError, subprocess.TimeoutExpired) as err:
            warn(f"`{cmd}` failed: {err}")
        chrome, font = find_chromium(), _has_cjk_font()
    if chrome is None:
        warn("no Chromium (none on PATH, KALM_CHROMIUM unset): the book is built without its browser page check "
             "and screenshots; for them run as root `apt-get install -y chromium` (or set KALM_CHROMIUM)")
    if not font:
        warn("no CJK font: the screenshots show boxes for the Chinese examples; as root `apt-get install -y "
             "fonts-wqy-zenhei`")
    return {"mathjax": mathjax, "chromium": chrome, "cjk_font": font, "warnings": warnings}


def _has_cjk_font() -> bool:
    fc = shutil.which("fc-list")
    if fc is None:
        return False
    try:
        r = subprocess.run([fc, ":lang=zh"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(r.stdout.strip())


# ---------------------------------------------------------------------------- jupyter-book
def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise BookError(f"jupyter-book is not installed next to {sys.executable}: run `make venv` "
                    f"(requirements.txt pins jupyter-book 1.x)")


def run_jupyter_book(book_dir: Path, quiet: bool = False) -> Path:
    """``jupyter-book build <book_dir> -W -n --keep-going``; a warning fails it, naming every warning."""
    cmd = _jupyter_book() + ["build", str(book_dir), "--builder", "html", "-W", "-n", "--keep-going"]
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=book_dir)
    log = book_dir / "_build" / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    index = book_dir / "_build" / "html" / "index.html"
    if r.returncode != 0 or not index.is_file():
        text = r.stdout + "\n" + r.stderr
        warns = [ln for ln in text.splitlines() if re.search(r"WARNING|ERROR|Error|Exception", ln)]
        raise BookError(f"jupyter-book build failed (exit {r.returncode}; with -W a warning is an error). "
                        f"Full log: {log}\n  " + "\n  ".join(warns[-40:] or text.splitlines()[-40:]))
    if not quiet:
        print(f"[book] jupyter-book: {len(list(index.parent.rglob('*.html')))} HTML files", flush=True)
    return index
