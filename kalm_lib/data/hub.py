"""Streaming the paper's public training sets from the Hugging Face Hub (gpu / paper profiles).

``datasets.load_dataset(repo, data_dir=..., streaming=True)`` reads the parquet shards lazily, so a
profile can take its ``max_rows`` from a 100 GB source without downloading it. The column names of
``HIT-TMG/KaLM-embedding-pretrain-data`` and ``KaLM-Embedding/KaLM-embedding-finetuning-data`` could not
be inspected offline, so each row is mapped onto the train layout through the usual aliases; a row
that has none of them raises an error listing the columns it does have. Never used by tests (no Hub here).
"""
from __future__ import annotations

from typing import Iterator

from .catalog import HubSource
from .errors import LoadReport, RecordError

QUERY_KEYS = ("query", "anchor", "question", "title", "sentence1", "prompt_query")
POS_KEYS = ("pos", "positive", "positives", "response", "answer", "document", "sentence2", "passage")
NEG_KEYS = ("neg", "negative", "negatives", "hard_negatives")
INSTRUCTION_KEYS = ("instruction", "prompt", "task_instruction")


def iter_hub_rows(hub: HubSource, seed: int = 0, shuffle_buffer: int = 10_000) -> Iterator[tuple[str, int, dict]]:
    """Yield ``(source, row_number, row)`` from a streamed Hub dataset (shuffled with a buffer)."""
    import datasets

    ds = datasets.load_dataset(hub.repo, data_dir=hub.data_dir, split=hub.split, streaming=True)
    if shuffle_buffer:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    source = f"hf://datasets/{hub.repo}" + (f"/{hub.data_dir}" if hub.data_dir else "")
    for i, row in enumerate(ds):
        yield source, i + 1, row


def _first(row: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in row and row[k] is not None:
            return k, row[k]
    return None, None


def map_hub_row(row: dict, source: str, line: int, report: LoadReport | None = None) -> dict:
    """A Hub row -> the train layout ``{"query", "pos", "neg"[, "instruction"]}`` (validated afterwards)."""
    qk, q = _first(row, QUERY_KEYS)
    pk, p = _first(row, POS_KEYS)
    if qk is None or pk is None:
        missing = "query" if qk is None else "pos"
        raise RecordError(source, line, missing, f"no column for it among {sorted(row)} "
                          f"(add the right alias to hub.py)")
    nk, n = _first(row, NEG_KEYS)
    ik, instr = _first(row, INSTRUCTION_KEYS)
    out = {"query": q, "pos": [p] if isinstance(p, str) else p}
    if nk is not None:
        out["neg"] = [n] if isinstance(n, str) else n
    if ik is not None and isinstance(instr, str) and instr.strip():
        out["instruction"] = instr
    if report is not None:
        for k in row:
            if k not in (qk, pk, nk, ik):
                report.ignored_fields[k] += 1
    return out
