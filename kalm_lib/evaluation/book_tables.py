"""The results chapter's tables: our evaluation scores from ``run/eval/`` beside the paper's, as MyST Markdown.

``results_markdown(run_dir, info)`` writes what ``kalm_lib.book`` puts in the book as
``_generated/results_tables.md``: our averages (MTK, MTY) per model and language, then for each language the
means per task type and every task's score, beside the published ones (``paper_results.csv``, PAPER.md §5.2),
and a released checkpoint on the paper's benchmarks when notebook 05 evaluated one. The numbers come from
``tables`` (main_scores, summary_table, compare_with_paper); this module reads the ``results.csv`` files and
lays the tables out narrow enough for the book's text column. A run without usable results is a
``ResultsError`` naming the file (the book reports it as a ``BookError``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from .runner import listed_models
from .tables import compare_with_paper, load_paper_results, main_scores, summary_table

log = logging.getLogger(__name__)


class ResultsError(ValueError):
    """The evaluation results cannot be shown: none were written, or a file is unreadable or malformed."""


def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v).replace("|", "\\|").replace("*", "\\*")


def md_table(df, index: bool = True, digits: int = 2, cls: str | None = None) -> str:
    """A pipe table (MyST) from a DataFrame; numbers right-aligned with ``digits`` decimals, NaN as –.
    ``cls`` wraps it in a container with that CSS class (the results chapter's compact tables)."""
    d = df.reset_index() if index else df
    cols = [str(c) for c in d.columns]
    num = [pd.api.types.is_numeric_dtype(d[c]) and not pd.api.types.is_bool_dtype(d[c]) for c in d.columns]
    lines = ["| " + " | ".join(_fmt(c) for c in cols) + " |",
             "|" + "|".join("---:" if n else ":---" for n in num) + "|"]
    for row in d.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v.item() if hasattr(v, "item") else v, digits) for v in row) + " |")
    table = "\n".join(lines) + "\n"
    return f":::{{container}} {cls}\n{table}:::\n" if cls else table


FINAL_EVAL = "final"      # notebook 05 writes run/eval/final/<model>/results.csv (run/eval/<label>/ are quick scores)
RELEASED_EVAL = "released"  # notebook 05 with `released_model` set (needs the Hub): the paper's own benchmarks


def collect_results(eval_dir: Path):
    """The evaluation rows under ``eval_dir`` (``**/results.csv``, one per model, in the order they were
    written); the newest file wins for a repeated (model, task, split, subset, dim) row. None if there are none.

    When notebook 05 listed its models (``eval_dir/models.json``, ``evaluation.record_models``), only those
    are kept, in that order: folders of an earlier run's labels (a renamed label, a dropped stage) stay on
    disk but out of the book."""
    files = sorted(eval_dir.rglob("results.csv"), key=lambda f: f.stat().st_mtime) if eval_dir.is_dir() else []
    frames = []
    for f in files:
        try:
            d = pd.read_csv(f)
        except Exception as err:
            raise ResultsError(f"{f}: cannot be read as CSV ({err})") from None
        need = {"model", "task", "task_type", "language", "main_score"}
        if not need <= set(d.columns):
            raise ResultsError(f"{f}: columns {sorted(need - set(d.columns))} missing (kalm_lib/evaluation/runner.py "
                            f"writes them)")
        frames.append(d)
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    df["model"] = df["model"].astype(str).str.removeprefix("local/")   # evaluate_model's prefix for unnamed models
    keys = [c for c in ["model", "task", "split", "subset", "dim"] if c in df]
    df = df.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)
    try:
        listed = listed_models(eval_dir)
    except ValueError as err:
        raise ResultsError(str(err)) from None
    if listed is not None:
        stale = sorted(set(df["model"]) - set(listed))
        if stale:
            log.info("%s: leaving out results of models the latest run did not evaluate: %s", eval_dir, stale)
        order = {m: i for i, m in enumerate(listed)}
        df = df[df["model"].isin(order)]
        df = df.iloc[df["model"].map(order).argsort(kind="stable")].reset_index(drop=True)
        if df.empty:
            return None
    return df


