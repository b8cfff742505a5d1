"""Cross-device gathering of embeddings for the global contrastive loss (PAPER.md §2.1, "gathered across devices").

    gather_with_grad(t) = cat([t_0, …, t_{W−1}], dim=0), where slot r = rank's own LOCAL tensor (keeps its autograd
                          graph) and the other slots are all_gather copies (no gradient).

Why the caller multiplies the loss by world_size W before backward (Tevatron's choice, not the official code's):
every rank gathers the same q, p⁺, p⁻ (and teacher scores), so every rank computes the same GLOBAL loss L(θ) over
all W·B queries × all passages. Backward on rank r only reaches rank r's own slot, so rank r's parameter gradient is
g_r = Σ_{x ∈ slot r} ∂L/∂x · ∂x/∂θ, and Σ_r g_r = ∂L/∂θ exactly (every cross term q_i·p_j is reached through the slot
of q_i and through the slot of p_j). DDP then AVERAGES gradients over ranks, giving (1/W)·∂L/∂θ; scaling the loss by
W restores ∂L/∂θ, i.e. exactly the single-process gradient of the loss on the global batch, so the learning rate
does not depend on W. (FlagEmbedding's variant that keeps only the local queries' rows misses part of the cross terms;
the official KaLM code computes the global loss but does not scale, so its gradient is L's divided by W — with Adam
this only changes the effective ε and the gradient-clipping threshold.) Log the UNSCALED loss.

all_gather needs identical shapes on every rank (same B, M, d), which a fixed per-device batch gives.
Outside an initialised process group gather_with_grad is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """W of the default process group, 1 when torch.distributed is absent or not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(t: Tensor) -> Tensor:
    """(B, ...) on each of W ranks → (W·B, ...), rank-ordered; the local slot keeps its gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    t = t.contiguous()
    slots = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(slots, t)
    slots[dist.get_rank()] = t  # all_gather's output has no grad_fn; put the local graph back
    return torch.cat(slots, dim=0)
