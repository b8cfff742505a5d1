"""MTEB tasks over the local data mirror ($KALM_DATA_DIR/en and /zh), runnable without the Hub: the mteb adapters of
the evaluation sets declared in kalm_lib/data/eval_sets.py (which decontamination reads too).

Each local dataset becomes a subclass of the matching built-in mteb task (``type(mteb.get_task(base))``)
with a copied metadata (new name, local path) and a ``load_data`` that reads the JSON Lines files, so
the metric, main score, evaluator and split names are MTEB's own. Naming:

* a copy with the same rows as MTEB's keeps MTEB's name (``STSBenchmark``, ``SciFact``, ``ATEC`` …);
* a copy that differs says how (``STS12-noMSRvid``, ``TNews-devhalf``, ``CLSClusteringS2S-9k``);
* a dataset MTEB does not have ends in ``-local`` (``MRPC-local``, ``TrecQA-local`` …) and borrows the
  evaluator of a built-in task of the same type and language.

``complete=True`` marks the copies whose scores are comparable with the public MTEB results
(checked for all-MiniLM-L6-v2 in ``tests/test_eval_harness.py``).

Without a mirror (``KALM_DATA_DIR`` unset) :func:`task_for` gives MTEB's own task from the Hub instead
(kalm_lib/data/hub_eval.py).

``max_rows`` caps every evaluated split (and a classification train split) at that many rows, drawn
with a fixed seed; retrieval keeps ``max_rows`` queries and a corpus of their relevant documents plus
up to ``10 × max_rows`` others. Capped scores are for smoke runs only: they are not comparable with MTEB.
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any


from kalm_lib.data.errors import DataError
from kalm_lib.paths import resolve_data_dir

from kalm_lib.data.eval_sets import LOCAL_TASK_SPECS, SPECS, LocalTaskSpec  # noqa: F401 (the registry)

from .encoder import register_prompt_alias

from kalm_lib.data.caps import CORPUS_PER_QUERY, take as _take


class LocalDataError(DataError):
    """A local task file is missing or malformed; the message names the file, line and field
    (also as attributes ``source``, ``line``, ``field``; None where they do not apply)."""

    def __init__(self, message: str, source=None, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.source, self.line, self.field = (str(source) if source is not None else None), line, field

    def __reduce__(self):
        return type(self), (str(self), self.source, self.line, self.field)



LOCAL_SUITE: list[str] = [s.name for s in LOCAL_TASK_SPECS]
"""Every local task, English then Chinese."""
LOCAL_SUITE_EN: list[str] = [s.name for s in LOCAL_TASK_SPECS if s.language == "en"]
LOCAL_SUITE_ZH: list[str] = [s.name for s in LOCAL_TASK_SPECS if s.language == "zh"]
COMPLETE_TASKS: list[str] = [s.name for s in LOCAL_TASK_SPECS if s.complete]
"""The local copies whose scores are comparable with the public MTEB results."""

SMOKE_SUITE: dict[str, int | None] = {
    "STSBenchmark": None,
    "SciFact": 100,
    "Banking77Classification": 1000,
    "STSB": 500,
}
"""Fast "before/after" tasks for training notebooks: task → row cap (None = full). About a minute
with a tiny model on CPU. Iterate it as a dict (``evaluate_model(m, tasks=SMOKE_SUITE)``) to keep the caps."""

OVERVIEW_SUITE: dict[str, int | None] = {
    "STSBenchmark": 300, "SICK-R": 300, "Banking77Classification": 500, "Banking77Clustering-local": 500,
    "MRPC-local": 300, "TrecQA-local": 30, "SciFact": 20,
    "STSB": 300, "Ocnli": 300, "THUCNews-local": 500, "CLSClusteringS2S-9k": 500, "CMRC2018Retrieval-local": 20,
}
"""Every task type in each language, capped: the evaluation notebook's suite for the smoke profile
(a few minutes with tiny models and the MiniLM teacher). Not comparable with MTEB (row caps)."""

SUITES: dict[str, Any] = {"local": LOCAL_SUITE, "local-en": LOCAL_SUITE_EN, "local-zh": LOCAL_SUITE_ZH,
                          "complete": COMPLETE_TASKS, "smoke": SMOKE_SUITE, "overview": OVERVIEW_SUITE}
"""Named suites, e.g. for a profile's ``eval.final_tasks: overview``."""


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data mirror: ``path`` or ``$KALM_DATA_DIR`` (kalm_lib.paths), a LocalDataError when there is none."""
    try:
        return resolve_data_dir(path or None)
    except FileNotFoundError as err:
        raise LocalDataError(str(err)) from None


# ---------------------------------------------------------------------- file readers (clear errors)
def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LocalDataError(f"{path}:{lineno}: not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                             f"{err.start + 1})", path, lineno, "<bytes>") from None


def read_jsonl(path: Path, required: dict[str, type | tuple[type, ...]],
               values: dict[str, tuple[Any, ...]] | None = None) -> list[dict]:
    """Rows of a JSON Lines file; every row must hold ``required`` fields of the given types (and, for
    the fields in ``values``, one of the values listed). Blank lines are skipped."""
    if not path.is_file():
        raise LocalDataError(f"{path}: file not found", path)
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw, path, lineno)
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                raise LocalDataError(f"{path}:{lineno}: invalid JSON ({err.msg} at column {err.pos + 1})",
                                     path, lineno, "<json>") from None
            except RecursionError:
                raise LocalDataError(f"{path}:{lineno}: invalid JSON (nested too deeply)", path, lineno,
                                     "<json>") from None
            if not isinstance(row, dict):
                raise LocalDataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}",
                                     path, lineno, "<record>")
            for key, typ in required.items():
                if key not in row:
                    raise LocalDataError(f"{path}:{lineno}: missing field '{key}'", path, lineno, key)
                if not isinstance(row[key], typ) or isinstance(row[key], bool) and typ is not bool:
                    raise LocalDataError(f"{path}:{lineno}: field '{key}' must be {_tname(typ)}, "
                                         f"got {type(row[key]).__name__} {row[key]!r:.60}", path, lineno, key)
                if typ == _NUM and not math.isfinite(row[key]):
                    raise LocalDataError(f"{path}:{lineno}: field '{key}' must be a finite number, "
                                         f"got {row[key]!r}", path, lineno, key)
                if typ is list and not all(isinstance(t, str) for t in row[key]):
                    raise LocalDataError(f"{path}:{lineno}: field '{key}' must be a list of strings, "
                                         f"got {row[key]!r:.60}", path, lineno, key)
            for key, allowed in (values or {}).items():
                if row[key] not in allowed or isinstance(row[key], bool):
                    raise LocalDataError(f"{path}:{lineno}: field '{key}' must be one of {list(allowed)}, "
                                         f"got {row[key]!r:.60}", path, lineno, key)
            rows.append(row)
    if not rows:
        raise LocalDataError(f"{path}: no rows", path)
    return rows


def read_qrels(path: Path, lines: dict[tuple[str, str], int] | None = None) -> dict[str, dict[str, int]]:
    """A BEIR qrels TSV (header ``query-id corpus-id score``) as {query_id: {doc_id: score}}; ``lines``
    (optional, filled in) maps (query_id, doc_id) to its line."""
    if not path.is_file():
        raise LocalDataError(f"{path}: file not found", path)
    qrels: dict[str, dict[str, int]] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw, path, lineno)
            rec = line.rstrip("\r\n").split("\t")
            if lineno == 1:
                if [h.strip().lstrip("\ufeff") for h in rec[:3]] != ["query-id", "corpus-id", "score"]:
                    raise LocalDataError(f"{path}:1: expected the header 'query-id<TAB>corpus-id<TAB>score', "
                                         f"got {rec!r:.80}", path, 1, "<header>")
                continue
            if not line.strip():
                continue
            if len(rec) != 3:
                raise LocalDataError(f"{path}:{lineno}: expected 3 tab-separated fields, got {len(rec)}",
                                     path, lineno, "<row>")
            try:
                score = int(float(rec[2]))
            except (ValueError, OverflowError):  # OverflowError: int(float("inf"))
                raise LocalDataError(f"{path}:{lineno}: field 'score' must be a finite number, got {rec[2]!r:.40}",
                                     path, lineno, "score") from None
            qrels.setdefault(rec[0], {})[rec[1]] = score
            if lines is not None:
                lines.setdefault((rec[0], rec[1]), lineno)
    if not qrels:
        raise LocalDataError(f"{path}: no qrels" if path.stat().st_size else f"{path}: empty file", path)
    return qrels


def _tname(typ) -> str:
    return " or ".join(t.__name__ for t in typ) if isinstance(typ, tuple) else typ.__name__


_NUM = (int, float)


# ---------------------------------------------------------------------- per-kind loaders
def _load_rows(spec: LocalTaskSpec, root: Path, split: str, required: dict, values: dict | None = None) -> list[dict]:
    rows = [r for fname in spec.splits[split] for r in read_jsonl(root / spec.folder / fname, required, values)]
    if spec.row_filter:
        key, drop = spec.row_filter
        rows = [r for r in rows if r.get(key) not in drop]
    return rows


def _build_sts(spec, root, cap):
    from datasets import Dataset, DatasetDict

    out = {}
    for split in spec.evaluated_splits:
        rows = _take(_load_rows(spec, root, split, {"sentence1": str, "sentence2": str, "score": _NUM}), cap, split)
        out[split] = Dataset.from_dict({"sentence1": [r["sentence1"] for r in rows],
                                        "sentence2": [r["sentence2"] for r in rows],
                                        "score": [float(r["score"]) for r in rows]})
    return DatasetDict(out)


def _build_pair(spec, root, cap):
    from datasets import Dataset, DatasetDict

    out = {}
    for split in spec.evaluated_splits:
        rows = _take(_load_rows(spec, root, split, {"sentence1": str, "sentence2": str, "label": int},
                                values={"label": (0, 1)}), cap, split)
        out[split] = Dataset.from_dict({"sentence1": [r["sentence1"] for r in rows],
                                        "sentence2": [r["sentence2"] for r in rows],
                                        "labels": [int(r["label"]) for r in rows]})
    return DatasetDict(out)


def _build_classification(spec, root, cap):
    from datasets import Dataset, DatasetDict

    splits = {s: _take(_load_rows(spec, root, s, {"text": str, "label": (str, int)}), cap, s) for s in spec.splits}
    # Integer class ids in sorted label order: MTEB stores class ids, and a fixed order keeps runs identical.
    labels = sorted({r["label"] for rows in splits.values() for r in rows}, key=str)
    ids = {lab: i for i, lab in enumerate(labels)}
    return DatasetDict({s: Dataset.from_dict({"text": [r["text"] for r in rows],
                                              "label": [ids[r["label"]] for r in rows]})
                        for s, rows in splits.items()})


def _build_clustering(spec, root, cap):
    from datasets import Dataset, DatasetDict

    out = {}
    for split in spec.evaluated_splits:
        rows = _take(_load_rows(spec, root, split, {"text": str, "label": (str, int)}), cap, split)
        out[split] = Dataset.from_dict({"sentences": [r["text"] for r in rows],
                                        "labels": [str(r["label"]) for r in rows]})
    return DatasetDict(out)


def _build_reranking(spec, root, cap):
    from datasets import Dataset

    out = {}
    for split in spec.evaluated_splits:
        rows = _take(_load_rows(spec, root, split, {"query": str, "positive": list, "negative": list}), cap, split)
        corpus, queries, qrels, top = [], [], {}, {}
        for qi, r in enumerate(rows):
            qid = f"q{qi}"
            queries.append({"id": qid, "text": r["query"]})
            cands = [(t, 1) for t in r["positive"]] + [(t, 0) for t in r["negative"]]
            qrels[qid], top[qid] = {}, []
            for ci, (text, rel) in enumerate(cands):
                did = f"{qid}d{ci}"
                corpus.append({"id": did, "title": "", "text": text})
                qrels[qid][did] = rel
                top[qid].append(did)
        out[split] = {"corpus": Dataset.from_list(corpus), "queries": Dataset.from_list(queries),
                      "relevant_docs": qrels, "top_ranked": top}
    return {"default": out}


def _build_retrieval(spec, root, cap):
    from datasets import Dataset

    folder = root / spec.folder
    corpus_rows = read_jsonl(folder / "corpus.jsonl", {"_id": str, "text": str})
    query_rows = read_jsonl(folder / "queries.jsonl", {"_id": str, "text": str})
    corpus_ids = {r["_id"] for r in corpus_rows}
    query_text = {r["_id"]: r["text"] for r in query_rows}
    out = {}
    for split in spec.evaluated_splits:
        qrels_path = folder / spec.splits[split][0]
        lines: dict[tuple[str, str], int] = {}
        qrels = read_qrels(qrels_path, lines)
        missing_q = next(((q, d) for q in qrels if q not in query_text for d in qrels[q]), None)
        if missing_q is not None:
            raise LocalDataError(f"{qrels_path}:{lines[missing_q]}: query-id {missing_q[0]!r} is not in "
                                 f"{folder / 'queries.jsonl'}", qrels_path, lines[missing_q], "query-id")
        missing_d = next(((q, d) for q in qrels for d in qrels[q] if d not in corpus_ids), None)
        if missing_d is not None:
            raise LocalDataError(f"{qrels_path}:{lines[missing_d]}: corpus-id {missing_d[1]!r} is not in "
                                 f"{folder / 'corpus.jsonl'}", qrels_path, lines[missing_d], "corpus-id")
        qids = sorted(qrels)
        docs = corpus_rows
        if cap is not None and cap < len(qids):
            qids = _take(qids, cap, split)
            relevant = {d for q in qids for d in qrels[q]}
            others = [r for r in corpus_rows if r["_id"] not in relevant]
            keep = relevant | {r["_id"] for r in _take(others, CORPUS_PER_QUERY * cap, split + "/corpus")}
            docs = [r for r in corpus_rows if r["_id"] in keep]
        out[split] = {
            "corpus": Dataset.from_list([{"id": r["_id"], "title": r.get("title") or "", "text": r["text"]}
                                         for r in docs]),
            "queries": Dataset.from_list([{"id": q, "text": query_text[q]} for q in qids]),
            "relevant_docs": {q: dict(qrels[q]) for q in qids},
            "top_ranked": None,
        }
    return {"default": out}


_BUILDERS = {"sts": _build_sts, "pair": _build_pair, "classification": _build_classification,
             "clustering": _build_clustering, "reranking": _build_reranking, "retrieval": _build_retrieval}


# ---------------------------------------------------------------------- task classes
@lru_cache(maxsize=None)
def _task_class(name: str):
    """A subclass of the built-in mteb task ``spec.base`` that loads the local files."""
    import mteb

    spec = SPECS[name]
    base_task = mteb.get_task(spec.base)
    base_cls = type(base_task)
    meta = base_task.metadata.model_copy(deep=True, update={
        "name": spec.name,
        "dataset": {"path": f"local/{spec.folder}", "revision": "local"},
        "eval_splits": list(spec.evaluated_splits),
        "description": (f"Local copy ({spec.folder}) evaluated as MTEB's {spec.base}. "
                        f"{spec.note or 'Same rows as MTEB.'}"),
        "superseded_by": None,
    })
    register_prompt_alias(spec.name, spec.base)

    def load_data(self, num_proc=None, **kwargs):  # noqa: ARG001 - mteb's signature
        if self.data_loaded:
            return
        self.dataset = _BUILDERS[spec.kind](spec, data_dir(self.data_root), self.max_rows)
        self.data_loaded = True

    attrs: dict[str, Any] = {"metadata": meta, "load_data": load_data, "local_spec": spec,
                             "max_rows": None, "data_root": None, "__module__": __name__}
    if spec.kind == "clustering":
        # Embed every document (up to MTEB's v2 cap of 2,048) instead of the base task's fraction.
        attrs.update(max_fraction_of_documents_to_embed=None, max_document_to_embed=2048)
    cls_name = "Local_" + "".join(c if c.isalnum() else "_" for c in spec.name)
    return type(cls_name, (base_cls,), attrs)


def get_local_task(name: str, max_rows: int | None = None, data_root: str | os.PathLike | None = None):
    """An mteb task instance for the local dataset ``name`` (see ``LOCAL_SUITE``)."""
    if name not in SPECS:
        raise KeyError(f"unknown local task {name!r}; known: {', '.join(LOCAL_SUITE)}")
    if max_rows is not None and int(max_rows) < 1:
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    task = _task_class(name)()
    task.max_rows = int(max_rows) if max_rows is not None else None
    task.data_root = data_root
    return task


def is_local_task(name: str) -> bool:
    return name in SPECS


def task_for(name: str, max_rows: int | None = None):
    """The task a run evaluates for ``name``: the local copy when there is a data mirror (``KALM_DATA_DIR``), else
    MTEB's own task from the Hub (kalm_lib/data/hub_eval.py: a local name stands for the MTEB task it is scored as);
    any other name is MTEB's task from the Hub (or ``KALM_HUB_DIR``). Both take the same row cap rule."""
    from kalm_lib.data.hub_eval import hub_task
    from kalm_lib.paths import uses_hub

    if name in SPECS and not uses_hub():
        return get_local_task(name, max_rows=max_rows)
    return hub_task(name, max_rows=max_rows)