TYPE_SHORT = {"Classification": "Class.", "Clustering": "Clust.", "PairClassification": "Pair cls.",
              "Reranking": "Rerank.", "Retrieval": "Retr.", "STS": "STS", "Summarization": "Summ.",
              "MultilabelClassification": "Multilabel", "BitextMining": "Bitext"}
PAPER_MODELS = {"KaLM-Embedding-V2": "paper: V2", "KaLM-Embedding-V2.5": "paper: V2.5"}
LANGUAGES = {"en": ("MTEB(eng, v1)", "English"), "zh": ("MTEB(cmn, v1)", "Chinese")}


def results_markdown(run_dir: Path, info: dict) -> str:
    """The generated part of the results chapter: our averages, then per task type and per task beside the
    paper's. Tables are kept narrow (models as rows, task types as columns; one task table per language)
    so that they fit the book's text column."""
    final = run_dir / "eval" / FINAL_EVAL
    df = collect_results(final)
    if df is None or df.empty:
        raise ResultsError(f"no evaluation results under {final} (the results.csv files that notebook 05_evaluate "
                        f"writes): the results chapter has nothing to show; run "
                        f"`make reproduce PROFILE={info['profile']}` to completion")
    df = _as_bools(df)
    if "language" not in df:
        df["language"] = "en"
    models = list(dict.fromkeys(df["model"]))
    out = [f"## Our averages ({len(models)} model{'s' if len(models) != 1 else ''}, "
           f"{df['task'].nunique()} tasks)\n",
           "MTK is the mean over tasks, MTY the mean over task types of the mean within each type, both × 100 "
           "(the paper's scale). *Comparable* is *yes* only when every task behind the average is a complete, "
           "uncapped copy of the MTEB task.\n", _models_line(models, info)]
    summ = summary_table(df)
    summ["language"] = summ["language"].map(lambda x: LANGUAGES.get(x, (x, x))[1])
    summ = summ.rename(columns={"n_tasks": "tasks", "n_types": "types", "comparable_to_MTEB": "comparable"})
    out.append(md_table(summ, index=False, cls="kalm-results"))
    for lang in dict.fromkeys(df["language"]):
        if lang in LANGUAGES:
            out += _language_markdown(df[df["language"] == lang], lang, models)
    out += _released_markdown(run_dir / "eval" / RELEASED_EVAL)
    return "\n".join(out)


def _models_line(models: list[str], info: dict) -> str:
    """Who the short model labels of the tables are: the teacher of the run's profile, the student before
    training, and the student after each stage."""
    teacher = None
    try:
        from kalm_lib.config import load_profile

        teacher = load_profile(info["profile"]).teacher
    except Exception:  # an unknown or removed profile: the labels alone still read
        pass
    parts = []
    for m in models:
        if m == "teacher" and teacher:
            parts.append(f"*teacher* is the profile's teacher, `{teacher}`")
        elif m == "untrained":
            parts.append("*untrained* the student before stage 1")
    stages = [m for m in models if m in ("pretrain", "finetune", "distill")]
    if stages:
        parts.append("*" + "*, *".join(stages) + "* the student after that stage")
    return ("Models: " + "; ".join(parts) + ".\n") if parts else ""


