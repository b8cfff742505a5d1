"""Training throughput: one kalm_lib training step against sentence-transformers, same model, same batches.

The peer is ``SentenceTransformer`` loaded from the folder ``KaLMEmbedder.save`` wrote (a random-init tiny
Qwen2); the kalm side is a ``KaLMEmbedder`` around that same backbone module, so both sides train the very
same parameter tensors (each with its own AdamW state), alternating step by step on the same batches. A
shared machine otherwise adds ±10% of noise from where each copy of the weights sits in memory.

Equal work, term by term:
  data       build_training_set(local fine-tuning sets, M=1 hard negative), TaskBatchSampler with length
             grouping; round r gives batch r to BOTH sides (anchor = instructed query, positive, negative)
  tokens     both truncate every text at L tokens; queries padded together, positives+negatives padded
             together (kalm: one tokenisation of 2B passages; peer: two columns merged by its
             ``embed_columns``), so both see identical real and padded token counts (checked each step)
  loss       InfoNCE over in-batch positives + every hard negative of the batch, τ = 1/scale:
             kalm KaLMObjective(tau=τ, gamma=0, no mixing, no Matryoshka, use_hard_negatives)
             vs MultipleNegativesRankingLoss(scale=1/τ) on (anchor, positive, negative); the two losses
             are printed side by side, computed by each library on the first batch with the same weights
             before the timed steps (they agree to float round-off)
  GradCache  kalm optim.gradcache_chunk_size=c vs CachedMultipleNegativesRankingLoss(mini_batch_size=c)
  sub-batch  kalm optim.sub_batch_size=c (plain step, each side embedded in length-sorted sub-batches of c,
             one backward) vs plain MNRL: the same loss terms and real tokens, fewer padded tokens on
             kalm's side (sentence-transformers has no such option; this row measures what it buys)
  update     clip the global grad norm at 1.0, fused AdamW on both sides (same lr, betas, eps, weight
             decay; StageTrainer's optimizer and SentenceTransformerTrainer's default), zero_grad
kalm's step is the body of ``StageTrainer.run`` (Batch.from_examples → StepRunner → clip → AdamW →
scheduler) on a real ``StageTrainer``; the peer's is the loop body of a hand-written trainer (preprocess →
loss → backward → clip → AdamW), i.e. the peer without its Trainer's per-step overhead.

Run: ``.venv/bin/python benchmarks/bench_train.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _peer_columns(examples: list[dict], num_negatives: int) -> list[list[str]]:
    cols = [[e["query"] for e in examples], [e["pos"] for e in examples]]
    cols += [[e["neg"][k] for e in examples] for k in range(num_negatives)]
    return cols


def make_kalm(kalm, dataset, *, batch_size, max_len, tau, lr, chunk, out_dir, bf16="no", sub_batch=None,
              optim_extra: dict | None = None):
    """A real StageTrainer around ``kalm`` (model, AdamW, scheduler, accelerate, StepRunner).
    ``optim_extra``: further ``optim.*`` settings (the GPU check's levers: compile, checkpointing)."""
    from kalm_lib.config import config_from_dict
    from kalm_lib.train import StageTrainer

    cfg = config_from_dict({
        "stage": "finetune", "output_dir": str(out_dir), "seed": 0,
        "data": {"num_negatives": 1, "query_max_len": max_len, "passage_max_len": max_len, "group_by_length": True},
        "objective": {"tau": tau, "gamma": 0.0, "use_hard_negatives": True, "mix_pairwise": 0,
                      "mix_listwise": False, "matryoshka_dims": None, "distill_weight": 0.0},
        # max_steps huge + no warm-up: the linear schedule keeps lr ≈ constant, like the peer's.
        "optim": {"lr": lr, "batch_size": batch_size, "max_steps": 10**9, "warmup_ratio": 0.0, "grad_clip": 1.0,
                  "gradcache_chunk_size": chunk, "sub_batch_size": sub_batch, "bf16": bf16, "weight_decay": 0.01,
                  **(optim_extra or {})},
        "progress_bar": False})
    return StageTrainer(cfg, dataset=dataset, model=kalm)


def kalm_step(trainer, examples: list[dict], num_negatives: int) -> tuple[float, int, int]:
    """Exactly the per-step body of ``StageTrainer.run`` (without its logging/checkpointing)."""
    from kalm_lib.train import Batch

    batch = Batch.from_examples(examples, num_negatives)
    terms, real, total = trainer.step_runner(batch)
    trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), trainer.cfg.optim.grad_clip)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return terms["loss"], real, total


