"""GPU check: training tokens/s and MFU of a Qwen2-0.5B-shaped KaLMEmbedder against sentence-transformers.

Nothing is downloaded: the model is a random-init Qwen2 with Qwen2-0.5B's shape (hidden 896, 24 layers,
14 heads, 2 KV heads, intermediate 4864, vocab 151936) built by ``KaLMEmbedder.tiny(**overrides)`` with
the Qwen2 tokenizer files from ``--tokenizer`` (default: ``$KALM_DATA_DIR/tokenizers/qwen2``, else
``shared/data/tokenizers/qwen2`` in the repository). The peer is ``SentenceTransformer`` loaded from the
folder ``KaLMEmbedder.save`` wrote, so both run the same weights.

Sections (both sides interleaved ABBA, ``torch.cuda.synchronize`` around every timed step):
  train-plain   batch B (anchor, positive, 1 hard negative), every text exactly --seq-len tokens:
                kalm StageTrainer step (bf16 autocast via accelerate) vs MNRL (the peer's model prepared by
                accelerate with the same bf16 autocast, as SentenceTransformerTrainer does); AdamW, clip 1.0
  train-cached  GradCache: kalm gradcache_chunk_size=c vs CachedMNRL(mini_batch_size=c)
  encode        KaLMEmbedder.encode vs SentenceTransformer.encode on the model loaded in bf16,
                mixed-length texts (16..seq-len tokens)
  profile       torch.profiler over 2 kalm plain steps: the top kernels by device time and the share of
                matrix products, attention and everything else (also $OUT/gpu_profile.txt)
  levers        kalm only, the plain step at batch B with one MFU lever each, on a fresh copy of the
                weights: optim.packing (varlen attention; on fixed-length texts, then padded vs packed on
                mixed lengths 16..seq-len), optim.compile (regional torch.compile), batch 2B with gradient
                checkpointing, their combinations, a frozen embedding table (the upper bound of a
                sparse-gradient variant) and AdamW foreach instead of fused (what the fused kernel buys);
                tokens/s (real tokens) and MFU against the train-plain kalm figure
Both sides run the very same parameter tensors (a KaLMEmbedder around the peer's backbone module).
MFU = (6·N + 12·n_layer·d·T) · tokens/s / peak bf16 FLOP/s (N = non-embedding parameters, T = sequence
length; GradCache's second forward is not counted, as usual for MFU). Peak from kalm_lib.train.PEAK_FLOPS.

``--tiny`` runs the same code on a 2-layer, 64-wide model on CPU (seq len 64), to check the script without
a GPU. Needs only torch, transformers, sentence-transformers, accelerate, numpy, pyyaml and kalm_lib on
PYTHONPATH; missing ones are listed and the script stops with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

QWEN2_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768,
                 rope_theta=1_000_000.0, rms_norm_eps=1e-6)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128)
REQUIRED = ("torch", "numpy", "transformers", "sentence_transformers", "accelerate", "yaml", "safetensors")


def check_environment() -> dict:
    found, missing = {}, []
    for mod in REQUIRED:
        try:
            found[mod] = getattr(importlib.import_module(mod), "__version__", "ok")
        except Exception as err:  # noqa: BLE001 - report every missing piece at once
            missing.append(f"{mod} ({type(err).__name__}: {err})")
    try:
        importlib.import_module("kalm_lib.train")
        found["kalm_lib"] = str(ROOT / "kalm_lib")
    except Exception as err:  # noqa: BLE001
        missing.append(f"kalm_lib ({type(err).__name__}: {err}); run from the repository root or set PYTHONPATH=.")
    print(f"python {platform.python_version()} at {sys.executable}")
    for k, v in found.items():
        print(f"  found {k} {v}")
    if "torch" in found:
        import torch

        print(f"  torch CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}"
              + (f", device: {torch.cuda.get_device_name(0)}, capability {torch.cuda.get_device_capability(0)}"
                 if torch.cuda.is_available() else ""))
    for m in missing:
        print(f"  MISSING {m}")
    return {"found": found, "missing": missing}


def find_tokenizer(arg: str | None) -> str:
    cands = [arg] if arg else []
    if os.environ.get("KALM_DATA_DIR"):
        cands.append(str(Path(os.environ["KALM_DATA_DIR"]) / "tokenizers" / "qwen2"))
    cands += [str(ROOT / "shared" / "data" / "tokenizers" / "qwen2"), str(ROOT.parent / "shared" / "data" / "tokenizers" / "qwen2")]
    for c in cands:
        if c and (Path(c) / "tokenizer.json").is_file():
            return c
    raise FileNotFoundError(f"no Qwen2 tokenizer (tokenizer.json) in any of {cands}; pass --tokenizer DIR")


def word_pool(tok) -> list[str]:
    """Whole-word vocabulary entries (' word'), so a text of k words is k tokens long."""
    vocab = tok.get_vocab()
    words = sorted(t[1:] for t in vocab if t.startswith("Ġ") and t[1:].isascii() and t[1:].isalpha() and len(t) > 3)
    return words


def synth_texts(tok, words, n: int, lengths, rng) -> list[str]:
    out = []
    for i in range(n):
        k = int(lengths[i]) if hasattr(lengths, "__len__") else int(lengths)
        out.append(" ".join(words[j] for j in rng.integers(len(words), size=k + 8)))
    return out


def model_flops_per_token(kalm, seq_len: int) -> tuple[float, int]:
    cfg = kalm.backbone.config
    n = sum(p.numel() for p in kalm.parameters())
    n_embed = kalm.backbone.get_input_embeddings().weight.numel()
    return 6 * (n - n_embed) + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len, n - n_embed


def run_train(name, kalm, st, peer_acc, items, *, batch, chunk, seq_len, rounds, warmup, device, sync, bf16):
    import bench_train as T

    import _common as C

    n_batches = warmup + rounds
    batches = [items[i * batch:(i + 1) * batch] for i in range(n_batches)]
    with tempfile.TemporaryDirectory(prefix="kalm-gpu-") as tmp:
        trainer = T.make_kalm(kalm, C.ListDataset(items), batch_size=batch, max_len=seq_len, tau=0.05, lr=1e-5,
                              chunk=chunk, out_dir=Path(tmp), bf16="yes" if bf16 else "no")
        loss_fn, opt = T.make_peer(st, tau=0.05, lr=1e-5, chunk=chunk)
        opt = peer_acc.prepare_optimizer(opt) if peer_acc is not None else opt
        first_loss = T.same_loss_check(trainer, st, loss_fn, batches[0])
        rec = {"kalm": [], "peer": []}

        def kalm_side(r):
            rec["kalm"].append(T.kalm_step(trainer, batches[r], 1))

        def peer_side(r):
            rec["peer"].append(T.peer_step(st, loss_fn, opt, batches[r], 1, device=device))

        if device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        wall, _ = C.interleave({"kalm": kalm_side, "peer": peer_side}, rounds=rounds, warmup=warmup, sync=sync)
        flops_tok = trainer.flops_per_token
        del trainer, loss_fn, opt
    fpt, _ = model_flops_per_token(kalm, seq_len)
    peak = _peak()
    res = {"name": name, "batch": batch, "chunk": chunk, "seq_len": seq_len, "rounds": rounds}
    for side in ("kalm", "peer"):
        t = statistics.median(wall[side])
        real = statistics.mean(x[1] for x in rec[side][warmup:])
        total = statistics.mean(x[2] for x in rec[side][warmup:])
        res[f"{side}_step_s"] = t
        res[f"{side}_pairs_per_s"] = batch / t
        res[f"{side}_tokens_per_s"] = real / t
        res[f"{side}_padded_tokens_per_step"] = total
        res[f"{side}_mfu"] = fpt * total / t / peak if peak else None
    res["ratio"] = res["peer_step_s"] / res["kalm_step_s"]
    res["first_loss"] = list(first_loss)
    res["trainer_flops_per_token"] = flops_tok
    if device.type == "cuda":
        import torch

        res["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    mfu = (lambda v: f"{v:.1%}" if v is not None else "n/a")
    print(f"-- {name}: batch {batch} pairs (+1 hard negative), {seq_len} tokens per text, GradCache chunk {chunk}, "
          f"{rounds} timed rounds")
    for side in ("kalm", "peer"):
        print(f"   {side:4s}: {res[f'{side}_tokens_per_s']:>10,.0f} tokens/s  {res[f'{side}_pairs_per_s']:7.1f} pairs/s  "
              f"step {res[f'{side}_step_s']:.3f} s  MFU {mfu(res[f'{side}_mfu'])}")
    print(f"   ratio kalm/peer {res['ratio']:.3f}x; loss on batch 1, same weights: kalm {res['first_loss'][0]:.4f} vs peer "
          f"{res['first_loss'][1]:.4f}" + (f"; max memory {res['max_memory_gb']:.1f} GB" if "max_memory_gb" in res else ""))
    return res


@contextlib.contextmanager
def fresh_trainer(folder, items, *, batch, seq_len, device, optim_extra=None, prepare=None):
    """A StageTrainer (plain step, bf16) around a fresh copy of the saved weights: compile and
    checkpointing change the module in place, so every lever and the profile get their own copy.
    Yields (trainer, kalm); the context drops its own references to them on exit."""
    import bench_train as T

    import _common as C
    from kalm_lib.model import KaLMEmbedder

    kalm = KaLMEmbedder.load(folder / "model", max_length=seq_len).to(device)
    # a lever that changes the model before the optimizer sees its parameters; it may return a context that
    # stays open while the trainer is built
    around = prepare(kalm) if prepare is not None else None
    with tempfile.TemporaryDirectory(prefix="kalm-gpu-") as tmp:
        with around if around is not None else contextlib.nullcontext():
            trainer = T.make_kalm(kalm, C.ListDataset(items), batch_size=batch, max_len=seq_len, tau=0.05,
                                  lr=1e-5, chunk=None, out_dir=Path(tmp), bf16="yes", optim_extra=optim_extra)
        try:
            yield trainer, kalm
        finally:
            del trainer, kalm


def freeze_embedding_table(kalm) -> None:
    """The frozen-table lever: no dense |V|×h gradient and no AdamW update of the 136M-parameter table. It
    changes the training (the token embeddings stay at their initial values), so it is measured as the upper
    bound of what a sparse-row variant could save, not offered as a default."""
    kalm.backbone.get_input_embeddings().weight.requires_grad_(False)


def unfused_adamw(kalm):
    """The fused-AdamW lever, measured backwards: StageTrainer builds ``AdamW(fused=True)``; this builds torch's
    default (``foreach`` on CUDA) for the length of the trainer's construction, so the lever's ratio below 1.0
    is what the fused kernel buys."""
    import torch

    @contextlib.contextmanager
    def patched():
        real = torch.optim.AdamW

        class Unfused(real):
            def __init__(self, params, fused=None, **kw):  # noqa: ARG002 - the point is to drop it
                super().__init__(params, **kw)

        torch.optim.AdamW = Unfused
        try:
            yield
        finally:
            torch.optim.AdamW = real

    return patched()


def run_lever(name, folder, items, *, batch, seq_len, rounds, warmup, device, sync, optim_extra, prepare=None):
    """kalm's plain step alone with extra ``optim.*`` settings, on a fresh copy of the saved weights.
    Tokens/s and MFU count real tokens only (padding excluded), so padded and packed rows compare."""
    import bench_train as T
    import torch

    import _common as C

    batches = [items[i * batch:(i + 1) * batch] for i in range(warmup + rounds)]
    rec = []
    t0 = time.perf_counter()
    with fresh_trainer(folder, items, batch=batch, seq_len=seq_len, device=device,
                       optim_extra=optim_extra, prepare=prepare) as (trainer, kalm):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def step(r):
            rec.append(T.kalm_step(trainer, batches[r], 1))

        wall, _ = C.interleave({"kalm": step}, rounds=rounds, warmup=warmup, sync=sync)
        fpt, _ = model_flops_per_token(kalm, seq_len)
        fused = bool(getattr(trainer.optimizer, "optimizer", trainer.optimizer).defaults.get("fused"))
    t = statistics.median(wall["kalm"])
    total = statistics.mean(x[1] for x in rec[warmup:])  # real tokens
    embedded = statistics.mean(x[2] for x in rec[warmup:])  # real + padding
    peak = _peak()
    res = {"name": f"lever: {name}", "batch": batch, "seq_len": seq_len, "optim": optim_extra, "rounds": rounds,
           "kalm_step_s": t, "kalm_tokens_per_s": total / t, "kalm_mfu": fpt * total / t / peak if peak else None,
           "padding_fraction": 1 - total / embedded, "adamw_fused": fused,
           "wall_incl_warmup_s": time.perf_counter() - t0}
    if device.type == "cuda":
        res["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    mfu = f"{res['kalm_mfu']:.1%}" if res["kalm_mfu"] is not None else "n/a"
    print(f"-- lever {name}: batch {batch}, optim {optim_extra}, padding {res['padding_fraction']:.1%}: "
          f"{res['kalm_tokens_per_s']:,.0f} tokens/s, step "
          f"{t:.3f} s, MFU {mfu}" + (f", max memory {res['max_memory_gb']:.1f} GB" if "max_memory_gb" in res else "")
          + f" ({res['wall_incl_warmup_s']:.0f} s with warm-up/compilation)")
    return res


def run_profile(folder, items, *, batch, seq_len, device, sync, out_path=None):
    """torch.profiler over 2 kalm plain steps (after 2 warm-up steps): where the device time goes."""
    import bench_train as T
    from torch.profiler import ProfilerActivity, profile

    batches = [items[i * batch:(i + 1) * batch] for i in range(4)]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with fresh_trainer(folder, items, batch=batch, seq_len=seq_len, device=device) as (trainer, _kalm):
        for b in batches[:2]:
            T.kalm_step(trainer, b, 1)
        if sync:
            sync()
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            for b in batches[2:]:
                T.kalm_step(trainer, b, 1)
            if sync:
                sync()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    dev = device.type == "cuda"

    def self_time(e):  # microseconds; the attribute was renamed across torch versions
        names = ("self_device_time_total", "self_cuda_time_total") if dev else ("self_cpu_time_total",)
        for n in names:
            v = getattr(e, n, None)
            if v is not None:
                return float(v)
        return 0.0

    # on a GPU only the kernels themselves: an aten op's self device time repeats its kernels' time
    kernels = [e for e in events if self_time(e) > 0 and (not dev or str(getattr(e, "device_type", "")).endswith("CUDA"))]
    total = sum(self_time(e) for e in kernels) or 1.0
    groups = {"matrix products": ("gemm", "matmul", "aten::mm", "aten::addmm", "aten::bmm", "cutlass", "sm90_xmma",
                                  "nvjet"),
              "attention": ("flash", "fmha", "attention", "efficient_attention", "sdpa")}
    share = {g: 0.0 for g in (*groups, "everything else")}
    for e in kernels:
        key = e.key.lower()
        g = next((g for g, pats in groups.items() if any(p in key for p in pats)), "everything else")
        share[g] += self_time(e)
    top = sorted(kernels, key=self_time, reverse=True)[:15]
    lines = [f"-- profile: 2 kalm plain steps, batch {batch}, {seq_len} tokens per text: {wall:.3f} s wall, "
             f"{total / 1e6:.3f} s {'device' if dev else 'CPU'} time in {len(kernels)} distinct "
             f"{'kernels' if dev else 'ops'}"]
    lines += [f"   {g:16s} {v / total:6.1%}" for g, v in share.items()]
    lines += [f"   {self_time(e) / total:6.1%}  {self_time(e) / 1e3:9.1f} ms  x{e.count:<5d} {e.key[:100]}" for e in top]
    print("\n".join(lines))
    if out_path:
        sort_key = "self_device_time_total" if dev else "self_cpu_time_total"
        try:
            table = events.table(sort_by=sort_key, row_limit=40)
        except Exception:  # noqa: BLE001 - older torch names the column self_cuda_time_total
            table = events.table(sort_by="self_cuda_time_total" if dev else "self_cpu_time_total", row_limit=40)
        Path(out_path).write_text("\n".join(lines) + "\n\n" + table + "\n")
    return {"name": "profile", "batch": batch, "wall_s": wall, "device_time_s": total / 1e6,
            "shares": {g: v / total for g, v in share.items()},
            "top": [{"kernel": e.key, "ms": self_time(e) / 1e3, "count": e.count} for e in top]}


def _peak():
    import torch

    if not torch.cuda.is_available():
        return None
    from kalm_lib.train import _peak_flops

    return _peak_flops(torch.device("cuda"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU: exercise the code path")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None, help="plain-step batch (pairs); halves on OOM")
    ap.add_argument("--cached-batch", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--encode-texts", type=int, default=None)
    ap.add_argument("--no-levers", action="store_true", help="skip the MFU lever and profile sections")
    ap.add_argument("--levers", default=None,
                    help="run only the levers whose name contains one of these ';'-separated words (e.g. 'packing')")
    ap.add_argument("--budget-s", type=float, default=420, help="skip later sections past this many seconds")
    ap.add_argument("--json", default=None, help="also write the results here (default $OUT/gpu_check.json)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    print(f"== GPU check: KaLMEmbedder (Qwen2-0.5B shape, random init) vs sentence-transformers   "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    env = check_environment()
    if env["missing"]:
        print("cannot run: install the missing packages above (no internet needed if wheels are carried)")
        return 2
    import numpy as np
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        print("no CUDA device: run with --tiny to exercise the code path on CPU")
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else None
    seq_len = args.seq_len or (64 if args.tiny else 512)
    batch = args.batch or (4 if args.tiny else 16)
    cached_batch = args.cached_batch or (8 if args.tiny else 64)
    chunk = args.chunk or (4 if args.tiny else 16)
    rounds = args.rounds or (2 if args.tiny else 6)
    n_enc = args.encode_texts or (64 if args.tiny else 4096)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tok_dir = find_tokenizer(args.tokenizer)
    print(f"tokenizer: {tok_dir}")
    from sentence_transformers import SentenceTransformer

    from kalm_lib.model import KaLMEmbedder

    shape = TINY if args.tiny else QWEN2_05B
    t0 = time.perf_counter()
    with torch.device(device):  # initialise the weights directly on the device (fast for 0.5B)
        kalm = KaLMEmbedder.tiny(seed=0, tokenizer=tok_dir, max_length=seq_len, attn_implementation="sdpa", **shape)
    n_all = sum(p.numel() for p in kalm.parameters())
    fpt, n_body = model_flops_per_token(kalm, seq_len)
    print(f"model: Qwen2 {shape} -> {n_all / 1e6:.1f}M parameters ({n_body / 1e6:.1f}M non-embedding), "
          f"{fpt / 1e9:.2f} GFLOP per training token at T={seq_len}; built in {time.perf_counter() - t0:.1f} s")
    folder = Path(tempfile.mkdtemp(prefix="kalm-gpu-model-"))
    kalm.save(folder / "model")
    st = SentenceTransformer(str(folder / "model"), device=str(device))
    st.max_seq_length = seq_len
    import _common as C

    # both sides train the very same parameter tensors (each with its own AdamW state); see _common.kalm_on
    kalm = C.kalm_on(st, kalm.tokenizer, seq_len)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    from accelerate import Accelerator

    # the peer's bf16 path as SentenceTransformerTrainer sets it up: accelerate's autocast around forward
    peer_acc = Accelerator(mixed_precision="bf16", cpu=not cuda)
    st = peer_acc.prepare_model(st)
    try:
        inner = getattr(st[0], "auto_model", None) or getattr(st[0], "model")
        attn = inner.config._attn_implementation
    except Exception:  # noqa: BLE001 - informational only
        attn = "?"
    print(f"peer: {type(st).__name__} loaded from the saved folder, attention {attn}; "
          f"setup {time.perf_counter() - t_start:.0f} s; peak bf16 FLOP/s: {_peak() or 'n/a (not a known GPU)'}")

    rng = np.random.default_rng(0)
    words = word_pool(kalm.tokenizer)
    need = max((2 + rounds) * batch, (2 + rounds) * cached_batch, (3 + 4) * 2 * batch)  # last: the levers
    texts = synth_texts(kalm.tokenizer, words, 3 * need, seq_len, rng)
    lens = [len(x) for x in kalm.tokenizer(texts[:64], add_special_tokens=False)["input_ids"]]
    print(f"training texts: {len(texts)} synthetic word sequences, >= {min(lens)} tokens each (truncated to {seq_len})")
    items = [{"query": texts[3 * i], "pos": texts[3 * i + 1], "neg": [texts[3 * i + 2]], "task": "synthetic"}
             for i in range(need)]
    # Mixed lengths (uniform in 16..seq_len, as real data): what packing removes is padding, which the
    # fixed-length items do not have (there packing measures the varlen kernel alone).
    mixed_lens = rng.integers(16, seq_len + 1, size=3 * need)
    mixed_texts = synth_texts(kalm.tokenizer, words, 3 * need, mixed_lens, rng)
    mixed = [{"query": mixed_texts[3 * i], "pos": mixed_texts[3 * i + 1], "neg": [mixed_texts[3 * i + 2]],
              "task": "synthetic"} for i in range(need)]
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": torch.cuda.get_device_name(0) if cuda else "cpu",
               "env": env["found"], "shape": shape, "seq_len": seq_len, "sections": []}

    def over_budget(section):
        if time.perf_counter() - t_start > args.budget_s:
            print(f"-- {section}: SKIPPED (past the {args.budget_s:.0f} s budget)")
            return True
        return False

    for name, b, c in (("train-plain (MNRL)", batch, None), ("train-cached (CachedMNRL)", cached_batch, chunk)):
        if over_budget(name):
            continue
        while True:
            try:
                results["sections"].append(run_train(name, kalm, st, peer_acc, items, batch=b, chunk=c, seq_len=seq_len,
                                                     rounds=rounds, warmup=2, device=device, sync=sync, bf16=True))
                break
            except torch.cuda.OutOfMemoryError:
                for m in (kalm, st):  # a step that ran out of memory leaves its gradients behind
                    for prm in m.parameters():
                        prm.grad = None
                gc.collect()
                torch.cuda.empty_cache()
                if b <= 2:
                    raise
                print(f"   out of memory at batch {b}; retrying at {b // 2}")
                b //= 2
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    if not over_budget("encode"):
        del kalm, st, peer_acc
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        dtype = torch.bfloat16
        st_e = SentenceTransformer(str(folder / "model"), device=str(device), model_kwargs={"dtype": dtype})
        st_e.max_seq_length = seq_len
        st_e.eval()
        kalm_e = C.kalm_on(st_e, st_e.tokenizer, seq_len).eval()
        enc_lens = rng.integers(16, seq_len + 1, size=n_enc)
        etexts = synth_texts(kalm_e.tokenizer, words, n_enc, enc_lens, rng)
        n_tok = sum(min(int(x), seq_len) for x in enc_lens)
        bs = 8 if args.tiny else 128
        out = {}

        def k_enc(_r):
            out["kalm"] = kalm_e.encode(etexts, batch_size=bs, show_progress_bar=False)

        def p_enc(_r):
            out["peer"] = st_e.encode(etexts, batch_size=bs, show_progress_bar=False, convert_to_numpy=True)

        wall, _ = C.interleave({"kalm": k_enc, "peer": p_enc}, rounds=3, warmup=1, sync=sync)
        diff = float(np.abs(out["kalm"] - out["peer"].astype(np.float32)).max())
        tk, tp = statistics.median(wall["kalm"]), statistics.median(wall["peer"])
        enc = {"name": "encode (bf16)", "texts": n_enc, "approx_tokens": n_tok, "batch": bs,
               "kalm_texts_per_s": n_enc / tk, "peer_texts_per_s": n_enc / tp, "ratio": tp / tk,
               "max_abs_embedding_diff": diff}
        results["sections"].append(enc)
        print(f"-- encode: {n_enc} texts of 16..{seq_len} tokens (~{n_tok:,} tokens), batch {bs}, bf16 weights")
        print(f"   kalm: {enc['kalm_texts_per_s']:,.0f} texts/s ({n_tok / tk:,.0f} tokens/s)   "
              f"peer: {enc['peer_texts_per_s']:,.0f} texts/s ({n_tok / tp:,.0f} tokens/s)   ratio {enc['ratio']:.3f}x; "
              f"max |Δ| embeddings {diff:.1e} (bf16)")

    if not args.no_levers:
        # the profile first: it is cheap, and it says which lever matters if the budget runs out
        if not over_budget("profile"):
            prof_path = str(Path(os.environ["OUT"]) / "gpu_profile.txt") if os.environ.get("OUT") else None
            try:
                results["sections"].append(run_profile(folder, items, batch=batch, seq_len=seq_len, device=device,
                                                       sync=sync, out_path=prof_path))
            except Exception as err:  # noqa: BLE001
                print(f"-- profile: FAILED ({type(err).__name__}: {str(err)[:300]})")

        # (name, batch, optim.*, items, model change); each against the train-plain kalm figure, or the line above
        levers = (("packing", batch, {"packing": True}, items, None),
                  ("mixed lengths, padded", batch, {}, mixed, None),
                  ("mixed lengths, packing", batch, {"packing": True}, mixed, None),
                  ("compile", batch, {"compile": True}, items, None),
                  ("batch x2 + checkpointing", 2 * batch, {"gradient_checkpointing": True}, items, None),
                  ("compile + batch x2 + checkpointing", 2 * batch, {"compile": True, "gradient_checkpointing": True},
                   items, None),
                  ("packing + compile + batch x2 + checkpointing", 2 * batch,
                   {"packing": True, "compile": True, "gradient_checkpointing": True}, items, None),
                  ("frozen embedding table (upper bound)", batch, {}, items, freeze_embedding_table),
                  ("AdamW foreach instead of fused", batch, {}, items, unfused_adamw))
        wanted = [w.strip() for w in args.levers.split(";")] if args.levers else None
        for name, b, extra, its, prep in levers:
            if wanted is not None and not any(w in name for w in wanted):
                continue
            if over_budget(f"lever {name}"):
                continue
            try:
                results["sections"].append(run_lever(name, folder, its, batch=b, seq_len=seq_len, rounds=4,
                                                     warmup=3, device=device, sync=sync, optim_extra=extra,
                                                     prepare=prep))
            except Exception as err:  # noqa: BLE001 - one failed lever must not lose the figures above
                print(f"-- lever {name}: FAILED ({type(err).__name__}: {str(err)[:300]})")
                results["sections"].append({"name": f"lever: {name}", "error": f"{type(err).__name__}: {err}"})
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    print("== summary")
    for s in results["sections"]:
        if "ratio" not in s:  # kalm-only sections (levers, profile)
            if "kalm_mfu" in s and s["kalm_mfu"] is not None:
                print(f"   {s['name']:40s} kalm {s['kalm_tokens_per_s']:,.0f} tok/s MFU {s['kalm_mfu']:.1%}")
            elif "shares" in s:
                print(f"   {'profile':40s} " + ", ".join(f"{g} {v:.0%}" for g, v in s["shares"].items()))
            else:
                print(f"   {s['name']:40s} " + (s.get("error") or f"kalm {s.get('kalm_tokens_per_s', 0):,.0f} tok/s"))
            continue
        extra = ""
        if "kalm_mfu" in s:
            m = (lambda v: f"{v:.1%}" if v is not None else "n/a")
            extra = (f"  kalm {s['kalm_tokens_per_s']:,.0f} tok/s MFU {m(s['kalm_mfu'])} | peer "
                     f"{s['peer_tokens_per_s']:,.0f} tok/s MFU {m(s['peer_mfu'])}")
        print(f"   {s['name']:28s} ratio kalm/peer {s['ratio']:.3f}x{extra}")
    print(f"   total wall time {time.perf_counter() - t_start:.0f} s")
    path = args.json or (str(Path(os.environ["OUT"]) / "gpu_check.json") if os.environ.get("OUT") else None)
    if path:
        Path(path).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
