"""KaLMEmbedder: bidirectional attention, pooling, padding, Matryoshka, formatting, persistence."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kalm_lib.model import KaLMEmbedder, format_pair, format_query, mean_pool, truncate_and_normalize


@pytest.fixture(scope="module")
def tiny():
    return KaLMEmbedder.tiny(seed=0)


def _first_token_state(model, ids):
    ids = torch.tensor([ids])
    with torch.no_grad():
        return model.backbone(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0, 0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bidirectional_first_token_sees_last_token(attn):
    model = KaLMEmbedder.tiny(seed=0, attn_implementation=attn)
    a = _first_token_state(model, [100, 200, 300, 400])
    b = _first_token_state(model, [100, 200, 300, 999])
    assert (a - b).abs().max() > 1e-4, f"{attn}: the first token ignores the last one (still causal)"


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_causal_flag_keeps_decoder_mask(attn):
    model = KaLMEmbedder.tiny(seed=0, attn_implementation=attn, causal=True)
    a = _first_token_state(model, [100, 200, 300, 400])
    b = _first_token_state(model, [100, 200, 300, 999])
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bidirectional_with_padding_mask(attn):
    """With a padding mask present (the batched path), the first token still sees later tokens."""
    model = KaLMEmbedder.tiny(seed=0, attn_implementation=attn)
    ids = torch.tensor([[100, 200, 300, 400, 0], [100, 200, 300, 999, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    with torch.no_grad():
        h = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (h[0, 0] - h[1, 0]).abs().max() > 1e-4


def test_tiny_is_seeded():
    a, b, c = KaLMEmbedder.tiny(seed=3), KaLMEmbedder.tiny(seed=3), KaLMEmbedder.tiny(seed=4)
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), n
    assert not torch.equal(a.backbone.embed_tokens.weight, c.backbone.embed_tokens.weight)


def test_tiny_uses_real_qwen2_tokenizer(tiny):
    # Known Qwen2 ids for "Hello, world!" (shared/data/tokenizers/README check).
    assert tiny.tokenizer("Hello, world!")["input_ids"] == [9707, 11, 1879, 0]


def test_mean_pool_matches_hand_computation():
    h = torch.arange(2 * 3 * 2, dtype=torch.float64).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    expected = torch.tensor([[(0 + 2) / 2, (1 + 3) / 2], [(6 + 8 + 10) / 3, (7 + 9 + 11) / 3]], dtype=torch.float64)
    torch.testing.assert_close(mean_pool(h, mask), expected)


def test_forward_pools_only_real_tokens(tiny):
    feats = tiny.tokenize(["a short one", "a much longer sentence that needs more tokens"])
    assert feats["attention_mask"][0].sum() < feats["attention_mask"][1].sum()  # there is padding
    with torch.no_grad():
        h = tiny.backbone(**feats).last_hidden_state
        e = tiny(**feats)
    n = int(feats["attention_mask"][0].sum())
    torch.testing.assert_close(e[0], h[0, :n].mean(0), atol=1e-6, rtol=0)


def test_padding_invariance(tiny):
    text = "The cat sat on the mat."
    longer = ["A considerably longer sentence that forces the first text to be padded on the right side.",
              "Another long distractor sentence with many, many more tokens than the short one has."]
    alone = tiny.encode([text], batch_size=8)
    batched = tiny.encode(longer + [text], batch_size=8)
    np.testing.assert_allclose(alone[0], batched[2], atol=1e-5)


def test_encode_keeps_input_order_and_float32(tiny):
    texts = ["x", "a much longer text here for sorting", "mid length text", "y y"]
    together = tiny.encode(texts, batch_size=2)
    one_by_one = np.stack([tiny.encode([t])[0] for t in texts])
    assert together.dtype == np.float32 and together.shape == (4, tiny.embedding_dim)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def _embedded_shapes(model, fn):
    """Run fn() and return the (batch, length) of every input_ids the backbone saw."""
    seen = []
    h = model.backbone.register_forward_pre_hook(
        lambda _m, args, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        fn()
    finally:
        h.remove()
    return seen


@pytest.mark.parametrize("window_batches", [64, 1])
def test_encode_batches_by_token_count_not_characters(tiny, monkeypatch, window_batches):
    """Characters and tokens disagree ('aaaa…' is few tokens, 'a b c …' many): batches must be cut from
    the token-count order, so the embedded tokens equal a naive reference's (sorted token lengths,
    chunked, each chunk padded to its longest) and are fewer than a character-length order gives."""
    import kalm_lib.model as km

    monkeypatch.setattr(km, "ENCODE_WINDOW_BATCHES", window_batches)
    texts = ["a" * 60, "a b c d e f g h i j", "b" * 50, "x y z w v u", "c" * 40, "k l m n o p q r s t u v",
             "hello", "one two"]
    n_tok = [len(x) for x in tiny.tokenizer(texts)["input_ids"]]
    bs = 2
    shapes = _embedded_shapes(tiny, lambda: tiny.encode(texts, batch_size=bs))
    embedded = sum(b * L for b, L in shapes)

    def padded(order, size):
        return sum(max(n_tok[i] for i in order[s:s + size]) * len(order[s:s + size])
                   for s in range(0, len(order), size))

    by_tokens = sorted(range(len(texts)), key=lambda i: -n_tok[i])
    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    if window_batches == 64:
        assert embedded == padded(by_tokens, bs)
        assert embedded < padded(by_chars, bs)
    else:  # windows of one batch keep the character order's batches, sorted inside
        assert embedded == padded(by_chars, bs)
    # either way the vectors are the texts' own, in the caller's order
    one_by_one = np.stack([tiny.encode([t])[0] for t in texts])
    np.testing.assert_allclose(tiny.encode(texts, batch_size=bs), one_by_one, atol=1e-5)


def test_encode_leaves_training_mode(tiny):
    tiny.train()
    tiny.encode(["x"])
    assert tiny.training
    tiny.eval()


@pytest.mark.parametrize("dim", [8, 16, 32, 64])
def test_matryoshka_unit_norm_and_prefix(tiny, dim):
    full = tiny.encode(["some text", "other"], normalize=False)
    v = tiny.encode(["some text", "other"], dim=dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    expected = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
    np.testing.assert_allclose(v, expected, atol=1e-5)


def test_matryoshka_dim_too_large(tiny):
    with pytest.raises(ValueError, match="dim"):
        tiny.encode(["x"], dim=tiny.embedding_dim + 1)
    with pytest.raises(ValueError, match="exceeds"):
        truncate_and_normalize(torch.ones(2, 4), dim=8)


def test_instruction_strings_exact():
    assert format_query("what is x", "Given a query, retrieve documents that answer the query") == (
        "Instruct: Given a query, retrieve documents that answer the query \n Query: what is x")
    assert format_query("doc", None) == "doc"
    assert format_pair("q", "d", "Retrieve semantically similar text") == (
        "Instruct: Retrieve semantically similar text \n Query: q", "d")
    assert format_pair("q", "d", "Retrieve semantically similar text", symmetric=True) == (
        "Instruct: Retrieve semantically similar text \n Query: q",
        "Instruct: Retrieve semantically similar text \n Query: d")


def test_encode_with_instruction_equals_preformatted(tiny):
    instr = "Retrieve semantically similar text"
    a = tiny.encode(["hello there"], instruction=instr)
    b = tiny.encode([f"Instruct: {instr} \n Query: hello there"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_save_load_roundtrip_ours_and_sentence_transformers(tiny, tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = ["The quick brown fox.", "Un texte un peu plus long, pour le remplissage à droite.", "数据"]
    ref = tiny.encode(texts)
    out = tiny.save(tmp_path / "model")
    assert json.loads((out / "config.json").read_text())["is_causal"] is False
    ours = KaLMEmbedder.load(out)
    np.testing.assert_allclose(ours.encode(texts), ref, atol=1e-5)
    st = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(st.encode(texts, convert_to_numpy=True), ref, atol=1e-5)
    # Still bidirectional after a plain sentence-transformers load.
    backbone = st[0].auto_model
    ids = torch.tensor([[100, 200, 300, 400], [100, 200, 300, 999]])
    with torch.no_grad():
        h = backbone(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert (h[0, 0] - h[1, 0]).abs().max() > 1e-4


def test_save_is_atomic_overwrite(tiny, tmp_path):
    out = tiny.save(tmp_path / "m")
    tiny.save(tmp_path / "m")  # overwriting an existing folder works and leaves no temp folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert (out / "model.safetensors").is_file()


def test_causal_model_roundtrip_stays_causal(tmp_path):
    m = KaLMEmbedder.tiny(seed=1, causal=True)
    loaded = KaLMEmbedder.load(m.save(tmp_path / "c"))
    assert loaded.causal
    a = _first_token_state(loaded, [1, 2, 3, 4])
    b = _first_token_state(loaded, [1, 2, 3, 5])
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_missing_model_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found|no model"):
        KaLMEmbedder.from_pretrained(tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError, match="no model"):
        KaLMEmbedder.load(tmp_path / "nothing-here")


def test_non_decoder_config_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a decoder"):
        KaLMEmbedder.from_pretrained(tmp_path)


def test_training_forward_has_gradients(tiny):
    feats = tiny.tokenize(["a b c", "d e"])
    e = tiny(**feats)
    loss = F.normalize(e, dim=-1).sum()
    loss.backward()
    assert tiny.backbone.embed_tokens.weight.grad is not None
    tiny.zero_grad()


@pytest.mark.slow
def test_smollm2_gguf_loads_bidirectional(tmp_path):
    from kalm_lib.model import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    m = KaLMEmbedder.from_pretrained(gguf, max_length=32)
    assert m.backbone.config.model_type == "llama" and m.embedding_dim == 576
    a = _first_token_state(m, [100, 200, 300, 400])
    b = _first_token_state(m, [100, 200, 300, 999])
    assert (a - b).abs().max() > 1e-4
    ref = m.encode(["hello world", "a longer sentence about embeddings"])
    loaded = KaLMEmbedder.load(m.save(tmp_path / "smol"))
    np.testing.assert_allclose(loaded.encode(["hello world", "a longer sentence about embeddings"]), ref, atol=1e-5)


@pytest.mark.parametrize("env, drawn", [("1", False), ("true", False), ("0", True), ("", True)])
def test_progress_bar_follows_tqdm_disable(tiny, monkeypatch, capsys, env, drawn):
    """Headless runs set TQDM_DISABLE=1; an explicit show_progress_bar=True must not override it."""
    from kalm_lib.progress import bar_disabled

    monkeypatch.setenv("TQDM_DISABLE", env)
    assert bar_disabled(True) is not drawn and bar_disabled(False) is True
    tiny.encode(["a b", "c"], batch_size=1, show_progress_bar=True)
    assert ("encode" in capsys.readouterr().err) is drawn
