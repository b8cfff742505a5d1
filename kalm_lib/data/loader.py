"""Load one catalog dataset as normalised, validated, decontaminated records.

Pipeline for every record: read (file:line) -> validate (schema of its format) -> normalise ->
remove evaluation test texts -> (classification/clustering) example-based labeling -> optional
deterministic subset of ``max_rows``. A malformed record raises :class:`RecordError` naming file, line
and field; with ``skip_invalid=True`` it is skipped and counted instead. Every record left out, for
whatever reason, is counted in the :class:`LoadReport`, which is logged.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .catalog import CatalogEntry, HubSource, get_entry, resolve_data_dir
from .errors import DataFileError, LoadReport, RecordError, log
from .formats import normalise
from .hub import iter_hub_rows, map_hub_row
from .jsonl import iter_jsonl
from .labeling import example_based_labeling
from .overlap import forbidden_source, decontaminate as _decontaminate
from .overlap import eval_test_texts
from .validation import validate_record


def _local_rows(path: Path, report: LoadReport, skip_invalid: bool) -> Iterator[tuple[str, int, dict]]:
    if not path.is_file():
        raise FileNotFoundError(f"{report.name}: {path} does not exist (is KALM_DATA_DIR right?)")
    on_error = None
    if skip_invalid:
        def on_error(err: RecordError) -> None:
            report.read += 1
            report.add_invalid(err)
    for line, obj in iter_jsonl(path, on_error=on_error):
        yield str(path), line, obj


def _convert(rows, entry: CatalogEntry, fmt: str, report: LoadReport, skip_invalid: bool,
             forbidden: frozenset, max_rows: int | None = None) -> list[dict]:
    """Validate and normalise rows; with ``max_rows`` (a stream) stop once that many records are kept."""
    records: list[dict] = []
    for src, line, raw in rows:
        report.read += 1
        try:
            if fmt == "hub":
                raw = map_hub_row(raw, src, line, report)
            validate_record(raw, fmt, src, line)
        except RecordError as err:
            if not skip_invalid:
                raise
            report.add_invalid(err)
            continue
        rec = normalise(raw, entry, fmt)
        if isinstance(rec, str):
            report.dropped[rec] += 1
            continue
        if max_rows is not None and forbidden:  # a stream is cut at max_rows: decontaminate as it flows
            kept = _decontaminate([rec], forbidden, report)
            if not kept:
                continue
            rec = kept[0]
        records.append(rec)
        if max_rows is not None and len(records) >= max_rows:
            break
    if max_rows is None and forbidden:
        records = _decontaminate(records, forbidden, report)
    return records


_CACHE: dict[tuple, tuple[list[dict], LoadReport]] = {}
_CACHE_SIZE = 48


def _read_local_cached(entry: CatalogEntry, file: Path, fmt: str, skip_invalid: bool, data_dir,
                       decontaminate: bool) -> tuple[list[dict], LoadReport]:
    """Parsed, validated, normalised, decontaminated records of a local file, cached in-process by the
    file's identity (path, size, mtime): notebooks and tests read the same files many times."""
    st = file.stat() if file.is_file() else None
    key = (entry.name, entry.format, entry.min_score, str(file.resolve()), st and (st.st_size, st.st_mtime_ns), fmt, skip_invalid, decontaminate,
           forbidden_source(data_dir) if decontaminate else None)
    if key not in _CACHE:
        report = LoadReport(entry.name, decontaminated=decontaminate, source=str(file))
        forbidden = eval_test_texts(data_dir) if decontaminate else frozenset()
        records = _convert(_local_rows(file, report, skip_invalid), entry, fmt, report, skip_invalid, forbidden)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (records, report)
    records, report = _CACHE[key]
    return list(records), copy.deepcopy(report)  # records are copied by the caller once subset (_own)


def _own(records: list[dict]) -> list[dict]:
    """Private copies of (cached) records, so callers may edit what they get."""
    return [{k: (list(v) if isinstance(v, list) else v) for k, v in r.items()} for r in records]


