"""Aggregation (MTK, MTY, main split, subsets) against hand-computed values and the paper's own averages; the
results chapter's Markdown tables (evaluation/book_tables.py; the whole chapter is tested in tests/test_book.py)."""

import json
import math

import pandas as pd
import pytest

from kalm_lib.evaluation.benchmarks import MTEB_CMN_V1, MTEB_ENG_V1, main_split
from kalm_lib.evaluation.book_tables import _models_line, md_table
from kalm_lib.evaluation.tables import (
    atomic_write_text,
    compare_with_paper,
    load_paper_results,
    main_scores,
    mtk,
    mty,
    read_results,
    results_table,
    summary_table,
    type_table,
    write_results,
)


def _row(model, task, ttype, score, split="test", main=True, subset="default", lang="en", comparable=True):
    return dict(model=model, task=task, task_type=ttype, language=lang, split=split, subset=subset,
                main_split=main, main_score=score, comparable=comparable)


@pytest.fixture
def df():
    return pd.DataFrame([
        _row("A", "s1", "STS", 0.80),
        _row("A", "s2", "STS", 0.60),
        _row("A", "r1", "Retrieval", 0.30),
        # two splits: only the main one (test) counts
        _row("A", "atec", "STS", 0.99, split="validation", main=False, lang="zh"),
        _row("A", "atec", "STS", 0.10, split="test", lang="zh"),
        # two subsets of the main split are averaged
        _row("A", "c1", "Classification", 0.50, subset="en", lang="zh", comparable=False),
        _row("A", "c1", "Classification", 0.70, subset="de", lang="zh", comparable=False),
        _row("B", "s1", "STS", 0.40),
        _row("B", "r1", "Retrieval", 0.20),
    ])


def test_mtk_mty_by_hand(df):
    s = summary_table(df)
    a_en = s[(s.model == "A") & (s.language == "en")].iloc[0]
    # en tasks of A: s1 80, s2 60 (STS), r1 30 (Retrieval)
    assert a_en.MTK == pytest.approx((80 + 60 + 30) / 3)
    assert a_en.MTY == pytest.approx(((80 + 60) / 2 + 30) / 2)
    a_zh = s[(s.model == "A") & (s.language == "zh")].iloc[0]
    # zh: atec 10 (test only), c1 = mean(50, 70) = 60
    assert a_zh.MTK == pytest.approx((10 + 60) / 2)
    assert a_zh.MTY == pytest.approx((10 + 60) / 2)
    assert a_zh.n_tasks == 2 and not a_zh.comparable_to_MTEB and a_en.comparable_to_MTEB
    b = summary_table(df, by_language=False).set_index("model").loc["B"]
    assert b.MTK == pytest.approx(30) and b.MTY == pytest.approx(30)


def test_type_and_task_tables(df):
    t = type_table(df, by_language=False)
    assert t.loc["STS", "A"] == pytest.approx((80 + 60 + 10) / 3)
    assert t.loc["Retrieval", "B"] == pytest.approx(20)
    r = results_table(df)
    assert r.loc[("zh", "STS", "atec"), "A"] == pytest.approx(10)
    assert math.isnan(r.loc[("en", "STS", "s2"), "B"])
    assert not r.loc[("zh", "Classification", "c1"), "comparable_to_MTEB"]


def test_mtk_mty_helpers():
    assert mtk([1, 2, 3, 6]) == 3
    assert mty(["a", "a", "b"], [1, 3, 10]) == pytest.approx((2 + 10) / 2)


def test_main_split_rule():
    assert main_split(["validation", "test"]) == "test"
    assert main_split(["dev"]) == "dev"
    assert main_split(["validation"]) == "validation"


