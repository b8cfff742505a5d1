"""Decontamination: no text of an evaluation test split may enter training.

The forbidden set holds every text of every scored split under ``en/`` and ``zh/``, read from the one
declaration of what is evaluated, kalm_lib/data/eval_sets.py (SICK-R's scored test is its test and train
files; ATEC's, BQ's and STSB's both validation and test); for BEIR retrieval folders the test queries plus the
corpus documents named in ``qrels/test.tsv``. A folder the registry does not declare (a user's own) is not
evaluated, but its ``test.jsonl`` (else ``validation.jsonl``, else ``qrels/test.tsv``) is still forbidden.
Texts are compared after NFKC + casefold + whitespace folding, so trivial variants of a test sentence
count as the same text.

It never switches itself off: a data folder without ``en/`` or ``zh/``, an evaluation folder without an
evaluated split, an empty or malformed evaluation file is an error naming the file (and line and field).
Training without it takes ``decontaminate=False`` (logged as a WARNING and recorded in the load report).

Without a mirror the evaluation sets are MTEB's own tasks from the Hub, and so is the forbidden set
(kalm_lib/data/hub_eval.py): the evaluated splits of the MTEB task behind every declared local task.
"""
from __future__ import annotations

import os
import unicodedata
from functools import lru_cache
from pathlib import Path

from kalm_lib.paths import uses_hub

from .catalog import resolve_data_dir
from .errors import DataFileError, LoadReport, RecordError, log
from .eval_sets import scored_files
from .jsonl import iter_jsonl, iter_tsv

EVAL_LANGS = ("en", "zh")
TEXT_FIELDS = ("sentence1", "sentence2", "text", "query")
LIST_FIELDS = ("positive", "negative")
QRELS_HEADER = ("query-id", "corpus-id", "score")
OFF_HINT = (" (decontamination reads every evaluation file: fix or remove it, or turn decontamination off "
            "explicitly with decontaminate=False)")


