"""Padding-free packing (kalm_lib/packing.py) computes what the padded forward computes.

Reference: the padded forward (right padding, SDPA with transformers' own padding mask), which the rest of the
suite already checks against naive attention. The tiny model is built so that the things packing could get
wrong show: initializer_range 0.3 (attention far from uniform); the equivalence test also
shows that a packed row whose attention spans the whole row (sequences seeing each other) is far from the
reference, so agreement is not an accident of a model that ignores attention. (Not restarting the positions
would go unnoticed here: RoPE scores depend only on q − k offsets, so within one sequence a shift of all
positions changes nothing but round-off; the restart keeps positions inside the trained range.)
"""

import logging
from pathlib import Path

import pytest
import torch

from kalm_lib.losses import KaLMObjective
from kalm_lib.model import KaLMEmbedder
from kalm_lib.packing import attention_backend, pack, pack_padded, packed_attention, segment_mean, varlen_attention
from kalm_lib.train import Batch, StepRunner

from test_train import TOY_TINY, ToyDataset, toy_config

TEXTS = ["hello world", "a much longer text, with many more tokens in it than the first one has at all", "x",
         "medium size text here", "Instruct: find the answer \n Query: what is packing?"]
SHARP = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, initializer_range=0.3)


def _model(causal: bool) -> KaLMEmbedder:
    return KaLMEmbedder.tiny(seed=3, causal=causal, **SHARP)


def _embed_and_grads(model, feats):
    model.zero_grad(set_to_none=True)
    e = model(**feats)
    # a loss that weights every output coordinate differently, so every gradient path is exercised
    w = torch.linspace(-1, 1, e.numel()).view_as(e)
    (e * w).sum().backward()
    return e.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_packed_embeddings_and_gradients_equal_padded(causal):
    model = _model(causal)
    padded = model.tokenize(TEXTS)
    packed = model.tokenize_packed(TEXTS)
    lens = padded["attention_mask"].sum(1)
    assert len(set(lens.tolist())) == len(TEXTS)  # mixed lengths
    assert packed["input_ids"].shape == (1, int(lens.sum()))  # no pad token at all
    e_pad, g_pad = _embed_and_grads(model, padded)
    e_pack, g_pack = _embed_and_grads(model, packed)
    torch.testing.assert_close(e_pack, e_pad, atol=1e-5, rtol=1e-5)
    assert g_pad.keys() == g_pack.keys() and len(g_pad) > 10
    for name in g_pad:
        torch.testing.assert_close(g_pack[name], g_pad[name], atol=1e-5, rtol=1e-4, msg=name)

    # the test can fail: the same packed row with one attention span over all of it (sequences see each other)
    n = packed["input_ids"].shape[1]
    whole = torch.tensor([0, n], dtype=torch.int32)
    with torch.no_grad(), packed_attention(model.backbone):
        h = model.backbone(input_ids=packed["input_ids"], position_ids=packed["position_ids"], cu_seq_lens_q=whole,
                           cu_seq_lens_k=whole, max_length_q=n, max_length_k=n).last_hidden_state
        mixed = segment_mean(h, packed["cu_seq_lens"])
        assert (mixed - e_pad).abs().max() > 1e-3


def test_causal_and_bidirectional_packed_differ():
    """The packed path honours the mask switch (a causal packed forward is not a bidirectional one)."""
    feats = _model(False).tokenize_packed(TEXTS)
    with torch.no_grad():
        assert (_model(False)(**feats) - _model(True)(**feats)).abs().max() > 1e-2


