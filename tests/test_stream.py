"""Streaming training data (kalm_lib/data/stream.py): one task per batch on every rank, p_i followed, r < 1 mixes,
resume = the uninterrupted stream, drops counted, a subset that never yields is an error, and the trainer trains
from a stream and resumes mid-stream with the same next batch.

Every stream reads tiny parquet files written here in the Hub's row layout (``query: str, pos: list[str],
neg: list[str], relevance: float``)."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kalm_lib.data.stream import StreamError, StreamSubset, TaskStream

M = 3


def write_subset(folder: Path, name: str, n_rows: int, n_files: int = 2) -> list[str]:
    """``folder/name/train-0000i-of-0000n.parquet``; row i: query "name q{i}", one positive, M negatives."""
    d = folder / name
    d.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n_rows, n_files + 1).astype(int)
    files = []
    for f in range(n_files):
        ids = range(bounds[f], bounds[f + 1])
        table = pa.table({"query": [f"{name} q{i}" for i in ids], "pos": [[f"{name} p{i}"] for i in ids],
                          "neg": [[f"{name} n{i}.{j}" for j in range(M)] for i in ids],
                          "relevance": [1.0 for _ in ids]})
        path = d / f"train-{f:05d}-of-{n_files:05d}.parquet"
        pq.write_table(table, path, row_group_size=8)
        files.append(str(path))
    return files


def item_of(task: str, drop=None):
    def transform(row: dict):
        if drop is not None and drop(row):
            return None
        return {"query": row["query"], "pos": row["pos"][0], "neg": list(row["neg"][:M]), "task": task,
                "teacher_scores": None, "own_negatives_only": False}
    return transform


def subsets(tmp_path: Path, sizes=(("a", 40, 2), ("b", 30, 2), ("c", 24, 3)), probs=None, drop=None):
    probs = probs or [n for _, n, _ in sizes]
    total = sum(probs)
    return [StreamSubset(task=name, data_files=write_subset(tmp_path, name, n, files), num_rows=n,
                         probability=p / total, transform=item_of(name, drop))
            for (name, n, files), p in zip(sizes, probs)]


def take(stream: TaskStream, n: int) -> list[list[dict]]:
    it = iter(stream)
    return [next(it) for _ in range(n)]


def queries(batches) -> list[list[str]]:
    return [[e["query"] for e in b] for b in batches]


# --------------------------------------------------------------------------- one task per batch
def test_every_batch_is_one_task_on_every_rank_from_disjoint_shards(tmp_path):
    subs = subsets(tmp_path, sizes=(("a", 120, 2), ("b", 90, 2), ("c", 72, 3)))
    ranks = [TaskStream(subs, batch_size=8, rank=r, world_size=2, shuffle_buffer=16, seed=3) for r in (0, 1)]
    runs = [take(s, 12) for s in ranks]
    for k in range(12):
        task = ranks[0].batch_task(k)
        assert ranks[1].batch_task(k) == task
        for r in (0, 1):
            assert len(runs[r][k]) == 4
            assert {e["task"] for e in runs[r][k]} == {task}, (k, r)
    assert len({ranks[0].batch_task(k) for k in range(12)}) == 3
    assert all(c["epoch"] == 0 for s in ranks for c in s.counts().values())
    seen = [{q for b in queries(run) for q in b} for run in runs]
    assert not seen[0] & seen[1]  # each rank reads its own shard


@pytest.mark.parametrize("name,n_rows,n_files", [("a", 32, 2), ("c", 24, 3)], ids=["by-shards", "by-rows"])
def test_every_epoch_splits_a_subset_between_the_ranks(tmp_path, name, n_rows, n_files):
    """a: 4 row groups of 8 rows, 2 per rank; c: 3 files of 8 rows do not divide 2 ranks, so every rank keeps
    every other row. Either way each epoch is a partition of the subset, in a new order."""
    sub = [StreamSubset(name, write_subset(tmp_path, name, n_rows, n_files), n_rows, 1.0, item_of(name))]
    ranks = [TaskStream(sub, batch_size=4, rank=r, world_size=2, shuffle_buffer=8, seed=1) for r in (0, 1)]
    per_rank = n_rows // 2
    flat = [[q for b in queries(take(s, per_rank)) for q in b] for s in ranks]  # two epochs, 2 rows a batch
    everything = {f"{name} q{i}" for i in range(n_rows)}
    for e in (0, 1):
        part = [set(f[e * per_rank:(e + 1) * per_rank]) for f in flat]
        assert len(part[0]) == len(part[1]) == per_rank and part[0] | part[1] == everything, e
    assert flat[0][:per_rank] != flat[0][per_rank:]  # another order in epoch 1


def test_task_frequencies_follow_the_probabilities(tmp_path):
    probs = [0.5, 0.3, 0.2]
    subs = subsets(tmp_path, probs=probs)
    stream = TaskStream(subs, batch_size=2, shuffle_buffer=0)
    n = 2000
    counts = Counter(stream.batch_task(k) for k in range(n))
    observed = np.array([counts[t] for t in "abc"])
    chi2 = float((((observed - n * np.array(probs)) ** 2) / (n * np.array(probs))).sum())
    assert chi2 < 13.8, (observed, chi2)  # χ²(2 dof) at p = 0.001
    # the batches really come from the drawn task
    assert [b[0]["task"] for b in take(stream, 30)] == [stream.batch_task(k) for k in range(30)]


def test_homogeneous_ratio_below_one_mixes_with_the_probabilities(tmp_path):
    subs = subsets(tmp_path, probs=[0.5, 0.3, 0.2])
    stream = TaskStream(subs, batch_size=8, homogeneous_ratio=0.5, shuffle_buffer=0)
    mixed = Counter()
    for k, b in enumerate(take(stream, 60)):
        assert len(b) == 8
        assert {e["task"] for e in b[:4]} == {stream.batch_task(k)}
        mixed.update(e["task"] for e in b[4:])
    assert set(mixed) == {"a", "b", "c"}
    share = np.array([mixed[t] for t in "abc"]) / 240
    np.testing.assert_allclose(share, [0.5, 0.3, 0.2], atol=0.08)
    # two ranks: ⌊r·B⌋ = 3 homogeneous items of B = 6 split 2 + 1
    two = [TaskStream(subs, batch_size=6, rank=r, world_size=2, homogeneous_ratio=0.5, shuffle_buffer=0)
           for r in (0, 1)]
    for k, (b0, b1) in enumerate(zip(take(two[0], 10), take(two[1], 10))):
        t = two[0].batch_task(k)
        assert [e["task"] == t for e in b0[:2]] == [True, True] and b1[0]["task"] == t


# --------------------------------------------------------------------------- resume
def _resumed(subs, cut: int, total: int, **kw):
    first = TaskStream(subs, **kw)
    take(first, cut)
    state = json.loads(json.dumps(first.state_dict()))  # what trainer_state.json holds
    second = TaskStream(subs, **kw)
    second.load_state_dict(state)
    return second, take(second, total - cut)


@pytest.mark.parametrize("ratio", [1.0, 0.5])
@pytest.mark.parametrize("buffer", [0, 8])
def test_resume_equals_the_uninterrupted_stream(tmp_path, ratio, buffer):
    """Exact, with or without a shuffle buffer: a reader's position is (epoch, datasets state before its block,
    block index, rows consumed), and a block's permutation depends only on (seed, subset, epoch, block)."""
    subs = subsets(tmp_path)
    kw = dict(batch_size=6, homogeneous_ratio=ratio, shuffle_buffer=buffer, chunk_rows=4, seed=1)
    straight = TaskStream(subs, **kw)
    expected = queries(take(straight, 40))  # 240 rows from 94: every subset rolls over
    assert min(c["epoch"] for c in straight.counts().values()) >= 1  # the comparison crosses epoch boundaries
    for cut in (7, 23):
        stream, rest = _resumed(subs, cut, 40, **kw)
        assert queries(rest) == expected[cut:], cut
        assert stream.position == 40


