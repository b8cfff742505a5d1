"""Streaming vs the list path: peak memory and rows/s at 10k and 1M rows (issue 13, item 4 "Scale").

Synthetic data in the Hub's layout (a ``KALM_HUB_DIR`` mirror: ``<root>/KaLM-Embedding/KaLM-embedding-finetuning-data/
<subset>/train-0000i-of-0000n.parquet``; 4 subsets of 40/30/20/10% of the rows in 4/3/2/2 shards; rows ``query: str,
pos: [str], neg: [str × 3], relevance: float`` of random words, ≈ 0.7 KB of text a row; row groups of 1,000 rows, what
``datasets``' parquet writer and ``push_to_hub`` write) is written to a temporary folder (≈ 0.45 GB at 1M rows) and
read in FRESH processes, one per measurement:

* ``stream``: :class:`kalm_lib.data.stream.TaskStream` (global batch 64, shuffle_buffer 10,000, one task per batch,
  homogeneous_ratio 1.0 and 0.5) with a trivial tokenizer-free transform (row -> trainer item), over as many batches
  as there are rows (one "epoch"); rows/s after the first batch (the readers' start-up is reported apart); also with
  2 DataLoader workers, and with the real subsets and transforms of ``kalm_lib.data.hub.stream_subsets``
  ("hub-finetune-kalm": instruction parsing, validation, decontamination, M negatives drawn), both on at most 200k rows;
* ``list``: today's list path, ``kalm_lib.data.build_training_set(["hub-finetune-kalm"], "finetune")`` over the same
  mirror (rows streamed by datasets, ``_convert`` with format "hub", decontamination, instructions applied, all kept
  in Python lists), and ``_convert`` alone over rows read with pyarrow (its lower bound: no decontamination, no
  datasets reader). At 1M rows both run on a sample of 50,000 rows; their memory at 1M is extrapolated from the
  measured growth per row (marked "*");
* ``interleave`` (10k only): ``datasets.interleave_datasets`` of the subsets' streams, row by row, the design the
  stream does not use (kalm_lib/data/stream.py explains why);
* ``tokenize``: the Qwen2 tokenizer on one per-rank batch of the paper's fine-tuning shape (48 queries + 48 × 8
  passages), the cost that stays in the trainer's step.

Peak memory is the child's VmHWM (``ru_maxrss`` survives ``execve`` and would start at the parent's RSS); "growth"
subtracts the RSS after imports (torch, datasets, pyarrow). With workers, the largest worker's ``ru_maxrss`` is
reported apart (forked: it counts pages shared with the main process). The trivial r=1 stream runs three times
(fresh processes); its rows/s is the median, with the range.
Targets: the stream's peak memory flat from 10k to 1M rows (≤ 1.2×), its rows/s ≥ 5× the list path's.

Speed is measured in ``ROUNDS`` rounds in which the stream (at most 200k rows) and the list path run alternately
(ABBA), each in a fresh process; the per-round ratio cancels the slow drifts of a shared machine (as
``_common.interleave`` does in-process).

Run: ``.venv/bin/python benchmarks/bench_stream.py [--sizes 10000,100000,1000000] [--keep DIR]`` (about 8 minutes
here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SUBSETS = (("alpha", 0.4, 4), ("beta", 0.3, 3), ("gamma", 0.2, 2), ("delta", 0.1, 2))  # name, share, shards
REPO = "KaLM-Embedding/KaLM-embedding-finetuning-data"  # the catalog's hub-finetune-kalm (data_dir "*")
M = 3
BATCH = 64
LIST_SAMPLE = 50_000
ROUNDS = 3


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: Linux keeps that across ``execve``, so a child would
    report at least the parent's RSS at the fork."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- data
def write_data(root: Path, rows: int, seed: int = 0) -> dict:
    """The synthetic Hub-layout subsets; returns {subset: [files]}."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, int(rng.integers(3, 10)))) for _ in range(20_000)])
    out = {}
    for name, share, shards in SUBSETS:
        n = int(rows * share)
        bounds = np.linspace(0, n, shards + 1).astype(int)
        folder = root / REPO / name
        folder.mkdir(parents=True, exist_ok=True)
        out[name] = []
        for s in range(shards):
            k = int(bounds[s + 1] - bounds[s])

            def texts(words):
                return [" ".join(w) for w in vocab[rng.integers(0, len(vocab), (k, words))]]

            q, p = texts(8), texts(24)
            negs = [texts(24) for _ in range(M)]
            table = pa.table({"query": [f"{name} {i} {t}" for i, t in zip(range(bounds[s], bounds[s + 1]), q)],
                              "pos": [[t] for t in p], "neg": [list(x) for x in zip(*negs)],
                              "relevance": np.ones(k)})
            path = folder / f"train-{s:05d}-of-{shards:05d}.parquet"
            pq.write_table(table, path, row_group_size=1000)
            out[name].append(str(path))
    return out


