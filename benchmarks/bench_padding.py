"""Padding waste: the fraction of padded tokens per training batch, with and without length grouping.

Data: the smoke profile's own stages (``configs/smoke/{pretrain,finetune}.yaml``: datasets, rows per
dataset, M hard negatives, batch size, query/passage max lengths), built with
``kalm_lib.data.build_training_set`` and the Qwen2 tokenizer. (Fine-tuning's mined negatives do not exist
before a run, so the loader falls back to random in-dataset negatives, as a fresh smoke run would.)

Batches: kalm's own ``TaskBatchSampler`` over one epoch with ``group_by_length`` off (random batches, what
sentence-transformers' default ``BatchSamplers.BATCH_SAMPLER`` gives: the peer here) and on. Padding is
counted by kalm's own ``StepRunner._features``, i.e. exactly the tensors a training step embeds:

  plain        queries padded together, positives + negatives padded together
  packed       the plain step with ``optim.packing``: no pad token by construction (0%)
  sub-batched  the plain step with ``optim.sub_batch_size = --chunk``: each side sorted by length, then
               cut into sub-batches of ``--chunk`` texts, each padded to its own longest text
  GradCache    ``optim.gradcache_chunk_size = --chunk``: the same sorted sub-batches (kalm_lib/train.py)

padding fraction = 1 − real tokens / embedded tokens, over the epoch. Target: ≤ 10% with grouping.

Run: ``.venv/bin/python benchmarks/bench_padding.py [--quick]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def measure(runner, ds, *, group: bool, batch_size: int, num_negatives: int, max_batches: int | None) -> dict:
    from kalm_lib.data import TaskBatchSampler
    from kalm_lib.train import Batch

    s = TaskBatchSampler(list(ds.tasks), batch_size=batch_size, seed=0, group_by_length=group,
                         lengths=list(ds.lengths))
    per_batch, real, total, side = [], 0, 0, {"q": [0, 0], "p": [0, 0]}
    for n, idx in enumerate(s):
        if max_batches and n >= max_batches:
            break
        parts, r, t = runner._features(Batch.from_examples([ds[int(i)] for i in idx], num_negatives))
        for kind, _, f in parts:
            if "cu_seq_lens" in f:  # packed: every embedded token is real
                side[kind][0] += f["input_ids"].numel()
                side[kind][1] += f["input_ids"].numel()
                continue
            side[kind][0] += int(f["attention_mask"].sum())
            side[kind][1] += f["attention_mask"].numel()
        real, total = real + r, total + t
        per_batch.append(1 - r / t)
    return {"batches": len(per_batch), "padding_fraction": 1 - real / total,
            "median_batch_padding": statistics.median(per_batch), "max_batch_padding": max(per_batch),
            "query_padding": 1 - side["q"][0] / side["q"][1], "passage_padding": 1 - side["p"][0] / side["p"][1],
            "real_tokens": real, "embedded_tokens": total}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rows and batches")
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--stages", default="finetune,pretrain")
    ap.add_argument("--chunk", type=int, default=16, help="sub-batch size of the sub-batched and GradCache rows")
    ap.add_argument("--max-batches", type=int, default=40,
                    help="batches measured per row (the sampler's batch order is shuffled, so these are a "
                         "random sample of the epoch; 0 = the whole epoch)")
    args = ap.parse_args(argv)

    from kalm_lib.config import load_config
    from kalm_lib.model import KaLMEmbedder
    from kalm_lib.train import StepRunner

    info = C.print_header(f"padding waste per batch ({args.profile} profile data): length grouping on/off")
    tok_dir = str(C.data_dir() / "tokenizers" / "qwen2")
    # only the tokenizer matters here: StepRunner._features tokenises, it does not run the model
    kalm = KaLMEmbedder.tiny(seed=0, tokenizer=tok_dir)
    results = []
    for stage in args.stages.split(","):
        cfg = load_config(args.profile, stage)
        d = cfg.data
        m = d.num_negatives if stage != "pretrain" else 0
        rows = min(d.max_rows_per_dataset or 10**9, 100 if args.quick else 10**9)
        ds = C.smoke_training_set(kalm.tokenizer, names=d.datasets, num_negatives=m, max_rows=rows, stage=stage)
        b = cfg.optim.batch_size
        row = {"stage": stage, "num_negatives": m, "examples": len(ds), "datasets": len(set(ds.tasks)),
               "batch_size": b, "query_max_len": d.query_max_len, "passage_max_len": d.passage_max_len,
               "chunk": args.chunk}
        plain = copy.deepcopy(cfg)
        plain.optim.gradcache_chunk_size = plain.optim.sub_batch_size = None
        plain.optim.packing = False
        packed = copy.deepcopy(plain)
        packed.optim.packing = True
        sub = copy.deepcopy(plain)
        sub.optim.sub_batch_size = args.chunk
        cached = copy.deepcopy(plain)
        cached.optim.gradcache_chunk_size = args.chunk
        limit = 20 if args.quick else (args.max_batches or None)
        for key, c, group in (("random", plain, False), ("grouped", plain, True),
                              ("grouped_sub_batches", sub, True), ("grouped_gradcache", cached, True),
                              ("grouped_packed", packed, True)):
            runner = StepRunner(None, kalm, None, c)
            row[key] = measure(runner, ds, group=group, batch_size=b, num_negatives=m, max_batches=limit)
        print(f"-- {args.profile}/{stage}: M={m}, {len(ds)} examples from {row['datasets']} datasets, batch {b}, "
              f"max len {d.query_max_len}/{d.passage_max_len}, {row['grouped']['batches']} batches measured per row")
        for name, key in (("random batches (peer)", "random"), ("length-grouped", "grouped"),
                          (f"grouped + sub-batches {args.chunk}", "grouped_sub_batches"),
                          (f"grouped + GradCache {args.chunk}", "grouped_gradcache"),
                          ("grouped + packing", "grouped_packed")):
            x = row[key]
            print(f"   {name:24s}: padding {x['padding_fraction']:6.1%} of embedded tokens (per-batch median "
                  f"{x['median_batch_padding']:.1%}, max {x['max_batch_padding']:.1%}; queries "
                  f"{x['query_padding']:.1%}, passages {x['passage_padding']:.1%})")
        g, r, sb, gc = row["grouped"], row["random"], row["grouped_sub_batches"], row["grouped_gradcache"]
        met = {k: "MET" if x["padding_fraction"] <= 0.10 else "MISSED" for k, x in
               (("plain", g), ("sub", sb), ("gc", gc))}
        print(f"   embedded tokens vs random batches: grouped {g['embedded_tokens'] / r['embedded_tokens']:.3f}x, "
              f"grouped+sub-batches {sb['embedded_tokens'] / r['embedded_tokens']:.3f}x, "
              f"grouped+GradCache {gc['embedded_tokens'] / r['embedded_tokens']:.3f}x; target <= 10% with grouping: "
              f"plain {met['plain']}, plain + sub-batches {met['sub']}, GradCache {met['gc']}")
        results.append(row)
    out = {"machine": info, "command": "benchmarks/bench_padding.py" + (" --quick" if args.quick else ""),
           "results": results}
    C.write_json("padding", out)
    return out


if __name__ == "__main__":
    main()