def load_with_report(name_or_entry: str | CatalogEntry, split: str = "train", data_dir: str | os.PathLike | None = None,
                     max_rows: int | None = None, skip_invalid: bool = False, seed: int = 0,
                     decontaminate: bool = True, path: str | os.PathLike | None = None, source: str = "auto",
                     num_pos: int = 4, num_neg: int = 16) -> tuple[list[dict], LoadReport]:
    """Records ``{"query", "pos", "neg", ...}`` of one dataset and the report of what was left out.

    ``path`` reads another file in the train layout for this dataset (a mined or teacher-scored file).
    ``source``: "auto" (local file if the catalog has one, else the Hub), "local" or "hub".
    ``max_rows``: a deterministic random subset (``seed``) of a local file; the first rows of a shuffled
    Hub stream. ``num_pos``/``num_neg``: candidates kept per example by example-based labeling (cls).
    ``decontaminate=False`` keeps evaluation test texts (a WARNING, and ``report.decontaminated`` is False);
    with True, an evaluation file that cannot be read is an error naming it.
    ``name_or_entry`` may also be a mapping declaring a dataset (see :func:`~kalm_lib.data.catalog.entry_from_mapping`).
    Zero records is not an error here (the report says why); :func:`stage_records` decides."""
    entry = get_entry(name_or_entry)
    fmt = "train" if path is not None else entry.format
    use_hub = path is None and (source == "hub" or (source == "auto" and entry.path is None))
    if not decontaminate:
        log.warning("%s: decontamination against evaluation test texts is OFF", entry.name)
    if use_hub:
        if entry.hub is None:
            raise ValueError(f"{entry.name}: no Hub source in the catalog")
        hub = entry.hub if split == entry.hub.split else HubSource(entry.hub.repo, entry.hub.data_dir, split)
        if max_rows is None:
            log.warning("%s: streaming the whole Hub dataset into memory (no max_rows)", entry.name)
        report = LoadReport(entry.name, decontaminated=decontaminate,
                            source=f"hf://datasets/{hub.repo}/{hub.data_dir or ''} ({hub.split})")
        forbidden = eval_test_texts(data_dir) if decontaminate else frozenset()
        records = _convert(iter_hub_rows(hub, seed=seed), entry, "hub", report, skip_invalid, forbidden,
                           max_rows=max_rows)
        report.kept = len(records)
        return records, report
    if split != "train":
        raise ValueError(f"{entry.name}: the catalog holds training data only (split='train'); evaluation "
                         f"splits are read by the evaluation code and never trained on")
    file = Path(path) if path is not None else entry.local_path(data_dir)
    if file is None:
        raise ValueError(f"{entry.name}: no local file in the catalog (source='hub' streams it)")
    if not file.is_file():
        raise FileNotFoundError(f"{entry.name}: {file} does not exist (is KALM_DATA_DIR right?)")
    records, report = _read_local_cached(entry, file, fmt, skip_invalid, data_dir, decontaminate)

    keep = None
    if max_rows is not None and len(records) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(records), size=max_rows, replace=False))
        report.subsampled += len(records) - max_rows
    if fmt == "cls":  # label the kept examples, drawing p⁺/p⁻ from the whole dataset
        records = example_based_labeling(records, num_pos=num_pos, num_neg=num_neg, seed=seed, report=report,
                                         indices=keep)
    elif keep is not None:
        records = _own([records[i] for i in keep])
    else:
        records = _own(records)
    report.kept = len(records)
    return records, report


def load_records(name_or_entry: str | CatalogEntry, split: str = "train", data_dir: str | os.PathLike | None = None,
                 max_rows: int | None = None, skip_invalid: bool = False, **kw) -> list[dict]:
    """Normalised records of one dataset (see :func:`load_with_report`); the report is logged."""
    records, report = load_with_report(name_or_entry, split=split, data_dir=data_dir, max_rows=max_rows,
                                       skip_invalid=skip_invalid, **kw)
    report.log()
    return records


def to_hf_dataset(records: list[dict]):
    """The records as a ``datasets.Dataset`` (e.g. for ``.map``/``.save_to_disk``)."""
    import datasets

    return datasets.Dataset.from_list(records)


def load_hf_dataset(name_or_entry: str | CatalogEntry, **kw):
    """:func:`load_records` as a ``datasets.Dataset`` (validated, decontaminated, labeled)."""
    return to_hf_dataset(load_records(name_or_entry, **kw))


def load_corpus(name_or_entry: str | CatalogEntry, data_dir: str | os.PathLike | None = None,
                limit: int | None = None, seed: int = 0, decontaminate: bool = True) -> list[str]:
    """Candidate documents for mining from the entry's ``mining_corpus`` (BEIR ``corpus.jsonl``;
    text = "title text"), minus evaluation test texts (unless ``decontaminate=False``: a WARNING).
    Empty list if the entry has none; a corpus file with no document is a :class:`DataFileError`."""
    entry = get_entry(name_or_entry)
    if not entry.mining_corpus:
        return []
    path = resolve_data_dir(data_dir) / entry.mining_corpus
    if not decontaminate:
        log.warning("%s: mining corpus %s: decontamination against evaluation test texts is OFF", entry.name, path)
    forbidden = eval_test_texts(data_dir) if decontaminate else frozenset()
    from .overlap import normalize_text

    docs, removed, n = [], 0, 0
    for line, obj in iter_jsonl(path):
        n += 1
        for k in ("_id", "text"):
            if k not in obj:
                raise RecordError(path, line, k, "missing")
        for k in ("text", "title"):
            if k in obj and not isinstance(obj[k], str):
                raise RecordError(path, line, k, f"expected a string, got {type(obj[k]).__name__}")
        text = f"{obj['title']} {obj['text']}" if obj.get("title") else obj["text"]
        if not text.strip():
            raise RecordError(path, line, "text", "empty string")
        if normalize_text(text) in forbidden or normalize_text(obj["text"]) in forbidden:
            removed += 1
            continue
        docs.append(text)
    if not n:
        raise DataFileError(path, f"{entry.name}: mining corpus has no documents (empty file)")
    log.info("%s: mining corpus %s: %d docs (%d evaluation test docs removed)", entry.name, path, len(docs), removed)
    if limit is not None and len(docs) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(docs), size=limit, replace=False))
        docs = [docs[i] for i in keep]
    return docs
