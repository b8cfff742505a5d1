"""Peak memory of one training step at batch sizes 32 … 1024, with and without GradCache.

torch's CPU allocations are invisible to tracemalloc, so we read the kernel's own accounting of the
process's resident set: its current size (VmRSS) and its peak (VmHWM, the value ``ru_maxrss`` reports).
Each configuration (side × plain/GradCache) runs in a FRESH subprocess:

  1. load the model, build the trainer (kalm: a real StageTrainer; peer: sentence-transformers MNRL or
     CachedMNRL + AdamW), run one warm-up step at batch 2 so that gradients and AdamW state exist;
  2. for each batch size B, ascending: free what can be freed (gc, ``malloc_trim``), reset the peak
     (``echo 5 > /proc/self/clear_refs``, Linux ≥ 4.0) and read the current RSS, the *steady state*
     (weights + grads-free model + AdamW moments + libraries);
  3. run one training step (tokenise, forward, loss, backward, clip, AdamW) at batch B and read the peak.
     **growth = peak − steady state** is the memory the step itself needs; it includes AdamW's own
     temporaries and the gradients (about three copies of the largest parameter, the 152k-row token
     embedding), which set a floor independent of B.
Where the peak cannot be reset, every point gets its own fresh process and ``ru_maxrss`` (``--fresh``
forces that everywhere; it is slower, since each process re-imports torch).

Equal work with the peer as in bench_train.py: same tiny Qwen2 (saved once, loaded by both), same
examples (query, positive, 1 hard negative, truncated at L tokens), τ = 1/scale, AdamW, clip 1.0;
GradCache sub-batch = CachedMNRL mini_batch_size = 32. Target: with GradCache the peak stays within
1.5× of batch 32's.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# A smaller backbone than the throughput runs, so that batch 1024 without GradCache stays in a few GB.
MEMORY_TINY = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)
CHUNK = 32


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _trim():
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return _peak_mb()


def worker(args) -> list[dict]:
    """One configuration (side, plain/GradCache), in its own process: one point per batch size."""
    import torch

    import bench_train as T

    torch.manual_seed(0)
    items = json.loads(Path(args.examples).read_text())
    chunk = args.chunk or None
    model_dir = Path(args.model)
    if args.side == "kalm":
        from kalm_lib.model import KaLMEmbedder

        model = KaLMEmbedder.load(model_dir, max_length=args.max_len)
        ds = C.ListDataset(items)
        tmp = tempfile.mkdtemp(prefix="kalm-bench-mem-")
        trainer = T.make_kalm(model, ds, batch_size=2, max_len=args.max_len, tau=0.05, lr=1e-4, chunk=chunk,
                              out_dir=Path(tmp))

        def step(ex):
            return T.kalm_step(trainer, ex, 1)
    else:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(model_dir), device="cpu")
        st.max_seq_length = args.max_len
        loss_fn, opt = T.make_peer(st, tau=0.05, lr=1e-4, chunk=chunk)

        def step(ex):
            return T.peer_step(st, loss_fn, opt, ex, 1)
    step(items[:2])
    out = []
    batches = [int(b) for b in args.batches.split(",")]
    for n, b in enumerate(batches):
        _trim()
        reset = _reset_peak() and not args.fresh
        if not reset and n > 0:
            break  # the parent runs the remaining points in fresh processes
        steady = _rss_mb()
        t0 = time.perf_counter()
        _, real, total = step(items[:b])
        dt = time.perf_counter() - t0
        peak = _hwm_mb() if reset else _peak_mb()
        out.append({"side": args.side, "batch": b, "chunk": chunk, "steady_mb": steady, "peak_mb": peak,
                    "growth_mb": peak - steady, "step_s": dt, "real_tokens": real, "padded_tokens": total,
                    "peak_source": "VmHWM after clear_refs" if reset else "ru_maxrss, fresh process"})
    return out


def _run_config(side, batches, chunk, model_dir, examples, max_len, fresh, timeout=900) -> list[dict]:
    """All batch sizes of one configuration; falls back to one process per point where needed."""
    out: list[dict] = []
    todo = list(batches)
    while todo:
        cmd = [sys.executable, __file__, "--worker", "--side", side, "--batches", ",".join(map(str, todo)),
               "--chunk", str(chunk or 0), "--model", str(model_dir), "--examples", str(examples),
               "--max-len", str(max_len)] + (["--fresh"] if fresh else [])
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONPATH": str(C.ROOT)})
        if res.returncode != 0:
            raise RuntimeError(f"memory worker {side} B={todo} chunk={chunk} failed:\n{res.stderr[-3000:]}")
        got = json.loads(res.stdout.strip().splitlines()[-1])
        out += got
        todo = todo[len(got):]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batches 32 and 128 only")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", choices=("kalm", "peer"), default="kalm")
    ap.add_argument("--fresh", action="store_true", help="one fresh process per point (ru_maxrss)")
    ap.add_argument("--chunk", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--examples", default=None)
    ap.add_argument("--max-len", type=int, default=16)
    ap.add_argument("--batches", default="32,64,128,256,512,1024")
    ap.add_argument("--peer-batches", default="32,256", help="batch sizes also measured for the peer")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return {}
    from concurrent.futures import ThreadPoolExecutor

    info = C.print_header("peak memory of one training step (fresh subprocess per configuration, peak RSS)")
    batches = [32, 128] if args.quick else [int(b) for b in args.batches.split(",")]
    peer_batches = [b for b in ([32, 128] if args.quick else [int(b) for b in args.peer_batches.split(",")])]
    import random

    import torch

    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="kalm-bench-mem-"))
    kalm, _, _ = C.build_pair(tiny=MEMORY_TINY, max_length=args.max_len, folder=tmp)
    ds = C.smoke_training_set(kalm.tokenizer, max_rows=400)
    order = list(range(len(ds)))
    random.Random(0).shuffle(order)
    need = max(batches + peer_batches)
    if len(order) < need:
        raise RuntimeError(f"only {len(ds)} examples for batch {need}")
    items = [{k: ds[i][k] for k in ("query", "pos", "neg", "task")} for i in order[:need]]
    (tmp / "examples.json").write_text(json.dumps(items))
    print(f"   model: tiny Qwen2 {MEMORY_TINY}, {sum(p.numel() for p in kalm.parameters()) / 1e6:.1f}M params; "
          f"L={args.max_len} tokens; GradCache sub-batch {CHUNK}; 1 hard negative per pair")
    t_start = time.perf_counter()
    # two configurations at a time (independent processes), the longest first, so the sweep stays short
    configs = [("kalm", CHUNK), ("kalm", None), ("peer", None), ("peer", CHUNK)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futs = {cfg: pool.submit(_run_config, cfg[0], batches if cfg[0] == "kalm" else peer_batches, cfg[1],
                                 tmp / "model", tmp / "examples.json", args.max_len, args.fresh)
                for cfg in configs}
        points = sorted((p for cfg in configs for p in futs[cfg].result()),
                        key=lambda p: (p["side"] != "kalm", p["chunk"] is not None, p["batch"]))
    for p in points:
        print(f"   {p['side']:4s} {'GradCache' if p['chunk'] else 'plain    '} B={p['batch']:5d}: peak "
              f"{p['peak_mb']:8.0f} MB, steady {p['steady_mb']:6.0f} MB, step growth {p['growth_mb']:7.0f} MB "
              f"({p['real_tokens']} real tokens, step {p['step_s']:.1f} s)")
    summary = {}
    for side in ("kalm", "peer"):
        for chunk in (None, CHUNK):
            pts = {p["batch"]: p for p in points if p["side"] == side and p["chunk"] == chunk}
            if 32 not in pts:
                continue
            base = pts[32]
            key = f"{side}_{'gradcache' if chunk else 'plain'}"
            summary[key] = {b: {"peak_vs_32": p["peak_mb"] / base["peak_mb"],
                                "growth_vs_32": p["growth_mb"] / base["growth_mb"]} for b, p in sorted(pts.items())}
    print("   ratio to batch 32 (peak RSS | step growth):")
    for key, rows in summary.items():
        print(f"     {key:15s} " + "  ".join(f"B={b}: {r['peak_vs_32']:.2f}|{r['growth_vs_32']:.2f}"
                                            for b, r in rows.items()))
    kg = summary.get("kalm_gradcache", {})
    top = max(kg) if kg else None
    if top:
        print(f"   GradCache target (peak at B={top} within 1.5x of B=32): peak {kg[top]['peak_vs_32']:.2f}x, "
              f"step growth {kg[top]['growth_vs_32']:.2f}x -> {'MET' if kg[top]['peak_vs_32'] <= 1.5 else 'MISSED'}")
    for chunk in (None, CHUNK):
        for b in peer_batches:
            k = [p for p in points if p["side"] == "kalm" and p["batch"] == b and p["chunk"] == chunk]
            q = [p for p in points if p["side"] == "peer" and p["batch"] == b and p["chunk"] == chunk]
            if k and q:
                print(f"   kalm/peer step growth at B={b} {'GradCache' if chunk else 'plain'}: "
                      f"{k[0]['growth_mb'] / q[0]['growth_mb']:.2f}x (lower is better); peak "
                      f"{k[0]['peak_mb'] / q[0]['peak_mb']:.2f}x")
    print(f"   sweep took {time.perf_counter() - t_start:.0f} s")
    out = {"machine": info, "command": "benchmarks/bench_memory.py" + (" --quick" if args.quick else ""),
           "model": MEMORY_TINY, "max_len": args.max_len, "chunk": CHUNK, "points": points,
           "summary": {k: {str(b): v for b, v in rows.items()} for k, rows in summary.items()}}
    C.write_json("memory", out)
    return out


if __name__ == "__main__":
    main()
