"""The stage trainer: GradCache = full-batch gradient, resume = uninterrupted run, 2 processes = 1, NaN stops."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kalm_lib.config import config_from_dict
from kalm_lib.losses import KaLMObjective, ObjectiveConfig
from kalm_lib.model import KaLMEmbedder
from kalm_lib.train import Batch, StepRunner, TrainingDiverged, train_stage

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("apple banana cherry delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


class ToyDataset(torch.utils.data.Dataset):
    """Deterministic (query, positive, negatives, teacher scores) examples over two tasks."""

    def __init__(self, n=48, num_negatives=3, teacher=False):
        g = torch.Generator().manual_seed(0)
        self.items, self.tasks, self.lengths = [], [], []
        self.num_negatives = num_negatives
        for i in range(n):
            w = [WORDS[int(k)] for k in torch.randint(len(WORDS), (6,), generator=g)]
            q = " ".join(w[:3 + i % 3])
            item = {"query": f"Instruct: find it \n Query: {q}", "pos": " ".join(w[: 2 + i % 4]) + " ok",
                    "neg": [" ".join(reversed(w[j:])) for j in range(num_negatives)], "task": f"t{i % 2}",
                    "teacher_scores": [0.9] + [0.5 - 0.1 * j for j in range(num_negatives)] if teacher else None}
            self.items.append(item)
            self.tasks.append(item["task"])
            self.lengths.append(len(q))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def toy_config(tmp_path, **over):
    d = {"stage": "finetune", "output_dir": str(tmp_path / "run"), "seed": 0,
         "model": {"init": "tiny", "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                                            "num_key_value_heads": 2, "num_hidden_layers": 2}},
         "data": {"num_negatives": 3, "query_max_len": 16, "passage_max_len": 16, "group_by_length": False},
         "objective": {"tau": 0.05, "gamma": 0.5, "mix_pairwise": 2, "mix_listwise": True,
                       "matryoshka_dims": [32, 16], "matryoshka_weights": [1.0, 0.5]},
         "optim": {"lr": 1e-3, "batch_size": 8, "max_steps": 6, "warmup_ratio": 0.0, "grad_clip": 1.0},
         "progress_bar": False}
    for k, v in over.items():
        if isinstance(v, dict):
            d.setdefault(k, {}).update(v)
        else:
            d[k] = v
    return config_from_dict(d)


# --------------------------------------------------------------------------- GradCache
def _grads_for(chunk, distill, sub_batch=None, with_tokens=False):
    cfg = toy_config(Path("/tmp"), optim={"gradcache_chunk_size": chunk, "sub_batch_size": sub_batch},
                     objective={"distill_weight": 1.0} if distill else {})
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny).double()
    objective = KaLMObjective(cfg.objective)
    gen = torch.Generator().manual_seed(1)
    runner = StepRunner(model, model, objective, cfg, accelerator=None, generator=gen)
    ds = ToyDataset(num_negatives=3, teacher=distill)
    batch = Batch.from_examples([ds[i] for i in range(8)], 3)
    terms, real, total = runner(batch)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return (terms, grads, (real, total)) if with_tokens else (terms, grads)


@pytest.mark.parametrize("distill", [False, True])
def test_gradcache_equals_full_batch_gradient(distill):
    full_terms, full = _grads_for(None, distill)
    cached_terms, cached = _grads_for(3, distill)
    assert full_terms["loss"] == pytest.approx(cached_terms["loss"], abs=1e-10)
    assert full.keys() == cached.keys() and len(full) > 5
    for name in full:
        torch.testing.assert_close(cached[name], full[name], atol=1e-6, rtol=1e-6, msg=name)


def test_plain_sub_batches_equal_full_batch_gradient_with_less_padding():
    """optim.sub_batch_size: length-sorted sub-batches on the plain step, one backward, same gradients."""
    full_terms, full, (real, total) = _grads_for(None, True, with_tokens=True)
    sub_terms, sub, (sub_real, sub_total) = _grads_for(None, True, sub_batch=3, with_tokens=True)
    assert full_terms["loss"] == pytest.approx(sub_terms["loss"], abs=1e-10)
    assert full.keys() == sub.keys() and len(full) > 5
    for name in full:
        torch.testing.assert_close(sub[name], full[name], atol=1e-6, rtol=1e-6, msg=name)
    assert sub_real == real and sub_total < total  # same real tokens, fewer padded ones


@pytest.mark.parametrize("sub_batch", [None, 3])
def test_plain_step_looks_tokens_up_once(sub_batch):
    """Each embedding-layer call adds a dense |V|×h gradient in backward; the plain step (padded or
    sub-batched) makes one call for queries and passages together (benchmarks/RESULTS.md: the padded
    step went from parity with sentence-transformers to 1.09–1.18×)."""
    cfg = toy_config(Path("/tmp"), optim={"sub_batch_size": sub_batch})
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)
    runner = StepRunner(model, model, KaLMObjective(cfg.objective), cfg,
                        accelerator=None, generator=torch.Generator().manual_seed(1))
    calls = []
    h = model.backbone.get_input_embeddings().register_forward_hook(lambda _m, i, _o: calls.append(i[0].numel()))
    ds = ToyDataset(num_negatives=3)
    try:
        _, real, total = runner(Batch.from_examples([ds[i] for i in range(8)], 3))
    finally:
        h.remove()
    assert calls == [total]  # one call, over every (padded) token of the step


@pytest.mark.parametrize("option", ["compile", "gradient_checkpointing"])
def test_speed_options_give_the_same_step_and_keep_parameter_names(tmp_path, option):
    """optim.compile (every decoder layer compiled in place) and optim.gradient_checkpointing change how
    the step runs, not what it computes: loss and gradients equal the plain eager step's, and the
    state-dict keys (what checkpoints store) are unchanged."""
    from kalm_lib.train import StageTrainer

    results = {}
    for flag in (False, True):
        cfg = toy_config(tmp_path / str(flag), optim={option: flag})
        model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)
        trainer = StageTrainer(cfg, dataset=ToyDataset(num_negatives=3), model=model)
        if option == "compile":
            compiled = [m for m in model.backbone.layers if getattr(m, "_compiled_call_impl", None) is not None]
            assert len(compiled) == (len(model.backbone.layers) if flag else 0)
        else:
            bb = model.backbone
            on = bb.is_activation_checkpointing if hasattr(bb, "is_activation_checkpointing") else bb.is_gradient_checkpointing
            assert on == flag
        batch = Batch.from_examples([trainer.dataset[i] for i in range(8)], 3)
        terms, _, _ = trainer.step_runner(batch)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[flag] = (terms["loss"], grads, list(model.state_dict()))
    (l0, g0, k0), (l1, g1, k1) = results[False], results[True]
    assert k1 == k0
    assert l1 == pytest.approx(l0, abs=1e-5)
    assert g0.keys() == g1.keys() and len(g0) > 5
    for name in g0:
        # float32 with fused kernels: differences of ~1e-6 relative to the tensor's largest entry
        scale = max(1.0, float(g0[name].abs().max()))
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5 * scale, rtol=1e-4, msg=name)


# --------------------------------------------------------------------------- resume
def _final_weights(out: Path):
    from safetensors.torch import load_file
    return load_file(str(out / "model.safetensors"))


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
    ds = ToyDataset()
    straight = train_stage(toy_config(tmp_path / "a", save_every=2), dataset=ds)

    class Killed(Exception):
        pass

    def kill_at_5(step, rec):
        if step == 5:
            raise Killed()

    cfg_b = toy_config(tmp_path / "b", save_every=2, log_every=1)
    with pytest.raises(Killed):
        train_stage(cfg_b, dataset=ds, callbacks=[kill_at_5])
    latest = (Path(cfg_b.output_dir) / "checkpoints" / "latest").read_text().strip()
    assert latest == "step_0000004"
    resumed = train_stage(cfg_b, dataset=ds)
    a, b = _final_weights(straight), _final_weights(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=0, rtol=0, msg=k)
    steps = [json.loads(l)["step"] for l in (Path(cfg_b.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_metrics_log_fields(tmp_path):
    cfg = toy_config(tmp_path, optim={"max_steps": 2})
    train_stage(cfg, dataset=ToyDataset())
    rec = json.loads((Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ["step", "loss", "contrastive", "lr", "grad_norm", "tokens_per_s", "padding_fraction", "memory_mb"]:
        assert key in rec, key
    assert 0 <= rec["padding_fraction"] < 1
    # The final model is a sentence-transformers folder that loads back.
    assert KaLMEmbedder.load(Path(cfg.output_dir) / "final").embedding_dim == 32


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    """NaN weights after step 3: steps 4-6 are skipped (not applied), and neither the step-4 checkpoint nor
    final/ is written with a non-finite weight; the step-2 checkpoint stays latest."""
    cfg = toy_config(tmp_path, save_every=2)

    def poison(step, rec):
        if step == 3:  # corrupt the weights after step 3: step 4's loss is NaN
            with torch.no_grad():
                for p in trainer_model.parameters():
                    p.fill_(float("nan"))

    trainer_model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)
    with pytest.raises(TrainingDiverged, match="step_0000004: parameter .* is not finite at step 4"):
        train_stage(cfg, dataset=ToyDataset(), model=trainer_model, callbacks=[poison])
    ckpt = Path(cfg.output_dir) / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step_0000002"
    assert not (Path(cfg.output_dir) / "final").exists()
    assert [r["skipped"] for r in map(json.loads, (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines())] \
        == [False, False, False, True]
    from safetensors.torch import load_file
    w = load_file(str(ckpt / "step_0000002" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in w.values())


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        toy_config(tmp_path, optim={"lr_typo": 1})
    with pytest.raises(ValueError, match="objective"):
        toy_config(tmp_path, objective={"gamma": -1})
    with pytest.raises(ValueError, match="negatives"):
        Batch.from_examples([{"query": "q", "pos": "p", "neg": ["a"], "task": "t"}], 3)


# --------------------------------------------------------------------------- two processes
@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("modes", [("plain", "gc3"), ("sub3", "pack", "pack_gc3")], ids=["plain+gc3", "sub3+packed"])
def test_two_process_step_equals_one_process(tmp_path, modes):
    """torchrun (gloo, 2 ranks × 4) gives the same loss, gradient norm and updated weights as 1 process × 8, for
    each step kind of tests/two_process_step.py, several per launch: the plain step; GradCache (the gpu and paper
    profiles' step, whose W·L scaling sits in its own cached backward); and the plain step in sub-batches, which
    embeds length-sorted sub-batches from one token lookup (outside DDP's forward) whose gradient must still be
    all-reduced."""
    script = ROOT / "tests" / "two_process_step.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one = tmp_path / "one"
    two = tmp_path / "two"
    subprocess.run([sys.executable, str(script), str(one), *modes], check=True, env=env, timeout=300)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    res = subprocess.run(torchrun + [str(script), str(two), *modes], env=env, timeout=300, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for mode in modes:
        assert (one / f"{mode}.rank0").read_text().split() == ["1", "8"]
        for r in (0, 1):
            assert (two / f"{mode}.rank{r}").read_text().split() == ["2", "4"], "torchrun did not form a 2-process group"
        la = [json.loads(l) for l in (one / mode / "metrics.jsonl").read_text().splitlines()]
        lb = [json.loads(l) for l in (two / mode / "metrics.jsonl").read_text().splitlines()]
        assert len(la) == len(lb) == 2, mode
        for ra, rb in zip(la, lb):
            assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6), mode
            # Pins the W·L loss scaling (plain and cached backward): DDP averages over ranks, so without it this
            # norm would halve.
            assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4), \
                f"{mode}: grad_norm {rb['grad_norm']:.6g} with 2 processes, {ra['grad_norm']:.6g} with 1"
        a, b = _final_weights(one / mode / "final"), _final_weights(two / mode / "final")
        for k in a:
            # Adam turns the round-off in near-zero gradients (e.g. the key bias, to which softmax attention
            # is invariant) into ±lr·1e-3-sized steps; everything else agrees to ~1e-7.
            torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5, msg=f"{mode}: {k}")


# --------------------------------------------------------------------------- the recipe's rules (issue 19)
TOY_TINY = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2}


def _dropout_step(model, chunk, sub_batch, seed, dropout=0.3):
    """One step (loss terms, parameter gradients) of ``model`` (the toy one, attention dropout ``dropout``) in train
    mode, the torch RNG seeded just before the step."""
    cfg = toy_config(Path("/tmp"), model={"tiny": {**TOY_TINY, "attention_dropout": dropout}},
                     optim={"gradcache_chunk_size": chunk, "sub_batch_size": sub_batch},
                     objective={"distill_weight": 1.0})
    model.zero_grad(set_to_none=True)
    model.train()
    runner = StepRunner(model, model, KaLMObjective(cfg.objective), cfg,
                        accelerator=None, generator=torch.Generator().manual_seed(1))
    ds = ToyDataset(num_negatives=3, teacher=True)
    torch.manual_seed(seed)
    terms, _, _ = runner(Batch.from_examples([ds[i] for i in range(8)], 3))
    return terms, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradcache_replays_the_dropout_of_its_first_forward():
    """GradCache embeds each sub-batch twice (no graph, then with a graph); with dropout on (p = 0.3) the second
    forward must draw the same masks as the first, or ∂L/∂e belongs to other embeddings than the ones it is
    back-propagated through. Reference: the plain step over the same length-sorted sub-batches (same forwards in
    the same order, so the same masks), one graph and one backward: the full-batch gradient under those masks."""
    model = KaLMEmbedder.tiny(seed=0, **TOY_TINY, attention_dropout=0.3).double()  # built once (~4 s)
    assert model.backbone.config.attention_dropout == 0.3
    full_terms, full = _dropout_step(model, None, 3, seed=7)
    cached_terms, cached = _dropout_step(model, 3, None, seed=7)
    assert cached_terms["loss"] == pytest.approx(full_terms["loss"], abs=1e-10)
    assert full.keys() == cached.keys() and len(full) > 5
    for name in full:
        torch.testing.assert_close(cached[name], full[name], atol=1e-8, rtol=1e-6, msg=name)
    # dropout is really on: another seed draws other masks, hence another loss
    assert _dropout_step(model, None, 3, seed=8)[0]["loss"] != pytest.approx(full_terms["loss"], abs=1e-6)


def test_non_finite_teacher_scores_are_never_targets_in_memory_batches():
    """A candidate whose teacher score is NaN or ±inf (an in-memory example, not read through file validation)
    is left out of BOTH distributions, P_t and P_s: the batch marks it missing, and the distillation loss
    equals the naive KL over the finite candidates only (tests/reference.py), with finite gradients."""
    from kalm_lib.losses import distill_kl_loss
    import reference as R

    nan, inf = float("nan"), float("inf")
    rows = [[0.9, 0.5, nan, 0.1], [0.8, inf, 0.3, 0.2], [0.7, 0.6, -inf, 0.4], [0.9, 0.4, 0.3, 0.2],
            [nan, nan, nan, nan], None]
    examples = [{"query": f"q{i}", "pos": f"p{i}", "neg": [f"n{i}{j}" for j in range(3)], "task": "t",
                 "teacher_scores": s} for i, s in enumerate(rows)]
    batch = Batch.from_examples(examples, 3)
    expect = R.finite_teacher_mask(rows, 4)
    assert torch.equal(batch.teacher_mask, expect)
    q, p, n = R.unit(6, 8, seed=1), R.unit(6, 8, seed=2), R.unit(6, 3, 8, seed=3)
    finite = torch.tensor([[0.0 if s is None or not math.isfinite(x) else x for x in (s or [0] * 4)] for s in rows],
                          dtype=R.DT)
    R.assert_same_value_and_grad(
        lambda q, p, n: distill_kl_loss(q, p, n, batch.teacher_scores.to(R.DT), batch.teacher_mask),
        lambda q, p, n: R.ref_kl(q, p, n, finite, expect), [q, p, n])
    # the full objective over that batch: finite loss, finite gradients
    obj = KaLMObjective(ObjectiveConfig(distill_weight=1.0, tau=0.05))
    out = obj(q, p, n, batch.teacher_scores, batch.teacher_mask)
    out["loss"].backward()
    assert torch.isfinite(out["distill"]) and all(torch.isfinite(x.grad).all() for x in (q, p, n))
