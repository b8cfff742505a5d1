"""Teacher scores for contrastive distillation (PAPER.md §2.4), precomputed once and cached on disk.

For each example (q, p⁺, p⁻_1..M) the teacher gives cosine similarities

    z_t = [ s_t(q, p⁺), s_t(q, p⁻_1), ..., s_t(q, p⁻_M) ]      (stored as ``teacher_scores``)

aligned with ``pos + neg`` (all positives first, then all negatives), from which the distillation loss
builds P_t = softmax(z_t / τ). Teacher: Qwen3-Embedding-8B in the paper; all-MiniLM-L6-v2 on CPU here.

Cache: ``cache_dir/<teacher>-<key>/chunk_NNNNNN.json`` with key = sha256(teacher name, prompt, data hash).
Chunks are written atomically, so an interrupted run resumes at the first missing chunk; a finished run
is a pure cache hit (the teacher is not called). Under a launch of several processes each encodes its share of
every chunk and only the main process reads and writes the cache (:class:`TeacherScorer`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path


from kalm_lib.atomic import atomic_write_json
from kalm_lib.distributed import gather_objects, is_main_process, on_main, rank_world
from kalm_lib.progress import bar_disabled

from .examples import DEFAULT_N, write_examples
from .encoders import as_encode_fn, embedder_name
from .errors import log


def data_hash(examples: list[dict]) -> str:
    """sha256 over the (query, pos, neg) texts of all examples, in order."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e["query"], e["pos"], e.get("neg", [])], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def teacher_prompt(example: dict, template: str | None, instruction: str | None = None,
                   fixed: str | None = None) -> str:
    """The teacher's query prompt: ``template`` formatted with the example's own instruction (a Hub row's), else
    ``instruction`` (the dataset's); without a template the ``fixed`` prompt or none (MiniLM: raw queries)."""
    instr = example.get("instruction") or instruction
    if template and instr:
        return template.format(instruction=instr)
    return fixed or ""


