"""Break the recipe one line at a time and see which test notices (a tool, not a test: pytest does not collect it).

Each entry of ``MUTANTS`` names a source file, the exact original line (matched on its stripped text; it must occur
exactly once), the replacement (written with the original's indentation) and the test arguments that should fail
when the line is broken. For each selected mutant this script applies it, runs ``python -m pytest -q <tests>``
under the project's test environment, reports CAUGHT (the tests failed) or SURVIVED (they passed: no test pins that
behaviour), and always puts the line back (try/finally, also on Ctrl-C or SIGTERM).

    .venv/bin/python tests/mutation_check.py --list           # the mutants, one a line
    .venv/bin/python tests/mutation_check.py                  # all of them (minutes: the two-process one launches torchrun)
    .venv/bin/python tests/mutation_check.py gc-world-scale   # only these ids (or --item 6 for an issue item)
    .venv/bin/python tests/mutation_check.py --baseline ...   # first check the selected tests pass unbroken

Safe next to other people's edits: the restore puts back only the one mutated line of the file as it is then (not a
snapshot taken earlier), and the child pytest runs with PYTHONDONTWRITEBYTECODE=1, so no bytecode of a mutant is
ever cached. Run one at a time; it uses one pytest process (plus torchrun's two for the two-process test).
Exit status: 0 when every selected mutant was caught, 1 when one survived, 2 on a setup error.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "COLUMNS": "240"}  # COLUMNS: pytest's short summary keeps the assertion message


@dataclass(frozen=True)
class Mutant:
    id: str
    item: str          # the issue item (e.g. "19.1") or "control" for a behaviour pinned before
    file: str          # relative to the repository root
    original: str      # the exact line (stripped comparison)
    replacement: str   # without indentation
    tests: tuple[str, ...]
    why: str


T = "tests/"
_S, _TR, _TS = "kalm_lib/data/stream.py", "kalm_lib/train.py", "tests/test_stream.py::"
_P, _TP = "kalm_lib/packing.py", "tests/test_packing.py::"
MUTANTS = [
    # 1. cross-process gradient scale of the cached backward (DDP averages over W ranks; the loss is global)
    Mutant("gc-world-scale", "19.1", "kalm_lib/train.py", '(out["loss"] * self.world).backward()',
           'out["loss"].backward()',
           (T + "test_train.py::test_two_process_step_equals_one_process[plain+gc3]",),
           "GradCache's ∂L/∂e without the W factor: the 2-process gradient halves"),
    Mutant("plain-world-scale", "control", "kalm_lib/train.py", 'self._backward(out["loss"] * self.world)',
           'self._backward(out["loss"])',
           (T + "test_train.py::test_two_process_step_equals_one_process[plain+gc3]",),
           "the plain step without the W factor"),
    # 2. GradCache replays the first forward's randomness in its second
    Mutant("gc-rng-replay", "19.2", "kalm_lib/train.py", "st.restore()", "pass  # mutant: no RNG replay",
           (T + "test_train.py::test_gradcache_replays_the_dropout_of_its_first_forward",),
           "the re-forward draws new dropout masks"),
    # 3. α_cl and α_kd
    Mutant("alpha-cl", "19.3", "kalm_lib/losses/objective.py", "loss = loss + cfg.contrastive_weight * contrastive",
           "loss = loss + contrastive", (T + "test_losses_objective.py",), "α_cl ignored"),
    Mutant("alpha-kd", "19.3", "kalm_lib/losses/objective.py", "loss = loss + cfg.distill_weight * distill",
           "loss = loss + distill", (T + "test_losses_objective.py",), "α_kd ignored"),
    # 4. τ_kd default 0.05
    Mutant("tau-kd-loss-default", "19.4", "kalm_lib/losses/distillation.py", "DEFAULT_TAU_KD = 0.05",
           "DEFAULT_TAU_KD = 0.1", (T + "test_losses_distillation.py",), "distill_kl_loss's default τ_kd"),
    Mutant("tau-kd-config-default", "19.4", "kalm_lib/losses/distillation.py", "DEFAULT_TAU_KD = 0.05",
           "DEFAULT_TAU_KD = 0.1", (T + "test_losses_objective.py",), "the one default τ_kd (loss and ObjectiveConfig)"),
    # 5. a non-finite teacher score is never a target
    Mutant("teacher-nonfinite-mask", "19.5", "kalm_lib/train.py", "mask[i] = torch.isfinite(scores[i])",
           "mask[i] = True",
           (T + "test_train.py::test_non_finite_teacher_scores_are_never_targets_in_memory_batches",),
           "NaN/inf teacher scores (zeroed / clamped) become targets"),
    # 6. the ranking-consistency filter's edge and default
    Mutant("topk-edge-exclusive", "19.6", "kalm_lib/data/mining.py", "if k is not None and rank > k:",
           "if k is not None and rank >= k:", (T + "test_data_mining.py",), "rank 50 dropped"),
    Mutant("topk-rank-off-by-one", "19.6", "kalm_lib/data/mining.py", "rank = 1 + int(above[bi])",
           "rank = int(above[bi])", (T + "test_data_mining.py",), "rank 51 kept (V1's literal comparison)"),
    Mutant("topk-default", "19.6", "kalm_lib/data/mining.py",
           "sample_range: tuple[int, int] = (50, 100), filter_topk: int | None = 50,",
           "sample_range: tuple[int, int] = (50, 100), filter_topk: int | None = 100,",
           (T + "test_data_mining.py",), "default top-k not 50"),
    # 7. s⁺ is the best positive
    Mutant("pos-best-min", "19.7", "kalm_lib/data/mining.py",
           'pos_best = np.array([max(float(q_emb[i] @ c_emb[cand[p]]) for p in records[i]["pos"]) for i in range(lo, hi)])',
           'pos_best = np.array([min(float(q_emb[i] @ c_emb[cand[p]]) for p in records[i]["pos"]) for i in range(lo, hi)])',
           (T + "test_data_mining.py",), "the rank follows the worst positive"),
    Mutant("pos-score-min", "19.7", "kalm_lib/data/mining.py", "s_plus = max(pos_s)", "s_plus = min(pos_s)",
           (T + "test_data_mining.py",), "the reported s⁺ is the worst positive"),
    # 8. symmetric tasks: instruction on the candidate side in mining
    Mutant("mining-symmetric-candidates", "19.8", "kalm_lib/data/mining.py",
           "fmt_c = (lambda t: format_query(t, instruction)) if symmetric else (lambda t: t)",
           "fmt_c = lambda t: t", (T + "test_data_mining.py",), "candidates raw for symmetric tasks"),
    Mutant("mine-dataset-symmetric", "19.8", "kalm_lib/data/mining.py",
           "symmetric=entry.symmetric, seed=seed, name=entry.name,",
           "symmetric=False, seed=seed, name=entry.name,", (T + "test_data_mining.py",),
           "mine_dataset forgets the entry's symmetry"),
    # 9. labelled classification / clustering data: no in-batch negatives
    Mutant("own-only-mask", "19.9", "kalm_lib/losses/infonce.py",
           'logits = logits.masked_fill(own_only[:, None] & ~own, float("-inf"))', "pass  # mutant: no mask",
           (T + "test_own_negatives.py",), "labelled queries see the whole batch again (false negatives)"),
    Mutant("own-only-batch", "19.9", "kalm_lib/train.py",
           'own = [bool(e.get("own_negatives_only", False)) for e in examples]', "own = [False for e in examples]",
           (T + "test_own_negatives.py",), "the batch drops the examples' flag"),
    Mutant("own-only-types", "19.9", "kalm_lib/data/training_set.py",
           "ds.own_only = {e.name: e.task_type in set(own_negatives_only) for e in entries}",
           "ds.own_only = {e.name: False for e in entries}",
           (T + "test_data_training_set.py::test_finetune_items", T + "test_train_data_options.py"),
           "the training set never flags classification data"),
    # issue 16: trustworthy runs
    Mutant("skip-nonfinite-update", "16.1", "kalm_lib/train.py",
           'skip = not (math.isfinite(terms["loss"]) and math.isfinite(grad_norm))', "skip = False",
           (T + "test_train_robust.py::test_skipped_step_changes_no_weight",), "a NaN gradient is applied"),
    Mutant("final-weights-check", "16.1", "kalm_lib/train.py", "self._check_weights_finite(final)",
           "pass  # mutant: no check", (T + "test_train_robust.py::test_final_model_is_never_written_with_a_nonfinite_weight",),
           "a final/ with an inf weight is written"),
    Mutant("resume-config-check", "16.3", "kalm_lib/train.py", 'if diff and cfg.resume == "auto":', "if False:",
           (T + "test_train_robust.py::test_finished_stage_is_skipped_and_a_changed_config_refused",),
           "a changed lr resumes silently"),
    Mutant("checkpoint-pointer", "16.4", "kalm_lib/train.py",
           "if not _CKPT_NAME.fullmatch(name) or (self.ckpt_dir / name).resolve().parent != self.ckpt_dir.resolve():",
           "if False:", (T + "test_train_robust.py::test_checkpoint_pointer_outside_the_run_is_refused",),
           "latest may point anywhere"),
    Mutant("config-range", "16.2", "kalm_lib/config.py",
           "if lo is not None and (value <= lo if meta.get(\"lo_open\") else value < lo) or \\",
           "if False and (value <= lo if meta.get(\"lo_open\") else value < lo) or \\",
           (T + "test_train_robust.py::test_nonsense_config_values_are_refused",), "max_steps=-5 accepted"),
    # issue 13.1: fp32 master weights
    Mutant("fp32-master-weights", "13.1", "kalm_lib/model.py", "model.backbone.float()", "pass  # mutant: keeps bf16",
           (T + "test_precision.py::test_a_bf16_checkpoint_trains_on_fp32_master_weights",),
           "a bf16 checkpoint trains in bf16: small updates are rounded away"),
    # issue 13: the Hub data by task, the local Hub mirror
    Mutant("hub-no-instruction-parse", "13.3", "kalm_lib/data/hub.py", 'parsed, out["query"] = split_instruction(q)',
           'parsed, out["query"] = None, q  # mutant: the wrapper stays on the query',
           (T + "test_hub_layout.py",),
           "the Hub query keeps its 'Instruct: … Query:' wrapper: the trainer wraps it again; decontamination misses"),
    Mutant("hub-one-subset", "13.3", "kalm_lib/data/hub.py",
           "out += [(s, c) for s, c in zip(subs, caps) if c is None or c > 0]",
           "out += [(subs[0], caps[0])]  # mutant: one entry for the whole repository",
           (T + "test_hub_layout.py::test_a_row_cap_keeps_every_subset_and_one_instruction",),
           "the ~100 fine-tuning subsets collapse into one task"),
    Mutant("hub-no-floor", "13.3", "kalm_lib/data/hub.py",
           "floor = [1 if r > 0 and total >= sum(x > 0 for x in rows) else 0 for r in rows]",
           "floor = [0 for r in rows]  # mutant: small subsets may get no row",
           (T + "test_hub_layout.py::test_allocate_rows",), "a row cap drops the small subsets"),
    Mutant("hub-generic-instruction", "13.3", "kalm_lib/data/hub.py", "instruction=instruction or entry.instruction,",
           "instruction=entry.instruction,  # mutant: the parent's generic instruction",
           (T + "test_hub_layout.py::test_one_task_per_subset_with_its_instruction_and_kind",),
           "a subset's own instruction is lost"),
    Mutant("hub-no-symmetric-rule", "13.3", "kalm_lib/data/hub.py", 'return r["task_type"], r["symmetric"]',
           "return default.task_type, default.symmetric  # mutant: no subset rules",
           (T + "test_hub_layout.py",), "STS / duplicate / classification subsets trained as asymmetric retrieval"),
    Mutant("hub-dir-ignored", "13.5", "kalm_lib/paths.py", "return str(local)",
           "return str(repo_id)  # mutant: KALM_HUB_DIR ignored",
           (T + "test_hub_layout.py::test_hub_path", T + "test_hub_layout.py::test_subsets_files_and_rows_from_the_layout"),
           "an air-gapped cluster's mirror is ignored (the Hub is asked)"),
    Mutant("gpu-path-double-instruction", "13.8", "kalm_lib/data/hub.py", 'parsed, out["query"] = split_instruction(q)',
           'parsed, out["query"] = None, q  # mutant: the wrapper stays on the query',
           (T + "test_gpu_path.py",), "the end-to-end gpu-path test sees two instructions (slow: ~4 min)"),
    # issue 13.4: the training stream (tests/test_stream.py)
    Mutant("stream-task-per-rank", "13.4", _S, 't = task_index(c["seed"], k, self.cum)', 't = task_index(c["seed"] + c["rank"], k, self.cum)',
           (_TS + "test_every_batch_is_one_task_on_every_rank_from_disjoint_shards",), "ranks draw their own task"),
    Mutant("stream-p-ignored", "13.4", _S, 'cum = np.cumsum(p / p.sum())', 'cum = np.cumsum(np.full(len(p), 1 / len(p)))',
           (_TS + "test_task_frequencies_follow_the_probabilities",), "tasks drawn uniformly"),
    Mutant("stream-ratio-ignored", "13.4", _S, 'self.keep = _local_homogeneous(cfg["batch_size"], cfg["world_size"], cfg["rank"], cfg["homogeneous_ratio"])',
           'self.keep = cfg["batch_size"] // cfg["world_size"]', (_TS + "test_homogeneous_ratio_below_one_mixes_with_the_probabilities",), "r ignored"),
    Mutant("stream-mixed-uniform", "13.4", _S, 'for j in np.minimum(np.searchsorted(self.cum, u, side="right"), len(self.cum) - 1):',
           'for j in (u * len(self.cum)).astype(int):', (_TS + "test_homogeneous_ratio_below_one_mixes_with_the_probabilities",), "mixed items ignore p_i"),
    Mutant("stream-no-node-split", "13.4", _S, 'ds = split_dataset_by_node(self._base(), rank=self.rank, world_size=self.world_size).with_format("arrow")',
           'ds = self._base().with_format("arrow")', (_TS + "test_every_batch_is_one_task_on_every_rank_from_disjoint_shards", T + "test_every_epoch_splits_a_subset_between_the_ranks"), "every rank reads everything"),
    Mutant("stream-resume-offset-lost", "13.4", _S, 'skip = self.offset if self._table is None else 0  # a resumed position inside this block', 'skip = 0',
           (_TS + "test_resume_equals_the_uninterrupted_stream",), "resume restarts the block"),
    Mutant("stream-resume-before-lost", "13.4", _S, 'ds.load_state_dict(self.before)', 'pass', (_TS + "test_resume_equals_the_uninterrupted_stream",), "datasets state not loaded"),
    Mutant("stream-no-shard-shuffle", "13.4", _S, 'ds.set_epoch(_seed32(self.seed, self.epoch) + 1 if self.shuffle_buffer else 0)', 'ds.set_epoch(0)',
           (_TS + "test_the_shuffle_buffer_permutes_each_epoch",), "shard order never shuffled"),
    Mutant("stream-drops-uncounted", "13.4", _S, 'self.dropped += 1', 'pass', (_TS + "test_dropped_rows_are_counted_per_task_and_never_served",), "drops not counted"),
    Mutant("stream-epoch-dropped-check", "13.4", _S, 'if self.kept_epoch == 0:', 'if False:', (_TS + "test_a_subset_that_never_yields_is_an_error_naming_it",), "an all-dropped epoch goes on"),
    Mutant("stream-consecutive-check", "13.4", _S, 'if self.consecutive >= self.max_consecutive_drops:', 'if False:', (_TS + "test_a_subset_that_never_yields_is_an_error_naming_it",), "a long run of drops goes on"),
    Mutant("stream-empty-shard-check", "13.4", _S, 'if self.rows_epoch == 0:', 'if False:', (_TS + "test_a_subset_that_never_yields_is_an_error_naming_it",), "an empty shard is not named"),
    Mutant("stream-worker-state-dropped", "13.4", _S, 'self._states[w] = state', 'pass', (_TS + "test_workers_keep_one_task_per_batch_and_resume_exactly",), "worker states not kept"),
    Mutant("stream-worker-order", "13.4", _S, 'w = (self.start + j) % n', 'w = j', (_TS + "test_workers_keep_one_task_per_batch_and_resume_exactly",), "worker j always logical j"),
    Mutant("stream-trainer-no-restore", "13.4", _TR, 'self.dataset.load_state_dict(state["stream"][self.accelerator.process_index])', 'pass',
           (_TS + "test_trainer_trains_from_a_stream_and_resumes_mid_stream_with_the_same_next_batch",), "resume restarts the stream"),
    Mutant("stream-trainer-no-save", "13.4", _TR, 'state["stream"] = stream', 'pass',
           (_TS + "test_trainer_trains_from_a_stream_and_resumes_mid_stream_with_the_same_next_batch",), "stream state not saved"),
    Mutant("stream-trainer-schedule", "13.4", _TR, 'if not per_epoch:', 'if False:', (_TS + "test_trainer_stream_needs_max_steps_or_row_counts",), "no clear error without max_steps"),
    # issue 17: padding-free packing (kalm_lib/packing.py); each must break the packed = padded equivalence
    Mutant("pack-no-key-mask", "17.1", _P, 'mask = valid[:, None, None, :]                                       # B × 1 × 1 × L',
           'mask = torch.ones_like(valid)[:, None, None, :]', (_TP + "test_packed_embeddings_and_gradients_equal_padded",),
           "attention also reads the re-padded filler tokens"),
    Mutant("pack-causal-or", "17.1", _P, 'mask = mask & torch.ones(max_len, max_len, dtype=torch.bool, device=query.device).tril()',
           'mask = mask | torch.ones(max_len, max_len, dtype=torch.bool, device=query.device).tril()',
           (_TP + "test_packed_embeddings_and_gradients_equal_padded",), "causal mask OR-ed instead of AND-ed"),
    Mutant("pack-mean-divisor", "17.1", _P, 'return total / lens.to(h.dtype).unsqueeze(-1)', 'return total / lens.max().to(h.dtype)',
           (_TP + "test_packed_embeddings_and_gradients_equal_padded",), "every sequence divided by the longest length"),
    Mutant("pack-positions-global", "17.1", _P, 'pos = torch.arange(flat.numel(), device=flat.device) - starts',
           'pos = torch.arange(flat.numel(), device=flat.device)', (_TP + "test_pack_layout_by_hand",),
           "positions do not restart per sequence (invisible to RoPE's embeddings: the layout test pins it)"),
    Mutant("pack-recompute-padded", "17.1", "kalm_lib/model.py",
           'kw = {"use_reentrant": False, "context_fn": same_attention_on_recompute(self.backbone)}',
           'kw = {"use_reentrant": False}', (_TP + "test_packed_step_equals_padded_step",),
           "checkpointing's backward recompute runs padded attention after a packed forward (CI's CheckpointError)"),
    # issue 15.1: data from the Hub without the mirror
    Mutant("hub-no-cap", "15.1", "kalm_lib/data/hub_eval.py", 'self.dataset = cap_dataset(self.dataset, self.max_rows)',
           'pass', (T + "test_hub_eval.py",), "a Hub task ignores its row cap"),
    Mutant("hub-transformed-texts", "15.1", "kalm_lib/data/hub_eval.py", 'task.raw = True', 'task.raw = False',
           (T + "test_hub_eval.py::test_decontamination_without_a_mirror_forbids_the_hub_tasks_texts",),
           "decontamination reads mteb's subsample of a clustering set, not the stored split"),
    Mutant("hub-no-sent1", "15.1", "kalm_lib/data/hub_eval.py",
           'for col in ("sentence1", "sentence2", "sent1", "sent2", "text", "sentences"):',
           'for col in ("sentence1", "sentence2", "text", "sentences"):',
           (T + "test_hub_eval.py::test_decontamination_without_a_mirror_forbids_the_hub_tasks_texts",),
           "the pair-classification sets' raw columns are not forbidden"),
    Mutant("hub-mirror-ignored", "15.1", "kalm_lib/evaluation/local_tasks.py", 'if name in SPECS and not uses_hub():',
           'if False:', (T + "test_hub_eval.py::test_every_local_task_reads_its_mteb_task_from_the_hub_with_the_same_caps",),
           "the mirror is never read"),
    Mutant("hub-datasets-ignored", "15.1", "kalm_lib/config.py",
           'if hub_datasets and uses_hub() and list(datasets) != list(hub_datasets):', 'if False:',
           (T + "test_hub_eval.py::test_stages_read_their_hub_datasets_without_a_mirror",),
           "stages read the mirror's datasets without a mirror"),
    Mutant("fetch-no-resume", "15.1", "kalm_lib/fetch.py",
           'if (folder / COMPLETE).is_file() and problem(r, hub_dir) is None:', 'if False:',
           (T + "test_fetch.py",), "make data fetches everything again"),
    Mutant("fetch-no-revision", "15.1", "kalm_lib/fetch.py",
           'download(repo_id=r.repo, repo_type=r.kind, revision=r.revision, local_dir=str(folder),',
           'download(repo_id=r.repo, repo_type=r.kind, revision=None, local_dir=str(folder),',
           (T + "test_fetch.py::test_make_data_fetches_what_the_run_reads_and_a_rerun_skips_it",),
           "evaluation sets fetched at the head, not at mteb's pinned revision"),
]


class _Applied:
    """One mutated line of one file; ``restore()`` is idempotent and touches only that line."""

    def __init__(self, m: Mutant):
        self.m, self.path = m, ROOT / m.file
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        hits = [i for i, l in enumerate(lines) if l.strip() == m.original.strip()]
        if len(hits) != 1:
            raise LookupError(f"{m.id}: {m.file} has {len(hits)} lines equal to {m.original!r} (need exactly 1); "
                              f"update MUTANTS")
        self.index = hits[0]
        old = lines[self.index]
        indent = old[: len(old) - len(old.lstrip())]
        newline = old[len(old.rstrip("\r\n")):]
        self.old_line, self.new_line = old, indent + m.replacement.strip() + newline
        lines[self.index] = self.new_line
        self.restored = False
        self._write(lines)

    def _write(self, lines):
        tmp = self.path.with_name(f".{self.path.name}.mutation_check.tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, self.path)

    def restore(self):
        if self.restored:
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        if self.index < len(lines) and lines[self.index] == self.new_line:
            at = self.index
        else:  # someone edited the file meanwhile: find the mutated line by its text
            hits = [i for i, l in enumerate(lines) if l == self.new_line]
            if not hits and sum(l == self.old_line for l in lines) == 1:
                self.restored = True  # the original line is back already (an editor saved over the mutant)
                return
            if len(hits) != 1:
                raise RuntimeError(f"{self.m.file}: cannot find the mutated line {self.new_line!r} to restore; "
                                   f"put back {self.old_line!r} by hand")
            at = hits[0]
        lines[at] = self.old_line
        self._write(lines)
        self.restored = True


def _pytest(tests, timeout) -> tuple[int, float, str]:
    env = {**os.environ, **TEST_ENV}
    env.setdefault("KALM_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    t0 = time.time()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, time.time() - t0, f"timed out after {timeout}s"
    lines = [l for l in (res.stdout + res.stderr).splitlines() if l.strip()]
    failed = [l[:220] for l in lines if l.startswith(("FAILED", "ERROR"))] or lines[-1:]
    return res.returncode, time.time() - t0, "\n         ".join(failed)


def _sigterm(_signo, _frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ids", nargs="*", help="mutant ids (default: all)")
    ap.add_argument("--item", help="only the mutants of this issue item, e.g. 6 or 19.6")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--baseline", action="store_true", help="first run the selected tests on the unbroken code")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per pytest run (default 600)")
    a = ap.parse_args(argv)
    known = {m.id: m for m in MUTANTS}
    bad = [i for i in a.ids if i not in known]
    if bad:
        print(f"unknown mutant id(s) {bad}; --list shows them", file=sys.stderr)
        return 2
    sel = [known[i] for i in a.ids] if a.ids else list(MUTANTS)
    if a.item:
        item = a.item if "." in a.item else f"19.{a.item}"
        sel = [m for m in sel if m.item == item]
    if a.list:
        for m in sel:
            print(f"{m.id:28s} {m.item:8s} {m.file}: {m.why}")
        return 0
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where SIGINT came in ignored (a background job)
    if a.baseline:
        tests = sorted({t for m in sel for t in m.tests})
        rc, secs, last = _pytest(tests, a.timeout)
        print(f"baseline ({secs:.0f}s): {'green' if rc == 0 else 'RED: ' + last}", flush=True)
        if rc != 0:
            return 2
    results = []
    for m in sel:
        applied = None
        try:
            applied = _Applied(m)
            rc, secs, last = _pytest(m.tests, a.timeout)
        except LookupError as err:
            print(f"SETUP    {m.id}: {err}", flush=True)
            results.append((m, "SETUP"))
            continue
        except KeyboardInterrupt:
            print(f"\ninterrupted during {m.id}; restoring {m.file}", flush=True)
            raise
        finally:
            if applied is not None:
                applied.restore()
        # pytest: 1 = tests failed; 0 = passed; 5 = nothing collected (a wrong test id: no verdict); 2-4 = an
        # interrupted or broken run (e.g. the mutant no longer imports), which still means the break was noticed
        verdict = {0: "SURVIVED", 1: "CAUGHT", 5: "SETUP"}.get(rc, f"CAUGHT(rc={rc})")
        results.append((m, verdict))
        print(f"{verdict:9s}{m.id:28s} [{m.item}] {secs:5.0f}s  {m.why}" + (f"\n         {last}" if rc else ""),
              flush=True)
    survived = [m.id for m, v in results if v == "SURVIVED"]
    setup = [m.id for m, v in results if v == "SETUP"]
    print(f"\n{len(results) - len(survived) - len(setup)}/{len(results)} caught"
          + (f"; SURVIVED: {', '.join(survived)}" if survived else "")
          + (f"; not applied: {', '.join(setup)}" if setup else ""))
    return 2 if setup else (1 if survived else 0)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the file is restored already (finally); no traceback
        sys.exit(130)
