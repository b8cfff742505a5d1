"""The row-cap rule of capped (smoke / cpu) evaluation, one owner for the mirror's tasks and the Hub's.

A capped split keeps ``cap`` of its ``n`` rows, the same rows on every run and machine: indices drawn without
replacement by a generator seeded with ``CAP_SEED`` and the split's name, then sorted (file order kept). A capped
retrieval split keeps ``cap`` queries and a corpus of their relevant documents plus up to ``CORPUS_PER_QUERY × cap``
others, drawn by the same rule. Capped scores compare a run's models with each other, never with MTEB.
"""
from __future__ import annotations

import numpy as np

CAP_SEED = 0
CORPUS_PER_QUERY = 10  # distractor documents kept per capped query in retrieval


def cap_indices(n: int, cap: int | None, salt: str) -> np.ndarray:
    """Sorted indices of ``cap`` of ``n`` rows, the same on every run (seeded by CAP_SEED and ``salt``)."""
    if cap is None or cap >= n:
        return np.arange(n)
    seed = (CAP_SEED, *[ord(c) for c in salt])
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def take(rows: list, cap: int | None, salt: str) -> list:
    return [rows[i] for i in cap_indices(len(rows), cap, salt)]
