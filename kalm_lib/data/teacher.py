"""Teacher scores for contrastive distillation (PAPER.md §2.4), precomputed once and cached on disk.

For each example (q, p⁺, p⁻_1..M) the teacher gives cosine similarities

    z_t = [ s_t(q, p⁺), s_t(q, p⁻_1), ..., s_t(q, p⁻_M) ]      (stored as ``teacher_scores``)

aligned with ``pos + neg`` (all positives first, then all negatives), from which the distillation loss
builds P_t = softmax(z_t / τ). Teacher: Qwen3-Embedding-8B in the paper; all-MiniLM-L6-v2 on CPU here.

Cache: ``cache_dir/<teacher>-<key>/chunk_NNNNNN.json`` with key = sha256(teacher name, prompt, data hash).
Chunks are written atomically, so an interrupted run resumes at the first missing chunk; a finished run
is a pure cache hit (the teacher is not called).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path


from kalm_lib.atomic import atomic_write_json
from kalm_lib.progress import bar_disabled

from .encoders import as_encode_fn, embedder_name
from .errors import log


def data_hash(examples: list[dict]) -> str:
    """sha256 over the (query, pos, neg) texts of all examples, in order."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e["query"], e["pos"], e.get("neg", [])], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


class TeacherScorer:
    """Scores examples with a teacher embedder, chunk by chunk, through an on-disk cache."""

    def __init__(self, teacher, cache_dir: str | os.PathLike, teacher_name: str | None = None,
                 batch_size: int = 64, chunk_size: int = 512, query_prompt: str | None = None,
                 show_progress_bar: bool = True):
        self.encode = as_encode_fn(teacher, batch_size=batch_size)
        self.teacher_name = teacher_name or embedder_name(teacher)
        self.cache_dir, self.chunk_size = Path(cache_dir), int(chunk_size)
        self.query_prompt, self.show_progress_bar = query_prompt, show_progress_bar
        self.stats = {"chunks_cached": 0, "chunks_computed": 0}

    def cache_path(self, examples: list[dict]) -> Path:
        key = hashlib.sha256(json.dumps([self.teacher_name, self.query_prompt, data_hash(examples)]).encode()).hexdigest()
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.teacher_name)[-60:]
        return self.cache_dir / f"{slug}-{key[:16]}"

    def _score_chunk(self, chunk: list[dict]) -> list[list[float]]:
        qs = [(self.query_prompt or "") + e["query"] for e in chunk]
        docs: dict[str, int] = {}
        for e in chunk:
            for t in (*e["pos"], *e.get("neg", [])):
                docs.setdefault(t, len(docs))
        q = self.encode(qs)                               # (C, d)
        d = self.encode(list(docs))                       # (D, d)
        out = []
        for i, e in enumerate(chunk):
            ids = [docs[t] for t in (*e["pos"], *e.get("neg", []))]
            out.append([float(x) for x in d[ids] @ q[i]])
        return out

    def score(self, examples: list[dict]) -> list[dict]:
        """Copies of ``examples`` with ``teacher_scores`` (len(pos) + len(neg) floats each)."""
        from tqdm.auto import tqdm

        folder = self.cache_path(examples)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            atomic_write_json(manifest, {"teacher": self.teacher_name, "query_prompt": self.query_prompt,
                                         "data_hash": data_hash(examples), "n_examples": len(examples),
                                         "chunk_size": self.chunk_size})
        n_chunks = (len(examples) + self.chunk_size - 1) // self.chunk_size
        scores: list[list[float]] = []
        for c in tqdm(range(n_chunks), desc=f"teacher {self.teacher_name}",
                      disable=bar_disabled(self.show_progress_bar)):
            chunk = examples[c * self.chunk_size:(c + 1) * self.chunk_size]
            path = folder / f"chunk_{c:06d}.json"
            cached = None
            if path.is_file():
                try:
                    cached = json.loads(path.read_text(encoding="utf-8"))
                except json.JSONDecodeError:
                    log.warning("teacher cache %s is damaged; recomputing it", path)
                if cached is not None and len(cached) != len(chunk):
                    cached = None
            if cached is None:
                cached = self._score_chunk(chunk)
                atomic_write_json(path, cached)
                self.stats["chunks_computed"] += 1
            else:
                self.stats["chunks_cached"] += 1
            scores.extend(cached)
        return [dict(e, teacher_scores=s) for e, s in zip(examples, scores)]


def score_with_teacher(examples: list[dict], teacher, cache_dir: str | os.PathLike, batch_size: int = 64,
                       **kw) -> list[dict]:
    """Add ``teacher_scores`` = cosine of the query vs [pos] + neg to every example (cached, resumable)."""
    return TeacherScorer(teacher, cache_dir, batch_size=batch_size, **kw).score(examples)


def score_datasets(names: list[str], teacher, out_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                   data_dir=None, mined_dir=None, num_negatives: int = 7, max_rows_per_dataset: int | None = None,
                   seed: int = 0, query_prompt_template: str | None = None, **kw) -> dict[str, Path]:
    """Write ``out_dir/<name>.jsonl`` (records with ``teacher_scores``) for the distill stage.

    The records are the fine-tuning records (mined negatives if ``mined_dir`` has them, else the dataset's
    own, else fixed random in-dataset ones), so teacher and student see the same candidates.
    ``query_prompt_template`` (e.g. Qwen3-Embedding's ``"Instruct: {instruction}\\nQuery:"``) formats the
    teacher's query prompt with each dataset's instruction; None = raw queries (MiniLM)."""
    from .catalog import get_entry
    from .jsonl import write_jsonl
    from .training_set import stage_records

    written = {}
    for name in names:
        entry = get_entry(name)
        records, report, origin = stage_records(entry, "finetune", data_dir, num_negatives, max_rows_per_dataset,
                                                seed, mined_dir)
        report.log()
        prompt = query_prompt_template.format(instruction=entry.instruction) if query_prompt_template else None
        scored = score_with_teacher(records, teacher, Path(cache_dir), query_prompt=prompt, **kw)
        keep = ("query", "pos", "neg", "teacher_scores", "label")
        written[entry.name] = write_jsonl([{k: r[k] for k in keep if k in r} for r in scored],
                                          Path(out_dir) / f"{entry.name}.jsonl")
        log.info("%s: teacher scores for %d examples (%s negatives) -> %s", entry.name, len(scored), origin,
                 written[entry.name])
    return written


def teacher_score_frame(written: dict, max_rows: int = 500):
    """Long table (dataset, candidate, score) from the teacher-score JSON Lines files."""
    import pandas as pd

    from .jsonl import iter_jsonl

    rows = []
    for name, path in written.items():
        for n, (_, r) in enumerate(iter_jsonl(path)):
            if n >= max_rows:
                break
            k = len(r["pos"])
            rows += [{"dataset": name, "candidate": "positive", "score": s} for s in r["teacher_scores"][:k]]
            rows += [{"dataset": name, "candidate": "negative", "score": s} for s in r["teacher_scores"][k:]]
    return pd.DataFrame(rows)
