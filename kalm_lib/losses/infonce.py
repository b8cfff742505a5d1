"""InfoNCE with in-batch and batch-wide hard negatives (KaLM-Embedding-V2, PAPER.md §2.1).

Equation (arXiv 2506.20923, Eq. 3 as reproduced in PAPER.md §2.1):

    Z_i = e^{s(q_i,p_i⁺)/τ} + Σ_{j≠i} e^{s(q_i,p_j⁺)/τ} + Σ_{j=1..N} Σ_{k=1..M} e^{s(q_i,p_{j,k}⁻)/τ}
    L   = E_i [ −log( e^{s(q_i,p_i⁺)/τ} / Z_i ) ]

Symbols:
    q_i       embedding of query i (instruction ⊕ query, mean-pooled), L2-normalised
    p_i⁺      embedding of query i's positive passage, L2-normalised
    p_{j,k}⁻  k-th mined hard negative of query j, L2-normalised; query i sees the hard negatives of ALL
              queries j in the batch, not only its own
    s(·,·)    cosine similarity = dot product of unit vectors
    τ         temperature; default 0.01 (V1 script `--temperature 0.01`; the V2 value is not known)
    N = B     number of queries in the (gathered) batch, M hard negatives per query

Shapes: q (B, d), p⁺ (B, d), p⁻ (B, M, d) or None → scalar loss.

Options:
    use_hard_negatives=False  pre-training: only the in-batch term (the first two terms of Z_i).
    mixed_neg (B, K, d)       synthetic negatives of hard_negative_mixing.py; row i's K vectors join Z_i of query
                              i only (PAPER.md §2.3).
    expanded_negatives=True   the official code's `use_expaned_neg` (HITsz-TMG/KaLM-Embedding train/modeling.py,
                              off in the released script, NOT in the paper's equation): Z_i also gets
                              Σ_{j≠i} e^{s(q_i,q_j)/τ} + Σ_{j≠i} e^{s(p_i⁺,p_j⁺)/τ}; the j = i terms are masked (−∞).
    own_only (B,) bool        rows whose Z_i keeps only query i's own candidates: its positive, its own hard
                              negatives and mixes; every other query's positive and hard negatives are masked (−∞).
                              For labelled classification/clustering data, where another query's positive or
                              negative is often of query i's own class: a false negative (PAPER.md §9; F2LLM's code
                              uses hard negatives only for such data). Other rows keep the whole batch.

Across devices the inputs are the GATHERED batch (all queries × all passages of all ranks), gathered in one place:
the trainer's step (kalm_lib/train.py, StepRunner._loss, with distributed.gather_with_grad). The returned loss is
NOT scaled: the caller multiplies it by world_size before backward, because DDP averages gradients over ranks (see
distributed.py for why this gives the exact global-batch gradient).

Logits are computed in float32 (float64 stays float64) whatever the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kalm_lib.losses._checks import check_embeddings, check_float_tensor, check_positive, compute_dtype, loss_error

_FILE = "infonce.py"

DEFAULT_TAU = 0.01  # τ: the V1 script's --temperature 0.01 (V2's is not known); ObjectiveConfig.tau takes it


def infonce_logits(
    q: Tensor,
    p_pos: Tensor,
    p_neg: Tensor | None = None,
    *,
    tau: float = DEFAULT_TAU,
    use_hard_negatives: bool = True,
    expanded_negatives: bool = False,
    mixed_neg: Tensor | None = None,
    own_only: Tensor | None = None,
) -> Tensor:
    """Row i holds log-terms of Z_i: s(·,·)/τ for every candidate of query i; the positive sits at column i.

    Column layout (C columns):
        [0, B)                       s(q_i, p_j⁺)/τ                    (column i is the positive)
        [B, B + B·M)                 s(q_i, p_{j,k}⁻)/τ, j-major       (if use_hard_negatives and p⁻ given)
        next K                       s(q_i, mixed_{i,r})/τ             (query i's own mixed negatives)
        next B, next B               s(q_i, q_j)/τ, s(p_i⁺, p_j⁺)/τ    (if expanded_negatives; j = i is −∞)
    Returns (B, C) in float32 (float64 if the inputs are float64).
    """
    b, m, d = check_embeddings(_FILE, q, p_pos, p_neg)
    check_positive(_FILE, "tau", tau)
    dt = compute_dtype(q)
    qf, pf = q.to(dt), p_pos.to(dt)
    blocks = [qf @ pf.T]  # (B, B)
    n_neg = b - 1
    if use_hard_negatives and p_neg is not None and m > 0:
        blocks.append(qf @ p_neg.to(dt).reshape(b * m, d).T)  # (B, B·M)
        n_neg += b * m
    if mixed_neg is not None:
        check_float_tensor(_FILE, "mixed_neg", mixed_neg, 3)
        if mixed_neg.shape[0] != b or mixed_neg.shape[2] != d:
            raise loss_error(_FILE, "mixed_neg", f"must have shape (B={b}, K, d={d}), got {tuple(mixed_neg.shape)}")
        blocks.append(torch.einsum("bd,bkd->bk", qf, mixed_neg.to(dt)))  # (B, K)
        n_neg += mixed_neg.shape[1]
    if expanded_negatives:
        diag = torch.eye(b, dtype=torch.bool, device=q.device)
        blocks.append((qf @ qf.T).masked_fill(diag, float("-inf")))  # (B, B)
        blocks.append((pf @ pf.T).masked_fill(diag, float("-inf")))  # (B, B)
        n_neg += 2 * (b - 1)
    if n_neg == 0:
        raise loss_error(_FILE, "q", "B = 1 with no hard or mixed negatives leaves Z_i with only the positive; "
                                     "the loss would be identically 0")
    logits = torch.cat(blocks, dim=1) / tau
    if own_only is not None:
        if own_only.shape != (b,) or own_only.dtype != torch.bool:
            raise loss_error(_FILE, "own_only", f"must be a bool tensor of shape (B={b},), got "
                                                f"{own_only.dtype} {tuple(own_only.shape)}")
        m_hard = m if (use_hard_negatives and p_neg is not None) else 0
        k = mixed_neg.shape[1] if mixed_neg is not None else 0
        own = _own_columns(b, m_hard, k, logits.shape[1], q.device)
        logits = logits.masked_fill(own_only[:, None] & ~own, float("-inf"))
    return logits


def _own_columns(b: int, m: int, k: int, c: int, device) -> Tensor:
    """(B, C) bool: True where column c of row i is one of query i's own candidates, in the column layout of
    :func:`infonce_logits`: its positive (column i), its M hard negatives, its K mixes; never another
    query's positive, hard negative, query or positive (the expanded blocks)."""
    own = torch.zeros(b, c, dtype=torch.bool, device=device)
    rows = torch.arange(b, device=device)
    own[rows, rows] = True
    if m:
        own[rows[:, None], b + rows[:, None] * m + torch.arange(m, device=device)] = True
    own[:, b + b * m:b + b * m + k] = True
    return own


def nll_from_logits(logits: Tensor) -> Tensor:
    """−log p_i per query, where p_i = e^{logits[i,i]} / Σ_c e^{logits[i,c]} (positive at column i). (B,)"""
    b = logits.shape[0]
    idx = torch.arange(b, device=logits.device)
    return torch.logsumexp(logits, dim=1) - logits[idx, idx]


def info_nce_loss(
    q: Tensor,
    p_pos: Tensor,
    p_neg: Tensor | None = None,
    mixed_neg: Tensor | None = None,
    *,
    tau: float = DEFAULT_TAU,
    use_hard_negatives: bool = True,
    expanded_negatives: bool = False,
    own_only: Tensor | None = None,
) -> Tensor:
    """L = mean_i −log(e^{s(q_i,p_i⁺)/τ} / Z_i). Inputs already L2-normalised; see the module docstring.

    q (B,d), p_pos (B,d), p_neg (B,M,d) or None, mixed_neg (B,K,d) or None → scalar (unscaled by world size).
    """
    logits = infonce_logits(q, p_pos, p_neg, tau=tau, use_hard_negatives=use_hard_negatives,
                            expanded_negatives=expanded_negatives, mixed_neg=mixed_neg, own_only=own_only)
    return nll_from_logits(logits).mean()
