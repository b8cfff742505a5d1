"""Online hard-negative mixing (KaLM-Embedding-V2, PAPER.md §2.3).

New hard negatives are synthesised in embedding space from each query's OWN mined hard negatives and appended to
that query's Z_i only (pass the result as `mixed_neg` to infonce.py / focal.py).

Equations (arXiv 2506.20923; [S] paper note, PAPER.md §2.3):

    pairwise:   h̃_{i,r}⁻ = λ_r · p_{i,j_r}⁻ + (1 − λ_r) · p_{i,k_r}⁻,   λ_r ~ Beta(α, α), α = 2,   r = 1..K
    list-wise:  s̃_i⁻     = Σ_m λ_m · p_{i,m}⁻,   λ = softmax_m( s(q_i, p_{i,m}⁻) / τ_mix ),   Σ_m λ_m = 1
    both are then L2-normalised:  h ← h / ‖h‖₂

Symbols:
    q_i        query embedding (B, d), L2-normalised
    p_{i,m}⁻   m-th hard negative of query i (B, M, d), L2-normalised (full dimension: mix before any Matryoshka
               truncation, PAPER.md §8; the mixed vectors are then truncated and re-normalised per dim like
               every other embedding)
    λ          mixing coefficient(s)
    K          number of pairwise mixes per query (k_pairwise); K = 0 means none
    τ_mix      list-wise temperature

Output: (B, K + [1 if listwise], d), row i = query i's synthetic negatives, in float32 (float64 stays float64).
With K = 0 and listwise=False the output is (B, 0, d) and the loss is exactly the unmixed one.

Choices where the paper is silent (all [I], PAPER.md §2.3 "NOT FOUND"):
    * pairs: for each mix, an ordered pair (j, k) of DISTINCT indices drawn uniformly from the query's M negatives
      (λ ~ Beta(α, α) is symmetric, so order does not matter); needs M ≥ 2.
    * list-wise weights: softmax of the query–negative cosines at τ_mix = 0.05 (default; not from the paper).
      One list-wise mix per query when enabled.
    * gradients: flow into the mixed vectors by default (they are differentiable functions of p⁻ and, for the
      list-wise weights, of q); detach=True stops them, as MoCHi does.
    * randomness: all draws come from `generator` (a seeded torch.Generator; None → torch's default generator on
      the negatives' device), in the order: j (B,K), k (B,K), Gamma(α) (B,K), Gamma(α) (B,K).
      Beta(α,α) = X/(X+Y) with X, Y ~ Gamma(α, 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kalm_lib.losses._checks import check_embeddings, check_float_tensor, check_positive, compute_dtype, loss_error

_FILE = "hard_negative_mixing.py"

DEFAULT_MIX_ALPHA = 2.0
DEFAULT_MIX_TAU = 0.05


def sample_pairwise_mix(
    b: int, m: int, k: int, *, alpha: float = DEFAULT_MIX_ALPHA, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw K mixes per query: j (B,K) long, k (B,K) long with k ≠ j, λ (B,K) ~ Beta(α, α)."""
    check_positive(_FILE, "alpha", alpha)
    if m < 2:
        raise loss_error(_FILE, "p_neg", f"pairwise mixing needs at least 2 hard negatives per query, got M = {m}")
    gdev = generator.device if generator is not None else torch.device(device)
    j = torch.randint(0, m, (b, k), generator=generator, device=gdev)
    kk = torch.randint(0, m - 1, (b, k), generator=generator, device=gdev)
    kk = kk + (kk >= j).long()  # uniform over the m−1 indices ≠ j
    conc = torch.full((b, k), float(alpha), dtype=torch.float64, device=gdev)
    x = torch._standard_gamma(conc, generator=generator)
    y = torch._standard_gamma(conc, generator=generator)
    lam = x / (x + y)
    return j.to(device), kk.to(device), lam.to(device=device, dtype=dtype)


def pairwise_mix(p_neg: Tensor, j: Tensor, k: Tensor, lam: Tensor) -> Tensor:
    """h̃_{i,r} = normalise(λ_{i,r} p_{i,j_{ir}}⁻ + (1−λ_{i,r}) p_{i,k_{ir}}⁻). p_neg (B,M,d), j/k/λ (B,K) → (B,K,d)."""
    rows = torch.arange(p_neg.shape[0], device=p_neg.device)[:, None]  # (B,1)
    lam = lam[..., None]  # (B,K,1)
    mixed = lam * p_neg[rows, j] + (1 - lam) * p_neg[rows, k]
    return F.normalize(mixed, p=2, dim=-1)


def listwise_mix(q: Tensor, p_neg: Tensor, *, tau_mix: float = DEFAULT_MIX_TAU) -> Tensor:
    """s̃_i = normalise(Σ_m softmax_m(s(q_i,p_{i,m}⁻)/τ_mix) p_{i,m}⁻). q (B,d), p_neg (B,M,d) → (B,1,d)."""
    check_positive(_FILE, "tau_mix", tau_mix)
    lam = torch.softmax(torch.einsum("bd,bmd->bm", q, p_neg) / tau_mix, dim=1)  # (B,M)
    mixed = torch.einsum("bm,bmd->bd", lam, p_neg)
    return F.normalize(mixed, p=2, dim=-1)[:, None, :]


def mix_hard_negatives(
    q: Tensor,
    p_neg: Tensor,
    *,
    k_pairwise: int = 0,
    listwise: bool = False,
    alpha: float = DEFAULT_MIX_ALPHA,
    tau_mix: float = DEFAULT_MIX_TAU,
    generator: torch.Generator | None = None,
    detach: bool = False,
) -> Tensor:
    """Synthetic hard negatives per query: q (B,d), p_neg (B,M,d), both L2-normalised → (B, K + listwise, d)."""
    check_float_tensor(_FILE, "q", q, 2)
    check_float_tensor(_FILE, "p_neg", p_neg, 3)
    b, m, d = check_embeddings(_FILE, q, q, p_neg)
    if not isinstance(k_pairwise, int) or isinstance(k_pairwise, bool) or k_pairwise < 0:
        raise loss_error(_FILE, "k_pairwise", f"must be an int >= 0, got {k_pairwise!r}")
    dt = compute_dtype(q)
    qf, nf = q.to(dt), p_neg.to(dt)
    out = [nf.new_zeros(b, 0, d)]
    if k_pairwise > 0:
        j, k, lam = sample_pairwise_mix(b, m, k_pairwise, alpha=alpha, generator=generator, device=nf.device,
                                        dtype=dt)
        out.append(pairwise_mix(nf, j, k, lam))
    if listwise:
        if m < 1:
            raise loss_error(_FILE, "p_neg", "list-wise mixing needs at least 1 hard negative per query, got M = 0")
        out.append(listwise_mix(qf, nf, tau_mix=tau_mix))
    mixed = torch.cat(out, dim=1)
    return mixed.detach() if detach else mixed