def _language_markdown(df, lang: str, models: list[str]) -> list[str]:
    """Per task type (models as rows, the paper's two models below ours) and per task, for one language."""
    bench, name = LANGUAGES[lang]
    t = compare_with_paper(df, bench)
    ours = [c for c in t.columns if c.startswith("ours: ")]
    t = t.dropna(subset=ours, how="all")                  # only the task types we evaluated
    n = t["our n_tasks"]
    cols = {k: f"{TYPE_SHORT.get(k, k)} ({int(n[k])})" if pd.notna(n.get(k)) else k for k in t.index}
    by_type = t.drop(columns=["our n_tasks"]).T.rename(columns=cols)
    by_type.index = [i.removeprefix("ours: ") if i.startswith("ours: ") else
                     PAPER_MODELS.get(i.removeprefix("paper: "), i) for i in by_type.index]
    by_type.index.name = "model"
    out = [f"\n## {name} tasks beside {bench}\n",
           f"**By task type.** Mean main score (× 100) per task type; the number in brackets is how many of our "
           f"{name} tasks each of our averages covers. The paper's rows average every task of that type in "
           f"{bench}, computed from the authors' uploaded results (PAPER.md §5.2): KaLM-Embedding-V2 "
           f"(after stage 2) and V2.5 (after stage 3).\n", md_table(by_type, cls="kalm-results")]

    s = main_scores(df)
    if "mteb_task" in df:
        s = s.merge(df.drop_duplicates("task")[["task", "mteb_task"]], on="task", how="left")
    else:
        s["mteb_task"] = s["task"]
    wide = s.pivot_table(index=["task_type", "task"], columns="model", values="score", sort=False)
    wide = wide[[m for m in models if m in wide.columns]]
    comp = s.groupby(["task_type", "task"], sort=False)["comparable"].all() if "comparable" in s else None
    mteb = s.groupby(["task_type", "task"], sort=False)["mteb_task"].first().reindex(wide.index)
    paper = load_paper_results(level="task", benchmark=bench)
    for pm, short in PAPER_MODELS.items():
        ps = paper[paper["model"] == pm].set_index("key")["score"]
        wide[short] = [ps.get(k, float("nan")) for k in mteb]
    wide = wide.sort_index(level=0, sort_remaining=False)
    types = [TYPE_SHORT.get(tt, tt) for tt, _ in wide.index]
    wide.index = pd.Index([f"{task}\u00a0†" if comp is not None and not comp.get((tt, task), True) else task
                           for tt, task in wide.index], name="task")
    wide.insert(0, "type", types)
    out += [f"\n**Every {name} task.** Main score (× 100) of each model, and the paper's score for the same MTEB "
            f"task where the paper has it (– where it does not). † marks a task whose local copy is incomplete or "
            f"row-capped in this run: its scores are not comparable with MTEB's.\n", md_table(wide, cls="kalm-results")]
    return out


def _as_bools(df):
    for col in ("main_split", "comparable"):
        if col in df:
            df[col] = df[col].astype(str).str.lower().isin(["true", "1"])
    return df


def _released_markdown(eval_dir: Path) -> list[str]:
    """A released checkpoint evaluated on the paper's own benchmarks (notebook 05 with the Hub), beside the
    paper's MTK / MTY; nothing when that evaluation was not run."""
    df = collect_results(eval_dir)
    if df is None or df.empty:
        return []
    summ = summary_table(_as_bools(df))
    paper = load_paper_results(level="summary")
    paper = paper[paper["model"].isin(["KaLM-Embedding-V2", "KaLM-Embedding-V2.5"])]
    bench = {"en": "MTEB(eng, v1)", "zh": "MTEB(cmn, v1)"}
    rows = []
    for _, r in summ.iterrows():
        row = {"model": r["model"], "benchmark": bench.get(r.get("language"), r.get("language")),
               "tasks": r["n_tasks"], "MTK": r["MTK"], "MTY": r["MTY"]}
        for pm in ("KaLM-Embedding-V2", "KaLM-Embedding-V2.5"):
            for key in ("MTK", "MTY"):
                hit = paper[(paper["model"] == pm) & (paper["benchmark"] == row["benchmark"]) & (paper["key"] == key)]
                row[f"paper {pm.removeprefix('KaLM-Embedding-')} {key}"] = float(hit["score"].iloc[0]) if len(hit) else None
        rows.append(row)
    return ["\n## A released checkpoint on the paper's benchmarks\n",
            "Evaluated by notebook 05 through the Hugging Face Hub on the full MTEB(eng, v1) and MTEB(cmn, v1) "
            "task lists, beside the published averages (PAPER.md §5.2).\n",
            md_table(pd.DataFrame(rows), index=False, cls="kalm-results")]