def test_pack_layout_by_hand():
    f = pack([[5, 6, 7], [8], [9, 10]])
    assert f["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]]
    assert f["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1]]
    assert f["cu_seq_lens"].tolist() == [0, 3, 4, 6] and f["cu_seq_lens"].dtype == torch.int32
    assert f["max_length"] == 3
    g = pack_padded(torch.tensor([[5, 6, 7], [8, 0, 0], [9, 10, 0]]),
                    torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]]))
    assert all(torch.equal(torch.as_tensor(g[k]), torch.as_tensor(f[k])) for k in f)
    h = torch.arange(12.0).view(1, 6, 2)
    assert segment_mean(h, f["cu_seq_lens"]).tolist() == [[2.0, 3.0], [6.0, 7.0], [9.0, 10.0]]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="sequence 1 of the batch has no tokens"):
        pack([[1, 2], [], [3]])
    with pytest.raises(ValueError, match="sequence 0 has 5 tokens, more than the model's 4 positions"):
        pack([[1, 2, 3, 4, 5]], max_positions=4)
    with pytest.raises(ValueError, match="empty batch"):
        pack([])
    with pytest.raises(ValueError, match="not right-padded"):
        pack_padded(torch.tensor([[0, 5]]), torch.tensor([[0, 1]]))
    model = _model(False)
    with pytest.raises(ValueError, match="no tokens"):
        model.tokenize_packed(["fine", ""])
    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="without cu_seq_lens_q"):
        varlen_attention(model.backbone.layers[0].self_attn, q, q, q, None)


def test_kernel_choice_and_the_gpu_fallback_says_so(caplog):
    """CPU: re-padded SDPA (expected, silent). A GPU without a variable-length kernel, or with fp32 attention
    inputs, falls back too: correct, and one WARNING line says so."""
    import kalm_lib.packing as P

    assert attention_backend(torch.device("cpu"), torch.bfloat16) == "repad"
    assert attention_backend(torch.device("cuda"), torch.float32) == "repad"
    P._warned.clear()
    with caplog.at_level(logging.WARNING, logger="kalm_lib.packing"):
        P._note_fallback(torch.device("cpu"), torch.float32)
        assert not caplog.records
        P._note_fallback(torch.device("cuda"), torch.float32)
        P._note_fallback(torch.device("cuda"), torch.float32)
    assert len(caplog.records) == 1 and "re-padded SDPA" in caplog.text and "fp32" in caplog.text
    P._warned.clear()


# --------------------------------------------------------------------------- the training step
def _step(optim: dict, distill=True):
    cfg = toy_config(Path("/tmp"), model={"tiny": {**TOY_TINY, "initializer_range": 0.3}},
                     optim=optim, objective={"distill_weight": 1.0} if distill else {})
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny).double()
    if cfg.optim.gradient_checkpointing:  # as StageTrainer does: the layers recompute in the backward pass
        model.enable_checkpointing()
        bb = model.backbone
        assert bb.is_activation_checkpointing if hasattr(bb, "is_activation_checkpointing") else bb.is_gradient_checkpointing
    runner = StepRunner(model, model, KaLMObjective(cfg.objective), cfg, accelerator=None,
                        generator=torch.Generator().manual_seed(1))
    ds = ToyDataset(num_negatives=3, teacher=distill)
    terms, real, total = runner(Batch.from_examples([ds[i] for i in range(8)], 3))
    return terms, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, (real, total)


@pytest.mark.parametrize("optim", [{"packing": True}, {"packing": True, "gradcache_chunk_size": 3},
                                   {"packing": True, "gradcache_chunk_size": 3, "gradcache_lookup_once": False},
                                   {"packing": True, "gradient_checkpointing": True}],
                         ids=["plain", "gradcache", "gradcache-lookup-per-sub-batch", "checkpointing"])
def test_packed_step_equals_padded_step(optim):
    """StepRunner with optim.packing: the loss and every gradient of the padded full-batch step, no padding.
    With checkpointing the backward pass recomputes each layer after the packed forward has returned: it must
    run the packed attention again (a padded recompute saves other tensors: torch's CheckpointError)."""
    ref_terms, ref, (real, total) = _step({})
    terms, got, (p_real, p_total) = _step(optim)
    assert real < total and p_real == p_total == real  # same real tokens, none padded
    assert terms["loss"] == pytest.approx(ref_terms["loss"], abs=1e-10)
    assert got.keys() == ref.keys() and len(ref) > 5
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-8, rtol=1e-6, msg=name)


