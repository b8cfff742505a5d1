"""Shared input checks and dtype rules for kalm_lib.losses (not a loss itself).

Every loss in this package computes in at least float32: bfloat16/float16 embeddings are promoted before any
similarity is formed, because at τ = 0.01 a cosine of 1 becomes a logit of 100 and bfloat16 has only 8 bits of
mantissa (a logit of 100 would be rounded in steps of 0.5, i.e. a factor e^0.5 in probability).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_WHERE = "kalm_lib/losses"


def loss_error(file: str, field: str, msg: str) -> ValueError:
    """A ValueError that names the loss file and the offending argument."""
    return ValueError(f"{_WHERE}/{file}: argument '{field}': {msg}")


def compute_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64 (tests); everything else computes in float32."""
    return torch.promote_types(t.dtype, torch.float32)


def check_positive(file: str, field: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise loss_error(file, field, f"must be a finite number > 0, got {value!r}")


def check_float_tensor(file: str, field: str, t: object, ndim: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise loss_error(file, field, f"must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise loss_error(file, field, f"must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() != ndim:
        raise loss_error(file, field, f"must have {ndim} dims, got shape {tuple(t.shape)}")
    return t


def check_embeddings(file: str, q: Tensor, p_pos: Tensor, p_neg: Tensor | None) -> tuple[int, int, int]:
    """Check q (B,d), p_pos (B,d), p_neg (B,M,d) or None; return (B, M, d) with M = 0 when p_neg is None."""
    check_float_tensor(file, "q", q, 2)
    check_float_tensor(file, "p_pos", p_pos, 2)
    b, d = q.shape
    if b == 0 or d == 0:
        raise loss_error(file, "q", f"must be non-empty (B, d), got shape {tuple(q.shape)}")
    if p_pos.shape != q.shape:
        raise loss_error(file, "p_pos", f"must have the shape of q {tuple(q.shape)} (one positive per query), "
                                        f"got {tuple(p_pos.shape)}")
    m = 0
    if p_neg is not None:
        check_float_tensor(file, "p_neg", p_neg, 3)
        if p_neg.shape[0] != b or p_neg.shape[2] != d:
            raise loss_error(file, "p_neg", f"must have shape (B={b}, M, d={d}), got {tuple(p_neg.shape)}")
        m = p_neg.shape[1]
    for name, t in (("p_pos", p_pos), ("p_neg", p_neg)):
        if t is not None and t.device != q.device:
            raise loss_error(file, name, f"is on {t.device} but q is on {q.device}")
    return b, m, d
