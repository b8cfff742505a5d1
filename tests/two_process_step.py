"""Two optimizer steps of the toy config; run alone (1 process) or under torchrun (2 processes).

Usage: ``two_process_step.py OUT_DIR [SUB_BATCH]``. Used by
tests/test_train.py::test_two_process_step_equals_one_process. The loss is the global loss
and the weights after each step must match the single-process run on the same global batch.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import ToyDataset, toy_config  # noqa: E402


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    sub_batch = int(sys.argv[2]) if len(sys.argv) > 2 else None  # plain step in length-sorted sub-batches
    cfg = toy_config(out.parent, output_dir=str(out), optim={"max_steps": 2, "batch_size": 8, "sub_batch_size": sub_batch},
                     objective={"distill_weight": 1.0})
    from kalm_lib.train import StageTrainer
    trainer = StageTrainer(cfg, dataset=ToyDataset(teacher=True))
    acc = trainer.accelerator
    # Prove the processes really form one group: each rank holds half of the global batch.
    (out.parent / f"{out.name}.rank{acc.process_index}").write_text(
        f"{acc.num_processes} {len(next(iter(trainer.sampler)))}\n")
    trainer.run()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
