"""Focal-style reweighting of InfoNCE (KaLM-Embedding-V2, PAPER.md §2.2).

Equation (arXiv 2506.20923; [S] paper note, PAPER.md §2.2):

    p_i      = e^{s(q_i,p_i⁺)/τ} / Z_i
    w_i      = (1 − p_i)^γ
    L_focal  = E_{i∈N} [ −w_i · log p_i ]

Symbols:
    Z_i   the InfoNCE partition of infonce.py: all in-batch positives, all hard negatives of the batch, and query
          i's own mixed negatives (hard_negative_mixing.py) when given, so p_i "includes the synthetic negatives"
    γ     focusing exponent; γ = 0 gives w_i = 1 and reproduces InfoNCE exactly (same code path, bit-identical).
          THE PAPER'S γ IS NOT KNOWN. The default 0.5 is only a prior: an unverified survey reports γ = 0.5 for the
          sibling KaLM-Embedding-Gemma3-12B-2511 (PAPER.md §2.2).
    w_i   one weight per query (per sample), not per negative

Reduction: plain mean over queries of w_i·(−log p_i), not normalised by Σ_i w_i (the paper does not say; PAPER.md
§2.2 [I]). detach_weight=True stops the gradient through w_i (pure reweighting); the default False is the standard
focal loss, where w_i is differentiated too. Whether the authors detach is unknown.

Shapes: q (B, d), p⁺ (B, d), p⁻ (B, M, d) or None, mixed_neg (B, K, d) or None → scalar.

Numerics: 1 − p_i is formed as exp(logsumexp_{c≠i} ℓ_ic − logsumexp_c ℓ_ic) rather than 1 − exp(log p_i): at
τ = 0.01 p_i can round to exactly 1 in float32, and d/dp (1−p)^γ is infinite at p = 1 for γ < 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kalm_lib.losses._checks import loss_error
from kalm_lib.losses.infonce import DEFAULT_TAU, infonce_logits, nll_from_logits

_FILE = "focal.py"


def _check_gamma(gamma: float) -> None:
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma) or gamma < 0:
        raise loss_error(_FILE, "gamma", f"must be a finite number >= 0, got {gamma!r}")


def focal_from_logits(logits: Tensor, *, gamma: float, detach_weight: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """logits (B, C) with the positive of row i at column i → (loss scalar, w (B,), p (B,))."""
    _check_gamma(gamma)
    nll = nll_from_logits(logits)  # (B,) = −log p_i
    b = logits.shape[0]
    eye = torch.eye(b, logits.shape[1], dtype=torch.bool, device=logits.device)
    # log(1 − p_i) = log Σ_{c≠i} e^{ℓ_ic} − log Z_i  (exact; stays finite when p_i rounds to 1)
    log_one_minus_p = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1) - torch.logsumexp(logits, dim=1)
    p = torch.exp(-nll)
    if gamma == 0:
        w = torch.ones_like(nll)  # 0 · log(1−p) would be NaN if p == 1; γ = 0 must equal InfoNCE exactly
    else:
        w = torch.exp(gamma * log_one_minus_p)
    if detach_weight:
        w = w.detach()
    return (w * nll).mean(), w, p


def focal_info_nce_loss(
    q: Tensor,
    p_pos: Tensor,
    p_neg: Tensor | None = None,
    mixed_neg: Tensor | None = None,
    *,
    gamma: float,
    tau: float = DEFAULT_TAU,
    detach_weight: bool = False,
    use_hard_negatives: bool = True,
    expanded_negatives: bool = False,
    own_only: Tensor | None = None,
) -> Tensor:
    """L_focal = mean_i (1 − p_i)^γ · (−log p_i) over the Z_i of info_nce_loss (same arguments; inputs L2-normalised).
    γ has no default here: its one default is ``ObjectiveConfig.gamma``."""
    _check_gamma(gamma)
    logits = infonce_logits(q, p_pos, p_neg, tau=tau, use_hard_negatives=use_hard_negatives,
                            expanded_negatives=expanded_negatives, mixed_neg=mixed_neg, own_only=own_only)
    loss, _, _ = focal_from_logits(logits, gamma=gamma, detach_weight=detach_weight)
    return loss