def make_peer(st, *, tau, lr, chunk):
    import torch

    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import losses

    if chunk is None:
        loss_fn = losses.MultipleNegativesRankingLoss(st, scale=1.0 / tau)
    else:
        loss_fn = losses.CachedMultipleNegativesRankingLoss(st, scale=1.0 / tau, mini_batch_size=chunk)
    # SentenceTransformerTrainer's default optimizer is transformers' "adamw_torch_fused" (torch >= 2.8),
    # and StageTrainer uses the fused kernel too: the same AdamW update, the same implementation.
    params = [p for p in st.parameters() if p.requires_grad]
    adam = dict(lr=lr, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)
    try:
        opt = torch.optim.AdamW(params, fused=True, **adam)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(params, **adam)
    st.train()
    return loss_fn, opt


def _padded_tokens(feats: list[dict], chunk: int | None) -> int:
    """Tokens (padding included) the peer's model runs on: MNRL embeds the anchor column alone and the
    candidate columns merged at their common width; the cached loss embeds every column in chunks, each
    trimmed to its own longest row."""
    masks = [f["attention_mask"] for f in feats]
    if chunk is None:
        return masks[0].numel() + sum(m.shape[0] for m in masks[1:]) * max(m.shape[1] for m in masks[1:])
    total = 0
    for m in masks:
        for s in range(0, m.shape[0], chunk):
            part = m[s:s + chunk]
            total += part.shape[0] * int(part.sum(dim=1).max())
    return total


def peer_step(st, loss_fn, opt, examples: list[dict], num_negatives: int, device=None,
              autocast_dtype=None) -> tuple[float, int, int]:
    import contextlib

    import torch
    from sentence_transformers.util import batch_to_device

    prep = getattr(st, "preprocess", None) or st.tokenize  # sentence-transformers < 6: tokenize
    feats = [prep(col) for col in _peer_columns(examples, num_negatives)]
    if device is not None:
        feats = [batch_to_device(f, device) for f in feats]
    real = sum(int(f["attention_mask"].sum()) for f in feats)
    total = _padded_tokens(feats, getattr(loss_fn, "mini_batch_size", None))
    ctx = (torch.autocast(device_type=device.type if device is not None else "cpu", dtype=autocast_dtype)
           if autocast_dtype is not None else contextlib.nullcontext())
    with ctx:
        loss = loss_fn(feats, None)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach()), real, total


def same_loss_check(trainer, st, loss_fn, examples: list[dict]) -> tuple[float, float]:
    """Each library's loss on the same batch with the same (untouched) weights; gradients are dropped."""
    from kalm_lib.train import Batch

    terms, _, _ = trainer.step_runner(Batch.from_examples(examples, 1))  # forward + backward, no update
    prep = getattr(st, "preprocess", None) or st.tokenize
    dev = next(st.parameters()).device
    feats = [{k: v.to(dev) if hasattr(v, "to") else v for k, v in prep(col).items()}
             for col in _peer_columns(examples, 1)]
    peer = float(loss_fn(feats, None).detach())  # forward only: no backward, no update
    for p in trainer.model.parameters():
        p.grad = None
    for p in st.parameters():
        p.grad = None
    return terms["loss"], peer


def sampler_batches(dataset, batch_size: int, n: int, seed: int = 0) -> list[list[dict]]:
    """The first ``n`` global batches of kalm's own TaskBatchSampler (length-grouped), as example lists."""
    from kalm_lib.data import TaskBatchSampler

    s = TaskBatchSampler(list(dataset.tasks), batch_size=batch_size, seed=seed, group_by_length=True,
                         lengths=list(dataset.lengths))
    out = []
    for idx in s:
        out.append([dataset[int(i)] for i in idx])
        if len(out) == n:
            break
    return out


