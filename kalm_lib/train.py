"""One training stage of KaLM-Embedding-V2 (pre-training, fine-tuning or distillation) on accelerate.

The three stages differ only in their config (PAPER.md §3):

    stage 1  pretrain   L = InfoNCE over in-batch positives                        (weak pairs)
    stage 2  finetune   L = focal-InfoNCE over in-batch positives + all hard negatives
                            + online mixed negatives, under Matryoshka              (mined triples)
    stage 3  distill    L = α_cl·focal-InfoNCE + α_kd·KL(P_teacher ‖ P_student)      (teacher scores)

Each step embeds the local share of the global batch, gathers q, p⁺, p⁻ (and teacher scores) from
every process with the local slot keeping its gradient, computes the *global* loss (identical on
every rank) and back-propagates ``W · L``: DDP averages gradients over the W ranks, so the update is
exactly the single-process update on the global batch (see ``kalm_lib/losses/distributed.py``).

GradCache (Gao et al., 2021) decouples the batch from memory: embed every sub-batch without a graph,
compute the loss and its gradient with respect to the embeddings ∂L/∂e, then re-run each sub-batch
with a graph and back-propagate the surrogate ⟨e, ∂L/∂e⟩. The gradient equals the full-batch one.
We write it here rather than use sentence-transformers' ``CachedMultipleNegativesRankingLoss``
because ours must carry hard negatives, mixing, focal weights, distillation and cross-device
gathering through the same cached step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from kalm_lib.atomic import atomic_write_text
from kalm_lib.config import TrainConfig
from kalm_lib.losses import KaLMObjective, gather_with_grad
from kalm_lib.model import KaLMEmbedder, build_model, compile_layers  # noqa: F401 (build_model re-exported)
from kalm_lib.progress import bar_disabled
from kalm_lib.data.examples import DEFAULT_N as EXAMPLES_N, example_record, write_examples

log = logging.getLogger("kalm_lib.train")

# Dense bf16 peak FLOP/s per device, for MFU (vendor datasheets, no sparsity).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


class TrainingDiverged(RuntimeError):
    """Too many steps in a row were not finite, or a weight is not finite at a save; nothing is written."""


class RunFolderError(RuntimeError):
    """A run folder that cannot be continued as asked: a changed config, a bad checkpoint pointer, no
    readable checkpoint. The message names the files and fields, and how to proceed."""


# Config fields that change neither the schedule, the data nor the model: a resumed run may change them.
_RESUME_FREE = {"log_every", "save_every", "keep_checkpoints", "resume", "progress_bar", "source", "output_dir",
                "optim.max_nonfinite_skips", "optim.compile", "optim.gradient_checkpointing",
                "optim.gradcache_chunk_size", "optim.sub_batch_size", "optim.packing", "optim.gradcache_lookup_once",
                "data.skip_invalid"}
_CKPT_NAME = re.compile(r"step_\d{7}")


# ---------------------------------------------------------------------------- batch
@dataclass
class Batch:
    """The local share of a global batch: B queries, B positives, B×M negatives, teacher scores."""
    queries: list[str]
    positives: list[str]
    negatives: list[str]          # flattened B·M, query-major
    num_negatives: int
    teacher_scores: torch.Tensor | None   # (B, 1+M) float
    teacher_mask: torch.Tensor | None     # (B, 1+M) bool
    own_only: torch.Tensor | None = None  # (B,) bool: Z_i of only its own candidates (labelled data; infonce.py)

    @classmethod
    def from_examples(cls, examples: Sequence[dict], num_negatives: int) -> "Batch":
        negs: list[str] = []
        for i, e in enumerate(examples):
            n = list(e.get("neg") or [])
            if len(n) != num_negatives:
                raise ValueError(f"example {i} of task {e.get('task')!r} has {len(n)} negatives, "
                                 f"the config asks for {num_negatives}")
            negs += n
        ts = [e.get("teacher_scores") for e in examples]
        scores = mask = None
        if any(s is not None for s in ts):
            width = 1 + num_negatives
            scores = torch.zeros(len(examples), width, dtype=torch.float32)
            mask = torch.zeros(len(examples), width, dtype=torch.bool)
            for i, s in enumerate(ts):
                if s is not None:
                    scores[i] = torch.tensor(s, dtype=torch.float32)
                    mask[i] = torch.isfinite(scores[i])
                    scores[i] = torch.nan_to_num(scores[i])
        own = [bool(e.get("own_negatives_only", False)) for e in examples]
        return cls([e["query"] for e in examples], [e["pos"] for e in examples], negs, num_negatives, scores, mask,
                   torch.tensor(own, dtype=torch.bool) if any(own) else None)


class _Mismatch(Exception):
    """A checkpoint made for other data or another schedule (raised as RunFolderError by maybe_resume)."""


class _RandState:
    """Saves and restores the torch CPU/CUDA RNG so a GradCache re-forward repeats any dropout exactly."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self):
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


