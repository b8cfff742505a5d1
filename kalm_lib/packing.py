"""Padding-free packing: all sequences of a batch in one row, attention kept within each sequence.

A padded batch of B texts costs B × L_max tokens in every linear layer; a packed one costs N = Σ_b L_b:

    x = [x⁽¹⁾ ‖ x⁽²⁾ ‖ … ‖ x⁽ᴮ⁾] ∈ V^N                       (one row, no pad tokens)
    c = (0, L_1, L_1+L_2, …, N)                               (cu_seqlens: sequence b is tokens c_b … c_{b+1}−1)
    pos_t = t − c_b            for c_b ≤ t < c_{b+1}          (RoPE positions restart at every sequence)
    Attn_t = softmax(q_t K_Sᵀ / √d) V_S,   S = the tokens of t's own sequence
                                           (causal=True: only those ≤ t)
    e_b = (1 / L_b) Σ_{c_b ≤ t < c_{b+1}} h_t                 (mean pooling per sequence)

which is the padded forward's e_b (right padding, positions 0 … L_b−1, padding masked) to float
round-off: ``tests/test_packing.py`` checks embeddings and gradients against it.

The attention kernel is chosen once per call, by what is installed (``attention_backend``):

* ``varlen`` — ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention-2 variable-length kernel shipped
  in torch ≥ 2.10, CUDA, bf16/fp16): no padding anywhere, no N×N mask;
* ``flash_attn`` — the ``flash-attn`` package's ``flash_attn_varlen_func``, when torch lacks the above;
* ``repad`` — the fallback everywhere else (CPU, fp32 on a GPU, older torch): the linear layers, norms and
  MLPs still run on the N packed tokens; only the attention product re-pads q, k, v to B × L_max and runs
  SDPA with a key-padding (and causal) mask. That is what unpadded BERT-style models do without a varlen
  kernel (ModernBERT's fallback); it is chosen over SDPA with an N × N block mask, whose attention costs
  grow with N² = (Σ L_b)² rather than Σ L_b², and over flex attention, which on CPU needs torch.compile
  (a C++ toolchain and minutes of compile per shape) to be faster than the math kernel.

Mechanics: transformers (5.x) looks the attention function up by ``config._attn_implementation`` in each
layer and forwards extra keyword arguments of the model's ``forward`` to it (the route its own padding-free
FlashAttention path takes for ``cu_seq_lens_q``). ``packed_attention`` switches a backbone to the
``"kalm_varlen"`` function registered here for the duration of one forward; its mask function returns no
mask, so no N × N mask is ever built (transformers would otherwise build one for packed causal inputs).
Activation checkpointing recomputes each layer during the backward pass, after that block has ended: the
recompute must see the same attention function as the forward (else it saves different tensors and torch
raises ``CheckpointError``), which ``same_attention_on_recompute`` arranges (``KaLMEmbedder.enable_checkpointing``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger("kalm_lib.packing")

ATTN_NAME = "kalm_varlen"
_warned: set[str] = set()


# ---------------------------------------------------------------------------- building packed inputs
def pack(token_ids: Sequence[Sequence[int]], *, device: torch.device | str | None = None,
         max_positions: int | None = None) -> dict[str, torch.Tensor | int]:
    """Concatenate the token-id lists of a batch into packed features.

    Returns ``input_ids`` (1×N), ``position_ids`` (1×N, restarting at 0 per sequence), ``cu_seq_lens``
    (B+1, int32 offsets) and ``max_length`` (the longest sequence, an int), the keyword arguments of
    ``KaLMEmbedder.forward``'s packed path. An empty sequence (an empty text: its mean is undefined) and a
    sequence longer than the model's ``max_positions`` are errors naming the sequence.
    """
    lengths = [len(t) for t in token_ids]
    if not lengths:
        raise ValueError("pack: an empty batch (no sequences)")
    for i, n in enumerate(lengths):
        if n == 0:
            raise ValueError(f"pack: sequence {i} of the batch has no tokens (an empty text); its mean-pooled "
                             "embedding is undefined. Drop or fill empty texts before training.")
        if max_positions is not None and n > max_positions:
            raise ValueError(f"pack: sequence {i} has {n} tokens, more than the model's {max_positions} positions "
                             "(max_position_embeddings); truncate it (data.query_max_len / passage_max_len).")
    flat = torch.tensor([t for seq in token_ids for t in seq], dtype=torch.long, device=device)
    lens = torch.tensor(lengths, dtype=torch.long, device=device)
    return _from_lengths(flat, lens)


def pack_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """Packed features from a right-padded batch (``input_ids``, ``attention_mask``: B×L)."""
    lens = attention_mask.sum(dim=1).long()
    if bool((lens == 0).any()):
        raise ValueError(f"pack_padded: row {int((lens == 0).nonzero()[0])} has no tokens (an empty text)")
    if attention_mask.shape[1] and bool((attention_mask[:, :-1] < attention_mask[:, 1:]).any()):
        raise ValueError("pack_padded: the batch is not right-padded (a pad before a real token)")
    return _from_lengths(input_ids[attention_mask.bool()], lens)


def _from_lengths(flat: torch.Tensor, lens: torch.Tensor) -> dict[str, torch.Tensor | int]:
    cu = F.pad(lens.cumsum(0), (1, 0)).to(torch.int32)
    starts = torch.repeat_interleave(cu[:-1].long(), lens)
    pos = torch.arange(flat.numel(), device=flat.device) - starts
    return {"input_ids": flat.unsqueeze(0), "position_ids": pos.unsqueeze(0), "cu_seq_lens": cu,
            "max_length": int(lens.max())}


def segment_mean(hidden: torch.Tensor, cu_seq_lens: torch.Tensor) -> torch.Tensor:
    """e_b = mean of hidden[c_b : c_{b+1}] per sequence. hidden (1×N×d) or (N×d) → (B×d)."""
    h = hidden.reshape(-1, hidden.shape[-1])
    lens = (cu_seq_lens[1:] - cu_seq_lens[:-1]).long()
    seg = torch.repeat_interleave(torch.arange(lens.numel(), device=h.device), lens)
    total = h.new_zeros(lens.numel(), h.shape[-1]).index_add_(0, seg, h)
    return total / lens.to(h.dtype).unsqueeze(-1)


# ---------------------------------------------------------------------------- attention kernels
def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _flash_attn_varlen():
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def attention_backend(device: torch.device, dtype: torch.dtype) -> str:
    """``varlen`` | ``flash_attn`` | ``repad`` for q/k/v of this device and dtype (see the module docstring)."""
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        if _torch_varlen() is not None:
            return "varlen"
        if _flash_attn_varlen() is not None:
            return "flash_attn"
    return "repad"


def _note_fallback(device: torch.device, dtype: torch.dtype) -> None:
    """The re-padded attention on a GPU is correct but slower: say so once (it is the expected kernel on CPU)."""
    key = f"{device.type}:{dtype}"
    if device.type == "cuda" and key not in _warned:
        _warned.add(key)
        why = ("fp32 attention inputs (bf16 autocast off)" if dtype == torch.float32 else
               "no variable-length kernel (torch.nn.attention.varlen needs torch>=2.10; or install flash-attn)")
        log.warning("packing: attention falls back to re-padded SDPA on %s: %s; the linear layers stay packed",
                    device, why)


def _repad_attention(query, key, value, cu, max_len: int, causal: bool, scaling, dropout: float):
    """SDPA on q, k, v re-padded to B × L_max (key-padding mask; causal within each sequence)."""
    H, N, D = query.shape[1], query.shape[2], query.shape[3]
    lens = (cu[1:] - cu[:-1]).long()
    B = lens.numel()
    ar = torch.arange(max_len, device=query.device)
    valid = ar.unsqueeze(0) < lens.unsqueeze(1)                          # B × L
    idx = (cu[:-1].long().unsqueeze(1) + ar).clamp_max(N - 1)             # B × L (pads read a real token, masked)

    def repad(x):  # (1, h, N, D) → (B, h, L, D)
        return x[0][:, idx].transpose(0, 1)

    q, k, v = repad(query), repad(key), repad(value)
    mask = valid[:, None, None, :]                                       # B × 1 × 1 × L
    if causal:
        mask = mask & torch.ones(max_len, max_len, dtype=torch.bool, device=query.device).tril()
    gqa = q.shape[1] != k.shape[1]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                         enable_gqa=gqa)                  # B × H × L × D
    return out.transpose(1, 2)[valid].unsqueeze(0)                       # 1 × N × H × D


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     cu_seq_lens_q=None, max_length_q=None, **_):
    """transformers attention interface for packed rows: q, k, v (1 × heads × N × D) → (1 × N × H × D).

    ``attention_mask`` is always None here (``packed_mask`` builds none); sequence boundaries come from
    ``cu_seq_lens_q``. Causal iff the layer's ``is_causal`` flag is set (``model.set_bidirectional``)."""
    if cu_seq_lens_q is None:
        raise RuntimeError("kalm_varlen attention called without cu_seq_lens_q: it serves packed inputs only "
                           "(KaLMEmbedder.forward(..., cu_seq_lens=...))")
    causal = bool(getattr(module, "is_causal", False))
    max_len = int(max_length_q)
    backend = attention_backend(query.device, query.dtype)
    if backend == "repad":
        _note_fallback(query.device, query.dtype)
        return _repad_attention(query, key, value, cu_seq_lens_q, max_len, causal, scaling, dropout), None
    q, k, v = (x[0].transpose(0, 1).contiguous() for x in (query, key, value))   # N × h × D
    cu = cu_seq_lens_q.to(torch.int32)
    if backend == "varlen":
        out = _torch_varlen()(q, k, v, cu, cu, max_len, max_len, scale=scaling,
                              window_size=(-1, 0) if causal else (-1, -1), enable_gqa=q.shape[1] != k.shape[1])
    else:
        out = _flash_attn_varlen()(q, k, v, cu, cu, max_len, max_len, dropout_p=dropout, softmax_scale=scaling,
                                   causal=causal)
    return out.unsqueeze(0), None


def packed_mask(*_, **__):
    """The mask function for ``kalm_varlen``: no mask (boundaries travel as cu_seq_lens)."""
    return None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, varlen_attention)
    AttentionMaskInterface.register(ATTN_NAME, packed_mask)


@contextlib.contextmanager
def _attention_implementation(config, name: str):
    old = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old


def packed_attention(backbone: torch.nn.Module):
    """Route ``backbone``'s attention through ``varlen_attention`` for the duration of the block."""
    _register()
    return _attention_implementation(backbone.config, ATTN_NAME)


def same_attention_on_recompute(backbone: torch.nn.Module):
    """A ``context_fn`` for ``torch.utils.checkpoint.checkpoint`` (non-reentrant): the backward pass's
    recompute of a layer runs under the attention implementation its forward saw (packed or padded)."""
    cfg = backbone.config

    def context_fn():
        return contextlib.nullcontext(), _attention_implementation(cfg, cfg._attn_implementation)

    return context_fn
