"""Decontamination: no text of an evaluation test split may enter training.

The forbidden set holds every text of every evaluated split under ``en/`` and ``zh/``: ``test.jsonl``
(or ``validation.jsonl`` where that is the split C-MTEB scores, e.g. AFQMC, OCNLI), and for BEIR retrieval
folders the test queries plus the corpus documents named in ``qrels/test.tsv``. Texts are compared after
NFKC + casefold + whitespace folding, so trivial variants of a test sentence count as the same text.
"""
from __future__ import annotations

import csv
import json
import os
import unicodedata
from functools import lru_cache
from pathlib import Path

from .catalog import resolve_data_dir
from .errors import LoadReport

TEXT_FIELDS = ("sentence1", "sentence2", "text", "query")
LIST_FIELDS = ("positive", "negative")


def normalize_text(text: str) -> str:
    if text.isascii():  # NFKC is the identity on ASCII and casefold is lower(): skip the slow path
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def evaluated_files(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The evaluated split of every evaluation folder (test.jsonl, else validation.jsonl; BEIR: qrels/test.tsv)."""
    root = resolve_data_dir(data_dir)
    out = []
    for lang in ("en", "zh"):
        for folder in sorted(p for p in (root / lang).glob("*") if p.is_dir()):
            if (folder / "qrels" / "test.tsv").is_file():
                out.append(folder / "qrels" / "test.tsv")
            elif (folder / "test.jsonl").is_file():
                out.append(folder / "test.jsonl")
            elif (folder / "validation.jsonl").is_file():
                out.append(folder / "validation.jsonl")
    return out


def _jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _beir_test_texts(qrels: Path) -> set[str]:
    folder = qrels.parent.parent
    qids, dids = set(), set()
    with open(qrels, encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qids.add(row["query-id"])
            dids.add(row["corpus-id"])
    texts = set()
    for q in _jsonl(folder / "queries.jsonl"):
        if q["_id"] in qids:
            texts.add(q["text"])
    for d in _jsonl(folder / "corpus.jsonl"):
        if d["_id"] in dids:
            texts.add(d["text"])
            if d.get("title"):
                texts.add(f"{d['title']} {d['text']}")  # the "title text" form training files use
    return texts


def _file_texts(path: Path) -> set[str]:
    if path.suffix == ".tsv":
        return _beir_test_texts(path)
    texts = set()
    for rec in _jsonl(path):
        for k in TEXT_FIELDS:
            if isinstance(rec.get(k), str):
                texts.add(rec[k])
        for k in LIST_FIELDS:
            texts.update(t for t in rec.get(k, []) if isinstance(t, str))
    return texts


@lru_cache(maxsize=4)
def _forbidden(root: str) -> frozenset[str]:
    keys = set()
    for path in evaluated_files(root):
        keys.update(normalize_text(t) for t in _file_texts(path))
    keys.discard("")
    return frozenset(keys)


def eval_test_texts(data_dir: str | os.PathLike | None = None) -> frozenset[str]:
    """Normalised texts of all evaluated splits (cached per data folder)."""
    return _forbidden(str(resolve_data_dir(data_dir).resolve()))


def decontaminate(records: list[dict], forbidden: frozenset[str], report: LoadReport) -> list[dict]:
    """Drop records whose query is a test text; strip test texts from ``pos``/``neg`` and drop a record
    left without a positive. Records without ``pos`` yet (before labeling) are judged on the query only."""
    out = []
    for rec in records:
        if normalize_text(rec["query"]) in forbidden:
            report.dropped["query is an evaluation test text"] += 1
            continue
        if "pos" in rec:
            pos = [p for p in rec["pos"] if normalize_text(p) not in forbidden]
            neg = [n for n in rec["neg"] if normalize_text(n) not in forbidden]
            if len(pos) < len(rec["pos"]) or len(neg) < len(rec["neg"]):
                report.removed_texts["evaluation test text in pos/neg"] += (len(rec["pos"]) - len(pos)
                                                                             + len(rec["neg"]) - len(neg))
                if not pos:
                    report.dropped["every positive is an evaluation test text"] += 1
                    continue
                rec = _drop_aligned(rec, pos, neg, forbidden)
        out.append(rec)
    return out


def _drop_aligned(rec: dict, pos: list[str], neg: list[str], forbidden: frozenset[str]) -> dict:
    """Copy of ``rec`` with the new pos/neg; per-text score lists are filtered the same way."""
    keep_p = [normalize_text(p) not in forbidden for p in rec["pos"]]
    keep_n = [normalize_text(n) not in forbidden for n in rec["neg"]]
    new = dict(rec, pos=pos, neg=neg)
    if "pos_scores" in rec:
        new["pos_scores"] = [s for s, k in zip(rec["pos_scores"], keep_p) if k]
    if "neg_scores" in rec:
        new["neg_scores"] = [s for s, k in zip(rec["neg_scores"], keep_n) if k]
    if "teacher_scores" in rec:
        new["teacher_scores"] = [s for s, k in zip(rec["teacher_scores"], keep_p + keep_n) if k]
    new.pop("pos_rank", None)
    return new