def run_config(name: str, kalm_model, st, dataset, *, batch_size: int, chunk: int | None, max_len: int,
               rounds: int, warmup: int, per_round: int = 3, tau: float = 0.05, lr: float = 1e-4,
               sub_batch: int | None = None, packing: bool = False) -> dict:
    """One configuration. A round = one training step on each of the same ``per_round`` batches, so that
    every round (of either side) does the same work and round times can be compared as medians; the
    batches come from kalm's length-grouped sampler and differ in length (1-3 s per step here)."""
    import copy

    batches = sampler_batches(dataset, batch_size, per_round)
    if len(batches) < per_round:
        raise RuntimeError(f"only {len(batches)} batches of {batch_size}; need {per_round}")
    # each config starts from a fresh copy of the initial weights, shared by both sides
    st_copy = copy.deepcopy(st)
    kalm_copy = C.kalm_on(st_copy, kalm_model.tokenizer, max_len)
    with tempfile.TemporaryDirectory(prefix="kalm-bench-run-") as tmp:
        trainer = make_kalm(kalm_copy, dataset, batch_size=batch_size, max_len=max_len, tau=tau, lr=lr,
                            chunk=chunk, out_dir=Path(tmp), sub_batch=sub_batch,
                            optim_extra={"packing": True} if packing else None)
        loss_fn, opt = make_peer(st_copy, tau=tau, lr=lr, chunk=chunk)
        first_loss = same_loss_check(trainer, st_copy, loss_fn, batches[0])
        rec = {"kalm": [], "peer": []}

        def kalm_side(_r):
            rec["kalm"].append([kalm_step(trainer, b, 1) for b in batches])

        def peer_side(_r):
            rec["peer"].append([peer_step(st_copy, loss_fn, opt, b, 1) for b in batches])

        times, cpu = C.interleave({"kalm": kalm_side, "peer": peer_side}, rounds=rounds, warmup=warmup)
    # tokens per round (identical in every round: the same batches)
    real_k, real_p = (sum(x[1] for x in rec[s][-1]) for s in ("kalm", "peer"))
    tot_k, tot_p = (sum(x[2] for x in rec[s][-1]) for s in ("kalm", "peer"))
    if real_k != real_p:
        print(f"   WARNING: real token counts differ: kalm {real_k} vs peer {real_p}")
    pairs = batch_size * len(batches)
    tk, tp = statistics.median(times["kalm"]), statistics.median(times["peer"])
    res = {"name": name, "batch_size": batch_size, "gradcache_chunk": chunk, "sub_batch": sub_batch, "packing": packing,
           "max_len": max_len, "tau": tau,
           "rounds": rounds, "warmup": warmup, "batches_per_round": len(batches),
           "kalm_round_s_median": tk, "peer_round_s_median": tp,
           "kalm_pairs_per_s": pairs / tk, "peer_pairs_per_s": pairs / tp,
           "kalm_tokens_per_s": real_k / tk, "peer_tokens_per_s": real_p / tp,
           "real_tokens_per_round": real_k, "padded_tokens_per_round_kalm": tot_k, "padded_tokens_per_round_peer": tot_p,
           "padding_fraction_kalm": 1 - real_k / tot_k, "padding_fraction_peer": 1 - real_p / tot_p,
           "first_loss_kalm": first_loss[0], "first_loss_peer": first_loss[1],
           "first_loss_abs_diff": abs(first_loss[0] - first_loss[1]),
           **C.speed_ratio(times["kalm"], times["peer"]),
           "cpu_time_ratio": statistics.median(cpu["peer"]) / statistics.median(cpu["kalm"]),
           "times_kalm": times["kalm"], "times_peer": times["peer"], "cpu_kalm": cpu["kalm"], "cpu_peer": cpu["peer"]}
    fused = [getattr(getattr(o, "optimizer", o), "defaults", {}).get("fused") for o in (trainer.optimizer, opt)]
    res["fused_adamw"] = {"kalm": fused[0], "peer": fused[1]}
    print(f"-- {name}: batch {batch_size} pairs (+1 hard negative), L={max_len}, GradCache chunk {chunk}, "
          f"kalm sub-batch {sub_batch}, packing {packing}; "
          f"{rounds} timed rounds of {len(batches)} steps after {warmup} warm-up round; AdamW fused: kalm "
          f"{fused[0]}, peer {fused[1]}")
    print(f"   kalm_lib : {C.fmt(res['kalm_pairs_per_s'], 1):>8} pairs/s  {C.fmt(res['kalm_tokens_per_s'], 0):>8} tokens/s"
          f"  (median round {tk:.2f} s)")
    print(f"   peer     : {C.fmt(res['peer_pairs_per_s'], 1):>8} pairs/s  {C.fmt(res['peer_tokens_per_s'], 0):>8} tokens/s"
          f"  (median round {tp:.2f} s)")
    print(f"   ratio kalm/peer = {res['ratio']:.3f}x  (per-round quartiles {res['round_ratio_q1']:.3f} / "
          f"{res['round_ratio_median']:.3f} / {res['round_ratio_q3']:.3f}); CPU-time ratio {res['cpu_time_ratio']:.3f}x;"
          "  target >= 1.0x")
    print(f"   equal work: loss on batch 1, same weights: kalm {first_loss[0]:.6f} vs peer {first_loss[1]:.6f} "
          f"(|Δ| {res['first_loss_abs_diff']:.1e}); real tokens/round {real_k} (identical: {real_k == real_p}); "
          f"padded tokens/round {tot_k} vs {tot_p} (padding {res['padding_fraction_kalm']:.1%} vs "
          f"{res['padding_fraction_peer']:.1%})")
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run of the script)")
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--only", choices=("mnrl", "mnrl-sub", "mnrl-packed", "cached", "cached-packed"), default=None,
                    help="run one of the five configurations")
    args = ap.parse_args(argv)
    import torch

    info = C.print_header("training throughput: kalm_lib StageTrainer step vs sentence-transformers (M)NRL")
    C.data_dir()
    torch.manual_seed(0)
    kalm, st, folder = C.build_pair(max_length=args.max_len)
    diff = C.check_same_model(kalm, st, C.sts_sentences(16))
    print(f"   model: tiny Qwen2 {C.SMOKE_TINY}, vocab {kalm.backbone.config.vocab_size}, "
          f"{sum(p.numel() for p in kalm.parameters()) / 1e6:.1f}M params (all trained); "
          f"same embeddings on both sides (max |Δ| {diff:.1e})")
    ds = C.smoke_training_set(kalm.tokenizer)
    print(f"   data: {len(ds)} examples from {len(set(ds.tasks))} local datasets, 1 hard negative each")
    rounds = args.rounds or (2 if args.quick else 4)
    warm = 1
    results = []
    if args.only in (None, "mnrl"):
        results.append(run_config("MNRL", kalm, st, ds, batch_size=32, chunk=None, max_len=args.max_len,
                                  rounds=rounds, warmup=warm))
    if args.only in (None, "mnrl-sub"):
        results.append(run_config("MNRL, kalm sub-batches 16", kalm, st, ds, batch_size=32, chunk=None,
                                  max_len=args.max_len, rounds=rounds, warmup=warm, sub_batch=16))
    if args.only in (None, "mnrl-packed"):
        results.append(run_config("MNRL, kalm packed", kalm, st, ds, batch_size=32, chunk=None,
                                  max_len=args.max_len, rounds=rounds, warmup=warm, packing=True))
    if args.only in (None, "cached"):
        results.append(run_config("CachedMNRL (GradCache)", kalm, st, ds, batch_size=32, chunk=16,
                                  max_len=args.max_len, rounds=rounds, warmup=warm))
    if args.only in (None, "cached-packed"):
        results.append(run_config("CachedMNRL (GradCache), kalm packed", kalm, st, ds, batch_size=32, chunk=16,
                                  max_len=args.max_len, rounds=rounds, warmup=warm, packing=True))
    out = {"machine": info, "command": "benchmarks/bench_train.py" + (" --quick" if args.quick else ""),
           "configs": results}
    C.write_json("train", out)
    return out


if __name__ == "__main__":
    main()
