"""Contrastive distillation: KL(P_t ‖ P_s) over each query's candidate list (KaLM-Embedding-V2.5, PAPER.md §2.4).

Equation (arXiv 2506.20923 v3+; [S] paper note, PAPER.md §2.4):

    P_t(c | i) = e^{z_{t,ic}/τ_kd} / Σ_{c'} e^{z_{t,ic'}/τ_kd}        teacher
    P_s(c | i) = e^{s(q_i, c)/τ_kd} / Σ_{c'} e^{s(q_i, c')/τ_kd}      student, same τ_kd
    L_KL       = E_i [ D_KL(P_t(·|i) ‖ P_s(·|i)) ] = E_i Σ_c P_t(c|i) (log P_t(c|i) − log P_s(c|i))

Symbols:
    candidates c of query i   [p_i⁺, p_{i,1}⁻, …, p_{i,M}⁻]: its own positive and its own hard negatives (the paper
                              does not say; mixed negatives are excluded because the teacher has no score for them)
    z_t                       teacher scores, (B, 1+M), column 0 = positive; in the paper the teacher is
                              Qwen3-Embedding-8B and z_t are its cosine similarities (precomputed offline [I])
    s(q_i, c)                 student cosine similarity; q, p⁺, p⁻ must be L2-normalised
    τ_kd                      temperature on both sides; default 0.05 (the paper's ablation: "Mid = 0.05 best")

The direction is FORWARD KL from teacher to student (mode-covering): the sum is weighted by P_t.
The total objective is contrastive + weight · L_KL (objective.py); the paper's weight is not known (1:1 prior).

Missing teacher scores are never guessed: `teacher_mask` (B, 1+M) bool marks the valid ones.
    * a row with some False entries: both P_t and P_s are renormalised over that row's valid candidates;
    * a row with no valid entry contributes nothing, and the mean is over rows that have at least one score;
    * no row has a score: the loss is 0 (still attached to the graph);
    * a NaN/inf teacher score where the mask is True (or with no mask) raises a ValueError.

Shapes: q (B, d), p⁺ (B, d), p⁻ (B, M, d) or None, teacher_scores (B, 1+M), teacher_mask (B, 1+M) bool or None
→ scalar. Computed in float32 (float64 stays float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kalm_lib.losses._checks import check_embeddings, check_positive, compute_dtype, loss_error

_FILE = "distillation.py"

DEFAULT_TAU_KD = 0.05


def student_candidate_scores(q: Tensor, p_pos: Tensor, p_neg: Tensor | None) -> Tensor:
    """s(q_i, c) over [p_i⁺, p_{i,1..M}⁻] → (B, 1+M) in the compute dtype."""
    dt = compute_dtype(q)
    qf = q.to(dt)
    cols = [(qf * p_pos.to(dt)).sum(-1, keepdim=True)]  # (B,1)
    if p_neg is not None:
        cols.append(torch.einsum("bd,bmd->bm", qf, p_neg.to(dt)))  # (B,M)
    return torch.cat(cols, dim=1)


def distill_kl_loss(
    q: Tensor,
    p_pos: Tensor,
    p_neg: Tensor | None,
    teacher_scores: Tensor,
    teacher_mask: Tensor | None = None,
    *,
    tau_kd: float = DEFAULT_TAU_KD,
) -> Tensor:
    """Mean over queries (with scores) of KL(P_t ‖ P_s) on the own-candidate list; see the module docstring."""
    b, m, _ = check_embeddings(_FILE, q, p_pos, p_neg)
    check_positive(_FILE, "tau_kd", tau_kd)
    if not isinstance(teacher_scores, Tensor) or not teacher_scores.is_floating_point():
        raise loss_error(_FILE, "teacher_scores", f"must be a floating-point torch.Tensor, got "
                                                  f"{getattr(teacher_scores, 'dtype', type(teacher_scores).__name__)}")
    if tuple(teacher_scores.shape) != (b, 1 + m):
        raise loss_error(_FILE, "teacher_scores", f"must have shape (B, 1+M) = ({b}, {1 + m}) (column 0 = positive), "
                                                  f"got {tuple(teacher_scores.shape)}")
    if teacher_mask is None:
        mask = torch.ones(b, 1 + m, dtype=torch.bool, device=q.device)
    else:
        if not isinstance(teacher_mask, Tensor) or teacher_mask.dtype != torch.bool:
            raise loss_error(_FILE, "teacher_mask", f"must be a bool tensor, got "
                                                    f"{getattr(teacher_mask, 'dtype', type(teacher_mask).__name__)}")
        if tuple(teacher_mask.shape) != (b, 1 + m):
            raise loss_error(_FILE, "teacher_mask", f"must have shape ({b}, {1 + m}), got {tuple(teacher_mask.shape)}")
        mask = teacher_mask.to(q.device)
    t = teacher_scores.detach().to(device=q.device, dtype=compute_dtype(q))
    bad = mask & ~torch.isfinite(t)
    if bad.any():
        i, c = (int(x) for x in bad.nonzero()[0])
        raise loss_error(_FILE, "teacher_scores", f"non-finite value {t[i, c].item()} at (query {i}, candidate {c}) "
                                                  f"where teacher_mask is True; mark missing scores False instead")

    s = student_candidate_scores(q, p_pos, p_neg) / tau_kd  # (B, 1+M)
    t = t.masked_fill(~mask, 0.0) / tau_kd  # zero-fill first: NaN·0 would poison the sums
    has_scores = mask.any(dim=1)  # (B,)
    # rows without any score get a full softmax (finite, then dropped) so that no NaN reaches the backward pass
    soft_mask = mask | ~has_scores[:, None]
    log_ps = torch.log_softmax(s.masked_fill(~soft_mask, float("-inf")), dim=1).masked_fill(~mask, 0.0)
    log_pt = torch.log_softmax(t.masked_fill(~soft_mask, float("-inf")), dim=1).masked_fill(~mask, 0.0)
    pt = log_pt.exp().masked_fill(~mask, 0.0)
    kl_rows = (pt * (log_pt - log_ps)).sum(dim=1)  # (B,) forward KL, weighted by the teacher
    # no host sync: with no scored row this is 0 · finite / 1 = 0, still attached to the graph
    return (kl_rows * has_scores).sum() / has_scores.sum().clamp(min=1)
