"""Exact top-k inner-product search: torch matmul over corpus chunks, or faiss ``IndexFlatIP``.

For unit vectors the inner product is the cosine s(q, p). Results are sorted by score, descending;
among the retrieved items equal scores are ordered by corpus index (exact ties at the k-th place may
pick either item, as any top-k does).
"""
from __future__ import annotations

import numpy as np
import torch

FAISS_MIN_CORPUS = 200_000  # below this the torch path is as fast and avoids the optional dependency


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def exact_topk(queries: np.ndarray, corpus: np.ndarray, k: int, chunk_size: int = 8192,
               use_faiss: bool | str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """``(scores, indices)``, both (n_queries, k'), k' = min(k, n_corpus), best first.

    queries (Q, d), corpus (N, d): float32, L2-normalised by the caller."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    c = np.ascontiguousarray(corpus, dtype=np.float32)
    k = min(int(k), len(c))
    if k <= 0 or len(q) == 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if use_faiss is True or (use_faiss == "auto" and len(c) >= FAISS_MIN_CORPUS and _faiss_available()):
        import faiss

        index = faiss.IndexFlatIP(c.shape[1])
        index.add(c)
        scores, idx = index.search(q, k)
        return scores, idx.astype(np.int64)
    qt = torch.from_numpy(q)
    best_s = torch.full((len(q), 0), -float("inf"))
    best_i = torch.zeros((len(q), 0), dtype=torch.long)
    for start in range(0, len(c), chunk_size):
        ct = torch.from_numpy(c[start:start + chunk_size])
        s = qt @ ct.T                                                   # (Q, chunk)
        kk = min(k, s.shape[1])
        ts, ti = torch.topk(s, kk, dim=1)
        best_s = torch.cat([best_s, ts], dim=1)
        best_i = torch.cat([best_i, ti + start], dim=1)
        # keep the k best so far; ties broken by index via a stable sort on (−score, index)
        order = torch.argsort(best_i, dim=1, stable=True)
        best_s, best_i = best_s.gather(1, order), best_i.gather(1, order)
        order = torch.argsort(-best_s, dim=1, stable=True)[:, :k]
        best_s, best_i = best_s.gather(1, order), best_i.gather(1, order)
    return best_s.numpy(), best_i.numpy()


def count_above(queries: np.ndarray, corpus: np.ndarray, thresholds: np.ndarray, chunk_size: int = 8192,
                eps: float = 1e-6) -> np.ndarray:
    """``#{c : q_i·c > thresholds_i + eps}`` for every query i over the whole corpus (exact ranks at any
    depth). ``eps`` absorbs float32 rounding between matmul and dot paths: near-ties count as ties."""
    qt = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    th = torch.from_numpy(np.asarray(thresholds, dtype=np.float32))[:, None]
    out = torch.zeros(len(qt), dtype=torch.long)
    for start in range(0, len(corpus), chunk_size):
        ct = torch.from_numpy(np.ascontiguousarray(corpus[start:start + chunk_size], dtype=np.float32))
        out += (qt @ ct.T > th + eps).sum(dim=1)
    return out.numpy()
