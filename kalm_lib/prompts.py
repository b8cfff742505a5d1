"""The KaLM query template, the one owner of it (model, data and evaluation all import it from here).

    query    : "Instruct: {instruction} \\n Query: {text}"
    document : raw; a symmetric task's documents (STS, pair classification) carry the instruction too

The prefix is mteb's reference loader's (``kalm_models.py``: ``KaLM_INSTRUCTION``); kalm_lib/evaluation/encoder.py
checks at import that the two have not drifted apart.
"""

from __future__ import annotations

KALM_QUERY_TEMPLATE = "Instruct: {instruction} \n Query: "
GENERIC_QUERY_INSTRUCTION = "Given a query, retrieve documents that answer the query"
"""A saved model's ``"query"`` prompt (mteb's last fallback, and ``encode_query``'s default): KaLM's own
instruction for generic retrieval (``KaLM_v2_task_prompts["SciFact"]`` and others)."""


def format_query(text: str, instruction: str | None) -> str:
    """``"Instruct: {instruction} \\n Query: {text}"``, or ``text`` unchanged without an instruction."""
    if not instruction:
        return text
    return KALM_QUERY_TEMPLATE.format(instruction=instruction) + text


def format_pair(query: str, document: str, instruction: str | None, symmetric: bool = False) -> tuple[str, str]:
    """Format a (query, document) pair: the query is instructed; the document only for symmetric tasks."""
    return format_query(query, instruction), (format_query(document, instruction) if symmetric else document)
