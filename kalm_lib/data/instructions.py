"""Task instructions in training (PAPER.md §3.5).

    query   : "Instruct: {I_t} \\n Query: {q}"     (KaLM template, ``kalm_lib.prompts.format_query``)
    passage : p                                    (asymmetric tasks)
    passage : "Instruct: {I_t} \\n Query: {p}"     (symmetric tasks: STS, pair classification, and here
                                                    example-labelled classification/clustering)

The instruction texts I_t are data: one per dataset in ``catalog.yaml`` (a record may carry its own
``instruction``, e.g. a Hub row, which then wins). Nothing here hard-codes an instruction string.
"""
from __future__ import annotations

from kalm_lib.prompts import KALM_QUERY_TEMPLATE, format_query

from .catalog import CatalogEntry, get_entry

__all__ = ["KALM_QUERY_TEMPLATE", "format_query", "get_instruction", "apply_instruction", "instruction_table"]


def get_instruction(name_or_entry: str | CatalogEntry) -> str:
    return get_entry(name_or_entry).instruction


def apply_instruction(query: str, passages: list[str], entry: CatalogEntry | str,
                      instruction: str | None = None) -> tuple[str, list[str]]:
    """Format one example: the query always, the passages (pos and neg alike) only if symmetric."""
    entry = get_entry(entry)
    instr = instruction or entry.instruction
    q = format_query(query, instr)
    ps = [format_query(p, instr) for p in passages] if entry.symmetric else list(passages)
    return q, ps


def instruction_table(names: list[str] | None = None):
    """A pandas table of dataset -> task type, symmetric, instruction (for the data notebook)."""
    import pandas as pd

    from .catalog import CATALOG

    rows = [{"dataset": e.name, "task_type": e.task_type, "symmetric": e.symmetric, "instruction": e.instruction}
            for n, e in CATALOG.items() if names is None or n in names]
    return pd.DataFrame(rows)
