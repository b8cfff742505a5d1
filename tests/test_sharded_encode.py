"""Mining and teacher scoring under a launch of several processes (kalm_lib.distributed, issue 13): each process
encodes its share, the results equal one process's exactly, and only the main process writes. Plus each query seen
with exactly one instruction (a record's own, else the dataset's), and the FSDP launch config's wrap class.

Run as a script (``python tests/test_sharded_encode.py OUT``, alone or under torchrun), this file is the worker of
:func:`test_two_processes_mine_and_score_like_one`: it writes ``OUT/rank<r>.json`` and ``OUT/files/``.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "Instruct: {instruction}\nQuery:"
DEFAULT = "Retrieve the passage that answers the question"


class BagOfWords:
    """A deterministic toy embedder: the sum of one fixed random vector per word (the same in every process);
    counts the texts it was given."""

    def __init__(self, dim=16):
        self.dim, self.texts, self.calls, self.seen = dim, 0, 0, []

    def _word(self, w):
        seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).normal(size=self.dim)

    def __call__(self, texts):
        self.calls += 1
        self.texts += len(texts)
        self.seen += list(texts)
        return np.stack([sum(self._word(w) for w in t.split()) for t in texts]).astype(np.float32)


def _records():
    recs = []
    for i in range(24):
        r = {"query": f"question {i} about topic{i % 8} and item{i % 5}", "pos": [f"answer {i} on topic{i % 8}"]}
        if i % 2 == 0:
            r["instruction"] = f"Find the answer for set {i % 3}"
        if i % 4 == 1:
            r["neg"] = [f"passage {i} on topic{(i + 1) % 8}"]
        recs.append(r)
    corpus = [f"passage {j} on topic{j % 8} with item{j % 5}" for j in range(60)]
    return recs, corpus


# --------------------------------------------------------------------------- the worker (run as a script)
def worker(out: Path):
    import dataclasses

    import torch

    torch.set_num_threads(1)
    import kalm_lib.data.mining as mining
    from kalm_lib.data import TeacherScorer, mine_dataset, mine_hard_negatives, score_datasets
    from kalm_lib.data.encoders import sharded_encode
    from kalm_lib.distributed import on_main, rank_world

    files = out / "files"
    writes = []
    real_replace = os.replace

    def replace(src, dst, *a, **kw):             # every atomic write of the project ends in os.replace
        writes.append(os.path.relpath(dst, files))
        return real_replace(src, dst, *a, **kw)

    os.replace = replace
    mining.QUERY_BLOCK = 5                      # 24 queries: blocks 0, 10, 20 on rank 0, blocks 5, 15 on rank 1
    emb = BagOfWords()
    recs, corpus = _records()
    mined, rep = mine_hard_negatives(recs, emb, corpus=corpus, instruction=DEFAULT, seed=3,
                                     output_path=files / "mined.jsonl")
    rank, world = rank_world()
    counts = {"mining": emb.texts}
    kw = dict(teacher_name="toy", chunk_size=4, query_prompt_template=TEMPLATE, instruction=DEFAULT,
              show_progress_bar=False)
    s1 = TeacherScorer(emb, files / "cache", **kw)
    scored = s1.score(mined)
    counts["teacher"] = emb.texts - counts["mining"]
    s2 = TeacherScorer(emb, files / "cache", **kw)
    again = s2.score(mined)                     # a cache hit on every process: the teacher is not called
    counts["cache_hit"] = emb.texts - counts["mining"] - counts["teacher"]
    _, rep_ds = mine_dataset("en-scifact", emb, files / "mined_ds", max_rows=12, corpus_limit=40, filter_topk=None)
    written = score_datasets(["en-scifact"], emb, files / "teacher", files / "cache_ds", mined_dir=files / "mined_ds",
                             max_rows_per_dataset=12, query_prompt_template=TEMPLATE, show_progress_bar=False)
    errors = {}
    if world > 1:                               # failures reach every process instead of leaving one waiting
        def bad(texts):
            if rank == 1:
                raise ValueError("boom on rank 1")
            return emb(texts)

        for what, fn in {"encode_fails": lambda: sharded_encode(bad)(["a", "b", "c"]),
                         "texts_differ": lambda: sharded_encode(emb)(["x y", f"only rank{rank}"]),
                         "main_fails": lambda: on_main(lambda: 1 / 0)}.items():
            try:
                fn()
                errors[what] = None
            except Exception as e:  # recorded, not swallowed: the parent test asserts every rank raised it
                errors[what] = f"{type(e).__name__}: {e}"
    report = {k: v for k, v in dataclasses.asdict(rep).items() if k not in ("seconds", "output_path")}
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world": world, "counts": counts, "writes": sorted(writes), "mined": mined, "report": report,
        "scored": scored, "again": again, "stats": [s1.stats, s2.stats], "errors": errors,
        "written": {k: os.path.relpath(v, files) for k, v in written.items()}, "ds_queries": rep_ds.n_queries}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------- two processes = one
def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.multiprocess
def test_two_processes_mine_and_score_like_one(tmp_path, data_dir):
    """torchrun (gloo, 2 processes): mined records, report, teacher scores and every written file equal one
    process's byte for byte; each process encoded about half of the texts; only rank 0 wrote; all return the same;
    a failure or mismatched input on one process raises on both."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    procs = [subprocess.Popen([sys.executable, __file__, str(one)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True),
             subprocess.Popen(torchrun + [__file__, str(two)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)]
    for p in procs:
        log, _ = p.communicate(timeout=180)
        assert p.returncode == 0, log[-4000:]
    a = json.loads((one / "rank0.json").read_text())
    r0, r1 = (json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a["world"] == 1 and r0["world"] == r1["world"] == 2, "torchrun did not form a 2-process group"
    rep = a["report"]
    assert rep["n_kept"] > 0 and rep["n_filtered"] > 0, rep   # the filter has something to decide either way
    for r in (r0, r1):                                          # every process returns what one process returns
        for key in ("mined", "report", "scored", "again", "stats", "written", "ds_queries"):
            assert r[key] == a[key], key
    n_chunks = a["stats"][0]["chunks_computed"]
    assert n_chunks >= 3 and a["stats"][1] == {"chunks_cached": n_chunks, "chunks_computed": 0}
    assert _tree(two / "files") == _tree(one / "files")         # mined JSONL, cache chunks, manifests, teacher JSONL
    # only the main process wrote, and it wrote what one process writes
    assert r1["writes"] == [] and r0["writes"] == a["writes"] and "mined.jsonl" in a["writes"]
    assert any(w.startswith("cache/") for w in a["writes"]) and "teacher/en-scifact.jsonl" in a["writes"]
    # each process encoded its half (strided: at most one text more per call than the other)
    for phase in ("mining", "teacher"):
        n0, n1 = r0["counts"][phase], r1["counts"][phase]
        assert n0 + n1 == a["counts"][phase] and abs(n0 - n1) <= 2 * n_chunks + 2, phase
    assert a["counts"]["cache_hit"] == r0["counts"]["cache_hit"] == r1["counts"]["cache_hit"] == 0
    for r in (r0, r1):
        assert "boom on rank 1" in r["errors"]["encode_fails"] or "[1] failed" in r["errors"]["encode_fails"]
        assert "different inputs" in r["errors"]["texts_differ"]
        assert "ZeroDivisionError" in r["errors"]["main_fails"]


# --------------------------------------------------------------------------- one instruction per query
def test_mining_formats_each_query_with_its_own_instruction_once():
    from kalm_lib.data import mine_hard_negatives
    from kalm_lib.prompts import format_query

    recs, corpus = _records()
    emb = BagOfWords()
    mined, rep = mine_hard_negatives(recs, encode_fn=emb, corpus=corpus, instruction=DEFAULT, filter_topk=None)
    queries = emb.seen[-len(recs):]                               # candidates first, then the queries
    assert queries == [format_query(r["query"], r.get("instruction") or DEFAULT) for r in recs]
    assert all(q.count("Instruct:") == 1 for q in queries)
    assert [q.startswith(format_query("", DEFAULT)) for q in queries] == ["instruction" not in r for r in recs]
    assert not any("Instruct:" in t for t in emb.seen[:-len(recs)])     # asymmetric: candidates raw
    # the mined records keep the record's own instruction for later stages (and only where it had one)
    assert [m.get("instruction") for m in mined] == [r.get("instruction") for r in recs]
    # symmetric: candidates get the dataset's instruction, queries still exactly one
    emb2 = BagOfWords()
    mine_hard_negatives(recs, encode_fn=emb2, corpus=corpus, instruction=DEFAULT, symmetric=True, filter_topk=None)
    assert all(t.count("Instruct:") == 1 for t in emb2.seen)


def test_teacher_prompt_uses_each_records_own_instruction(tmp_path, monkeypatch):
    import kalm_lib.data.training_set as ts
    from kalm_lib.data import TeacherScorer, get_entry, score_datasets
    from kalm_lib.data.errors import LoadReport

    recs = [{"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}"], **({"instruction": f"own {i}"} if i % 2 else {})}
            for i in range(6)]
    emb = BagOfWords()
    out = TeacherScorer(emb, tmp_path / "c", teacher_name="toy", query_prompt_template=TEMPLATE, instruction=DEFAULT,
                        show_progress_bar=False).score(recs)
    queries = [t for t in emb.seen if t.startswith("Instruct:")]
    assert queries == [TEMPLATE.format(instruction=r.get("instruction") or DEFAULT) + r["query"] for r in recs]
    assert all(q.count("Instruct:") == 1 for q in queries) and len(out) == 6
    # without a template the queries stay raw (MiniLM)
    emb_raw = BagOfWords()
    TeacherScorer(emb_raw, tmp_path / "c", teacher_name="toy", show_progress_bar=False).score(recs)
    assert not any("Instruct:" in t for t in emb_raw.seen)

    # score_datasets: one dataset's records, each query with its own instruction; the file keeps "instruction"
    entry = get_entry("en-scifact")
    monkeypatch.setattr(ts, "stage_records", lambda *a, **k: ([dict(r) for r in recs], LoadReport(entry.name), "mined"))
    emb3 = BagOfWords()
    written = score_datasets([entry.name], emb3, tmp_path / "out", tmp_path / "cache", query_prompt_template=TEMPLATE,
                             show_progress_bar=False)
    queries = [t for t in emb3.seen if t.startswith("Instruct:")]
    want = [TEMPLATE.format(instruction=r.get("instruction") or entry.instruction) + r["query"] for r in recs]
    assert queries == want
    rows = [json.loads(line) for line in written[entry.name].read_text().splitlines()]
    assert [r.get("instruction") for r in rows] == [r.get("instruction") for r in recs]