def _files(root: Path) -> dict:
    return {name: sorted(str(p) for p in (root / REPO / name).glob("*.parquet")) for name, _, _ in SUBSETS}


# ---------------------------------------------------------------------------- children
def _trivial(task):
    def transform(row):
        return {"query": row["query"], "pos": row["pos"][0], "neg": list(row["neg"][:M]), "task": task,
                "teacher_scores": None, "own_negatives_only": False}
    return transform


def child_stream(root: Path, ratio: float, workers: int, max_rows: int | None, real: bool) -> dict:
    import pyarrow.parquet as pq

    from kalm_lib.data.stream import StreamSubset, TaskStream

    base = _rss_mb()
    if real:
        from kalm_lib.data.hub import stream_subsets

        C.data_dir()
        subsets = stream_subsets(["hub-finetune-kalm"], "finetune", num_negatives=M, decontaminate=True)
        total = sum(s.num_rows for s in subsets)
    else:
        files = _files(root)
        rows = {n: sum(pq.ParquetFile(f).metadata.num_rows for f in fs) for n, fs in files.items()}
        total = sum(rows.values())
        subsets = [StreamSubset(n, fs, rows[n], rows[n] / total, _trivial(n)) for n, fs in files.items()]
    stream = TaskStream(subsets, BATCH, shuffle_buffer=10_000, homogeneous_ratio=ratio, num_workers=workers)
    steps = min(total, max_rows or total) // BATCH
    t0 = time.perf_counter()
    it = iter(stream)
    first = next(it)
    t1 = time.perf_counter()
    served = len(first)
    for _ in range(steps - 1):
        served += len(next(it))
    t2 = time.perf_counter()
    it.close()  # shuts the DataLoader workers down (joined), so that RUSAGE_CHILDREN holds their peak
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers else 0.0
    return {"kind": "stream", "ratio": ratio, "workers": workers, "real": real, "rows_total": total, "rows_served": served,
            "startup_s": t1 - t0, "rows_per_s": (served - len(first)) / (t2 - t1), "base_mb": base,
            "peak_mb": _peak_mb(), "growth_mb": _peak_mb() - base, "worker_peak_mb": workers_peak,
            "epochs": {t: c["epoch"] for t, c in stream.counts().items()}}


def child_list(root: Path, sample: int | None) -> dict:
    import pyarrow.parquet as pq

    from kalm_lib.data.catalog import get_entry
    from kalm_lib.data.errors import LoadReport
    from kalm_lib.data.loader import _convert

    C.data_dir()
    entry = get_entry("hub-finetune-kalm")
    base = _rss_mb()
    files = [f for fs in _files(root).values() for f in fs]
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    want = min(total, sample or total)
    records, read_s, convert_s = [], 0.0, 0.0
    for f in files:  # in file order, as the list path reads; a sample takes an equal share of every file
        n = pq.ParquetFile(f).metadata.num_rows
        k = n if want == total else max(1, round(n * want / total))
        t0 = time.perf_counter()
        rows = pq.read_table(f).slice(0, k).to_pylist()
        t1 = time.perf_counter()
        report = LoadReport(entry.name, source=f)
        records += _convert(((f, i + 1, r) for i, r in enumerate(rows)), entry, "hub", report, skip_invalid=True,
                            forbidden=frozenset())
        t2 = time.perf_counter()
        read_s, convert_s = read_s + t1 - t0, convert_s + t2 - t1
        del rows
    n = len(records)
    peak = _peak_mb()
    return {"kind": "list", "rows_total": total, "rows_measured": n, "read_s": read_s, "convert_s": convert_s,
            "rows_per_s": n / (read_s + convert_s), "us_per_row": 1e6 * (read_s + convert_s) / n,
            "base_mb": base, "peak_mb": peak, "growth_mb": peak - base, "kb_per_row": 1024 * (peak - base) / n}


