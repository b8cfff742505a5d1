"""Hard-negative mining with the ranking-consistency filter (PAPER.md §3.1; KaLM V1 ``hn_mine.py``).

With an embedder E (the previous-stage KaLM model, or any sentence-transformers model), every query
q (with its instruction) and every candidate passage c is encoded and scored by cosine s(q, c).
Ranks count candidates other than q's own positives and q itself, best first, from 0.

* Ranking-consistency filter, top-k (paper k = 50, the default): with s⁺ = max_{p⁺} s(q, p⁺) (the BEST
  positive, as V1's ``pos_score = max(pos_scores)``), the positive's rank is r = 1 + #{c : s(q, c) > s⁺}
  over the candidates c other than q's own positives and q itself; the example is **kept when r ≤ k** and
  **dropped when r > k**: with k = 50, a best positive at rank 50 stays, one at rank 51 goes.
  Why this convention: it is the rule as the papers state it ("drop the sample if its positive is not in
  the top-50", PAPER.md §3.1). V1's ``hn_mine.py`` codes it as ``pos_score < all_p_scores[filter_topk]``
  on the 0-based retrieval list, which keeps a positive at index 50, i.e. the 51st place (one past the
  stated top-50) and lets the query text itself outrank the positive; we keep the stated rule.
  How positives count: only the best one is ranked; q's other positives score ≤ s⁺ by definition, so they
  never push it down (and are never negatives). Other examples' positives are ordinary candidates. Ties
  (|s − s⁺| ≤ 1e-6, float32 round-off) favour the positive. ``filter_topk=None`` turns the filter off.
* Negatives: the candidates at ranks [a, b) (paper [50, 100)) form the pool; M (paper 7) are sampled
  from it without replacement. A record's own negatives are kept first (V1), and if the pool is too
  small the rest is filled with random corpus passages (counted in the report).

The paper's ranks assume a corpus of millions. For a small candidate pool (N < ``reference_corpus_size``)
the ranks are scaled by N / reference_corpus_size (``scale_to_corpus``), keeping b − a ≥ M; the report
says which ranks were used.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kalm_lib.distributed import gather_objects, on_main, rank_world

from .catalog import CatalogEntry, get_entry
from .encoders import as_encode_fn, sharded_encode
from .errors import log
from .instructions import format_query
from .examples import DEFAULT_N, write_examples
from .jsonl import write_jsonl
from .search import count_above, exact_topk

QUERY_BLOCK = 1024   # queries per search block, the unit of work shared among the processes of a launch


@dataclass
class MiningReport:
    name: str
    n_queries: int = 0
    n_kept: int = 0
    n_filtered: int = 0
    corpus_size: int = 0
    sample_range: tuple[int, int] = (50, 100)
    filter_topk: int = 50
    num_negatives: int = 7
    n_padded: int = 0                   # examples that needed random corpus passages to reach M
    seconds: float = 0.0
    pos_ranks: list[int] = field(default_factory=list)      # per query: exact rank r of the best positive
    pos_scores: list[float] = field(default_factory=list)   # per query: s⁺
    neg_scores: list[float] = field(default_factory=list)   # mined negatives of kept examples
    output_path: str | None = None

    @property
    def filter_rate(self) -> float:
        return self.n_filtered / self.n_queries if self.n_queries else 0.0

    def summary(self) -> str:
        return (f"{self.name}: mined {self.n_queries} queries over {self.corpus_size} candidates; ranking-consistency "
                f"filter (top-{self.filter_topk}) dropped {self.n_filtered} = {100 * self.filter_rate:.1f}%; "
                f"negatives from ranks [{self.sample_range[0]}, {self.sample_range[1]}), M={self.num_negatives}; "
                f"{self.n_padded} examples padded with random passages; {self.seconds:.1f}s")


def scaled_ranges(n_candidates: int, sample_range: tuple[int, int] = (50, 100), filter_topk: int = 50,
                  num_negatives: int = 7, reference_corpus_size: int = 1000) -> tuple[tuple[int, int], int]:
    """The paper's ranks for N ≥ reference size; else scaled by N/reference (b − a ≥ M, k ≥ 1)."""
    a, b = sample_range
    if not 0 <= a < b:
        raise ValueError(f"sample_range must satisfy 0 <= a < b, got {sample_range}")
    if n_candidates >= reference_corpus_size:
        return (a, b), filter_topk
    f = n_candidates / reference_corpus_size
    a2 = max(1, int(round(a * f)))
    b2 = max(a2 + num_negatives, int(round(b * f)))
    return (a2, b2), max(1, int(round(filter_topk * f)))