def test_teacher_cache_key_follows_the_prompts(tmp_path):
    """One prompt for all examples keeps the key it had when the prompt was formatted once per dataset (existing
    caches stay valid); per-record instructions make another key."""
    import hashlib as h

    from kalm_lib.data import TeacherScorer, data_hash

    recs = [{"query": f"q{i}", "pos": [f"p{i}"], "neg": []} for i in range(3)]
    new = TeacherScorer(BagOfWords(), tmp_path, teacher_name="toy", query_prompt_template=TEMPLATE, instruction=DEFAULT)
    old_prompt = TEMPLATE.format(instruction=DEFAULT)
    old_key = h.sha256(json.dumps(["toy", old_prompt, data_hash(recs)]).encode()).hexdigest()[:16]
    assert new.cache_path(recs).name == f"toy-{old_key}"
    assert TeacherScorer(BagOfWords(), tmp_path, teacher_name="toy", query_prompt=old_prompt).cache_path(recs) \
        == new.cache_path(recs)
    own = [dict(recs[0], instruction="other")] + recs[1:]
    assert new.cache_path(own) != new.cache_path(recs)


def test_sharded_encode_is_the_identity_in_one_process():
    from kalm_lib.data import as_encode_fn
    from kalm_lib.data.encoders import sharded_encode

    emb = BagOfWords()
    enc = as_encode_fn(emb)
    assert sharded_encode(enc) is enc and enc.sharded
    x = enc(["a b", "c"])
    assert x.shape == (2, 16) and x.dtype == np.float32 and emb.texts == 2
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-6)


# --------------------------------------------------------------------------- the FSDP launch config
def test_fsdp_config_wraps_each_qwen2_decoder_layer(monkeypatch):
    """configs/accelerate/fsdp.yaml read the way ``accelerate launch --config_file`` reads it (its launch parser,
    its validation, the environment it hands the processes) gives an FSDP plugin wrapping ``Qwen2DecoderLayer``, a
    class a Qwen2 backbone has."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.dataclasses import get_module_class_from_name
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers import Qwen2Config, Qwen2Model

    args = launch_command_parser().parse_args(["--config_file", str(ROOT / "configs/accelerate/fsdp.yaml"), "x.py"])
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp and args.fsdp_transformer_layer_cls_to_wrap == "Qwen2DecoderLayer"
    env = prepare_multi_gpu_env(args)
    for k, v in env.items():
        if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.transformer_cls_names_to_wrap == ["Qwen2DecoderLayer"]
    tiny = Qwen2Model(Qwen2Config(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
                                  num_hidden_layers=1, vocab_size=32))
    assert get_module_class_from_name(tiny, "Qwen2DecoderLayer") is not None


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