def child_build(root: Path, sample: int | None) -> dict:
    """Today's list path end to end: build_training_set over the Hub mirror (decontamination on)."""
    import logging

    from kalm_lib.data import build_training_set
    from kalm_lib.data.hub import stream_subsets

    C.data_dir()
    logging.getLogger("kalm_lib").setLevel(logging.ERROR)
    total = sum(s.num_rows for s in stream_subsets(["hub-finetune-kalm"], "finetune", num_negatives=M))
    from kalm_lib.data.overlap import eval_test_texts
    eval_test_texts(None)  # loaded once (cached) before the clock and the baseline, as the stream does at start
    base = _rss_mb()
    t0 = time.perf_counter()
    ds = build_training_set(["hub-finetune-kalm"], "finetune", num_negatives=M,
                            max_rows_per_dataset=sample if sample and sample < total else None)
    dt = time.perf_counter() - t0
    n = len(ds)
    peak = _peak_mb()
    return {"kind": "build", "rows_total": total, "rows_measured": n, "rows_per_s": n / dt, "us_per_row": 1e6 * dt / n,
            "base_mb": base, "peak_mb": peak, "growth_mb": peak - base, "kb_per_row": 1024 * (peak - base) / n}


def child_interleave(root: Path, limit: int) -> dict:
    import datasets

    datasets.disable_progress_bars()
    files = _files(root)
    streams = [datasets.load_dataset("parquet", data_files=fs, split="train", streaming=True) for fs in files.values()]
    shares = [s for _, s, _ in SUBSETS]
    mixed = datasets.interleave_datasets(streams, probabilities=shares, seed=0, stopping_strategy="all_exhausted")
    t0, n = time.perf_counter(), 0
    for _ in mixed:
        n += 1
        if n >= limit:
            break
    dt = time.perf_counter() - t0
    shuffled = datasets.load_dataset("parquet", data_files=files["alpha"], split="train", streaming=True)
    shuffled = shuffled.shuffle(seed=0, buffer_size=1000)
    t1, k = time.perf_counter(), 0
    for _ in shuffled:
        k += 1
        if k >= limit:
            break
    return {"kind": "interleave", "rows": n, "rows_per_s": n / dt,
            "shuffle_rows": k, "shuffle_rows_per_s": k / (time.perf_counter() - t1)}


