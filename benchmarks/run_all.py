"""Run every CPU benchmark in sequence (each in its own process) and print a summary (`make bench`).

Each script prints its own figures and its ratio to the peer measured in the same run, and writes
``build/bench/<name>.json``; this runner collects those into ``build/bench/summary.json``.
``--quick`` passes ``--quick`` to every script (a smoke run of the scripts, not figures to report).
The GPU check is separate: ``bash benchmarks/gpu_check.sh`` on a GPU machine (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

SCRIPTS = ("bench_padding", "bench_encode", "bench_train", "bench_memory")


def _load(name: str) -> dict | None:
    path = C.OUT_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def summary_lines() -> list[str]:
    lines = []
    tr = _load("train")
    if tr:
        for c in tr["configs"]:
            lines.append(f"train {c['name']:24s} kalm {c['kalm_pairs_per_s']:6.1f} pairs/s {c['kalm_tokens_per_s']:7.0f} tok/s"
                         f" | peer {c['peer_pairs_per_s']:6.1f} pairs/s {c['peer_tokens_per_s']:7.0f} tok/s"
                         f" | ratio {c['ratio']:.3f}x (target >= 1.0: {'MET' if c['ratio'] >= 1.0 else 'MISSED'})")
    en = _load("encode")
    for key in sorted(k for k in (en or {}) if k.startswith("encode")):
        e = en[key]
        lines.append(f"encode {e.get('set', 'sts'):23s} kalm {e['kalm_texts_per_s']:6.1f} texts/s | peer "
                     f"{e['peer_texts_per_s']:6.1f} texts/s | ratio {e['ratio']:.3f}x (target >= 1.0: "
                     f"{'MET' if e['ratio'] >= 1.0 else 'MISSED'})")
    me = _load("memory")
    if me:
        s = me["summary"]
        for key in ("kalm_plain", "kalm_gradcache"):
            rows = s.get(key, {})
            if rows:
                top = max(rows, key=int)
                r = rows[top]
                tgt = (f" (target <= 1.5x: {'MET' if r['peak_vs_32'] <= 1.5 else 'MISSED'})"
                       if key.endswith("gradcache") else "")
                lines.append(f"memory {key:23s} peak at B={top} = {r['peak_vs_32']:.2f}x batch 32's "
                             f"(step growth {r['growth_vs_32']:.2f}x){tgt}")
    pa = _load("padding")
    if pa:
        for r in pa["results"]:
            met = {k: "MET" if r[k]["padding_fraction"] <= 0.1 else "MISSED"
                   for k in ("grouped", "grouped_sub_batches", "grouped_gradcache")}
            lines.append(f"padding {r['stage']:22s} random {r['random']['padding_fraction']:.1%} | grouped "
                         f"{r['grouped']['padding_fraction']:.1%} | grouped+sub-batches {r['chunk']} "
                         f"{r['grouped_sub_batches']['padding_fraction']:.1%} | grouped+GradCache {r['chunk']} "
                         f"{r['grouped_gradcache']['padding_fraction']:.1%} | packed "
                         f"{r['grouped_packed']['padding_fraction']:.1%} (target <= 10% with grouping: plain "
                         f"{met['grouped']}, plain + sub-batches {met['grouped_sub_batches']}, GradCache "
                         f"{met['grouped_gradcache']}; <= 2% with packing: "
                         f"{'MET' if r['grouped_packed']['padding_fraction'] <= 0.02 else 'MISSED'})")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(SCRIPTS))
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCRIPTS)
    C.data_dir()  # fail early, with a clear message, when the data mirror is missing
    for stale in names:
        key = stale.replace("bench_", "")
        (C.OUT_DIR / f"{key}.json").unlink(missing_ok=True)
    timings, failed = {}, []
    env = {**os.environ, "PYTHONPATH": str(C.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if args.quick else [])
        print(f"\n$ {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, env=env)
        timings[name] = time.perf_counter() - t0
        if rc != 0:
            failed.append(f"{name} (exit {rc})")
    lines = summary_lines()
    print("\n== summary (" + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {sum(timings.values()) / 60:.1f} min)")
    info = C.machine_info()
    print("   " + ", ".join(f"{k}={info[k]}" for k in ("date", "host_cpu", "cores", "torch_threads", "loadavg_1min")
                          if k in info))
    for line in lines:
        print("   " + line)
    for f in failed:
        print(f"   FAILED: {f}")
    C.write_json("summary", {"machine": info, "quick": args.quick, "timings_s": timings, "lines": lines,
                             "failed": failed})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
