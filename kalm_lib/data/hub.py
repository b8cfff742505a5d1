"""The paper's public training sets on the Hugging Face Hub, one task per subset (gpu / paper profiles).

Both repositories, ``HIT-TMG/KaLM-embedding-pretrain-data`` and ``KaLM-Embedding/KaLM-embedding-finetuning-data``,
hold one folder per subset with ``train-0000i-of-0000n.parquet`` shards (PAPER.md §9). Rows:

    pre-training : query: str, pos: list[str], neg: [] (empty), relevance: float
    fine-tuning  : query: "Instruct: {task} \\n Query: {text}", pos: list[str], neg: list[str] (usually 7)

* **One task per subset.** A catalog entry whose ``hub.data_dir`` is ``"*"`` stands for every subfolder of the
  repository; :func:`expand_entry` makes one entry per subfolder, named ``<entry>.<subfolder>`` (the authors'
  V1 code takes the subfolder as the task label for homogeneous batching). Its task type and symmetric flag come
  from the first matching rule of ``hub_subset_rules`` in catalog.yaml (on the subfolder name or the subset's
  instruction), else from the parent entry; its instruction is the one parsed from the subset's first query.
* **One instruction, never two.** :func:`split_instruction` takes the ``Instruct: … \\n Query: …`` wrapper off a
  query (and off a positive or negative that carries one); the bare text is what decontamination compares and
  what the trainer, the miner and the teacher wrap, each once, with the row's own instruction.
* **Every subset in a capped run.** :func:`subset_probabilities` gives p_i ∝ n_i^(1/T) over the subsets' row
  counts (T = ``data.subset_temperature``: 1 proportional to size, larger flattens, ∞ uniform);
  :func:`allocate_rows` splits a row cap by those probabilities so that every subset keeps at least one row.
* **Local mirror.** ``$KALM_HUB_DIR/<owner>/<name>`` (:func:`kalm_lib.paths.hub_path`) is read exactly as the Hub
  is: the same folder layout, the same parquet files, through the same code (fsspec's local filesystem instead of
  ``HfFileSystem``). Row counts come from the parquet footers, so sizing ~100 subsets reads no row data.
"""
from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import numpy as np

from kalm_lib.paths import hub_path

from .catalog import CATALOG_FILE, CatalogEntry, HubSource, get_entry
from .errors import DataError, LoadReport, RecordError, log

QUERY_KEYS = ("query", "anchor", "question", "title", "sentence1", "prompt_query")
POS_KEYS = ("pos", "positive", "positives", "response", "answer", "document", "sentence2", "passage")
NEG_KEYS = ("neg", "negative", "negatives", "hard_negatives")
INSTRUCTION_KEYS = ("instruction", "prompt", "task_instruction")
KNOWN_UNUSED = ("relevance",)  # pre-training rows' score column: read, not used by the recipe (counted, not logged)
ALL_SUBSETS = "*"              # hub.data_dir meaning "one task per subfolder"

# "Instruct: {task} \n Query: {text}" (the Hub data and mteb) or "Instruct: {task}\nQuery:{text}" (Qwen3-Embedding)
_INSTRUCTED = re.compile(r"\s*Instruct:[ \t]*(?P<instruction>.*?)[ \t]*\n[ \t]*Query:[ \t]?(?P<text>.*)\Z", re.DOTALL)


def split_instruction(text: str) -> tuple[str | None, str]:
    """``"Instruct: I \\n Query: q"`` -> ``("I", "q")``; a text without the wrapper -> ``(None, text)``."""
    m = _INSTRUCTED.match(text)
    if m is None:
        return None, text
    return (m["instruction"].strip() or None), m["text"]