def test_the_shuffle_buffer_permutes_each_epoch(tmp_path):
    sub = [StreamSubset("a", write_subset(tmp_path, "a", 40, 1), 40, 1.0, item_of("a"))]
    plain, shuffled = ([q for b in queries(take(TaskStream(sub, batch_size=4, shuffle_buffer=buf), 20)) for q in b]
                       for buf in (0, 16))
    assert plain[:40] == [f"a q{i}" for i in range(40)]  # one shard, buffer 0: the file's order
    for e in (0, 1):
        assert sorted(shuffled[40 * e:40 * (e + 1)]) == sorted(plain[:40])  # an epoch is every row once
    assert shuffled[:40] != plain[:40] and shuffled[:40] != shuffled[40:]
    assert set(shuffled[:16]) != set(plain[:16])  # not only within blocks: the row groups' order moves too


def test_state_is_refused_for_another_stream(tmp_path):
    subs = subsets(tmp_path)
    a = TaskStream(subs, batch_size=4, world_size=2, shuffle_buffer=0)
    with pytest.raises(ValueError, match="world_size: 2 .saved. -> 1"):
        TaskStream(subs, batch_size=4, shuffle_buffer=0).load_state_dict(a.state_dict())


# --------------------------------------------------------------------------- drops and dead subsets
def test_dropped_rows_are_counted_per_task_and_never_served(tmp_path):
    drop = lambda row: int(row["query"].split("q")[-1]) % 3 == 0  # noqa: E731
    subs = subsets(tmp_path, drop=drop)
    stream = TaskStream(subs, batch_size=4, shuffle_buffer=0)
    served = [q for b in queries(take(stream, 30)) for q in b]
    assert not any(int(q.split("q")[-1]) % 3 == 0 for q in served)
    counts = stream.counts()
    for t in "abc":
        assert counts[t]["dropped"] > 0
        assert counts[t]["read"] - counts[t]["dropped"] == sum(q.startswith(t + " ") for q in served)
    assert stream.drops == {t: counts[t]["dropped"] for t in "abc"}
    assert stream.summary().set_index("dataset").loc["a", "left_out"] == counts["a"]["dropped"]