def child_tokenize() -> dict:
    import numpy as np
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(C.data_dir() / "tokenizers" / "qwen2"))
    rng = np.random.default_rng(0)
    words = [w for s in C.sts_sentences(2000) for w in s.split()]

    def text(n):
        return " ".join(words[int(i)] for i in rng.integers(0, len(words), n))
    queries = [text(16) for _ in range(48)]
    passages = [text(96) for _ in range(48 * 8)]
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        tok(queries, padding=True, truncation=True, max_length=512, return_tensors="pt")
        f = tok(passages, padding=True, truncation=True, max_length=512, return_tensors="pt")
        times.append(time.perf_counter() - t0)
    return {"kind": "tokenize", "texts": len(queries) + len(passages), "ms_per_batch": 1e3 * sorted(times)[3],
            "passage_tokens": int(f["attention_mask"].sum()) // len(passages)}


def _child(args) -> dict:
    root = Path(args.data)
    os.environ["KALM_HUB_DIR"] = str(root)
    if args.child == "stream":
        return child_stream(root, args.ratio, args.workers, args.max_rows or None, bool(args.real))
    if args.child == "list":
        return child_list(root, args.sample or None)
    if args.child == "build":
        return child_build(root, args.sample or None)
    if args.child == "interleave":
        return child_interleave(root, args.max_rows or 20_000)
    return child_tokenize()


def run_child(kind: str, data: Path | None = None, timeout: int = 1800, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data or "")]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--keep", help="write the data here and keep it (default: a temporary folder, removed)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the extra stream rows (0: skip)")
    ap.add_argument("--child", choices=("stream", "list", "build", "interleave", "tokenize"), help=argparse.SUPPRESS)
    ap.add_argument("--real", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--ratio", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--max-rows", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--sample", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return {}
    info = C.print_header("streaming vs list path (benchmarks/bench_stream.py)")
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {"machine": info, "sizes": {}}
    for size in sizes:
        root = Path(args.keep) / str(size) if args.keep else Path(tempfile.mkdtemp(prefix=f"kalm-stream-{size}-"))
        try:
            if not (root / REPO / "alpha").is_dir():
                t0 = time.perf_counter()
                write_data(root, size)
                print(f"   {size:,} rows written in {time.perf_counter() - t0:.0f} s "
                      f"({sum(p.stat().st_size for p in root.rglob('*.parquet')) / 2**20:,.0f} MiB)", flush=True)
            sample = min(size, LIST_SAMPLE)  # the list path's rows; its memory slope from half of them and all
            cap = min(size, 200_000)
            # speed: ROUNDS rounds, stream (≤ cap rows) and list path alternating ABBA, each in a fresh process
            pairs = []
            for k in range(ROUNDS):
                sides = {"stream": lambda: run_child("stream", root, ratio=1.0, workers=0, max_rows=cap),
                         "build": lambda: run_child("build", root, sample=sample)}
                order = ("stream", "build") if k % 2 == 0 else ("build", "stream")
                got = {name: sides[name]() for name in order}
                pairs.append((got["stream"]["rows_per_s"], got["build"]["rows_per_s"]))
            speed = {"stream_rows_per_s": [a for a, _ in pairs], "list_rows_per_s": [b for _, b in pairs],
                     "ratios": sorted(a / b for a, b in pairs)}
            # memory: one full pass (every row once) per ratio
            r = {"speed": speed, "stream": run_child("stream", root, ratio=1.0, workers=0),
                 "stream_r0.5": run_child("stream", root, ratio=0.5, workers=0),
                 "stream_real": run_child("stream", root, ratio=1.0, workers=0, real=1, max_rows=cap)}
            if args.workers:
                r["stream_w"] = run_child("stream", root, ratio=1.0, workers=args.workers, max_rows=cap)
                r["stream_real_w"] = run_child("stream", root, ratio=1.0, workers=args.workers, real=1, max_rows=cap)
            for kind in ("build", "list"):
                half, full = (run_child(kind, root, sample=n) for n in (sample // 2, sample))
                slope = 1024 * (full["peak_mb"] - half["peak_mb"]) / max(1, full["rows_measured"] - half["rows_measured"])
                full.update(kb_per_row=slope, extrapolated=full["rows_measured"] < size,
                            peak_mb_at_size=full["peak_mb"] + slope * (size - full["rows_measured"]) / 1024)
                r[kind] = full
            if size == min(sizes):
                r["interleave"] = run_child("interleave", root, max_rows=min(size, 20_000))
            results["sizes"][size] = r
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    results["tokenize"] = run_child("tokenize")
    _report(results)
    path = C.write_json("stream", results)
    print(f"   written {path}")
    return results


def _report(results: dict) -> None:
    sizes = sorted(results["sizes"])
    print(f"\n{'':40}" + "".join(f"{s:>14,}" for s in sizes))

    def row(label, f):
        print(f"{label:40}" + "".join(f"{f(results['sizes'][s]):>14}" for s in sizes))

    def star(r):
        return "*" if r["extrapolated"] else ""
    def med(xs):
        return sorted(xs)[len(xs) // 2]
    row(f"stream r=1, trivial: rows/s (median of {ROUNDS})", lambda r: C.fmt(med(r["speed"]["stream_rows_per_s"]), 0))
    row(f"list path: rows/s (median of {ROUNDS})", lambda r: C.fmt(med(r["speed"]["list_rows_per_s"]), 0)
        + ("*" if r["build"]["extrapolated"] else ""))
    row("SPEED stream / list, per round: median", lambda r: f"{med(r['speed']['ratios']):.1f}×")
    row("  per-round min–max", lambda r: f"{r['speed']['ratios'][0]:.1f}–{r['speed']['ratios'][-1]:.1f}×")
    row("stream r=1, trivial, full pass: rows/s", lambda r: C.fmt(r["stream"]["rows_per_s"], 0))
    row("stream r=0.5, trivial: rows/s", lambda r: C.fmt(r["stream_r0.5"]["rows_per_s"], 0))
    row("stream r=1, real hub transforms: rows/s", lambda r: C.fmt(r["stream_real"]["rows_per_s"], 0))
    if "stream_w" in results["sizes"][sizes[0]]:
        w = results["sizes"][sizes[0]]["stream_w"]["workers"]
        row(f"stream r=1, trivial, {w} workers: rows/s", lambda r: C.fmt(r["stream_w"]["rows_per_s"], 0))
        row(f"stream r=1, real, {w} workers: rows/s", lambda r: C.fmt(r["stream_real_w"]["rows_per_s"], 0))
        row(f"  {w} workers: main / largest worker MB", lambda r: f"{r['stream_w']['peak_mb']:,.0f} / "
            f"{r['stream_w']['worker_peak_mb']:,.0f}")
    row("  _convert alone (pyarrow rows): rows/s", lambda r: C.fmt(r["list"]["rows_per_s"], 0) + star(r["list"]))
    row("stream r=1: peak RSS MB", lambda r: C.fmt(r["stream"]["peak_mb"], 0))
    row("stream r=0.5: peak RSS MB", lambda r: C.fmt(r["stream_r0.5"]["peak_mb"], 0))
    row("  stream r=1: growth over imports MB", lambda r: C.fmt(r["stream"]["growth_mb"], 0))
    row("list path: peak RSS MB", lambda r: C.fmt(r["build"]["peak_mb_at_size"], 0) + star(r["build"]))
    row("  list path: KB per row (slope)", lambda r: C.fmt(r["build"]["kb_per_row"], 2))
    row("  list path: µs per row", lambda r: C.fmt(r["build"]["us_per_row"], 0))
    row("stream start-up s (first batch)", lambda r: C.fmt(r["stream"]["startup_s"], 2))
    lo, hi = results["sizes"][sizes[0]], results["sizes"][sizes[-1]]
    print()
    for a in sizes[:-1]:
        x = results["sizes"][a]
        print(f"   stream peak RSS {sizes[-1]:,} / {a:,} rows: r=1 {hi['stream']['peak_mb'] / x['stream']['peak_mb']:.2f}×, "
              f"r=0.5 {hi['stream_r0.5']['peak_mb'] / x['stream_r0.5']['peak_mb']:.2f}× (target ≤ 1.2×)")
    if hi["build"]["extrapolated"]:
        print(f"   * list path at {sizes[-1]:,}: measured on {hi['build']['rows_measured']:,} rows, memory extrapolated")
    if "interleave" in lo:
        il = lo["interleave"]
        print(f"   datasets.interleave_datasets, row by row: {C.fmt(il['rows_per_s'], 0)} rows/s; "
              f"IterableDataset.shuffle(1000) row by row: {C.fmt(il['shuffle_rows_per_s'], 0)} rows/s")
    t = results["tokenize"]
    print(f"   Qwen2 tokenizer, one per-rank batch of {t['texts']} texts (~{t['passage_tokens']} tokens a passage): "
          f"{t['ms_per_batch']:.1f} ms")


if __name__ == "__main__":
    main()