def warn_if_instructed(records: list[dict], name: str) -> int:
    """Log how many queries already start with an instruction (``"Instruct:"``): formatting them again would give
    them two; the loader should have moved it into the record's ``"instruction"``. Returns that count."""
    n = sum(r["query"].lstrip().startswith("Instruct:") for r in records)
    if n:
        log.warning("%s: %d of %d queries already start with 'Instruct:'; they get a second instruction "
                    "(parse it into the record's \"instruction\" when loading)", name, n, len(records))
    return n


def mine_hard_negatives(records: list[dict], embedder=None, corpus: list[str] | None = None, num_negatives: int = 7,
                        sample_range: tuple[int, int] = (50, 100), filter_topk: int | None = 50,
                        instruction: str | None = None, symmetric: bool = False, seed: int = 0,
                        batch_size: int = 64, scale_to_corpus: bool = True, reference_corpus_size: int = 1000,
                        keep_existing: bool = True, output_path: str | os.PathLike | None = None,
                        use_faiss: bool | str = "auto", encode_fn=None, name: str = "mined",
                        show_progress_bar: bool = False) -> tuple[list[dict], MiningReport]:
    """Mine M negatives per record and apply the ranking-consistency filter (``filter_topk=None``: off).

    ``records``: ``{"query", "pos", "neg"?, "instruction"?}``. A query is encoded with its record's own
    ``instruction`` (a Hub row's, parsed out of its query by the loader) or else ``instruction`` (the dataset's):
    one instruction per query, never two. Symmetric tasks' candidates carry ``instruction``. Candidates: every
    pos/neg text of ``records`` plus ``corpus``. Returns the kept records ``{"query", "pos", "neg",
    "pos_scores", "neg_scores", "pos_rank"}`` (plus the input's ``"instruction"`` and ``"label"`` when it has
    them) and a :class:`MiningReport`; writes them as JSON Lines to ``output_path`` if given.

    Under a launch of W processes (:mod:`kalm_lib.distributed`) every process must be given the same records and
    corpus: each encodes every W-th text (:func:`~kalm_lib.data.encoders.sharded_encode`) and searches every W-th
    block of queries against the whole candidate matrix, the per-query results are gathered, and every process
    returns the same records and report; only the main process writes ``output_path``. Memory per process: the
    full (N + Q, d) float32 matrices (N × d × 4 bytes: 1M candidates × 896 = 3.6 GB) and all Q mined records."""
    t0 = time.time()
    enc = sharded_encode(encode_fn) if encode_fn is not None else as_encode_fn(
        embedder, batch_size=batch_size, show_progress_bar=show_progress_bar)
    cand: dict[str, int] = {}
    for r in records:
        for t in (*r["pos"], *r.get("neg", [])):
            cand.setdefault(t, len(cand))
    for t in corpus or []:
        cand.setdefault(t, len(cand))
    texts = list(cand)
    n = len(texts)
    if scale_to_corpus:
        (a, b), k = scaled_ranges(n, sample_range, filter_topk or 0, num_negatives, reference_corpus_size)
    else:
        (a, b), k = tuple(sample_range), filter_topk or 0
    k = k if filter_topk is not None else None
    rep = MiningReport(name, n_queries=len(records), corpus_size=n, sample_range=(a, b),
                       filter_topk=k if k is not None else -1, num_negatives=num_negatives)

    fmt_c = (lambda t: format_query(t, instruction)) if symmetric else (lambda t: t)
    warn_if_instructed(records, name)
    c_emb = enc([fmt_c(t) for t in texts])                                                  # (N, d)
    q_emb = enc([format_query(r["query"], r.get("instruction") or instruction) for r in records])  # (Q, d)
    max_pos = max((len(r["pos"]) for r in records), default=1)
    depth = min(n, max(b, k or 0) + max_pos + 1)

    def mine_block(lo: int, hi: int) -> list[tuple]:
        """(s⁺, rank r, the mined record or None if filtered, padded?) for queries lo..hi-1."""
        qb = q_emb[lo:hi]
        scores, idx = exact_topk(qb, c_emb, depth, use_faiss=use_faiss)                   # (B, depth)
        # exact rank of the best positive over the whole pool: r = 1 + #{c ∉ P⁺(q), c ≠ q : s(q, c) > s⁺}
        pos_best = np.array([max(float(q_emb[i] @ c_emb[cand[p]]) for p in records[i]["pos"]) for i in range(lo, hi)])
        above = count_above(qb, c_emb, pos_best)
        res = []
        for bi, qi in enumerate(range(lo, hi)):
            r = records[qi]
            rng = np.random.default_rng([seed, qi])
            pos_ids = {cand[p] for p in r["pos"]}
            qid = cand.get(r["query"], -1)
            if qid >= 0 and qid not in pos_ids and float(q_emb[qi] @ c_emb[qid]) > pos_best[bi] + 1e-6:
                above[bi] -= 1
            pos_s = [float(q_emb[qi] @ c_emb[cand[p]]) for p in r["pos"]]
            s_plus = max(pos_s)
            # ranked candidates other than the positives and the query itself
            others = [(int(j), float(s)) for j, s in zip(idx[bi], scores[bi]) if j not in pos_ids and j != qid]
            rank = 1 + int(above[bi])
            if k is not None and rank > k:
                res.append((s_plus, rank, None, False))
                continue
            neg = list(r.get("neg", []))[:num_negatives] if keep_existing else []
            taken = set(neg)
            pool = [j for j, _ in others[a:b] if texts[j] not in taken]
            need = num_negatives - len(neg)
            if need > 0 and pool:
                pick = rng.choice(len(pool), size=min(need, len(pool)), replace=False)
                for p in sorted(pick):
                    neg.append(texts[pool[p]])
                    taken.add(texts[pool[p]])
            padded = len(neg) < num_negatives
            if padded:
                banned = pos_ids | {qid}
                free = [j for j in range(n) if j not in banned and texts[j] not in taken]
                for p in rng.permutation(len(free))[: num_negatives - len(neg)]:
                    neg.append(texts[free[p]])
            neg_s = [float(q_emb[qi] @ c_emb[cand[t]]) for t in neg]
            rec = {"query": r["query"], "pos": list(r["pos"]), "neg": neg, "pos_scores": pos_s, "neg_scores": neg_s,
                   "pos_rank": rank}
            for key in ("instruction", "label"):     # the record's own instruction goes on to later stages
                if key in r:
                    rec[key] = r[key]
            res.append((s_plus, rank, rec, padded))
        return res

    # Queries in blocks of QUERY_BLOCK, block i on process i mod W: a block's search is the same computation in
    # any process (same shapes, same rows), so W processes share the search and mine exactly what one does.
    rank_, world = rank_world()
    mined = {lo: mine_block(lo, min(lo + QUERY_BLOCK, len(records)))
             for lo in range(rank_ * QUERY_BLOCK, len(records), world * QUERY_BLOCK)}
    if world > 1:
        mined = {lo: res for part in gather_objects(mined) for lo, res in part.items()}
    out = []
    for lo in sorted(mined):
        for s_plus, rank, rec, padded in mined[lo]:
            rep.pos_scores.append(s_plus)
            rep.pos_ranks.append(rank)
            if rec is None:
                rep.n_filtered += 1
                continue
            rep.n_padded += padded
            rep.neg_scores.extend(rec["neg_scores"])
            out.append(rec)
    rep.n_kept = len(out)
    rep.seconds = time.time() - t0
    if output_path is not None:      # the main process writes (atomically); the others wait for it
        rep.output_path = str(on_main(lambda: write_jsonl(out, output_path)))
        # what the miner saw, for the reader (kalm_lib/data/examples.py): <out_dir>/examples/<name>.jsonl
        shown = [{"task": name, "instruction": r.get("instruction") or instruction, "symmetric": symmetric,
                  "query": format_query(r["query"], r.get("instruction") or instruction),
                  "pos": fmt_c(r["pos"][0]), "neg": [fmt_c(t) for t in r["neg"]]} for r in out[:DEFAULT_N]]
        on_main(lambda: write_examples(Path(output_path).parent / "examples", shown, name=f"{name}.jsonl"))
    log.info(rep.summary())
    return out, rep


def mine_dataset(name: str | CatalogEntry, embedder, out_dir: str | os.PathLike, data_dir=None,
                 max_rows: int | None = None, corpus_limit: int | None = None, seed: int = 0,
                 skip_invalid: bool = True, **kw) -> tuple[list[dict], MiningReport]:
    """Mine one catalog dataset into ``out_dir/<name>.jsonl`` (what ``build_training_set(mined_dir=...)``
    reads), with the dataset's instruction and symmetry, its ``mining_corpus`` if it has one (test docs
    removed) limited to ``corpus_limit`` documents."""
    from .loader import load_corpus, load_records

    entry = get_entry(name)
    records = load_records(entry, data_dir=data_dir, max_rows=max_rows, skip_invalid=skip_invalid, seed=seed)
    corpus = load_corpus(entry, data_dir=data_dir, limit=corpus_limit, seed=seed)
    return mine_hard_negatives(records, embedder, corpus=corpus, instruction=entry.instruction,
                               symmetric=entry.symmetric, seed=seed, name=entry.name,
                               output_path=Path(out_dir) / f"{entry.name}.jsonl", **kw)
