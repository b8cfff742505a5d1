"""Two optimizer steps of the toy config; run alone (1 process) or under torchrun (2 processes).

Usage: ``two_process_step.py OUT_DIR MODE [MODE ...]``, MODE one of

    plain   the plain step (one padded forward per side)
    sub3    the plain step in length-sorted sub-batches of 3 (one token lookup outside DDP's forward)
    gc3     GradCache in chunks of 3 (the gpu and paper profiles' step): a no-graph forward, the loss
            backward to the embeddings, then one re-forward per chunk under ``no_sync`` but the last
            (every chunk's token embeddings from one lookup, whose gradient the last re-forward carries)
    pack    the plain step packed (optim.packing: one padding-free row per side)
    pack_gc3  GradCache in chunks of 3, each chunk packed

Each MODE trains into OUT_DIR/MODE, one after the other in the same process (group), so one torchrun
launch checks several steps for the price of one start-up. Used by
tests/test_train.py::test_two_process_step_equals_one_process: the loss is the global loss, and the
gradient norm and the weights after each step must match the single-process run on the same global batch.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import ToyDataset, toy_config  # noqa: E402

MODES = {"plain": {}, "sub3": {"sub_batch_size": 3}, "gc3": {"gradcache_chunk_size": 3},
         "pack": {"packing": True}, "pack_gc3": {"packing": True, "gradcache_chunk_size": 3}}


def run(out: Path, mode: str):
    from kalm_lib.train import StageTrainer

    cfg = toy_config(out.parent, output_dir=str(out), optim={"max_steps": 2, "batch_size": 8, **MODES[mode]},
                     objective={"distill_weight": 1.0})
    trainer = StageTrainer(cfg, dataset=ToyDataset(teacher=True))
    acc = trainer.accelerator
    # Prove the processes really form one group: each rank holds half of the global batch.
    (out.parent / f"{out.name}.rank{acc.process_index}").write_text(
        f"{acc.num_processes} {len(next(iter(trainer.sampler)))}\n")
    trainer.run()


if __name__ == "__main__":
    torch.set_num_threads(1)
    root, modes = Path(sys.argv[1]), sys.argv[2:] or ["plain"]
    root.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        sys.exit(f"two_process_step.py: unknown mode(s) {unknown}; known: {sorted(MODES)}")
    for mode in modes:
        run(root / mode, mode)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