@pytest.mark.parametrize("once", [True, False], ids=["lookup-once", "lookup-per-sub-batch"])
@pytest.mark.parametrize("packing", [False, True])
def test_gradcache_looks_tokens_up_once_with_a_graph(packing, once):
    """GradCache's re-forward takes every sub-batch's token embeddings from one lookup: one embedding call under
    autograd per step (one dense |V|×h gradient), plus the no-graph calls of its first pass.
    ``optim.gradcache_lookup_once: false`` (the GPU profiles: bounded memory) looks each sub-batch up alone."""
    cfg = toy_config(Path("/tmp"), optim={"gradcache_chunk_size": 3, "packing": packing,
                                          "gradcache_lookup_once": once})
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)
    runner = StepRunner(model, model, KaLMObjective(cfg.objective), cfg, accelerator=None,
                        generator=torch.Generator().manual_seed(1))
    graph_calls = []
    hook = model.backbone.get_input_embeddings().register_forward_hook(
        lambda _m, i, o: graph_calls.append(i[0].numel()) if o.requires_grad else None)
    ds = ToyDataset(num_negatives=3)
    try:
        _, _, total = runner(Batch.from_examples([ds[i] for i in range(8)], 3))
    finally:
        hook.remove()
    chunks = -(-8 // 3) + -(-(8 + 8 * 3) // 3)  # 8 queries; 8 positives + 24 negatives; sub-batches of 3
    assert sum(graph_calls) == total and len(graph_calls) == (1 if once else chunks)


# --------------------------------------------------------------------------- the GPU kernels' plumbing
def _reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False,
                      causal=None, softmax_scale=None, dropout_p=0.0):
    """Naive stand-in with the documented contract of torch.nn.attention.varlen.varlen_attn (and of flash-attn's
    flash_attn_varlen_func: ``causal``, ``softmax_scale``): q (T×H×D), k, v (T×H_kv×D), sequences by cu offsets,
    window (-1, 0) = causal. Lets CPU check what kalm_lib hands the CUDA kernels: layout, offsets, flags."""
    assert q.dim() == k.dim() == v.dim() == 3 and cu_q.dtype == torch.int32 and torch.equal(cu_q, cu_k)
    assert max_q == max_k == int((cu_q[1:] - cu_q[:-1]).max())
    is_causal = bool(causal) if causal is not None else tuple(window_size) == (-1, 0)
    scale = softmax_scale if softmax_scale is not None else scale
    if k.shape[1] != q.shape[1]:
        assert enable_gqa or causal is not None  # flash-attn takes GQA implicitly
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    out = torch.empty_like(q)
    for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
        s = torch.einsum("thd,shd->hts", q[a:b], k[a:b]) * (scale if scale is not None else q.shape[-1] ** -0.5)
        if is_causal:
            s = s.masked_fill(~torch.ones(b - a, b - a, dtype=torch.bool).tril(), float("-inf"))
        out[a:b] = torch.einsum("hts,shd->thd", s.softmax(-1), v[a:b])
    return out


@pytest.mark.parametrize("kernel", ["varlen", "flash_attn"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_gpu_kernel_call_matches_padded(monkeypatch, kernel, causal):
    import kalm_lib.packing as P

    monkeypatch.setattr(P, "attention_backend", lambda device, dtype: kernel)
    monkeypatch.setattr(P, "_torch_varlen" if kernel == "varlen" else "_flash_attn_varlen", lambda: _reference_varlen)
    model = _model(causal)
    with torch.no_grad():
        torch.testing.assert_close(model(**model.tokenize_packed(TEXTS)), model(**model.tokenize(TEXTS)),
                                   atol=1e-5, rtol=1e-5)
