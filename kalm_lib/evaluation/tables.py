"""Result tables: per task, per task type, MTK and MTY; the paper's numbers beside ours; atomic writes.

    MTK = (1/|T|) Σ_t s_t                      mean over tasks
    MTY = (1/|K|) Σ_k (1/|T_k|) Σ_{t∈T_k} s_t   mean over task types k of the mean within each type

s_t is a task's main score on its main split (averaged over language subsets when there are several),
reported ×100 as the paper does.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from kalm_lib.atomic import atomic_write_text  # noqa: F401 (also re-exported)

PAPER_RESULTS_CSV = Path(__file__).with_name("paper_results.csv")


# ---------------------------------------------------------------------- atomic writes
def slug(name: str) -> str:
    """A file-name-safe model/task name ("org/name" → "org__name")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("_") or "model"


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, ensure_ascii=False, default=str) + "\n")


def write_results(df: pd.DataFrame, out_dir: str | Path, stem: str = "results") -> tuple[Path, Path]:
    """``out_dir/stem.json`` (records) and ``out_dir/stem.csv``, each written atomically."""
    out_dir = Path(out_dir)
    j = write_json(out_dir / f"{stem}.json", df.to_dict(orient="records"))
    c = atomic_write_text(out_dir / f"{stem}.csv", df.to_csv(index=False))
    return j, c


def read_results(path: str | Path) -> pd.DataFrame:
    """Load a ``results.json`` / ``results.csv`` written by ``write_results``."""
    path = Path(path)
    return pd.read_json(path, orient="records") if path.suffix == ".json" else pd.read_csv(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    return obj


# ---------------------------------------------------------------------- aggregation
def main_scores(df: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """One row per (model, task): the main split's score, averaged over subsets, ×``scale``."""
    d = df[df["main_split"]] if "main_split" in df else df
    keys = [c for c in ["model", "task", "task_type", "language"] if c in d]
    agg = {"main_score": "mean"}
    if "comparable" in d:
        agg["comparable"] = "all"
    out = d.groupby(keys, sort=False, dropna=False).agg(agg).reset_index()
    out["score"] = out.pop("main_score") * scale
    return out


def results_table(df: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Tasks × models (scores ×100), indexed by (language, task type, task)."""
    s = main_scores(df, scale)
    t = s.pivot_table(index=["language", "task_type", "task"], columns="model", values="score", sort=False)
    t.columns.name = None
    if "comparable" in s:
        t["comparable_to_MTEB"] = s.groupby(["language", "task_type", "task"], sort=False)["comparable"].all()
    return t


def type_table(df: pd.DataFrame, scale: float = 100.0, by_language: bool = True) -> pd.DataFrame:
    """Mean score per task type × model (×100)."""
    s = main_scores(df, scale)
    idx = ["language", "task_type"] if by_language and "language" in s else ["task_type"]
    t = s.pivot_table(index=idx, columns="model", values="score", aggfunc="mean", sort=False)
    t.columns.name = None
    return t


def summary_table(df: pd.DataFrame, scale: float = 100.0, by_language: bool = True) -> pd.DataFrame:
    """MTK (mean over tasks) and MTY (mean over task-type means) per model (and language)."""
    s = main_scores(df, scale)
    keys = ["model", "language"] if by_language and "language" in s else ["model"]
    rows = []
    for key, g in s.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), "n_tasks": len(g), "n_types": g["task_type"].nunique(),
                     "MTK": mtk(g["score"]), "MTY": mty(g["task_type"], g["score"]),
                     "comparable_to_MTEB": bool(g["comparable"].all()) if "comparable" in g else None})
    return pd.DataFrame(rows)


def mtk(scores) -> float:
    """Mean over tasks."""
    scores = list(scores)
    return sum(scores) / len(scores) if scores else float("nan")


def mty(task_types, scores) -> float:
    """Mean over task types of the mean within each type."""
    by_type: dict[str, list[float]] = {}
    for k, v in zip(task_types, scores):
        by_type.setdefault(k, []).append(v)
    return mtk(mtk(v) for v in by_type.values())


# ---------------------------------------------------------------------- the paper's numbers
@lru_cache(maxsize=1)
def _paper_csv() -> pd.DataFrame:
    return pd.read_csv(PAPER_RESULTS_CSV, comment="#")


def load_paper_results(level: str | None = None, benchmark: str | None = None) -> pd.DataFrame:
    """The published numbers (×100) with their source: columns model, benchmark, level, key, score, source.

    ``level`` is "task" (per-task main scores), "type" (per-task-type means) or "summary"
    (MTK / MTY / Avg MTK / Avg MTY); ``benchmark`` is "MTEB(eng, v1)", "MTEB(cmn, v1)" or "avg".
    """
    d = _paper_csv().copy()
    if level is not None:
        d = d[d["level"] == level]
    if benchmark is not None:
        d = d[d["benchmark"] == benchmark]
    return d.reset_index(drop=True)


def paper_type_table(benchmark: str) -> pd.DataFrame:
    """The published per-type means (plus MTK, MTY) of KaLM V2/V2.5 and peers for one benchmark."""
    p = load_paper_results(benchmark=benchmark)
    p = p[p["level"].isin(["type", "summary"])]
    t = p.pivot_table(index="key", columns="model", values="score", sort=False)
    t.columns.name = None
    return t


def compare_with_paper(df: pd.DataFrame, benchmark: str = "MTEB(eng, v1)",
                       paper_models: tuple[str, ...] = ("KaLM-Embedding-V2", "KaLM-Embedding-V2.5")) -> pd.DataFrame:
    """Our per-task-type means (and MTK/MTY) beside the paper's for one benchmark language.

    Only the task types are shared: our local suite has other (and fewer) tasks than the paper's
    benchmark, so the numbers sit side by side, they are not a like-for-like comparison.
    """
    lang = "en" if "eng" in benchmark else "zh"
    ours = main_scores(df)
    ours = ours[ours["language"] == lang] if "language" in ours else ours
    t = ours.pivot_table(index="task_type", columns="model", values="score", aggfunc="mean", sort=False)
    summ = summary_table(ours.assign(main_split=True, main_score=ours["score"] / 100), by_language=False)
    for _, r in summ.iterrows():
        t.loc["MTK", r["model"]] = r["MTK"]
        t.loc["MTY", r["model"]] = r["MTY"]
    t.columns = [f"ours: {c}" for c in t.columns]
    paper = paper_type_table(benchmark)
    paper = paper[[m for m in paper_models if m in paper.columns]]
    paper.columns = [f"paper: {c}" for c in paper.columns]
    out = t.join(paper, how="outer")
    order = [k for k in paper.index if k not in ("MTK", "MTY")]
    order += [k for k in out.index if k not in order and k not in ("MTK", "MTY")] + ["MTK", "MTY"]
    out = out.reindex([k for k in order if k in out.index])
    ntask = ours.groupby("task_type")["task"].nunique()
    out.insert(0, "our n_tasks", ntask.reindex(out.index))
    return out