class TeacherScorer:
    """Scores examples with a teacher embedder, chunk by chunk, through an on-disk cache.

    The teacher's query prompt: ``query_prompt_template.format(instruction=...)`` with the example's own
    ``"instruction"`` when it has one, else ``instruction`` (the dataset's), so each query is seen with exactly one
    instruction; without a template (or without any instruction) the fixed ``query_prompt`` (None: raw queries).

    Under a launch of W processes (:mod:`kalm_lib.distributed`) every process must be given the same examples:
    each chunk's queries and documents are encoded W ways (:func:`~kalm_lib.data.encoders.sharded_encode`; the
    chunk's matrices, ``chunk_size`` × d floats, are gathered on every process); the main process reads the cache
    and tells the others, and only it writes the manifest and the chunks; every process returns the same scores."""

    def __init__(self, teacher, cache_dir: str | os.PathLike, teacher_name: str | None = None,
                 batch_size: int = 64, chunk_size: int = 512, query_prompt: str | None = None,
                 show_progress_bar: bool = True, query_prompt_template: str | None = None,
                 instruction: str | None = None):
        self.encode = as_encode_fn(teacher, batch_size=batch_size)
        self.teacher_name = teacher_name or embedder_name(teacher)
        self.cache_dir, self.chunk_size = Path(cache_dir), int(chunk_size)
        self.query_prompt, self.show_progress_bar = query_prompt, show_progress_bar
        self.query_prompt_template, self.instruction = query_prompt_template, instruction
        self.stats = {"chunks_cached": 0, "chunks_computed": 0}

    def prompt_for(self, example: dict) -> str:
        """The teacher's query prompt for one example (see the class docstring)."""
        return teacher_prompt(example, self.query_prompt_template, self.instruction, self.query_prompt)

    def prompt_key(self, examples: list[dict]) -> str | None:
        """What the prompts add to the cache key: the one prompt all examples share (as when the key held one
        prompt per dataset, so those caches stay valid), else a hash of the per-example prompts."""
        if not self.query_prompt_template:
            return self.query_prompt
        prompts = {self.prompt_for(e) for e in examples}
        if len(prompts) <= 1:
            return prompts.pop() if prompts else self.query_prompt
        listed = json.dumps([self.prompt_for(e) for e in examples], ensure_ascii=False).encode("utf-8")
        return "per-example:" + hashlib.sha256(listed).hexdigest()

    def cache_path(self, examples: list[dict]) -> Path:
        key = hashlib.sha256(json.dumps([self.teacher_name, self.prompt_key(examples),
                                         data_hash(examples)]).encode()).hexdigest()
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.teacher_name)[-60:]
        return self.cache_dir / f"{slug}-{key[:16]}"

    def _score_chunk(self, chunk: list[dict]) -> list[list[float]]:
        qs = [self.prompt_for(e) + e["query"] for e in chunk]
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

    @staticmethod
    def _read_chunk(path: Path, n: int) -> list | None:
        if not path.is_file():
            return None
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("teacher cache %s is damaged; recomputing it", path)
            return None
        return cached if len(cached) == n else None

    def score(self, examples: list[dict]) -> list[dict]:
        """Copies of ``examples`` with ``teacher_scores`` (len(pos) + len(neg) floats each)."""
        from tqdm.auto import tqdm

        folder = self.cache_path(examples)
        if rank_world()[1] > 1:
            keys = set(gather_objects(folder.name))
            if len(keys) > 1:
                raise RuntimeError(f"teacher scoring: the processes were given different examples (cache keys "
                                   f"{sorted(keys)}); every process must score the same list")
        manifest = folder / "manifest.json"

        def write_manifest():
            folder.mkdir(parents=True, exist_ok=True)
            if not manifest.is_file():
                atomic_write_json(manifest, {"teacher": self.teacher_name, "query_prompt": self.prompt_key(examples),
                                             "query_prompt_template": self.query_prompt_template,
                                             "instruction": self.instruction, "data_hash": data_hash(examples),
                                             "n_examples": len(examples), "chunk_size": self.chunk_size})

        on_main(write_manifest)
        n_chunks = (len(examples) + self.chunk_size - 1) // self.chunk_size
        scores: list[list[float]] = []
        for c in tqdm(range(n_chunks), desc=f"teacher {self.teacher_name}",
                      disable=bar_disabled(self.show_progress_bar and is_main_process())):
            chunk = examples[c * self.chunk_size:(c + 1) * self.chunk_size]
            path = folder / f"chunk_{c:06d}.json"
            cached = on_main(lambda: self._read_chunk(path, len(chunk)))   # one process decides: all agree
            if cached is None:
                cached = self._score_chunk(chunk)                              # every process, sharded
                on_main(lambda: atomic_write_json(path, cached))
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
    teacher's query prompt with each record's own instruction (a Hub row's) or else the dataset's; None = raw
    queries (MiniLM). The written records keep their ``"instruction"`` so the distill stage formats the student's
    query with the same one. Under a launch of several processes every process scores (sharded) and only the
    main process writes; all return the same paths."""
    from .catalog import get_entry
    from .jsonl import write_jsonl
    from .mining import warn_if_instructed
    from .training_set import stage_records

    written = {}
    for name in names:
        entry = get_entry(name)
        records, report, origin = stage_records(entry, "finetune", data_dir, num_negatives, max_rows_per_dataset,
                                                seed, mined_dir)
        if is_main_process():
            report.log()
        if query_prompt_template:
            warn_if_instructed(records, entry.name)
        scored = score_with_teacher(records, teacher, Path(cache_dir), query_prompt_template=query_prompt_template,
                                    instruction=entry.instruction, **kw)
        keep = ("query", "pos", "neg", "teacher_scores", "instruction", "label")
        path = Path(out_dir) / f"{entry.name}.jsonl"
        written[entry.name] = on_main(lambda: write_jsonl([{k: r[k] for k in keep if k in r} for r in scored], path))
        # the teacher's strings, for the reader (kalm_lib/data/examples.py): <out_dir>/examples/<name>.jsonl
        shown = [{"task": entry.name, "instruction": r.get("instruction") or entry.instruction,
                  "symmetric": entry.symmetric, "pos": r["pos"][0],
                  "query": teacher_prompt(r, query_prompt_template, entry.instruction) + r["query"],
                  "neg": list(r["neg"]), "teacher_scores": r["teacher_scores"]} for r in scored[:DEFAULT_N]]
        on_main(lambda: write_examples(Path(out_dir) / "examples", shown, name=f"{entry.name}.jsonl"))
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