def test_a_subset_that_never_yields_is_an_error_naming_it(tmp_path):
    subs = subsets(tmp_path, probs=[1, 0, 0])
    subs[0].transform = lambda row: None  # e.g. every row decontaminated
    with pytest.raises(StreamError, match=r"task 'a' \(.*a/train-00000-of-00002.parquet.*every one of the 40 rows"):
        take(TaskStream(subs, batch_size=2, shuffle_buffer=0), 1)
    with pytest.raises(StreamError, match=r"task 'a' .*25 rows in a row were dropped"):
        take(TaskStream(subs, batch_size=2, shuffle_buffer=0, max_consecutive_drops=25), 1)
    tiny = [StreamSubset("t", write_subset(tmp_path, "t", 1, 1), 1, 1.0, item_of("t"))]
    with pytest.raises(StreamError, match=r"task 't' .*reader 1 of 2: a whole epoch yielded no row"):
        take(TaskStream(tiny, batch_size=2, rank=1, world_size=2, shuffle_buffer=0), 1)


# --------------------------------------------------------------------------- DataLoader workers
def test_workers_keep_one_task_per_batch_and_resume_exactly(tmp_path):
    subs = subsets(tmp_path)
    kw = dict(batch_size=4, shuffle_buffer=8, chunk_rows=4, num_workers=2, seed=2)
    straight = TaskStream(subs, **kw)
    run = take(straight, 12)
    assert [{e["task"] for e in b} for b in run] == [{straight.batch_task(k)} for k in range(12)]
    rows = [q for b in queries(run) for q in b]
    assert len(set(rows)) > 40  # the two workers read different shards
    for cut in (3, 6):  # odd and even: the first batch after a resume comes from either worker
        _, rest = _resumed(subs, cut, 12, **kw)
        assert queries(rest) == queries(run)[cut:], cut


# --------------------------------------------------------------------------- the trainer
def _stream_config(tmp_path, **over):
    from tests.test_train import toy_config
    return toy_config(tmp_path, data={"streaming": True, "shuffle_buffer": 0}, **over)


def test_trainer_trains_from_a_stream_and_resumes_mid_stream_with_the_same_next_batch(tmp_path):
    from kalm_lib.model import KaLMEmbedder
    from kalm_lib.train import StageTrainer
    from tests.test_train import _final_weights

    subs = subsets(tmp_path / "data")

    def trainer(out, steps, **kw):
        cfg = _stream_config(tmp_path / out, save_every=2, optim={"max_steps": steps})
        t = StageTrainer(cfg, dataset=TaskStream(subs, cfg.optim.batch_size, shuffle_buffer=0, num_negatives=M),
                         model=KaLMEmbedder.tiny(seed=0, **cfg.model.tiny), **kw)
        seen = []
        run_step = t.step_runner
        t.step_runner = lambda batch: (seen.append(list(batch.queries)), run_step(batch))[1]
        return t, seen

    straight, seen_a = trainer("a", 4)
    final_a = straight.run()
    assert len(seen_a) == 4 and all(len(q) == 8 for q in seen_a)
    assert all(len({q.split()[0] for q in qs}) == 1 for qs in seen_a)  # one task per batch
    state = json.loads((Path(straight.cfg.output_dir) / "checkpoints" / "step_0000002" / "trainer_state.json")
                       .read_text())
    assert state["stream"][0]["position"] == 2 and state["facts"]["stream_tasks"]["a"] == [40, 40 / 94]

    class Killed(Exception):
        pass

    def kill_at_3(step, rec):
        if step == 3:
            raise Killed()

    killed, _ = trainer("b", 4, callbacks=[kill_at_3])
    with pytest.raises(Killed):
        killed.run()
    resumed, seen_b = trainer("b", 4)
    final_b = resumed.run()
    assert seen_b == seen_a[2:]  # resumed at the step-2 checkpoint: batch 3 is the uninterrupted run's batch 3
    a, b = _final_weights(final_a), _final_weights(final_b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=0, rtol=0, msg=k)
    table = resumed.dataset.summary()
    assert list(table["dataset"]) == ["a", "b", "c"] and len(resumed.dataset) == 94


def test_trainer_stream_needs_max_steps_or_row_counts(tmp_path):
    from kalm_lib.config import ConfigError
    from kalm_lib.model import KaLMEmbedder
    from kalm_lib.train import StageTrainer

    subs = subsets(tmp_path / "data")
    subs[1].num_rows = None
    cfg = _stream_config(tmp_path, optim={"max_steps": None})
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)
    with pytest.raises(ConfigError, match=r"data.streaming needs optim.max_steps .*\['b'\] is unknown"):
        StageTrainer(cfg, dataset=TaskStream(subs, 8), model=model)
    subs[1].num_rows = 30
    t = StageTrainer(cfg, dataset=TaskStream(subs, 8), model=model)
    assert (t.steps_per_epoch, t.total_steps) == (94 // 8, 94 // 8)
