"""Matryoshka representation learning wrapper (KaLM-Embedding-V2, PAPER.md §1 "MRL mechanics").

Equation:

    L_MRL = Σ_{d ∈ D} w_d · L( trunc_d(q), trunc_d(p⁺), trunc_d(p⁻), … ),    trunc_d(x) = x[..., :d] / ‖x[..., :d]‖₂

Symbols:
    D, w_d   dims and weights; defaults D = (896, 512, 256, 128, 64), w = (1, 0.3, 0.2, 0.1, 0.1): the V1 script
             (`--matryoshka_dims`, `--matryoshka_weights`, HITsz-TMG/KaLM-Embedding scipts/train.sh); the dims are
             confirmed for V2/V2.5 by the HF cards, the V2 weights are not. Given dims without weights → all 1
             (as the official CustomMatryoshkaLoss does).
    L        any loss of this package (info_nce_loss, focal_info_nce_loss, distill_kl_loss, …) or any callable
             taking the truncated embeddings positionally and returning a scalar
    trunc_d  keep the first d coordinates, then L2-normalise. Because normalisation is scale-invariant the input may
             be raw or already normalised: trunc_d(x/‖x‖) = trunc_d(x).

Every tensor argument given in `embeddings` is truncated on its last axis (q (B,d), p⁺ (B,d), p⁻ (B,M,d), mixed
negatives (B,K,d) alike); None passes through; non-tensor keyword arguments go to L unchanged. A dim larger than the
embedding size raises a ValueError (the official code does the same). The official code's `n_dims_per_step`
(random subset of dims per step) is not implemented: it defaults to −1 (all dims) in the released script.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from kalm_lib.losses._checks import compute_dtype, loss_error

_FILE = "matryoshka.py"

DEFAULT_MATRYOSHKA_DIMS: tuple[int, ...] = (896, 512, 256, 128, 64)
DEFAULT_MATRYOSHKA_WEIGHTS: tuple[float, ...] = (1.0, 0.3, 0.2, 0.1, 0.1)


def check_matryoshka(
    dims: Sequence[int], weights: Sequence[float] | None, embedding_dim: int | None = None
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Validate (dims, weights) and return them as tuples; weights None → all 1."""
    dims = tuple(dims)
    if len(dims) == 0:
        raise loss_error(_FILE, "dims", "must contain at least one dimension")
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool) or d <= 0:
            raise loss_error(_FILE, "dims", f"must be positive ints, got {d!r} in {dims}")
    if len(set(dims)) != len(dims):
        raise loss_error(_FILE, "dims", f"must be distinct, got {dims}")
    if embedding_dim is not None and max(dims) > embedding_dim:
        raise loss_error(_FILE, "dims", f"dim {max(dims)} is larger than the embedding size {embedding_dim}")
    weights = tuple(float(w) for w in weights) if weights is not None else (1.0,) * len(dims)
    if len(weights) != len(dims):
        raise loss_error(_FILE, "weights", f"needs one weight per dim: {len(dims)} dims {dims} but "
                                           f"{len(weights)} weights {weights}")
    for w in weights:
        if not math.isfinite(w) or w < 0:
            raise loss_error(_FILE, "weights", f"must be finite and >= 0, got {weights}")
    return dims, weights


def truncate_normalize(x: Tensor, dim: int) -> Tensor:
    """x (..., D) → x[..., :dim] / ‖x[..., :dim]‖₂ in the compute dtype (float32, or float64)."""
    if dim > x.shape[-1]:
        raise loss_error(_FILE, "dims", f"dim {dim} is larger than the embedding size {x.shape[-1]}")
    return F.normalize(x[..., :dim].to(compute_dtype(x)), p=2, dim=-1)


def matryoshka_loss(
    loss_fn: Callable[..., Tensor],
    *embeddings: Tensor | None,
    dims: Sequence[int] = DEFAULT_MATRYOSHKA_DIMS,
    weights: Sequence[float] | None = DEFAULT_MATRYOSHKA_WEIGHTS,
    **loss_kwargs,
) -> Tensor:
    """Σ_d w_d · loss_fn(*[trunc_d(e) for e in embeddings], **loss_kwargs). Returns a scalar."""
    present = [e for e in embeddings if e is not None]
    if not present:
        raise loss_error(_FILE, "embeddings", "no embedding tensor given")
    sizes = {e.shape[-1] for e in present}
    if len(sizes) != 1:
        raise loss_error(_FILE, "embeddings", f"all embeddings must share the last dim, got sizes {sorted(sizes)}")
    dims, weights = check_matryoshka(dims, weights, sizes.pop())
    total = None
    for d, w in zip(dims, weights):
        cut = [truncate_normalize(e, d) if e is not None else None for e in embeddings]
        term = w * loss_fn(*cut, **loss_kwargs)
        total = term if total is None else total + term
    return total
