"""The book builder (kalm_lib/book.py), its results chapter (kalm_lib/evaluation/book_tables.py) and its page
checker (kalm_lib/book_check.py) on a fake `make reproduce` output folder.

The fake folder has what reproduce.py writes: notebooks executed by papermill (a small notebook written here,
with math, a figure with labelled axes and a table), run_info.json and evaluation results in run/eval/. One
real Jupyter Book build (about a minute on 2 cores) backs the slow tests; the rest are unit tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kalm_lib import book
from kalm_lib.evaluation import book_tables
from kalm_lib.reproduce import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]

FAKE_SOURCE = [
    ("markdown", "# Fake stage: {title}\n\nThe focal weight $w_i = (1-p_i)^\\gamma$ scales the loss\n\n"
                 "$$\\mathcal{L} = -\\frac{1}{N}\\sum_i w_i \\log p_i$$"),
    ("code", "# Parameters\nprofile = \"smoke\"\nrun_dir = \"build/smoke/run\"", ["parameters"]),
    ("code", "import matplotlib.pyplot as plt\nimport pandas as pd\n"
             "fig, ax = plt.subplots(figsize=(7, 3.5))\n"
             "ax.plot([0, 1, 2, 3], [2.0, 1.3, 0.9, 0.7], marker='o')\n"
             "ax.set(xlabel='optimizer step', ylabel='loss (nats)', title='a test curve')\n"
             "plt.show()\n"
             "pd.DataFrame({'step': [0, 3], 'loss (nats)': [2.0, 0.7]})"),
    ("markdown", "**Reading the figure.** The loss falls."),
]

RUN_INFO = {"profile": "ci", "started": "2026-01-02T03:04:05+00:00", "finished": "2026-01-02T03:14:05+00:00",
            "machine": "x86_64 2 CPU cores, no GPU", "commit": "abc1234", "python": "3.11.7",
            "data": "the Hugging Face Hub, read from a local copy (KALM_HUB_DIR)",
            "notebooks": {n: {"status": "ok", "seconds": 60.0 + i} for i, n in enumerate(NOTEBOOKS)}}


def _result_rows(model: str, scores: dict[str, float]) -> list[dict]:
    meta = {"STSBenchmark": ("STS", "en", "STSBenchmark", 60), "SciFact": ("Retrieval", "en", "SciFact", 60),
            "ATEC": ("STS", "zh", "ATEC", None)}
    return [{"model": model, "task": t, "mteb_task": meta[t][2], "task_type": meta[t][0], "language": meta[t][1],
             "split": "test", "subset": "default", "main_split": True, "metric": "cosine_spearman",
             "main_score": s, "max_rows": meta[t][3], "dim": None, "comparable": meta[t][3] is None,
             "eval_seconds": 1.0, "note": ""} for t, s in scores.items()]


def make_fake_build(root: Path, executed: Path | None = None) -> Path:
    """A fake `make reproduce` output folder under ``root``; ``executed`` is one papermill-executed notebook."""
    build = root / "build" / "ci"
    (build / "notebooks").mkdir(parents=True)
    for name in NOTEBOOKS:
        if executed is not None:
            nb = nbformat.read(executed, as_version=4)
        else:
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(FAKE_SOURCE[0][1])])
        nb.cells[0].source = nb.cells[0].source.replace("{title}", name)
        nbformat.write(nb, build / "notebooks" / f"{name}.ipynb")
    (build / "run_info.json").write_text(json.dumps(RUN_INFO))
    for model, scores in {"after fine-tuning": {"STSBenchmark": 0.5, "SciFact": 0.1, "ATEC": 0.2},
                          "after distillation": {"STSBenchmark": 0.6, "SciFact": 0.3, "ATEC": 0.25}}.items():
        d = build / "run" / "eval" / "final" / model.replace(" ", "_")
        d.mkdir(parents=True)
        pd.DataFrame(_result_rows(model, scores)).to_csv(d / "results.csv", index=False)
    return build


def _fake_notebook_source(path: Path) -> Path:
    cells = []
    for kind, src, *tags in FAKE_SOURCE:
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cells.append(make(src, metadata={"tags": tags[0]} if tags else {}))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


# ---------------------------------------------------------------------------- unit tests
def test_toc_lists_the_notebooks_reproduce_runs():
    assert book.notebook_chapters(ROOT / "book" / "_toc.yml") == [f"notebooks/{n}" for n in NOTEBOOKS]


def test_book_sources_cite_only_known_keys():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(__import__("re").findall(r"@\w+\{([^,]+),", bib))
    for md in (ROOT / "book").glob("*.md"):
        for group in __import__("re").findall(r"\{cite:[pt]\}`([^`]+)`", md.read_text()):
            for k in group.split(","):
                assert k.strip() in keys, f"{md.name} cites {k!r}, not in references.bib"
    assert "zhao2025kalmv2" in keys and "2506.20923" in bib


def test_run_note_names_the_run_and_the_notebook_time():
    note = book.run_note(RUN_INFO, "03_finetune")
    for part in ["**`ci`**", "02 Jan 2026, 03:04 UTC", "02 Jan 2026, 03:14 UTC", "x86_64 2 CPU cores, no GPU",
                 "`abc1234`", "make reproduce PROFILE=ci", "make book PROFILE=ci",
                 "Data: the Hugging Face Hub, read from a local copy (KALM_HUB_DIR)."]:
        assert part in note, part
    # 03_finetune is the third notebook: 62 s; the run is 60+61+62+63+64+65 = 375 s = 6.2 min
    assert "This notebook ran in 62 s of the run's 6.2 min." in note
    assert note.startswith(":::{admonition}") and note.rstrip().endswith(":::")
    whole = book.run_note(RUN_INFO)
    assert "01_data 60 s" in whole and "05_evaluate 64 s" in whole and "6.2 min in all" in whole


def test_run_note_says_which_notebooks_come_from_an_earlier_run():
    nbs = {n: dict(v) for n, v in RUN_INFO["notebooks"].items()}
    for n in NOTEBOOKS[:2]:
        nbs[n].update(earlier_run="2026-01-01T10:00:00+00:00", commit="old1234")
    info = {**RUN_INFO, "notebooks": nbs}
    line = f"{NOTEBOOKS[0]}, {NOTEBOOKS[1]} are from the earlier run started 01 Jan 2026, 10:00 UTC at commit `old1234`"
    assert line in book.run_note(info) and line in book.run_note(info, NOTEBOOKS[0])
    assert "earlier run" not in book.run_note(info, NOTEBOOKS[-1]) and "earlier run" not in book.run_note(RUN_INFO)


def test_run_note_for_an_unfinished_run():
    info = {k: v for k, v in RUN_INFO.items() if k != "finished"}
    assert "(not finished)" in book.run_note(info)


def test_read_run_info_errors_name_the_file(tmp_path):
    with pytest.raises(book.BookError, match=r"run_info\.json does not exist.*make reproduce"):
        book.read_run_info(tmp_path)
    (tmp_path / "run_info.json").write_text(json.dumps({**RUN_INFO, "failed": "03_finetune"}))
    with pytest.raises(book.BookError, match=r"notebook '03_finetune' failed.*03_finetune\.ipynb"):
        book.read_run_info(tmp_path)
    unfinished = {k: v for k, v in RUN_INFO.items() if k != "finished"}
    (tmp_path / "run_info.json").write_text(json.dumps(unfinished))
    with pytest.raises(book.BookError, match=r"run_info\.json: the run started .* has not finished"):
        book.read_run_info(tmp_path)
    (tmp_path / "run_info.json").write_text(json.dumps({"profile": "ci"}))
    with pytest.raises(book.BookError, match=r"run_info\.json: field 'started' is missing"):
        book.read_run_info(tmp_path)
    (tmp_path / "run_info.json").write_text("{\n  oops")
    with pytest.raises(book.BookError, match=r"run_info\.json: line 2: not valid JSON"):
        book.read_run_info(tmp_path)


def test_notebook_errors_finds_what_a_reader_would_see(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# T"),
        nbformat.v4.new_code_cell("1/0", outputs=[nbformat.v4.new_output("error", ename="ZeroDivisionError",
                                                                          evalue="division by zero", traceback=[])]),
        nbformat.v4.new_code_cell("import logging", outputs=[nbformat.v4.new_output(
            "stream", name="stderr", text="INFO fine\nTraceback (most recent call last):\n  boom\n")]),
        nbformat.v4.new_code_cell("x = 1", outputs=[nbformat.v4.new_output("stream", name="stderr",
                                                                            text="INFO step 3 loss 1.2\n")]),
    ])
    errs = book.notebook_errors(nb, Path("nb.ipynb"))
    assert len(errs) == 2
    assert "cell 1 ('1/0'): ZeroDivisionError: division by zero" in errs[0]
    assert "cell 2" in errs[1] and "traceback on stderr" in errs[1]
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    with pytest.raises(book.BookError, match="ZeroDivisionError"):
        book.prepare_notebook(src, tmp_path / "out.ipynb", "note")


def test_prepare_notebook_puts_the_note_under_the_title(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("# Title"),
                                         nbformat.v4.new_markdown_cell("text")])
    nbformat.write(nb, tmp_path / "a.ipynb")
    book.prepare_notebook(tmp_path / "a.ipynb", tmp_path / "out" / "a.ipynb", "THE NOTE")
    out = nbformat.read(tmp_path / "out" / "a.ipynb", as_version=4)
    assert [c.source for c in out.cells] == ["x = 1", "# Title", "THE NOTE", "text"]
    # a title cell with more text is split, so the note sits right under the title line
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\n\nIntro $x$.\n\nMore."), nbformat.v4.new_code_cell("y")]
    nbformat.write(nb, tmp_path / "c.ipynb")
    book.prepare_notebook(tmp_path / "c.ipynb", tmp_path / "out" / "c.ipynb", "THE NOTE")
    out = nbformat.read(tmp_path / "out" / "c.ipynb", as_version=4)
    assert [c.source for c in out.cells] == ["# Title", "THE NOTE", "Intro $x$.\n\nMore.", "y"]
    nb.cells = [nbformat.v4.new_markdown_cell("no title")]
    nbformat.write(nb, tmp_path / "b.ipynb")
    with pytest.raises(book.BookError, match=r"b\.ipynb: no markdown cell starts with a '# ' title"):
        book.prepare_notebook(tmp_path / "b.ipynb", tmp_path / "out" / "b.ipynb", "THE NOTE")


def test_results_markdown_puts_ours_beside_the_paper(tmp_path):
    build = make_fake_build(tmp_path)
    md = book.results_markdown(build / "run", RUN_INFO)
    # after distillation, English: STSBenchmark 60, SciFact 30 → MTK 45.00; MTY = mean(STS 60, Retrieval 30) 45.00
    assert "| after distillation | English | 2 | 2 | 45.00 | 45.00 | no |" in md
    # Chinese: only ATEC (uncapped, complete) → comparable
    assert "| after distillation | Chinese | 1 | 1 | 25.00 | 25.00 | yes |" in md
    # the paper's published per-task scores next to ours (PAPER.md §5.2: STSB 85.07 / 88.88, ATEC 49.75 / 52.45);
    # † marks the capped copies
    assert "| STSBenchmark\u00a0† | STS | 50.00 | 60.00 | 85.07 | 88.88 |" in md
    assert "| SciFact\u00a0† | Retr. | 10.00 | 30.00 | 71.98 | 74.38 |" in md
    assert "| ATEC | STS | 20.00 | 25.00 | 49.75 | 52.45 |" in md
    # by task type, models as rows: the paper's V2 / V2.5 rows (STS 82.61 / 85.27, MTK 67.47 / 69.33 on eng)
    eng = md[md.index("## English tasks"):md.index("## Chinese tasks")]
    assert "STS (1)" in eng and "Retr. (1)" in eng
    v2 = next(line for line in eng.splitlines() if line.startswith("| paper: V2 |"))
    assert "82.61" in v2 and "67.47" in v2 and "64.15" in v2
    assert "85.27" in next(line for line in eng.splitlines() if line.startswith("| paper: V2.5 |"))
    assert "## Chinese tasks beside MTEB(cmn, v1)" in md and "released" not in md


def test_results_leave_out_models_the_latest_run_did_not_list(tmp_path):
    """A renamed label leaves its old results folder behind: with notebook 05's models.json only the
    listed models reach the book, in the listed order; the old folder stays on disk."""
    from kalm_lib.evaluation import record_models

    build = make_fake_build(tmp_path)
    final = build / "run" / "eval" / "final"
    old = final / "distill"  # an earlier run's label for the same stage
    old.mkdir()
    pd.DataFrame(_result_rows("distill", {"STSBenchmark": 0.9, "SciFact": 0.9, "ATEC": 0.9})).to_csv(
        old / "results.csv", index=False)
    assert "| distill |" in book.results_markdown(build / "run", RUN_INFO)  # no list: every folder (older runs)
    record_models(final, ["after distillation", "after fine-tuning"])
    df = book_tables.collect_results(final)
    assert list(dict.fromkeys(df["model"])) == ["after distillation", "after fine-tuning"]
    md = book.results_markdown(build / "run", RUN_INFO)
    assert "| distill |" not in md and "| after distillation | English |" in md
    assert (old / "results.csv").is_file()
    (final / "models.json").write_text('{"models": "after distillation"}')
    with pytest.raises(book_tables.ResultsError, match=r"models\.json: field 'models' must be a list"):
        book_tables.collect_results(final)
    with pytest.raises(book.BookError, match=r"models\.json: field 'models' must be a list"):
        book.results_markdown(build / "run", RUN_INFO)     # the book reports it as its own error


def test_results_markdown_without_results_is_an_error(tmp_path):
    (tmp_path / "run" / "eval").mkdir(parents=True)
    with pytest.raises(book.BookError, match="no evaluation results under"):
        book.results_markdown(tmp_path / "run", RUN_INFO)


def test_build_book_refuses_a_run_without_all_chapters(tmp_path, monkeypatch):
    build = make_fake_build(tmp_path)
    (build / "notebooks" / "05_evaluate.ipynb").unlink()
    with pytest.raises(book.BookError, match=r"lists notebooks/05_evaluate, but .* has no executed copy"):
        book.build_book(build, check=False)
    assert not (ROOT / "book" / "_generated").exists()  # the source folder is never written


# ---------------------------------------------------------------------------- a real build
@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    if book.mathjax_dir() is None and shutil.which("npm") is None:
        pytest.skip("MathJax 3 is not installed and npm is missing: run `make book-deps`")
    import papermill as pm

    tmp = tmp_path_factory.mktemp("book")
    src = _fake_notebook_source(tmp / "fake.ipynb")
    pm.execute_notebook(str(src), str(tmp / "fake_executed.ipynb"), parameters={"profile": "ci"},
                        kernel_name="python3", progress_bar=False)
    build = make_fake_build(tmp, executed=tmp / "fake_executed.ipynb")
    index = book.build_book(build, check=False)
    return build, index


@pytest.mark.slow
def test_build_book_builds_every_chapter(built_book):
    build, index = built_book
    html = index.parent
    assert index == build / "book" / "_build" / "html" / "index.html"
    for name in NOTEBOOKS:
        page = (html / "notebooks" / f"{name}.html").read_text()
        assert "Which run made these numbers" in page and "abc1234" in page, name
        assert f"This notebook ran in {60 + NOTEBOOKS.index(name)} s" in page
        assert "<img" in page and "cell_output" in page
    results = (html / "results.html").read_text()
    assert "85.07" in results and "after distillation" in results
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert not book.check_static_html(html)
    assert "arXiv" in (html / "references.html").read_text()
    # nothing was written into the sources
    assert not (ROOT / "book" / "_build").exists() and not (ROOT / "book" / "_generated").exists()
    assert not (ROOT / "book" / "notebooks").exists()


@pytest.mark.slow
def test_browser_check_passes_and_catches_a_broken_page(built_book, tmp_path):
    chrome = book.find_chromium()
    if chrome is None:
        pytest.skip("no Chromium (Debian package `chromium`): run `make book-deps`")
    build, index = built_book
    html = index.parent
    report = book.check_book(html, build / "book" / "screenshots", chrome=chrome)
    print(report.summary())
    assert report.problems == [] and report.warnings == []
    pages = book.book_pages(html)
    assert {"intro.html", "results.html", "references.html"} <= set(pages)
    assert all(Path(p.screenshot).stat().st_size > 10_000 for p in report.pages)
    chapter = {p.page: p for p in report.pages}["notebooks/02_pretrain.html"]
    assert chapter.figures == 1 and chapter.math_rendered == chapter.math >= 2

    # The same page, broken three ways, must fail: a missing figure, raw TeX, an error output.
    broken = tmp_path / "html"
    shutil.copytree(html, broken)
    page = broken / "notebooks" / "02_pretrain.html"
    text = page.read_text()
    img = next(p for p in (broken / "_images").iterdir())
    img.unlink()
    text = text.replace("<p><strong>Reading the figure.</strong>",
                        "<p>$$ raw $$</p><div class=\"cell_output\"><pre class=\"traceback\">Traceback "
                        "(most recent call last):</pre></div><div class=\"cell_output\"><table><tr>"
                        + "".join(f"<td>column{i}_is_wide</td>" for i in range(40))
                        + "</tr></table></div>"
                        # and two tables that must NOT warn: a long unbreakable row label (an MTEB task name)
                        # wraps inside its cell (kalm.css), in a results table and in a DataFrame's index
                        + _long_label_tables()
                        + "<p><strong>Reading the figure.</strong>")
    page.write_text(text)
    bad = book.check_book(broken, None, chrome=chrome, pages=["notebooks/02_pretrain.html"])
    joined = "\n".join(bad.problems)
    assert "image not loaded" in joined and "HTTP 404" in joined
    assert "raw TeX delimiters in the text: ['$$']" in joined
    assert "error output or a traceback" in joined
    assert len(bad.warnings) == 1 and "px of it hidden to the right" in bad.warnings[0]
    assert "column0_is_wide" in bad.warnings[0]


def _long_label_tables() -> str:
    label = "TwentyNewsgroupsClusteringWithAVeryLongName.v2\u00a0†"
    cells = "".join(f"<td>{90 + i / 7:.2f}</td>" for i in range(9))
    # the markup Sphinx and the theme give a generated pipe table (results.html), scroll container included
    results = (f'<div class="kalm-results docutils container"><div class="pst-scrollable-table-container">'
               f'<table class="table"><tbody><tr><td>{label}</td>{cells}</tr></tbody></table></div></div>')
    frame = f'<div class="cell_output"><table><tbody><tr><th>{label}</th>{cells}</tr></tbody></table></div>'
    return results + frame


def test_make_book_target_builds_with_deps():
    mk = (ROOT / "Makefile").read_text()
    assert "book-deps:" in mk and "mathjax@3" in mk and "chromium" in mk
    book_rule = mk[mk.index("\nbook:"):].split("\n\n")[0]
    assert "book-deps" in book_rule and "kalm_lib book" in book_rule


def test_nothing_generated_is_tracked():
    out = subprocess.run(["git", "ls-files", "book"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in out if f.startswith(("book/_build", "book/_generated", "book/notebooks"))]