@pytest.mark.parametrize("model,bench,n,mtk_pub,mty_pub", [
    ("KaLM-Embedding-V2", "MTEB(eng, v1)", 56, 67.47, 64.15),
    ("KaLM-Embedding-V2.5", "MTEB(eng, v1)", 56, 69.33, 65.84),
    ("KaLM-Embedding-V2", "MTEB(cmn, v1)", 31, 68.15, 69.30),
    ("KaLM-Embedding-V2.5", "MTEB(cmn, v1)", 31, 70.94, 72.47),
])
def test_paper_per_task_numbers_reproduce_published_averages(model, bench, n, mtk_pub, mty_pub):
    """Our aggregation over the stored per-task numbers gives the paper's MTK and MTY (±0.01)."""
    tasks = load_paper_results(level="task", benchmark=bench)
    tasks = tasks[tasks.model == model]
    assert len(tasks) == n and sorted(tasks.key) == sorted(MTEB_ENG_V1 if "eng" in bench else MTEB_CMN_V1)
    types = {k: t for t, ks in _types(bench).items() for k in ks}
    df = pd.DataFrame([_row(model, r.key, types[r.key], r.score / 100) for r in tasks.itertuples()])
    s = summary_table(df, by_language=False).iloc[0]
    assert s.MTK == pytest.approx(mtk_pub, abs=0.01)
    assert s.MTY == pytest.approx(mty_pub, abs=0.01)
    summ = load_paper_results(level="summary", benchmark=bench).query("model == @model").set_index("key").score
    assert summ["MTK"] == mtk_pub and summ["MTY"] == mty_pub


def _types(bench):
    import mteb

    names = MTEB_ENG_V1 if "eng" in bench else MTEB_CMN_V1
    out = {}
    for n in names:
        out.setdefault(mteb.get_task(n).metadata.type, []).append(n)
    return out


def test_paper_csv_has_sources():
    p = load_paper_results()
    assert {"model", "benchmark", "level", "key", "score", "source"} <= set(p.columns)
    assert p.source.str.len().min() > 20
    assert {"KaLM-Embedding-V2", "KaLM-Embedding-V2.5", "Qwen3-Embedding-0.6B"} <= set(p.model)


def test_compare_with_paper(df):
    c = compare_with_paper(df, "MTEB(eng, v1)")
    assert c.loc["STS", "paper: KaLM-Embedding-V2"] == pytest.approx(82.61)
    assert c.loc["STS", "ours: A"] == pytest.approx(70)
    assert c.loc["MTK", "ours: A"] == pytest.approx((80 + 60 + 30) / 3)
    assert c.loc["STS", "our n_tasks"] == 2


def test_results_written_atomically(tmp_path, df):
    j, c = write_results(df, tmp_path / "run", stem="results")
    assert json.loads(j.read_text())[0]["task"] == "s1"
    back = read_results(c)
    pd.testing.assert_frame_equal(back[["task", "main_score"]], df[["task", "main_score"]])
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temp files left
    # a failed write leaves the old file intact
    target = atomic_write_text(tmp_path / "x.txt", "old")

    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # not a str: write fails before the replace
    assert target.read_text() == "old"
    assert len(list(tmp_path.glob(".x.txt.*"))) == 0


def test_main_scores_scale(df):
    m = main_scores(df, scale=1.0).set_index(["model", "task"])
    assert m.loc[("A", "c1"), "score"] == pytest.approx(0.6)


def test_figures_have_labelled_axes(df):
    import matplotlib

    matplotlib.use("Agg")
    from kalm_lib.evaluation.figures import plot_matryoshka, plot_type_scores

    fig = plot_type_scores(df)
    assert [a.get_ylabel() for a in fig.axes] == ["mean main score (×100)"] * 2
    curve = pd.DataFrame({"model": "A", "task": ["s1"] * 3, "dim": [16, 32, 64], "main_score": [0.2, 0.3, 0.4]})
    fig = plot_matryoshka(curve)
    ax = fig.axes[0]
    assert "dimension" in ax.get_xlabel() and "score" in ax.get_ylabel()


def test_md_table_formats_numbers_and_missing_values():
    df = pd.DataFrame({"task": ["a|b", "c"], "score": [1.234, float("nan")], "ok": [True, False]})
    assert md_table(df, index=False) == (
        "| task | score | ok |\n|:---|---:|:---|\n| a\\|b | 1.23 | yes |\n| c | – | no |\n")


def test_models_line_names_the_teacher_of_the_profile():
    line = _models_line(["teacher", "untrained", "pretrain", "distill"], {"profile": "ci"})
    assert "`minilm`" in line and "*untrained*" in line and "*pretrain*, *distill* the student after" in line
    assert _models_line(["after distillation"], {"profile": "ci"}) == ""