def normalize_text(text: str) -> str:
    if text.isascii():  # NFKC is the identity on ASCII and casefold is lower(): skip the slow path
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def evaluated_files(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The scored files of every evaluation folder (eval_sets.scored_files; an undeclared folder: test.jsonl, else
    validation.jsonl; BEIR: qrels/test.tsv). A missing ``en/`` or ``zh/``, a folder without its scored split,
    is a :class:`DataFileError`; a language folder with no evaluation set at all is a WARNING."""
    root = resolve_data_dir(data_dir)
    out = []
    for lang in EVAL_LANGS:
        if not (root / lang).is_dir():
            raise DataFileError(root / lang, f"evaluation folder missing: {root} has no {lang}/ (the layout is "
                                             f"<data>/en/<type>-<name>/, <data>/zh/<type>-<name>/)")
        folders = sorted(p for p in (root / lang).iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            log.warning("%s: no evaluation sets, so no %s test text is removed from training", root / lang, lang)
        for folder in folders:
            declared = scored_files(f"{lang}/{folder.name}")
            if declared is not None:
                for f in declared:
                    if not (folder / f).is_file():
                        raise DataFileError(folder / f, "scored split missing (declared in kalm_lib/data/eval_sets.py)")
                    out.append(folder / f)
            elif (folder / "qrels" / "test.tsv").is_file():
                out.append(folder / "qrels" / "test.tsv")
            elif (folder / "test.jsonl").is_file():
                out.append(folder / "test.jsonl")
            elif (folder / "validation.jsonl").is_file():
                out.append(folder / "validation.jsonl")
            else:
                raise DataFileError(folder, "evaluation folder without an evaluated split "
                                            "(test.jsonl, validation.jsonl or qrels/test.tsv)")
    if not out:
        raise DataFileError(root, "no evaluation set under en/ or zh/")
    return out


def _str_field(rec: dict, key: str, path: Path, line: int) -> str:
    if key not in rec:
        raise RecordError(path, line, key, "missing")
    if not isinstance(rec[key], str):
        raise RecordError(path, line, key, f"expected a string, got {type(rec[key]).__name__}")
    return rec[key]


def _beir_test_texts(qrels: Path) -> set[str]:
    folder = qrels.parent.parent
    qids: dict[str, int] = {}  # id -> first qrels line naming it
    dids: dict[str, int] = {}
    for line, row in iter_tsv(qrels, QRELS_HEADER):
        try:
            float(row["score"])
        except ValueError:
            raise RecordError(qrels, line, "score", f"expected a number, got {row['score']!r:.40}") from None
        qids.setdefault(row["query-id"], line)
        dids.setdefault(row["corpus-id"], line)
    if not qids:
        raise DataFileError(qrels, "no qrels rows after the header")
    texts, found_q, found_d = set(), set(), set()
    queries, corpus = folder / "queries.jsonl", folder / "corpus.jsonl"
    for line, q in iter_jsonl(queries, allow_blank=True):
        qid = _str_field(q, "_id", queries, line)
        text = _str_field(q, "text", queries, line)
        if qid in qids:
            texts.add(text)
            found_q.add(qid)
    for line, d in iter_jsonl(corpus, allow_blank=True):
        did = _str_field(d, "_id", corpus, line)
        text = _str_field(d, "text", corpus, line)
        title = d.get("title")
        if title is not None and not isinstance(title, str):
            raise RecordError(corpus, line, "title", f"expected a string, got {type(title).__name__}")
        if did in dids:
            texts.add(text)
            found_d.add(did)
            if title:
                texts.add(f"{title} {text}")  # the "title text" form training files use
    for ids, found, col, where in ((qids, found_q, "query-id", queries), (dids, found_d, "corpus-id", corpus)):
        missing = [i for i in ids if i not in found]
        if missing:
            i = min(missing, key=ids.get)
            raise RecordError(qrels, ids[i], col, f"{i!r} is not in {where} ({len(missing)} ids missing)")
    return texts


def _file_texts(path: Path) -> set[str]:
    if path.suffix == ".tsv":
        return _beir_test_texts(path)
    texts, n = set(), 0
    for line, rec in iter_jsonl(path, allow_blank=True):
        n += 1
        found = False
        for k in TEXT_FIELDS:
            if k in rec:
                texts.add(_str_field(rec, k, path, line))
                found = True
        for k in LIST_FIELDS:
            if k in rec:
                v = rec[k]
                if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
                    raise RecordError(path, line, k, f"expected a list of strings, got {v!r:.60}")
                texts.update(v)
                found = True
        if not found:
            raise RecordError(path, line, "/".join(TEXT_FIELDS), "missing: the record has no text field")
    if not n:
        raise DataFileError(path, "no records (empty file)")
    return texts


@lru_cache(maxsize=4)
def _forbidden(root: str) -> frozenset[str]:
    keys = set()
    try:
        for path in evaluated_files(root):
            keys.update(normalize_text(t) for t in _file_texts(path))
    except RecordError as err:
        raise RecordError(err.source, err.line, err.field, err.problem + OFF_HINT) from None
    except DataFileError as err:
        raise DataFileError(err.source, err.problem + OFF_HINT) from None
    keys.discard("")
    return frozenset(keys)


def eval_test_texts(data_dir: str | os.PathLike | None = None) -> frozenset[str]:
    """Normalised texts of all evaluated splits (cached per data folder). Any evaluation file that cannot
    be read is a :class:`~kalm_lib.data.errors.DataError` naming it: decontamination never turns itself off.
    Without a mirror (``data_dir`` None, ``KALM_DATA_DIR`` unset) the same rule over the MTEB tasks read from the
    Hub instead (:func:`kalm_lib.data.hub_eval.hub_eval_texts`), the tasks such a run evaluates."""
    if data_dir is None and uses_hub():
        return _hub_forbidden(os.environ.get("KALM_HUB_DIR"))
    return _forbidden(str(resolve_data_dir(data_dir).resolve()))


@lru_cache(maxsize=4)
def _hub_forbidden(hub_dir: str | None) -> frozenset[str]:  # noqa: ARG001 - the cache key: where the Hub is read
    from .hub_eval import hub_eval_texts  # mteb: imported only without a mirror

    keys = {normalize_text(t) for t in hub_eval_texts()}
    keys.discard("")
    return frozenset(keys)


def forbidden_source(data_dir: str | os.PathLike | None = None) -> str:
    """Where :func:`eval_test_texts` reads the forbidden texts from (a cache key): the mirror's folder, or the Hub."""
    if data_dir is None and uses_hub():
        return f"hub:{os.environ.get('KALM_HUB_DIR') or 'huggingface.co'}"
    return str(resolve_data_dir(data_dir).resolve())


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
