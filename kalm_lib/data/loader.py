"""Load one catalog dataset as normalised, validated, decontaminated records.

Pipeline for every record: read (file:line) -> validate (schema of its format) -> normalise ->
remove evaluation test texts -> (classification/clustering) example-based labeling -> optional
deterministic subset of ``max_rows``. A malformed record raises :class:`RecordError` naming file, line
and field; with ``skip_invalid=True`` it is skipped and counted instead. Every record left out, for
whatever reason, is counted in the :class:`LoadReport`, which is logged.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .catalog import CatalogEntry, get_entry, resolve_data_dir
from .errors import LoadReport, RecordError, log
from .formats import normalise
from .hub import iter_hub_rows, map_hub_row
from .jsonl import iter_jsonl
from .labeling import example_based_labeling
from .overlap import decontaminate as _decontaminate
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


def load_with_report(name_or_entry: str | CatalogEntry, split: str = "train", data_dir: str | os.PathLike | None = None,
                     max_rows: int | None = None, skip_invalid: bool = False, seed: int = 0,
                     decontaminate: bool = True, path: str | os.PathLike | None = None, source: str = "auto",
                     num_pos: int = 4, num_neg: int = 16) -> tuple[list[dict], LoadReport]:
    """Records ``{"query", "pos", "neg", ...}`` of one dataset and the report of what was left out.

    ``path`` reads another file in the train layout for this dataset (a mined or teacher-scored file).
    ``source``: "auto" (local file if the catalog has one, else the Hub), "local" or "hub".
    ``num_pos``/``num_neg``: candidates kept per example by example-based labeling (cls format)."""
    entry = get_entry(name_or_entry)
    report = LoadReport(entry.name)
    fmt = "train" if path is not None else entry.format
    use_hub = path is None and (source == "hub" or (source == "auto" and entry.path is None))
    if use_hub:
        if entry.hub is None:
            raise ValueError(f"{entry.name}: no Hub source in the catalog")
        rows = iter_hub_rows(entry.hub if split == entry.hub.split else type(entry.hub)(entry.hub.repo, entry.hub.data_dir, split), seed=seed)
        fmt = "hub"
    else:
        if split != "train":
            raise ValueError(f"{entry.name}: the catalog holds training data only (split='train'); evaluation "
                             f"splits are read by the evaluation code and never trained on")
        file = Path(path) if path is not None else entry.local_path(data_dir)
        if file is None:
            raise ValueError(f"{entry.name}: no local file in the catalog (source='hub' streams it)")
        rows = _local_rows(file, report, skip_invalid)
    forbidden = eval_test_texts(data_dir) if decontaminate else frozenset()
    if not decontaminate:
        log.warning("%s: decontamination against evaluation test texts is OFF", entry.name)

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
        if forbidden:
            kept = _decontaminate([rec], forbidden, report)
            if not kept:
                continue
            rec = kept[0]
        records.append(rec)
        if use_hub and max_rows is not None and len(records) >= max_rows:
            break  # a streamed source is already shuffled: take the first max_rows

    keep = None
    if not use_hub and max_rows is not None and len(records) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(records), size=max_rows, replace=False))
        report.subsampled += len(records) - max_rows
    if fmt == "cls":  # label the kept examples, drawing p⁺/p⁻ from the whole dataset
        records = example_based_labeling(records, num_pos=num_pos, num_neg=num_neg, seed=seed, report=report,
                                         indices=keep)
    elif keep is not None:
        records = [records[i] for i in keep]
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


def load_corpus(name_or_entry: str | CatalogEntry, data_dir: str | os.PathLike | None = None,
                limit: int | None = None, seed: int = 0) -> list[str]:
    """Candidate documents for mining from the entry's ``mining_corpus`` (BEIR ``corpus.jsonl``;
    text = "title text"), minus evaluation test texts. Empty list if the entry has none."""
    entry = get_entry(name_or_entry)
    if not entry.mining_corpus:
        return []
    path = resolve_data_dir(data_dir) / entry.mining_corpus
    forbidden = eval_test_texts(data_dir)
    from .overlap import normalize_text

    docs, removed = [], 0
    for line, obj in iter_jsonl(path):
        for k in ("_id", "text"):
            if k not in obj:
                raise RecordError(path, line, k, "missing")
        text = f"{obj['title']} {obj['text']}" if obj.get("title") else obj["text"]
        if not text.strip():
            raise RecordError(path, line, "text", "empty string")
        if normalize_text(text) in forbidden or normalize_text(obj["text"]) in forbidden:
            removed += 1
            continue
        docs.append(text)
    log.info("%s: mining corpus %s: %d docs (%d evaluation test docs removed)", entry.name, path, len(docs), removed)
    if limit is not None and len(docs) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(docs), size=limit, replace=False))
        docs = [docs[i] for i in keep]
    return docs