# ---------------------------------------------------------------------------- rows -> the train layout
def _first(row: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in row and row[k] is not None:
            return k, row[k]
    return None, None


def _as_list(value) -> list:
    if isinstance(value, str):
        return [value]
    return list(value) if value is not None else []


def map_hub_row(row: dict, source: str, line: int, report: LoadReport | None = None) -> dict:
    """A Hub row -> the train layout ``{"query", "pos", "neg"[, "instruction"]}`` (validated afterwards).

    The query's ``Instruct: … \\n Query: …`` wrapper becomes the record's ``instruction`` and the bare query
    text; wrapped positives/negatives are unwrapped too (a symmetric task's are wrapped again, once, later).
    An instruction column, where a dataset has one, wins over the parsed wrapper."""
    qk, q = _first(row, QUERY_KEYS)
    pk, p = _first(row, POS_KEYS)
    if qk is None or pk is None:
        missing = "query" if qk is None else "pos"
        raise RecordError(source, line, missing, f"no column for it among {sorted(row)} "
                          f"(add the right alias to kalm_lib/data/hub.py)")
    nk, n = _first(row, NEG_KEYS)
    ik, instr = _first(row, INSTRUCTION_KEYS)
    out = {"query": q, "pos": _as_list(p)}
    if nk is not None:
        out["neg"] = _as_list(n)
    parsed = None
    if isinstance(q, str):
        parsed, out["query"] = split_instruction(q)
        out["pos"] = [split_instruction(t)[1] if isinstance(t, str) else t for t in out["pos"]]
        if "neg" in out:
            out["neg"] = [split_instruction(t)[1] if isinstance(t, str) else t for t in out["neg"]]
    if ik is not None and isinstance(instr, str) and instr.strip():
        out["instruction"] = instr.strip()
    elif parsed:
        out["instruction"] = parsed
    if report is not None:
        for k in row:
            if k not in (qk, pk, nk, ik):
                report.ignored_fields[k] += 1
    return out


# ---------------------------------------------------------------------------- the repository's layout
def _filesystem(repo: str):
    """(fsspec filesystem, root path, URL prefix for ``datasets``) of a Hub dataset repo or its local mirror."""
    import fsspec

    where = hub_path(repo, "dataset")
    if where != repo:  # $KALM_HUB_DIR/<owner>/<name>
        return fsspec.filesystem("file"), where.rstrip("/"), ""
    from huggingface_hub import HfFileSystem

    return HfFileSystem(), f"datasets/{repo}", "hf://"


@functools.lru_cache(maxsize=256)
def _listing(repo: str, mirror: str | None) -> dict[str, tuple[str, ...]]:
    """subfolder -> its parquet files (sorted), for every subfolder holding at least one (cached per mirror)."""
    fs, root, prefix = _filesystem(repo)
    try:
        files = sorted(fs.glob(f"{root}/**/*.parquet"))
    except Exception as err:  # a renamed or private repository, no network
        raise DataError(f"cannot list the Hub dataset {repo} ({root}): {err}") from err
    out: dict[str, list[str]] = {}
    for f in files:
        rel = f[len(root):].lstrip("/")
        if "/" not in rel:
            continue  # a parquet file at the top is no subset
        out.setdefault(rel.split("/", 1)[0], []).append(prefix + f)
    if not out:
        raise DataError(f"the Hub dataset {repo} ({root}) has no <subset>/*.parquet files: not the layout of "
                        f"the KaLM training sets (is the mirror complete?)")
    return {k: tuple(v) for k, v in out.items()}


def _mirror_key() -> str | None:
    import os

    return os.environ.get("KALM_HUB_DIR")


def list_subsets(repo: str) -> list[str]:
    """The subfolders of a Hub dataset repository (or of its mirror) that hold parquet shards."""
    return sorted(_listing(repo, _mirror_key()))


def subset_files(repo: str, subset: str, split: str = "train") -> list[str]:
    """The parquet shards of one subset's split (``<split>-*.parquet``, else every shard of the folder)."""
    listing = _listing(repo, _mirror_key())
    if subset not in listing:
        raise DataError(f"the Hub dataset {repo} has no subset {subset!r} (it has {len(listing)}: "
                        f"{', '.join(sorted(listing)[:12])}{', …' if len(listing) > 12 else ''})")
    files = list(listing[subset])
    named = [f for f in files if f.rsplit("/", 1)[-1].startswith(f"{split}-")]
    return named or files


def _open(path: str):
    import fsspec

    return fsspec.open(path, "rb").open()


@functools.lru_cache(maxsize=4096)
def _rows_in(path: str) -> int:
    import pyarrow.parquet as pq

    with _open(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def subset_rows(repo: str, subset: str, split: str = "train") -> int:
    """Rows of a subset's split, from its shards' parquet footers (no row data is read)."""
    return sum(_rows_in(f) for f in subset_files(repo, subset, split))


@functools.lru_cache(maxsize=1024)
def _first_query(path: str) -> str | None:
    import pyarrow.parquet as pq

    with _open(path) as f:
        pf = pq.ParquetFile(f)
        cols = [c for c in QUERY_KEYS if c in pf.schema_arrow.names][:1]
        if not cols:
            return None
        for batch in pf.iter_batches(batch_size=1, columns=cols):
            if batch.num_rows:
                v = batch.column(0)[0].as_py()
                return v if isinstance(v, str) else None
    return None


# ---------------------------------------------------------------------------- one task per subset
@functools.lru_cache(maxsize=1)
def subset_rules() -> tuple[dict, ...]:
    """``hub_subset_rules`` of catalog.yaml: ``{match, on: subset|instruction|any, task_type, symmetric}``."""
    import yaml

    with open(CATALOG_FILE, encoding="utf-8") as f:
        raw = yaml.safe_load(f).get("hub_subset_rules") or []
    rules = []
    for i, r in enumerate(raw):
        where = f"{CATALOG_FILE}: hub_subset_rules[{i}]"
        if not isinstance(r, dict) or "match" not in r or "symmetric" not in r or "task_type" not in r:
            raise DataError(f"{where}: a rule needs match, task_type and symmetric")
        rules.append({"match": re.compile(r["match"]), "on": r.get("on", "any"), "task_type": r["task_type"],
                      "symmetric": bool(r["symmetric"])})
    return tuple(rules)


def classify_subset(subset: str, instruction: str | None, default: CatalogEntry) -> tuple[str, bool]:
    """(task_type, symmetric) of one subset: the first rule whose pattern is found in the subset's name or its
    instruction (as the rule says), else the parent entry's."""
    for r in subset_rules():
        texts = {"subset": [subset], "instruction": [instruction or ""], "any": [subset, instruction or ""]}[r["on"]]
        if any(r["match"].search(t) for t in texts):
            return r["task_type"], r["symmetric"]
    return default.task_type, default.symmetric


def _slug(subset: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", subset).strip("_") or "subset"


def is_per_subset(entry: CatalogEntry) -> bool:
    return entry.hub is not None and entry.hub.data_dir == ALL_SUBSETS


def expand_entry(entry: CatalogEntry) -> list[CatalogEntry]:
    """One entry per subfolder of a ``data_dir: "*"`` Hub entry (see the module doc); any other entry as is."""
    if not is_per_subset(entry):
        return [entry]
    out = []
    for subset in list_subsets(entry.hub.repo):
        files = subset_files(entry.hub.repo, subset, entry.hub.split)
        first = _first_query(files[0])
        instruction = split_instruction(first)[0] if first else None
        task_type, symmetric = classify_subset(subset, instruction, entry)
        out.append(replace(entry, name=f"{entry.name}.{_slug(subset)}", task_type=task_type, symmetric=symmetric,
                           instruction=instruction or entry.instruction,
                           hub=HubSource(entry.hub.repo, subset, entry.hub.split),
                           note=f"subset {subset} of {entry.hub.repo}"))
    return out


def subset_probabilities(rows: Sequence[int], temperature: float = 1.0) -> np.ndarray:
    """p_i ∝ n_i^(1/T): T = 1 samples proportionally to size, T > 1 flattens towards uniform (T = ∞ uniform)."""
    n = np.asarray(rows, dtype=float)
    if (n < 0).any() or not n.size:
        raise ValueError(f"row counts must be non-negative and not empty, got {list(rows)}")
    if temperature <= 0:
        raise ValueError(f"subset_temperature must be > 0, got {temperature}")
    w = n ** (1.0 / temperature) if np.isfinite(temperature) else (n > 0).astype(float)
    if w.sum() == 0:
        raise ValueError("every subset is empty")
    return w / w.sum()


def allocate_rows(cap: int, rows: Sequence[int], probabilities: Sequence[float]) -> list[int]:
    """Split a row cap over subsets: about ``cap · p_i`` each (largest remainder), never more than a subset has,
    and at least one row for every non-empty subset when the cap allows it (a cap keeps every subset)."""
    rows = [int(r) for r in rows]
    total = min(int(cap), sum(rows))
    p = np.asarray(probabilities, dtype=float)
    floor = [1 if r > 0 and total >= sum(x > 0 for x in rows) else 0 for r in rows]
    out = list(floor)
    left = total - sum(out)
    while left > 0:
        room = np.array([r - o for r, o in zip(rows, out)], dtype=float)
        live = room > 0
        if not live.any():
            break
        share = np.where(live, p, 0.0)
        share = share / share.sum() if share.sum() > 0 else live / live.sum()
        want = np.minimum(np.floor(share * left), room).astype(int)
        if want.sum() == 0:  # hand out the remainder one by one, largest fractional share first
            for i in np.argsort(-(share * left - np.floor(share * left)) - live * 1e-9):
                if left and room[i] > 0:
                    out[i] += 1
                    left -= 1
            continue
        for i, w in enumerate(want):
            out[i] += int(w)
        left -= int(want.sum())
    return out


def expand_datasets(names: Sequence, max_rows: int | None = None,
                    temperature: float = 1.0) -> list[tuple[CatalogEntry, int | None]]:
    """Datasets as they train: every ``data_dir: "*"`` Hub entry becomes its subsets, each with its share of
    ``max_rows`` (:func:`allocate_rows` over :func:`subset_probabilities`); other datasets keep ``max_rows``."""
    out: list[tuple[CatalogEntry, int | None]] = []
    for name in names:
        entry = get_entry(name)
        subs = expand_entry(entry)
        if not is_per_subset(entry):
            out.append((entry, max_rows))
            continue
        rows = [subset_rows(s.hub.repo, s.hub.data_dir, s.hub.split) for s in subs]
        caps: list = [None] * len(subs)
        if max_rows is not None:
            caps = allocate_rows(max_rows, rows, subset_probabilities(rows, temperature))
        log.info("%s: %d subsets of %s, %d rows%s", entry.name, len(subs), entry.hub.repo, sum(rows),
                 f", {max_rows} taken (T={temperature:g})" if max_rows is not None else "")
        out += [(s, c) for s, c in zip(subs, caps) if c is None or c > 0]
    return out


# ---------------------------------------------------------------------------- reading rows
def hub_source_name(hub: HubSource) -> str:
    return f"hf://datasets/{hub.repo}" + (f"/{hub.data_dir}" if hub.data_dir else "")


def iter_hub_rows(hub: HubSource, seed: int = 0, shuffle_buffer: int = 10_000,
                  batch_rows: int = 1024) -> Iterator[tuple[str, int, dict]]:
    """Yield ``(source, row_number, row)`` from one subset, shards in a seeded order, rows through a seeded shuffle
    buffer (as ``datasets``' ``shuffle(buffer_size=...)`` does), reading a shard's row groups only as far as needed.

    The capped reads of the map-style path (``max_rows``) stop early, subset after subset; ``datasets``' parquet
    stream sleeps 5 s whenever it is closed early (``SLEEP_TIME_ON_THREADS_SHUTDOWN``, its guard for
    apache/arrow#45214), i.e. 5 s per subset, so this reads the shards with pyarrow itself (same files, same
    fsspec filesystems). Training streams read with ``datasets`` (kalm_lib/data/stream.py)."""
    import pyarrow.parquet as pq

    if hub.data_dir in (None, ALL_SUBSETS):
        raise DataError(f"{hub.repo}: name one subset (data_dir); expand_entry makes one entry per subset")
    source = hub_source_name(hub)
    files = subset_files(hub.repo, hub.data_dir, hub.split)
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(len(files)) if shuffle_buffer else range(len(files))
    buffer: list[dict] = []
    n = 0
    for k in order:
        with _open(files[k]) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
                for row in batch.to_pylist():
                    if not shuffle_buffer:
                        n += 1
                        yield source, n, row
                        continue
                    if len(buffer) < shuffle_buffer:
                        buffer.append(row)
                        continue
                    j = int(rng.integers(shuffle_buffer))
                    buffer[j], row = row, buffer[j]
                    n += 1
                    yield source, n, row
    for j in rng.permutation(len(buffer)):
        n += 1
        yield source, n, buffer[j]


# ---------------------------------------------------------------------------- the training stream's subsets
def row_transform(entry: CatalogEntry, stage: str, num_negatives: int, forbidden: frozenset, seed: int = 0,
                  use_instructions: bool = True, own_negatives_only: bool = False,
                  report: LoadReport | None = None) -> Callable[[dict], dict | None]:
    """raw Hub row -> the item the trainer consumes (as ``KaLMTrainingDataset.__getitem__`` gives), or None when
    the row is left out (malformed, or an evaluation test text); every reason is counted in ``report``."""
    from kalm_lib.prompts import format_query

    from .formats import normalise
    from .overlap import decontaminate
    from .validation import validate_record

    source = hub_source_name(entry.hub)
    report = report if report is not None else LoadReport(entry.name, source=source)
    M = 0 if stage == "pretrain" else num_negatives
    count = [0]  # rows seen by this transform (for error messages; a worker or a resumed run counts from 0)

    def transform(row: dict) -> dict | None:
        count[0] += 1
        report.read += 1
        try:
            raw = map_hub_row(row, source, count[0], report)
            validate_record(raw, "train", source, count[0])
        except RecordError as err:
            report.add_invalid(err)
            return None
        rec = normalise(raw, entry, "train")
        if forbidden:
            kept = decontaminate([rec], forbidden, report)
            if not kept:
                return None
            rec = kept[0]
        if M and not rec["neg"]:
            report.dropped[f"no negatives (M={M}) in a streamed row"] += 1
            return None
        instr = (rec.get("instruction") or entry.instruction) if use_instructions else None
        side = (lambda t: format_query(t, instr)) if entry.symmetric else (lambda t: t)
        # Which positive and which M negatives: a function of the row itself (its query) and the seed, not of the
        # order rows arrive in, so a resumed run or a DataLoader worker draws the same; and no RNG object per row
        # (np.random.default_rng cost 12-26 µs a row, half the transform). The Hub rows carry 7 negatives: M = 7
        # takes them all; fewer than M repeat, cycling from a row-dependent start.
        h = zlib.crc32(rec["query"].encode("utf-8", "surrogatepass"), seed & 0xFFFFFFFF)
        pos = rec["pos"][h % len(rec["pos"])]
        neg = []
        if M:
            n = len(rec["neg"])
            start = (h // 7919) % n
            neg = [rec["neg"][(start + j) % n] for j in range(M)]
        report.kept += 1
        return {"query": format_query(rec["query"], instr), "pos": side(pos), "neg": [side(t) for t in neg],
                "task": entry.name, "teacher_scores": None, "own_negatives_only": own_negatives_only,
                "instruction": instr, "symmetric": entry.symmetric}

    transform.report = report
    return transform


def stream_subsets(names: Sequence, stage: str, *, data_dir=None, num_negatives: int = 7, decontaminate: bool = True,
                   temperature: float = 1.0, own_negatives_only: Sequence[str] = ("classification", "clustering"),
                   seed: int = 0, use_instructions: bool = True) -> list:
    """The stage's Hub datasets as :class:`~kalm_lib.data.stream.StreamSubset` objects: one per subset, with
    its parquet shards, row count, sampling probability (p_i ∝ n_i^(1/T), over all subsets of the stage) and the
    row transform (instruction parsed once, decontamination on the bare texts, M negatives drawn)."""
    from .overlap import eval_test_texts
    from .stream import StreamSubset

    entries = [e for e, _ in expand_datasets(names, None, temperature)]
    bad = [e.name for e in entries if e.hub is None]
    if bad:
        raise DataError(f"streaming reads Hub datasets only; {', '.join(bad)} have no Hub source (set "
                        f"data.streaming: false for local files)")
    if not decontaminate:
        log.warning("%s stream: decontamination against evaluation test texts is OFF", stage)
    forbidden = eval_test_texts(data_dir) if decontaminate else frozenset()
    rows = [subset_rows(e.hub.repo, e.hub.data_dir, e.hub.split) for e in entries]
    probs = subset_probabilities(rows, temperature)
    own = set(own_negatives_only)
    out = []
    for e, n, p in zip(entries, rows, probs):
        report = LoadReport(e.name, decontaminated=decontaminate, source=hub_source_name(e.hub))
        out.append(StreamSubset(task=e.name, data_files=subset_files(e.hub.repo, e.hub.data_dir, e.hub.split),
                                num_rows=n, probability=float(p),
                                transform=row_transform(e, stage, num_negatives, forbidden, seed=seed,
                                                        use_instructions=use_instructions,
                                                        own_negatives_only=e.task_type in own, report=report),
                                own_negatives_only=e.task_type in own))
    return out
