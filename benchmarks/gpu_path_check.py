"""The gpu profile's code path on the accelerator, toy sizes (issue 13 item 9; the CPU twin is tests/test_gpu_path.py).

Builds the Hub-layout mirror of tests/hub_fixture.py (bf16 Qwen2-0.5B-shaped 2-layer checkpoint as
``Qwen/Qwen2-0.5B``, the paper's two datasets in their published layout), points ``KALM_HUB_DIR`` at it and runs
``python -m kalm_lib pipeline --profile gpu`` plus ``evaluate`` as a GPU user would, then reports what the issue
asks to see on a GPU:

* the device mining, teacher scoring and evaluation encoded on (``kalm_lib.device.compute_device``, and the stage
  model's parameters' device after ``load_stage_model``),
* fp32 master weights (the dtypes of the trainer's parameters, and of every stage's saved model),
* MFU and tokens/s of each stage's steps from its ``metrics.jsonl`` (logged on a GPU, where peak FLOP/s is known),
* the fraction of decoder weights each stage moved.

    python benchmarks/gpu_path_check.py            # on the GPU machine (bash benchmarks/gpu_check.sh runs it)
    python benchmarks/gpu_path_check.py --cpu      # anywhere: the same path on the CPU (slow: ~4 min on 2 cores)

Output: stdout, and ``$OUT/gpu_path_check.json`` when ``$OUT`` is set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _data_dir() -> Path:
    for d in (os.environ.get("KALM_DATA_DIR"), ROOT.parent / "shared" / "data", ROOT / "shared" / "data"):
        if d and (Path(d) / "tokenizers" / "qwen2" / "tokenizer.json").is_file():
            return Path(d)
    raise SystemExit("gpu_path_check: no Qwen2 tokenizer (set KALM_DATA_DIR to the data mirror, or carry "
                     "shared/data/tokenizers/qwen2 into the repository)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (KALM_DEVICE=cpu)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=64)
    args = ap.parse_args(argv)
    if args.cpu:
        os.environ["KALM_DEVICE"] = "cpu"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = _data_dir()
    os.environ.setdefault("KALM_DATA_DIR", str(data))
    import torch

    import hub_fixture as hf
    from kalm_lib.device import compute_device

    t0 = time.perf_counter()
    report: dict = {"device": str(compute_device()), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="kalm-gpu-path-") as tmp:
        hub = hf.build_hub_fixture(Path(tmp) / "hub", data)
        os.environ["KALM_HUB_DIR"] = str(hub)
        report["fixture_s"] = round(time.perf_counter() - t0, 1)
        run = Path(tmp) / "run"
        sets = ["optim.max_steps=%d" % args.steps, "optim.batch_size=%d" % args.batch,
                "data.query_max_len=%d" % args.seq_len, "data.passage_max_len=%d" % args.seq_len, "log_every=1"]
        import importlib.util

        report["streaming"] = importlib.util.find_spec("datasets") is not None
        if not report["streaming"]:  # the GPU image has no `datasets`: carry its wheels to run the streamed stage 1
            print("gpu_path_check: `datasets` is not installed: pre-training reads the mirror map-style "
                  "(data.streaming=false), NOT the profile's stream")
            sets.append("data.streaming=false")
        from kalm_lib.__main__ import main as cli

        t = time.perf_counter()
        cli(["pipeline", "--profile", "gpu", "--run-dir", str(run), "--no-eval",
             *[x for kv in sets for x in ("--set", kv)]])
        report["pipeline_s"] = round(time.perf_counter() - t, 1)
        import importlib.util

        evaluate = importlib.util.find_spec("mteb") is not None
        if evaluate:
            t = time.perf_counter()
            cli(["evaluate", "--profile", "gpu", "--run-dir", str(run), "--stages", "distill", "--tasks",
                 "STSBenchmark", "--max-rows", "200"])
            report["evaluate_s"] = round(time.perf_counter() - t, 1)
        else:  # the GPU image has no mteb: carry its wheels (pip download mteb -d wheels) to run this part
            print("gpu_path_check: evaluate SKIPPED: mteb is not installed in this python")
            report["evaluate_s"] = None

        from kalm_lib.stages import load_stage_model

        m = load_stage_model(run, "pretrain")
        report["mining_model_device"] = str(next(m.parameters()).device)
        report["mining_model_dtypes"] = sorted({str(p.dtype) for p in m.parameters()})
        stages = {}
        from test_gpu_path import _changed, _decoder_weights

        before = _decoder_weights(hub / hf.MODEL_REPO)
        for stage in ("pretrain", "finetune", "distill"):
            recs = [json.loads(x) for x in (run / stage / "metrics.jsonl").read_text().splitlines() if x.strip()]
            after = _decoder_weights(run / stage / "final")
            stages[stage] = {"steps": len(recs), "mfu": [r.get("mfu") for r in recs],
                             "tokens_per_s": [round(r["tokens_per_s"]) for r in recs],
                             "memory_mb": max(r["memory_mb"] for r in recs),
                             "saved_dtypes": sorted({str(v.dtype) for v in after.values()}),
                             "decoder_weights_changed": round(_changed(before, after), 5)}
            before = after
        report["stages"] = stages
        if evaluate:
            import pandas as pd

            scores = pd.concat(pd.read_csv(p) for p in (run / "eval" / "final").glob("*/results.csv"))
            report["eval"] = scores[["model", "task", "main_score"]].to_dict(orient="records")
    report["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_path_check.json").write_text(json.dumps(report, indent=1) + "\n")
    ok = all(s["decoder_weights_changed"] >= 0.99 and s["saved_dtypes"] == ["torch.float32"] for s in stages.values())
    print("gpu_path_check:", "OK" if ok else "FAILED (see decoder_weights_changed / saved_dtypes)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
