"""Semi-homogeneous task batching: homogeneity, determinism, distribution over ranks, resume, length grouping."""
from collections import Counter

import numpy as np
import pytest

from kalm_lib.data import TaskBatchSampler

TASKS = ["a"] * 100 + ["b"] * 64 + ["c"] * 37 + ["d"] * 10


def _global(tasks, B, r, seed=0, epoch=0, **kw):
    s = TaskBatchSampler(tasks, B, homogeneous_ratio=r, seed=seed, **kw)
    s.set_epoch(epoch)
    return s, [list(x) for x in s.global_batches()]


def test_fully_homogeneous_batches():
    B = 16
    s, batches = _global(TASKS, B, 1.0)
    n_pure = sum(len(set(TASKS[i] for i in b)) == 1 for b in batches)
    assert n_pure == 100 // B + 64 // B + 37 // B + 10 // B  # every full per-task chunk is one task
    assert len(batches) == len(s) == n_pure + (100 % B + 64 % B + 37 % B + 10 % B) // B
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))                          # no example twice in an epoch
    assert all(len(b) == B for b in batches)


@pytest.mark.parametrize("r", [0.75, 0.5])
def test_homogeneous_ratio(r):
    B = 16
    keep = int(r * B)
    tasks = ["a"] * 160 + ["b"] * 160 + ["c"] * 160
    _, batches = _global(tasks, B, r, seed=1)
    # the majority task of every batch holds at least r·B of its items, and mixing really happens
    majority = [Counter(tasks[i] for i in b).most_common(1)[0][1] for b in batches]
    assert min(majority) >= keep
    assert sum(m < B for m in majority) > len(batches) // 2
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(tasks)))              # a permutation: nothing lost or repeated


def test_ratio_zero_is_fully_mixed():
    tasks = ["a"] * 320 + ["b"] * 320
    _, batches = _global(tasks, 32, 0.0, seed=2)
    fracs = [sum(tasks[i] == "a" for i in b) / 32 for b in batches]
    assert 0.3 < np.mean([min(f, 1 - f) for f in fracs]) * 2 <= 1.0  # about half/half, not one task


def test_deterministic_given_seed_and_epoch():
    a = _global(TASKS, 16, 0.5, seed=3, epoch=2)[1]
    b = _global(TASKS, 16, 0.5, seed=3, epoch=2)[1]
    assert a == b
    assert a != _global(TASKS, 16, 0.5, seed=3, epoch=3)[1]
    assert a != _global(TASKS, 16, 0.5, seed=4, epoch=2)[1]


def test_ranks_split_each_global_batch():
    B, R = 16, 4
    per_rank = []
    for rank in range(R):
        s = TaskBatchSampler(TASKS, B, homogeneous_ratio=0.75, seed=5, num_replicas=R, rank=rank)
        s.set_epoch(1)
        per_rank.append(list(s))
    _, glob = _global(TASKS, B, 0.75, seed=5, epoch=1)
    assert all(len(p) == len(glob) for p in per_rank)
    for k, g in enumerate(glob):
        parts = [per_rank[r][k] for r in range(R)]
        assert all(len(p) == B // R for p in parts)
        assert sorted(sum(parts, [])) == sorted(g)                 # the ranks together = the global batch
    with pytest.raises(ValueError, match="divisible"):
        TaskBatchSampler(TASKS, 10, num_replicas=4)


def test_resume_from_state_dict():
    s = TaskBatchSampler(TASKS, 8, homogeneous_ratio=0.5, seed=6, num_replicas=2, rank=1)
    s.set_epoch(3)
    full = list(s)
    it = iter(s)
    consumed = [next(it) for _ in range(5)]
    state = s.state_dict()
    assert state == {"epoch": 3, "position": 5, "seed": 6}
    t = TaskBatchSampler(TASKS, 8, homogeneous_ratio=0.5, seed=6, num_replicas=2, rank=1)
    t.load_state_dict(state)
    assert consumed + list(t) == full
    t.set_epoch(4)
    assert len(list(t)) == len(full)                               # a new epoch starts from 0


def test_drop_last_false_keeps_every_example():
    tasks = ["a"] * 21 + ["b"] * 6
    s = TaskBatchSampler(tasks, 8, homogeneous_ratio=1.0, drop_last=False, num_replicas=2, rank=0)
    glob = [list(x) for x in s.global_batches()]
    assert len(glob) == len(s) == 4 and all(len(b) == 8 for b in glob)
    assert set(i for b in glob for i in b) == set(range(27))


def test_length_grouping_reduces_padding():
    rng = np.random.default_rng(0)
    tasks = ["a"] * 512 + ["b"] * 512
    lengths = rng.integers(5, 500, size=len(tasks)).tolist()

    def padding(s):
        pad = tot = 0
        for b in s:
            L = [lengths[i] for i in b]
            pad += max(L) * len(L) - sum(L)
            tot += max(L) * len(L)
        return pad / tot

    plain = TaskBatchSampler(tasks, 32, seed=0, num_replicas=2, rank=0)
    grouped = TaskBatchSampler(tasks, 32, seed=0, num_replicas=2, rank=0, group_by_length=True, lengths=lengths)
    assert padding(grouped) < 0.25 * padding(plain)
    # still homogeneous, still every example once
    glob = [list(x) for x in grouped.global_batches()]
    assert all(len(set(tasks[i] for i in b)) == 1 for b in glob)
    assert sorted(i for b in glob for i in b) == list(range(len(tasks)))