# ---------------------------------------------------------------------------- step
class StepRunner:
    """Forward + backward of one step, plain or GradCache; equal gradients either way."""

    def __init__(self, model, kalm: KaLMEmbedder, objective: KaLMObjective, cfg: TrainConfig,
                 accelerator=None, generator: torch.Generator | None = None):
        self.model, self.kalm, self.objective, self.cfg = model, kalm, objective, cfg
        self.accelerator = accelerator
        self.generator = generator
        self.world = accelerator.num_processes if accelerator is not None else 1

    def _tokenize(self, texts, max_len):
        feats = self.kalm.tokenize(texts, max_length=max_len)
        dev = self.kalm.device
        return {k: v.to(dev) for k, v in feats.items()}

    def _features(self, batch: Batch):
        """Tokenised sub-batches [(kind, rows, features)] and token counts (real, padded).

        ``rows`` holds the sub-batch's positions in its side's original order (queries; positives then
        negatives). With GradCache, or on the plain step with ``optim.sub_batch_size``, each side is
        sorted by token length before it is cut into sub-batches, so every sub-batch is padded only to
        its own longest text (benchmarks/bench_padding.py: at the smoke profile this removes most of the
        padding that batch-level length grouping leaves, since a query's positive and negatives have
        unrelated lengths); gradients are unchanged. The plain step keeps every sub-batch's graph and
        back-propagates once, so it saves padded tokens, not memory (that is GradCache's job).
        """
        o = self.cfg.optim
        # A packed side has no padding to save, so the plain step packs each side whole; GradCache still cuts
        # sub-batches (its memory bound), sorted by length so that the CPU's re-padded attention pads little.
        chunk = o.gradcache_chunk_size or (None if o.packing else o.sub_batch_size)
        parts, real, total = [], 0, 0
        dev = self.kalm.device
        # Passages = positives then negatives (query-major).
        passages = batch.positives + batch.negatives
        for kind, texts, max_len in (("q", batch.queries, self.cfg.data.query_max_len),
                                     ("p", passages, self.cfg.data.passage_max_len)):
            if o.packing:
                feats = [(torch.tensor(rows, device=dev), self._pack(f)) for rows, f in
                         self._token_batches(texts, chunk or len(texts), max_len)]
                for rows, f in feats:
                    n = int(f["input_ids"].numel())
                    real, total = real + n, total + n
                    parts.append((kind, rows, f))
                continue
            if chunk is None or chunk >= len(texts):
                f = self._tokenize(texts, max_len)  # one padded tensor per side
                feats = [(torch.arange(len(texts), device=dev), f)]
            else:
                # tokenise once, sort by length, pad each sub-batch to its own longest text
                feats = [(torch.tensor(rows, device=dev), {k: v.to(dev) for k, v in f.items()})
                         for rows, f in self.kalm.length_sorted_batches(texts, chunk, max_len)]
            for rows, f in feats:
                real += int(f["attention_mask"].sum())
                total += f["attention_mask"].numel()
                parts.append((kind, rows, f))
        return parts, real, total

    def _token_batches(self, texts, size: int, max_len: int):
        """(rows, token-id lists) per length-sorted sub-batch of ``size`` (``size`` ≥ len: one, in order)."""
        ids = self.kalm.tokenizer(list(texts), truncation=True, max_length=max_len)["input_ids"]
        if size >= len(ids):
            yield list(range(len(ids))), ids
            return
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for s in range(0, len(order), size):
            rows = order[s:s + size]
            yield rows, [ids[i] for i in rows]

    def _pack(self, ids) -> dict:
        from kalm_lib.packing import pack

        f = pack(ids, device=self.kalm.device,
                 max_positions=getattr(self.kalm.backbone.config, "max_position_embeddings", None))
        return f

    @staticmethod
    def _embed_kwargs(f: dict) -> dict:
        """``f`` without its token ids (the forward gets ``inputs_embeds`` from the shared lookup instead)."""
        return {k: v for k, v in f.items() if k != "input_ids"}

    @staticmethod
    def _in_order(chunks: list[torch.Tensor], rows: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate sub-batch embeddings and put the rows back in the side's original order."""
        e, idx = torch.cat(chunks), torch.cat(rows)
        if bool((idx[1:] > idx[:-1]).all()):
            return e  # already in order (no sorting happened): skip the gather
        return e[torch.argsort(idx)]

    def _loss(self, q, p, batch: Batch):
        B, M = len(batch.queries), batch.num_negatives
        p_pos, p_neg = p[:B], (p[B:].view(B, M, -1) if M else None)
        qg, ppg = gather_with_grad(q), gather_with_grad(p_pos)
        png = gather_with_grad(p_neg) if p_neg is not None else None
        ts = tm = None
        if batch.teacher_scores is not None:
            ts = gather_with_grad(batch.teacher_scores.to(q.device))
            # gathered as uint8: bool all_gather is not supported by every backend (NCCL)
            tm = gather_with_grad(batch.teacher_mask.to(q.device, torch.uint8)).bool()
        own = None
        if batch.own_only is not None or self.world > 1:  # every rank joins the gather, flagged or not
            local = batch.own_only if batch.own_only is not None else torch.zeros(B, dtype=torch.bool)
            own = gather_with_grad(local.to(q.device, torch.uint8)).bool()
            own = own if bool(own.any()) else None
        out = self.objective(qg.float(), ppg.float(), png.float() if png is not None else None,
                             teacher_scores=ts, teacher_mask=tm, generator=self.generator, own_only=own)
        return out

    def _backward(self, loss):
        if self.accelerator is not None:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def __call__(self, batch: Batch) -> tuple[dict, int, int]:
        """Run forward and backward; returns (loss terms as floats, real tokens, padded tokens)."""
        parts, real, total = self._features(batch)
        if self.cfg.optim.gradcache_chunk_size is None:
            embs, rows = {"q": [], "p": []}, {"q": [], "p": []}
            looked_up = self._lookup_once(parts) if len(parts) > 1 else [None] * len(parts)
            for (kind, r, f), x in zip(parts, looked_up):
                embs[kind].append(self.model(**f) if x is None else self.model(inputs_embeds=x, **self._embed_kwargs(f)))
                rows[kind].append(r)
            out = self._loss(self._in_order(embs["q"], rows["q"]), self._in_order(embs["p"], rows["p"]), batch)
            if self._finite(out):  # a non-finite loss has nothing to back-propagate; the trainer skips the step
                self._backward(out["loss"] * self.world)
        else:
            out = self._gradcache(parts, batch)
        return {k: float(v.detach()) for k, v in out.items()}, real, total

    def _lookup_once(self, parts) -> list[torch.Tensor | None]:
        """Token embeddings of every sub-batch from ONE lookup, split back per sub-batch.

        Each call of the embedding layer adds a dense |V|×h gradient in backward (|V| = 151,646 for
        Qwen2): on CPU with a small model that write dominates a step, so six sub-batch calls made the
        sub-batched plain step slower than the padded one. One lookup over the concatenated ids gives the
        same gradient with one write. The plain step's two sides (queries, passages) share it too:
        benchmarks/bench_train.py, MNRL row, 1.09–1.18× sentence-transformers (three runs) with one lookup against
        0.99–1.01× with one per side. FSDP/DeepSpeed shard the table inside their wrapped forward, so
        there every sub-batch keeps its own lookup (``None``)."""
        acc = self.accelerator
        if acc is not None and acc.distributed_type.value in ("FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA"):
            return [None] * len(parts)
        ids = [f["input_ids"] for _, _, f in parts]
        flat = self.kalm.backbone.get_input_embeddings()(torch.cat([i.reshape(-1) for i in ids]))
        return [x.view(*i.shape, -1) for x, i in zip(flat.split([i.numel() for i in ids]), ids)]

    def _gradcache(self, parts, batch: Batch) -> dict:
        # 1) embed every sub-batch without a graph, remembering the RNG state of each
        states, embs, rows = [], {"q": [], "p": []}, {"q": [], "p": []}
        with torch.no_grad():
            for kind, r, f in parts:
                states.append(_RandState())
                embs[kind].append(self.model(**f))
                rows[kind].append(r)
        q = self._in_order(embs["q"], rows["q"]).detach().requires_grad_()
        p = self._in_order(embs["p"], rows["p"]).detach().requires_grad_()
        # 2) the loss and its gradient with respect to the embeddings only
        out = self._loss(q, p, batch)
        if not self._finite(out):
            return out  # the trainer skips this step; no second forward is worth running
        (out["loss"] * self.world).backward()
        grads = {"q": q.grad, "p": p.grad}
        # 3) re-embed each sub-batch with a graph and back-propagate ⟨e, ∂L/∂e⟩; gradients are
        #    synchronised across processes only on the last sub-batch. The token embeddings of every
        #    sub-batch come from one lookup (as on the plain step, ``_lookup_once``): each sub-batch's
        #    backward stops at its detached input embeddings, and the last one carries Σ ⟨x_k, ∂L/∂x_k⟩ of
        #    the others, so the 152k-row table gets one dense gradient per step instead of one per sub-batch.
        sync = self.accelerator.no_sync if self.accelerator is not None else (lambda _m: nullcontext())
        once = len(parts) > 1 and self.cfg.optim.gradcache_lookup_once
        looked_up = self._lookup_once(parts) if once else [None] * len(parts)
        held = []  # (looked-up embeddings with their graph, their gradient) of the sub-batches done so far
        for n, ((kind, r, f), st, x) in enumerate(zip(parts, states, looked_up)):
            last = n == len(parts) - 1
            current = _RandState()
            st.restore()
            with nullcontext() if last else sync(self.model):
                if x is None:
                    emb = self.model(**f)
                else:
                    xin = x if last else x.detach().requires_grad_()
                    emb = self.model(inputs_embeds=xin, **self._embed_kwargs(f))
                surrogate = (emb * grads[kind][r].to(emb.dtype)).sum()
                if last and held:
                    surrogate = surrogate + sum((xh * gh).sum() for xh, gh in held)
                self._backward(surrogate)
                if x is not None and not last:
                    held.append((x, xin.grad))
            current.restore()
        return out

    @staticmethod
    def _finite(out: dict) -> bool:
        """The loss is identical on every rank (a global loss), so every rank takes the same branch."""
        return bool(torch.isfinite(out["loss"].detach()).all())


# ---------------------------------------------------------------------------- state
class TrainState:
    """Everything beyond model/optimizer/scheduler that a resumed run needs to continue identically.

    Saved as JSON (``trainer_state.json`` in each checkpoint, with the scheduler's state) rather than
    through accelerate's custom-state pickles, which it loads with ``weights_only=False``: a crafted file in
    a run folder must never execute code (accelerate loads the model, optimizer and RNG files itself with
    ``weights_only=True``).
    """

    def __init__(self, sampler, generator: torch.Generator):
        self.step, self.epoch, self.sampler, self.generator = 0, 0, sampler, generator
        self.skipped = 0  # steps not applied because their loss or gradient norm was not finite

    def state_dict(self):
        return {"step": self.step, "epoch": self.epoch, "skipped": self.skipped,
                "sampler": self.sampler.state_dict(), "generator": self.generator.get_state().tolist()}

    def load_state_dict(self, d):
        self.step, self.epoch, self.skipped = int(d["step"]), int(d["epoch"]), int(d.get("skipped", 0))
        self.sampler.load_state_dict(d["sampler"])
        self.generator.set_state(torch.tensor(d["generator"], dtype=torch.uint8))


class _StreamSampler:
    """TrainState's sampler slot for a stream: the stream's position (for reading); the stream's own state, one
    per rank, is saved beside it by ``save_checkpoint`` and restored by ``_load_checkpoint``."""

    def __init__(self, stream):
        self.stream = stream

    def state_dict(self) -> dict:
        return {"stream_position": self.stream.position}

    def load_state_dict(self, state: dict) -> None:
        pass


def _flatten(d: dict) -> dict:
    """``{"optim": {"lr": 1e-5}}`` → ``{"optim.lr": 1e-5}`` (one level: ``model.tiny`` compares as a whole)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("model", "data", "optim", "objective"):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """``"optim.lr: 1e-05 (run) -> 0.0001 (now)"`` for every field that changes the schedule, data or model."""
    a, b = _flatten(json.loads(json.dumps(old, default=str))), _flatten(json.loads(json.dumps(new, default=str)))
    return [f"{k}: {a.get(k, '<unset>')!r} (run) -> {b.get(k, '<unset>')!r} (now)"
            for k in sorted(set(a) | set(b)) if k not in _RESUME_FREE and a.get(k) != b.get(k)]


def read_metrics_records(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl``. A torn LAST line (a crash or a full disk mid-write) is dropped with
    a warning; a bad line anywhere else is an error naming the file and line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "step" not in rec:
                raise ValueError("not a record with a 'step'")
        except ValueError as err:
            if n == len(lines):
                log.warning("%s:%d: torn last line dropped (%s)", path, n, err)
                break
            raise RunFolderError(f"{path}:{n}: not a metrics record ({err})") from None
        out.append(rec)
    return out


def _nonfinite_parameter(model) -> str | None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            return name
    return None


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import psutil
    return psutil.Process().memory_info().rss / 2**20


# ---------------------------------------------------------------------------- trainer
class StageTrainer:
    """Trains one stage from a :class:`TrainConfig`; ``run()`` returns the final model folder.

    ``dataset`` (map-style, items like ``kalm_lib.data.build_training_set``'s, with ``.tasks`` and
    ``.lengths``) and ``model`` may be passed in (tests, notebooks); otherwise they come from the config.
    ``callbacks`` are called as ``cb(step, record)`` after each logged step.
    """

    def __init__(self, cfg: TrainConfig, dataset=None, model: KaLMEmbedder | None = None,
                 callbacks: Sequence[Callable[[int, dict], None]] = ()):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        cuda = torch.cuda.is_available()
        bf16 = cfg.optim.bf16 == "yes" or (cfg.optim.bf16 == "auto" and cuda)
        self.accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=not cuda)
        set_seed(cfg.seed)
        self.callbacks = list(callbacks)
        self.kalm = model if model is not None else build_model(cfg)
        if cfg.optim.gradient_checkpointing:
            self.kalm.enable_checkpointing()
        if cfg.optim.compile:
            n = compile_layers(self.kalm.backbone)
            log.info("optim.compile: %d decoder layers compiled in place (first steps of each new shape compile)", n)
        acc = self.accelerator
        if dataset is None and cfg.data.streaming:
            dataset = self._build_stream()
        self.dataset = dataset if dataset is not None else self._build_dataset()
        from kalm_lib.data.stream import TaskStream
        self.streaming = isinstance(self.dataset, TaskStream)
        if cfg.data.streaming and not self.streaming:
            raise ValueError(f"{cfg.source}: data.streaming is true, but the dataset passed in is a "
                             f"{type(self.dataset).__name__}, not a kalm_lib.data.stream.TaskStream")
        if not self.streaming and len(self.dataset) == 0:
            raise ValueError(f"{cfg.source}: the training set is empty")
        if cfg.optim.batch_size % acc.num_processes:
            raise ValueError(f"{cfg.source}: optim.batch_size={cfg.optim.batch_size} must divide by the "
                             f"{acc.num_processes} processes")
        if self.streaming:
            self.sampler = _StreamSampler(self.dataset)
            self.steps_per_epoch, self.total_steps = self._stream_schedule()
        else:
            from kalm_lib.data import TaskBatchSampler
            self.sampler = TaskBatchSampler(
                list(self.dataset.tasks), batch_size=cfg.optim.batch_size, homogeneous_ratio=cfg.data.homogeneous_ratio,
                seed=cfg.seed, num_replicas=acc.num_processes, rank=acc.process_index, drop_last=True,
                group_by_length=cfg.data.group_by_length, lengths=list(getattr(self.dataset, "lengths", []) or []) or None)
            self.steps_per_epoch = len(self.sampler)
            if self.steps_per_epoch == 0:
                raise ValueError(f"{cfg.source}: {len(self.dataset)} examples make no full batch of "
                                 f"{cfg.optim.batch_size}; lower optim.batch_size or add data")
            self.total_steps = cfg.optim.max_steps or max(1, math.ceil(cfg.optim.epochs * self.steps_per_epoch))
        o = cfg.optim
        params = [p for p in self.kalm.parameters() if p.requires_grad]
        # The fused AdamW kernel is ~10× faster than the default on CPU for the 150k-row embedding
        # table of the smoke model (one pass over memory instead of several); same update rule.
        adam = dict(lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.adam_betas), eps=o.adam_eps)
        try:
            self.optimizer = torch.optim.AdamW(params, fused=True, **adam)
        except (RuntimeError, TypeError) as err:
            log.info("fused AdamW unavailable (%s); using the default implementation", err)
            self.optimizer = torch.optim.AdamW(params, **adam)
        from transformers import get_linear_schedule_with_warmup
        # The scheduler is stepped by hand once per optimizer step (accelerate's prepared scheduler
        # would step once per process).
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(o.warmup_ratio * self.total_steps), self.total_steps)
        self.model, self.optimizer = acc.prepare(self.kalm, self.optimizer)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.state = TrainState(self.sampler, self.generator)
        self.objective = KaLMObjective(cfg.objective)
        self.step_runner = StepRunner(self.model, self.kalm, self.objective, cfg, acc, self.generator)
        n_params = sum(p.numel() for p in self.kalm.parameters())
        n_embed = self.kalm.backbone.get_input_embeddings().weight.numel()
        self.flops_per_token = 6 * (n_params - n_embed) * (4 / 3 if o.gradcache_chunk_size else 1)
        self.peak_flops = _peak_flops(self.kalm.device)

    def _build_dataset(self):
        from kalm_lib.data import build_training_set
        d = self.cfg.data
        if not d.datasets:
            raise ValueError(f"{self.cfg.source}: data.datasets is empty")
        return build_training_set(
            list(d.datasets), stage=self.cfg.stage, num_negatives=d.num_negatives,
            max_rows_per_dataset=d.max_rows_per_dataset, seed=self.cfg.seed, mined_dir=d.mined_dir,
            teacher_scores_path=d.teacher_scores_path, skip_invalid=d.skip_invalid, tokenizer=self.kalm.tokenizer,
            decontaminate=d.decontaminate, allow_empty=d.allow_empty, own_negatives_only=d.own_negatives_only,
            subset_temperature=d.subset_temperature, use_instructions=d.use_instructions)

    def _build_stream(self):
        """``data.streaming``: the stage's Hub subsets as a :class:`~kalm_lib.data.stream.TaskStream`, this process's
        shard of every subset, one task per global batch (kalm_lib/data/stream.py)."""
        from kalm_lib.data.hub import stream_subsets
        from kalm_lib.data.stream import TaskStream
        cfg, d, acc = self.cfg, self.cfg.data, self.accelerator
        if not d.datasets:
            raise ValueError(f"{cfg.source}: data.datasets is empty")
        subsets = stream_subsets(list(d.datasets), cfg.stage, data_dir=None, num_negatives=d.num_negatives,
                                 decontaminate=d.decontaminate, temperature=getattr(d, "subset_temperature", 1.0),
                                 own_negatives_only=d.own_negatives_only, seed=cfg.seed,
                                 use_instructions=d.use_instructions)
        return TaskStream(subsets, cfg.optim.batch_size, rank=acc.process_index, world_size=acc.num_processes,
                          homogeneous_ratio=d.homogeneous_ratio, seed=cfg.seed, shuffle_buffer=d.shuffle_buffer,
                          num_workers=d.stream_workers, num_negatives=0 if cfg.stage == "pretrain" else d.num_negatives,
                          decontaminated=d.decontaminate)

    def _stream_schedule(self) -> tuple[int | None, int]:
        """(steps per epoch, total steps) of a stream: an "epoch" is Σ num_rows rows (each subset is drawn with its
        p_i, so a small subset may be seen several times and a large one partly); ``optim.max_steps`` wins."""
        from kalm_lib.config import ConfigError
        cfg, stream, acc = self.cfg, self.dataset, self.accelerator
        if (stream.batch_size, stream.rank, stream.world_size) != (cfg.optim.batch_size, acc.process_index,
                                                                   acc.num_processes):
            raise ValueError(f"{cfg.source}: the TaskStream passed in is for global batch {stream.batch_size}, rank "
                             f"{stream.rank} of {stream.world_size}; this run has optim.batch_size="
                             f"{cfg.optim.batch_size}, rank {acc.process_index} of {acc.num_processes}")
        if cfg.data.group_by_length:
            log.info("data.streaming: data.group_by_length does not apply (a stream has no lengths up front); "
                     "optim.sub_batch_size / GradCache still sort each side by length inside the step")
        rows = stream.num_rows()
        per_epoch = rows // cfg.optim.batch_size if rows is not None else None
        if cfg.optim.max_steps:
            return per_epoch, cfg.optim.max_steps
        if not per_epoch:
            unknown = [s.task for s in stream.subsets if s.num_rows is None]
            why = (f"the row count of {unknown} is unknown" if unknown else
                   f"{rows} rows make no full batch of {cfg.optim.batch_size}")
            raise ConfigError(f"{cfg.source}: data.streaming needs optim.max_steps ({why}, so epochs cannot be "
                              "turned into steps)")
        total = max(1, math.ceil(cfg.optim.epochs * per_epoch))
        log.info("data.streaming: %d steps = optim.epochs %g × %d rows / batch %d (set optim.max_steps to choose)",
                 total, cfg.optim.epochs, rows, cfg.optim.batch_size)
        return per_epoch, total

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def _facts(self) -> dict:
        """What the config alone does not pin: a resumed run must see the same data and schedule."""
        if self.streaming:  # the tasks, their rows and p_i, and the process count (each rank's state is its shard's)
            return {"examples": self.dataset.num_rows(), "steps_per_epoch": self.steps_per_epoch,
                    "total_steps": self.total_steps, "world_size": self.accelerator.num_processes,
                    "stream_tasks": {s.task: [s.num_rows, s.probability] for s in self.dataset.subsets}}
        return {"examples": len(self.dataset), "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps}

    def _check_weights_finite(self, what: Path):
        """Refuse to write a non-finite weight (every rank checks its own parameters; FSDP shards differ)."""
        bad = _nonfinite_parameter(self.model)
        flag = torch.tensor([0 if bad is None else 1], device=self.accelerator.device)
        if int(self.accelerator.gather(flag).sum()):
            raise TrainingDiverged(f"not writing {what}: parameter {bad or '(on another rank)'} is not finite "
                                   f"at step {self.state.step}; the last checkpoint on disk is kept")

    def save_checkpoint(self):
        """accelerate state (model, optimizer, RNG) plus ``trainer_state.json`` (scheduler, sampler, mixing
        generator, step), written to a temporary folder and renamed: a checkpoint on disk is always whole."""
        acc = self.accelerator
        folder = self.ckpt_dir / f"step_{self.state.step:07d}"
        tmp = self.ckpt_dir / f".tmp_step_{self.state.step:07d}"
        self._check_weights_finite(folder)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        stream = None
        if self.streaming:  # every rank reads its own shard: rank r's stream state is stream[r]
            from accelerate.utils import gather_object
            stream = gather_object([self.dataset.state_dict()])
        if acc.is_main_process:
            state = {"trainer": self.state.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "facts": self._facts()}
            if stream is not None:
                state["stream"] = stream
            (tmp / "trainer_state.json").write_text(json.dumps(state))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            atomic_write_text(self.ckpt_dir / "latest", folder.name + "\n")
            done = sorted(p for p in self.ckpt_dir.glob("step_*") if p.is_dir() and _CKPT_NAME.fullmatch(p.name))
            for old in done[: max(0, len(done) - self.cfg.keep_checkpoints)]:
                if old != folder:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _checkpoint_candidates(self) -> list[Path]:
        """``latest`` first, then the older checkpoints, newest first. ``latest`` must name a checkpoint
        folder inside this run's ``checkpoints/`` (never a path elsewhere)."""
        latest = self.ckpt_dir / "latest"
        names = sorted((p.name for p in self.ckpt_dir.glob("step_*") if p.is_dir() and _CKPT_NAME.fullmatch(p.name)),
                       reverse=True)
        if latest.is_file():
            name = latest.read_text(encoding="utf-8", errors="replace").strip()
            if not _CKPT_NAME.fullmatch(name) or (self.ckpt_dir / name).resolve().parent != self.ckpt_dir.resolve():
                raise RunFolderError(f"{latest} holds {name[:200]!r}, not the name of a checkpoint folder "
                                     f"(step_NNNNNNN) in {self.ckpt_dir}; refusing to load it")
            if name in names:
                names.remove(name)
                names.insert(0, name)
            else:
                log.warning("%s points at %s, which is missing; trying the older checkpoints %s", latest, name, names)
        return [self.ckpt_dir / n for n in names]

    def _load_checkpoint(self, path: Path, restart_schedule: bool) -> None:
        state_file = path / "trainer_state.json"
        try:
            state = json.loads(state_file.read_text())
            facts = state["facts"]
        except (OSError, ValueError, KeyError) as err:
            raise RunFolderError(f"{state_file}: unreadable ({type(err).__name__}: {err})") from None
        if not restart_schedule and facts != self._facts():
            diff = [f"{k}: {facts.get(k)} (run) -> {v} (now)" for k, v in self._facts().items() if facts.get(k) != v]
            raise _Mismatch(f"{path}: the data or schedule changed since this run started: {'; '.join(diff)}")
        self.accelerator.load_state(str(path))
        if not restart_schedule:
            self.scheduler.load_state_dict(state["scheduler"])
            self.state.load_state_dict(state["trainer"])
            if self.streaming:
                self.dataset.load_state_dict(state["stream"][self.accelerator.process_index])
        else:
            # the loaded optimizer carries the old run's lr; the new schedule's starts at step 0
            for g, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                g["lr"], g["initial_lr"] = lr, self.cfg.optim.lr

    def maybe_resume(self, restart_schedule: bool = False) -> bool:
        """Load the newest readable checkpoint; a torn or truncated one falls back to the previous one with a
        warning naming both. Returns False when there is none."""
        if self.cfg.resume == "fresh":
            return False
        candidates = self._checkpoint_candidates()
        errors = []
        for n, path in enumerate(candidates):
            try:
                self._load_checkpoint(path, restart_schedule)
            except _Mismatch as err:
                raise RunFolderError(f"{err}. Rerun with resume=fresh (--fresh) to train from scratch, or "
                                     f"resume=restart_schedule (--restart-schedule) to keep the weights") from None
            except Exception as err:  # a torn file: safetensors, torch or JSON errors of every kind
                errors.append(f"{path}: {type(err).__name__}: {err}")
                nxt = candidates[n + 1] if n + 1 < len(candidates) else None
                log.warning("checkpoint %s is unreadable (%s: %s); %s", path, type(err).__name__, err,
                            f"falling back to {nxt}" if nxt else "no older checkpoint is left")
                continue
            log.info("resumed from %s at step %d%s", path, self.state.step,
                     " with a new schedule from step 0" if restart_schedule else "")
            self._truncate_metrics(self.state.step)
            return True
        if errors:
            raise RunFolderError("no readable checkpoint in " + str(self.ckpt_dir) + ":\n  " + "\n  ".join(errors)
                                 + "\nRerun with resume=fresh (--fresh) to train from scratch")
        return False

    def _clean_stale(self):
        """Temporary folders and files left by a run killed while saving (never read, only in the way)."""
        # (``.final.old``, the previous final/ while a save swaps folders, is left alone: it may be the only copy)
        stale = list(self.out.glob(".final.tmp-*")) + list(self.ckpt_dir.glob(".tmp_step_*")) + \
            list(self.out.glob(".*.tmp"))
        for p in stale:
            log.info("removing a temporary leftover of an interrupted save: %s", p)
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def _start_fresh(self):
        for name in ("checkpoints", "final", "metrics.jsonl", "DONE", "config.json", "examples.jsonl"):
            p = self.out / name
            if p.exists():
                log.info("resume=fresh: removing %s", p)
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    # ------------------------------------------------------------------ metrics
    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def _truncate_metrics(self, step: int):
        """After a resume, drop log lines of steps that will be re-run (and a torn last line)."""
        if not (self.accelerator.is_main_process and self.metrics_path.is_file()):
            return
        keep = [r for r in read_metrics_records(self.metrics_path) if r["step"] <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))

    def _log(self, record: dict):
        if self.accelerator.is_main_process:
            # one write of a whole line, flushed: a crash can tear only the last line, which readers drop
            with self.metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        for cb in self.callbacks:
            cb(record["step"], record)

    # ------------------------------------------------------------------ loop
    def _batches(self):
        """Local example batches from the current sampler position, across epochs (a stream: from its position)."""
        if self.streaming:
            yield from self.dataset
            return
        while True:
            self.sampler.set_epoch(self.state.epoch)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.state.epoch)
            for idx in self.sampler:
                yield [self.dataset[int(i)] for i in idx]
            self.state.epoch += 1  # set_epoch() of a new epoch restarts the sampler at position 0

    def _prepare_folder(self) -> Path | None:
        """Decide what this run does with what ``output_dir`` holds (see ``TrainConfig.resume``). Returns the
        final model when the stage already finished with this config (nothing is retrained or rewritten)."""
        cfg, acc = self.cfg, self.accelerator
        config_file, done = self.out / "config.json", self.out / "DONE"
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            if cfg.resume == "fresh":
                self._start_fresh()
            self._clean_stale()
        acc.wait_for_everyone()
        fix = "rerun with resume=fresh (--fresh) to train from scratch"
        if cfg.resume != "fresh" and config_file.is_file():
            try:
                old = json.loads(config_file.read_text())
            except ValueError as err:
                raise RunFolderError(f"{config_file}: unreadable ({err}); {fix}") from None
            diff = config_differences(old, cfg.to_dict())
            if diff and cfg.resume == "auto":
                raise RunFolderError(f"{self.out} holds a run with another config; it differs in\n  "
                                     + "\n  ".join(diff) + f"\n{fix}, or with resume=restart_schedule "
                                     "(--restart-schedule) to continue its latest checkpoint's weights under the new schedule")
            if not diff and done.is_file() and (self.out / "final").is_dir():
                finished = json.loads(done.read_text())
                if finished.get("facts", self._facts()) == self._facts():
                    log.info("%s: this stage already finished (%s steps) with this config; nothing to do "
                             "(resume=fresh retrains it)", self.out, finished.get("steps"))
                    return self.out / "final"
                raise RunFolderError(f"{done}: the stage finished on other data or another schedule "
                                     f"({finished.get('facts')} then, {self._facts()} now); {fix}")
        return None

    def run(self) -> Path:
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.accelerator
        finished = self._prepare_folder()
        if finished is not None:
            return finished
        restart = cfg.resume == "restart_schedule"
        resumed = self.maybe_resume(restart_schedule=restart)
        if restart and not resumed:
            raise RunFolderError(f"resume=restart_schedule: {self.ckpt_dir} holds no checkpoint to continue from "
                                 "(start a new stage from a final model with model.init instead)")
        if restart:  # the new schedule and data order start at step 0 on every rank
            self.state.step, self.state.epoch, self.state.skipped = 0, 0, 0
            if self.streaming:
                self.dataset.reset()
            else:
                self.sampler.load_state_dict({"epoch": 0, "position": 0, "seed": cfg.seed})
        if acc.is_main_process:
            if restart:
                (self.out / "DONE").unlink(missing_ok=True)
                if self.metrics_path.exists():
                    stamp = time.strftime("%Y%m%d-%H%M%S")
                    os.replace(self.metrics_path, self.out / f"metrics.before_restart-{stamp}.jsonl")
            elif not resumed and self.metrics_path.exists():
                self.metrics_path.unlink()
            if not resumed or restart:  # the config a run was started with; a plain resume keeps it
                atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2, default=str))
            if hasattr(self.dataset, "summary"):  # the run's record of its tasks (one per Hub subset) and their rows
                table = self.dataset.summary()
                atomic_write_text(self.out / "training_set.json", table.to_json(orient="records", indent=1) + "\n")
        M = self.dataset.num_negatives if hasattr(self.dataset, "num_negatives") else cfg.data.num_negatives
        if M is None:  # a TaskStream built without num_negatives
            M = cfg.data.num_negatives
        if cfg.stage == "pretrain":
            M = 0
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.state.step, desc=f"{cfg.stage}",
                   disable=bar_disabled(cfg.progress_bar and acc.is_main_process))
        batches = self._batches()
        in_a_row = 0
        shown: list[dict] | None = [] if acc.is_main_process else None  # examples.jsonl: what the model saw
        while self.state.step < self.total_steps:
            t0 = time.perf_counter()
            items = next(batches)
            if shown is not None:
                shown += [example_record(e) for e in items[: EXAMPLES_N - len(shown)]]
                if len(shown) >= EXAMPLES_N or self.state.step + 1 >= self.total_steps:
                    write_examples(self.out, shown, EXAMPLES_N)
                    shown = None
            batch = Batch.from_examples(items, M)
            terms, real, total = self.step_runner(batch)
            if math.isfinite(terms["loss"]):
                grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                                  if cfg.optim.grad_clip else _grad_norm(self.model))
            else:
                grad_norm = float("nan")
            lr = self.scheduler.get_last_lr()[0]
            # A step whose loss or gradient norm is not finite is not applied (DeepSpeed's overflow skip):
            # AdamW would write NaN into every weight. The schedule and the data position still advance.
            skip = not (math.isfinite(terms["loss"]) and math.isfinite(grad_norm))
            if skip:
                self.state.skipped += 1
                in_a_row += 1
                log.warning("step %d: non-finite %s (%s); the update is skipped (%d in a row, %d in all)",
                            self.state.step + 1, "loss" if not math.isfinite(terms["loss"]) else "gradient norm",
                            {k: round(v, 4) for k, v in terms.items()}, in_a_row, self.state.skipped)
            else:
                in_a_row = 0
                self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
            dt = time.perf_counter() - t0
            tokens = real * acc.num_processes
            rec = {"step": self.state.step, "epoch": self.state.epoch, **terms, "lr": lr,
                   "grad_norm": grad_norm, "tokens_per_s": tokens / dt,
                   "pairs_per_s": cfg.optim.batch_size / dt, "padding_fraction": 1 - real / max(total, 1),
                   "memory_mb": _memory_mb(self.kalm.device), "step_time_s": dt,
                   "skipped": skip, "skipped_steps": self.state.skipped}
            if self.peak_flops:
                rec["mfu"] = self.flops_per_token * total / dt / self.peak_flops
            if skip or self.state.step % cfg.log_every == 0 or self.state.step == self.total_steps:
                self._log(rec)
            if in_a_row >= cfg.optim.max_nonfinite_skips:
                raise TrainingDiverged(
                    f"{in_a_row} steps in a row (up to step {self.state.step}) had a non-finite loss or gradient "
                    f"norm (optim.max_nonfinite_skips={cfg.optim.max_nonfinite_skips}); stopping. No update of "
                    "theirs was applied and the checkpoints on disk are kept; lower optim.lr or raise τ and resume.")
            bar.set_postfix(loss=f"{terms['loss']:.4f}", lr=f"{lr:.2e}")
            bar.update(1)
            if cfg.save_every and self.state.step % cfg.save_every == 0 and self.state.step < self.total_steps:
                self.save_checkpoint()
        bar.close()
        return self.save_final()

    def save_final(self) -> Path:
        acc = self.accelerator
        acc.wait_for_everyone()
        final = self.out / "final"
        self._check_weights_finite(final)
        if acc.is_main_process:
            # the evaluation's instruction per task and side travel with the model (plain sentence-transformers / mteb)
            try:
                from kalm_lib.evaluation.saved_prompts import saved_model_prompts

                prompts, which = saved_model_prompts(), "per task (kalm_lib.evaluation.saved_model_prompts)"
            except ImportError as err:  # a bare GPU image without mteb: the model still saves, and says so
                prompts, which = None, f"generic query/document only ({err.name or err} is not installed)"
                log.warning("%s: saved without the per-task prompts: %s", final, which)
            acc.unwrap_model(self.model).save(final, prompts=prompts)
            atomic_write_text(self.out / "DONE", json.dumps({"steps": self.state.step, "skipped": self.state.skipped,
                                                             "facts": self._facts(), "saved_prompts": which}) + "\n")
        acc.wait_for_everyone()
        return final


def _grad_norm(model) -> torch.Tensor:
    grads = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.tensor(0.0)


def train_stage(cfg: TrainConfig, dataset=None, model: KaLMEmbedder | None = None,
                callbacks: Sequence[Callable[[int, dict], None]] = ()) -> Path:
    """Train one stage; returns its final sentence-transformers folder (``<output_dir>/final``)."""
    return StageTrainer(cfg, dataset=dataset, model=model, callbacks=callbacks).run()


def read_metrics(output_dir: str | os.PathLike):
    """The per-step JSON Lines log of a run as a pandas DataFrame."""
    import pandas as pd

    path = Path(output_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics log at {path}")
    return pd.DataFrame.from_records(read_metrics_records(path))
