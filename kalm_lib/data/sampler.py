"""Semi-homogeneous task batching (KaLM V1, PAPER.md §3.2), distributed-aware and length-grouped.

For a global batch of size B = per_rank × R (R replicas) and homogeneous ratio r:

1. per task t, shuffle its indices and cut them into global batches of B; the remainders of all tasks
   are pooled, shuffled and cut into mixed batches;
2. the last B − ⌊r·B⌋ items of every batch go to a common pool, which is shuffled and dealt back, so
   a fraction r of each batch comes from one task and the rest from random tasks (r = 1: fully
   homogeneous; r = 0: fully mixed);
3. batches are shuffled; each rank takes its contiguous slice [rank·b, (rank+1)·b) of every global batch.

Length grouping (``group_by_length``) reduces padding: within each task, indices are shuffled, cut into
mega-batches of ``megabatch_mult × B`` and sorted by length inside each mega-batch before step 1 (as
transformers' LengthGroupedSampler does); each global batch is then sorted by length before slicing,
so every rank sees neighbours of similar length. Without grouping, each global batch is shuffled
before slicing so every rank gets the same mix of homogeneous and mixed items.

Everything is a function of (seed, epoch): all ranks build the same global batches without talking.
``state_dict()`` holds the position (batches already yielded in this epoch) so a resumed run
continues at the next batch.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np


class TaskBatchSampler:
    """Yields this rank's list of dataset indices for each global batch (use as ``batch_sampler``)."""

    def __init__(self, tasks: Sequence[str], batch_size: int, homogeneous_ratio: float = 1.0, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = True, group_by_length: bool = False,
                 lengths: Sequence[int] | None = None, megabatch_mult: int = 8):
        if batch_size % num_replicas:
            raise ValueError(f"global batch_size {batch_size} must be divisible by num_replicas {num_replicas}")
        if not 0.0 <= homogeneous_ratio <= 1.0:
            raise ValueError(f"homogeneous_ratio must be in [0, 1], got {homogeneous_ratio}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} not in [0, {num_replicas})")
        if group_by_length and (lengths is None or len(lengths) != len(tasks)):
            raise ValueError("group_by_length needs lengths with one value per example")
        if len(tasks) < batch_size and drop_last:
            raise ValueError(f"{len(tasks)} examples cannot fill one global batch of {batch_size} (drop_last=True)")
        self.tasks = list(tasks)
        self.batch_size, self.homogeneous_ratio, self.seed = batch_size, homogeneous_ratio, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.group_by_length, self.megabatch_mult = group_by_length, megabatch_mult
        self.lengths = np.asarray(lengths) if lengths is not None else None
        self.per_rank = batch_size // num_replicas
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(self.tasks):
            by_task[t].append(i)
        self.by_task = {t: np.asarray(v) for t, v in sorted(by_task.items())}
        self.epoch, self.position = 0, 0

    # ------------------------------------------------------------------ sizes and state
    def __len__(self) -> int:
        b = self.batch_size
        full = sum(len(v) // b for v in self.by_task.values())
        rest = sum(len(v) % b for v in self.by_task.values())
        return full + (rest // b) + (0 if self.drop_last or rest % b == 0 else 1)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.position = 0
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume: ``position`` = batches already consumed in ``epoch``. With DataLoader workers the
        sampler runs ahead of the training loop, so pass the trainer's own count of consumed batches."""
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    # ------------------------------------------------------------------ the batches
    def _task_order(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        idx = idx[rng.permutation(len(idx))]
        if not self.group_by_length:
            return idx
        mb = self.megabatch_mult * self.batch_size
        parts = [idx[s:s + mb] for s in range(0, len(idx), mb)]
        return np.concatenate([p[np.argsort(-self.lengths[p], kind="stable")] for p in parts])

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """All global batches of an epoch (the same on every rank)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        b = self.batch_size
        batches, rest = [], []
        for t, idx in self.by_task.items():
            order = self._task_order(idx, rng)
            n_full = len(order) // b
            batches += [order[k * b:(k + 1) * b] for k in range(n_full)]
            rest.append(order[n_full * b:])
        rest = np.concatenate(rest) if rest else np.zeros(0, dtype=int)
        rest = rest[rng.permutation(len(rest))]
        n_mixed = len(rest) // b
        batches += [rest[k * b:(k + 1) * b] for k in range(n_mixed)]
        tail = rest[n_mixed * b:]
        if len(tail) and not self.drop_last:
            # pad the last batch with the epoch's first examples, as DistributedSampler does
            pad = np.concatenate(batches)[: b - len(tail)] if batches else np.resize(tail, b - len(tail))
            batches.append(np.concatenate([tail, pad]))
        keep = int(np.floor(self.homogeneous_ratio * b + 1e-9))
        if keep < b and batches:
            pool = np.concatenate([x[keep:] for x in batches])
            pool = pool[rng.permutation(len(pool))]
            batches = [np.concatenate([x[:keep], pool[k * (b - keep):(k + 1) * (b - keep)]])
                       for k, x in enumerate(batches)]
        order = rng.permutation(len(batches))
        batches = [batches[k] for k in order]
        out = []
        for x in batches:
            if self.group_by_length:
                x = x[np.argsort(-self.lengths[x], kind="stable")]
            else:
                x = x[rng.permutation(len(x))]
            out.append(x)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        lo, hi = self.rank * self.per_rank, (self.rank + 1) * self.per_rank
        start = self.position
        for k in range(start, len(batches)):
            self.position = k + 1
            yield batches[k][lo:hi].tolist()
        self.position = 0  # a finished epoch; iterating again replays it unless set_epoch() moves on
