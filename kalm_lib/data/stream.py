"""Streaming training data (gpu / paper profiles): one task per batch, read from parquet shards, never materialised.

The paper's Hub data has about 470M rows; as Python lists that is ≈ 1.6 KB and 227 µs per row (DESIGN.md,
"The GPU path"). Here every subset (one Hub subfolder, one task) is a ``datasets`` streaming parquet reader split
between processes with ``split_dataset_by_node``, so memory does not grow with the data and each process reads only
its own shard.

Batching (the streaming form of :class:`~kalm_lib.data.sampler.TaskBatchSampler`, KaLM V1's semi-homogeneous
batches): global batch k belongs to ONE task, drawn with the subsets' probabilities p_i by an RNG seeded by
(seed, k). Every rank draws the same task for batch k without talking, and fills its share of the batch from
its own shard of that task. With ``homogeneous_ratio`` r < 1, ⌊r·B⌋ items of the global batch B come from the
batch's task (spread over the ranks as evenly as possible) and the rest from a mixed stream, in which every
item's subset is drawn with the same p_i (an RNG seeded by (seed, k, rank)) and served by a second, independent
reader of that subset. A subset that runs out starts its next epoch (counted per reader).

Shuffling: each reader reads its shard in blocks of ``shuffle_buffer`` rows (arrow), permutes every block with an
RNG seeded by (seed, subset, epoch, block), and decodes ``chunk_rows`` rows at a time (``to_pylist``); every epoch
also shuffles the order of the shards (row groups, after ``IterableDataset.reshard``) through datasets'
``set_epoch``. ``shuffle_buffer=0`` reads the files in order.

Resuming (:meth:`TaskStream.state_dict` / :meth:`TaskStream.load_state_dict`, plain JSON): the batch counter, and
for every reader its epoch, the ``IterableDataset.state_dict()`` taken just before its current block, the block's
index and how many of its rows were consumed. A resumed stream yields exactly the batches the uninterrupted one
would have, with or without shuffling (tests/test_stream.py), provided the subsets' transforms are pure functions
of the row.

Why not ``IterableDataset.shuffle(buffer_size=...)`` and ``datasets.interleave_datasets`` (measured here with
datasets 5.2; benchmarks/bench_stream.py, benchmarks/RESULTS.md):
  * a shuffle buffer is not part of a state_dict: datasets documents that "examples from shuffle buffers are lost
    when resuming and the buffers are refilled with new data" (up to ``buffer_size`` rows skipped per reader), and
    with ``max_buffer_input_shards=1`` a resume also repeated rows (4 of 40 in a probe: the inner re-batching replays
    its last batch). The block shuffle above resumes exactly;
  * with several input shards, the buffer is fed (and ``interleave_datasets`` reads its sources) through a thread
    pool that prefetches one item of every source, and that iterator sleeps 5 s whenever it ends on parquet sources
    (``datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN``, a pyarrow shutdown work-around): every epoch end of a
    small subset would stall the step for 5 s;
  * row by row, ``interleave_datasets`` costs 190–700 µs per row here (a thread hand-off per row; 1,450 rows/s over
    the benchmark's four subsets), against 9–15 µs per row (70–110k rows/s) for this stream in one process; the
    mixed stream here is the same sampling (source i with probability p_i, every source restarted when it runs out,
    as ``stopping_strategy="all_exhausted"`` followed by a new epoch).

Memory does not grow with the data (benchmarks/RESULTS.md: peak RSS 1.04× from 100k to 1M rows), but with the
readers: per reader one block of ``shuffle_buffer`` rows (arrow; datasets' re-batching and ``combine_chunks`` make
about three copies of it at a time: ≈ 23 MB per reader for 10,000 rows of 0.7 KB, measured), one decoded chunk, and
the parquet reader's current row group. Readers open lazily, and every subset has up to two (homogeneous, and mixed
when r < 1): about ``3 × readers × shuffle_buffer × row size``. With ~70 subsets of ~2.5 KB rows a buffer of 10,000
comes to ≈ 5 GB per process at r = 1 (10 GB at r < 1); lower ``data.shuffle_buffer`` when that matters. Files
written as one huge row group cost that row group, decoded, per open reader.

DataLoader workers (``num_workers`` > 0, ``data.stream_workers``): worker w of n produces the global batches
k ≡ w (mod n), reading shard (rank·n + w) of (world·n), and sends every batch with its own state after it, so the
state of the *consumed* batches is known in the main process although the workers run ahead (what torchdata's
``StatefulDataLoader`` does; plain ``torch.utils.data.DataLoader`` suffices here). Decoding and the subsets'
transforms run in the workers; tokenisation stays in the trainer's step (``StepRunner._features`` sorts each side
by token length before cutting sub-batches). The task of batch k is the same with or without workers, the rows are
not (the shard split changes), so a run resumes only with the ``num_workers`` it started with.

Sharding: when a subset's shards do not divide the readers (world·n), ``split_dataset_by_node`` gives each reader
every (world·n)-th row, and every reader decodes the whole subset (logged once per subset); splitting by shards
needs a number of row groups that world·n divides.
"""
from __future__ import annotations

import atexit
import json
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import DataError, log

STATE_VERSION = 1


@dataclass
class StreamSubset:
    """One task's parquet data and how a raw row becomes a training item.

    ``transform(row)`` returns the item the trainer consumes, exactly what ``KaLMTrainingDataset.__getitem__``
    returns (``{"query", "pos", "neg", "task", "teacher_scores", "own_negatives_only"}``; ``neg`` has M texts, or
    is empty in pre-training), or None to drop the row (counted per task). ``task`` and ``own_negatives_only`` are
    filled in from the subset when the item lacks them.
    """
    task: str                 # task label, e.g. "hub-finetune-kalm.quora" (one task per Hub subfolder)
    data_files: list[str]     # parquet files (local paths, or hf://datasets/... URLs on a box with the Hub)
    num_rows: int | None      # rows (from parquet footers), for the sampling probabilities
    probability: float        # p_i; the subsets of one stage sum to 1
    transform: Callable[[dict], dict | None]   # raw parquet row -> the item the trainer consumes, or None = drop
    own_negatives_only: bool = False


class StreamError(DataError):
    """A subset that cannot feed the stream: no row on this process, or only dropped rows for a long stretch.
    The message names the task, its files and the process."""


# ---------------------------------------------------------------------------- one subset's reader
_LIVE_READERS: "weakref.WeakSet[_Reader]" = weakref.WeakSet()


@atexit.register
def _close_live_readers() -> None:
    """Close open parquet generators before the interpreter tears modules down, then give pyarrow's scanner threads
    the time datasets gives them (``datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN``, 5 s; apache/arrow#45214): a
    process that exits with a parquet scan half read can abort ("terminate called without an active exception",
    seen once in ~20 runs of the benchmark), and without the close datasets' generator prints an ignored
    AttributeError at exit."""
    open_ones = [r for r in list(_LIVE_READERS) if r._it is not None]
    for r in open_ones:
        r.close()
    if open_ones:
        import gc
        import time

        gc.collect()
        try:
            from datasets import config

            time.sleep(float(config.SLEEP_TIME_ON_THREADS_SHUTDOWN))
        except Exception:  # noqa: BLE001 - at exit, nothing is worth raising for
            pass


def _seed32(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(2**31 - 1))


class _Reader:
    """The rows of one subset on one reader (a process, or a DataLoader worker): epochs, a block shuffle, an exact
    position.

    The reader's shard (``split_dataset_by_node``) is read in blocks of ``shuffle_buffer`` rows (arrow); each block
    is permuted by an RNG seeded by (seed, subset, epoch, block) and decoded ``chunk_rows`` rows at a time. Every
    epoch also shuffles the order of the shards (files, or row groups after ``reshard``) through datasets'
    ``set_epoch``. The position is (epoch, the datasets state before the current block, the block's index, rows of
    it consumed), so a resumed reader yields exactly the rows the uninterrupted one would have.
    """

    def __init__(self, subset: StreamSubset, index: int, kind: int, *, seed: int, shuffle_buffer: int, rank: int,
                 world_size: int, chunk_rows: int, max_consecutive_drops: int, base: Callable[[], object]):
        self.subset, self.kind = subset, kind
        self.seed = _seed32(seed, index, kind)  # the same on every rank: an example split needs one shard order
        self.shuffle_buffer, self.rank, self.world_size = shuffle_buffer, rank, world_size
        self.block_rows = shuffle_buffer or chunk_rows
        self.chunk_rows, self.max_consecutive_drops = chunk_rows, max_consecutive_drops
        self._base = base
        self.epoch, self.before, self.block, self.offset = 0, None, 0, 0   # the resumable position
        self.rows_epoch = self.kept_epoch = 0                                # this epoch, for the "never yields" check
        self.read = self.dropped = self.consecutive = 0                      # counters (all epochs)
        self._ds = self._it = self._table = self._perm = self._rows = None
        self._rows_at, self._first = 0, True
        _LIVE_READERS.add(self)

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "before": self.before, "block": self.block, "offset": self.offset,
                "rows_epoch": self.rows_epoch, "kept_epoch": self.kept_epoch, "read": self.read,
                "dropped": self.dropped, "consecutive": self.consecutive}

    def load_state_dict(self, st: dict) -> None:
        self.close()
        self.epoch, self.before = int(st["epoch"]), st["before"]
        for k in ("block", "offset", "rows_epoch", "kept_epoch", "read", "dropped", "consecutive"):
            setattr(self, k, int(st.get(k, 0)))

    def close(self) -> None:
        it, self._it, self._ds, self._table, self._perm, self._rows = self._it, None, None, None, None, None
        if it is not None:
            try:
                it.close()
            except Exception:  # noqa: BLE001 - a generator torn down at exit; nothing to keep
                pass

    # -------------------------------------------------------------- rows
    def _where(self) -> str:
        files = self.subset.data_files
        shown = ", ".join(map(str, files[:3])) + (f", … ({len(files)} files)" if len(files) > 3 else "")
        return (f"task {self.subset.task!r} ({shown}), reader {self.rank} of {self.world_size}"
                f"{' (mixed stream)' if self.kind else ''}")

    def _open(self) -> None:
        from datasets.distributed import split_dataset_by_node

        ds = split_dataset_by_node(self._base(), rank=self.rank, world_size=self.world_size).with_format("arrow")
        # datasets shuffles the shard order of an epoch > 0 with np.random.default_rng(epoch): with a buffer, a number
        # > 0 drawn from (seed, subset, epoch), the same on every rank (a shard split must agree on the order);
        # shuffle_buffer=0 keeps the files' order (datasets' epoch 0)
        ds.set_epoch(_seed32(self.seed, self.epoch) + 1 if self.shuffle_buffer else 0)
        if self.before is not None:
            ds.load_state_dict(self.before)
        self._ds, self._it, self._first = ds, iter(ds.iter(batch_size=self.block_rows)), True

    def _next_block(self) -> None:
        if self._it is None:
            self._open()
        before = self.before if self._first else self._ds.state_dict()
        try:
            table = next(self._it)
        except StopIteration:
            self._end_epoch()
            return
        if not self._first:
            self.block += 1
        skip = self.offset if self._table is None else 0  # a resumed position inside this block
        self._first, self.before, self._table, self._rows = False, before, table.combine_chunks(), None
        self._perm = (np.random.default_rng([self.seed, self.epoch, self.block]).permutation(len(table))
                      if self.shuffle_buffer else None)
        self.offset = min(skip, len(table))

    def _end_epoch(self) -> None:
        if self.rows_epoch == 0:
            raise StreamError(f"{self._where()}: a whole epoch yielded no row (is the shard empty on this process, "
                              f"or are there fewer rows than processes × workers?)")
        if self.kept_epoch == 0:
            raise StreamError(f"{self._where()}: every one of the {self.rows_epoch} rows of an epoch was dropped "
                              "by the subset's transform (all decontaminated or malformed?)")
        self.close()
        self.epoch, self.before, self.block, self.offset = self.epoch + 1, None, 0, 0
        self.rows_epoch = self.kept_epoch = 0

    def _decode(self) -> list[dict]:
        """The next ``chunk_rows`` rows of the current (permuted) block as dicts, from ``offset`` on."""
        end = min(self.offset + self.chunk_rows, len(self._table))
        part = (self._table.take(pa_indices(self._perm[self.offset:end])) if self._perm is not None
                else self._table.slice(self.offset, end - self.offset))
        cols = part.to_pydict()  # column-wise, then zipped: faster than Table.to_pylist
        keys = list(cols)
        self._rows, self._rows_at = [dict(zip(keys, v)) for v in zip(*cols.values())], self.offset
        return self._rows

    def take(self, n: int) -> list[dict]:
        """The next ``n`` items (rows the transform keeps), reading on across blocks and epochs."""
        s, out = self.subset, []
        transform, task, own = s.transform, s.task, s.own_negatives_only
        while len(out) < n:
            if self._table is None or self.offset >= len(self._table):
                self._next_block()
                continue
            i = self.offset - self._rows_at
            rows = self._rows
            if rows is None or not 0 <= i < len(rows):
                rows, i = self._decode(), 0
            j = i
            try:
                while j < len(rows) and len(out) < n:
                    item = transform(rows[j])
                    j += 1
                    if item is None:
                        self.dropped += 1
                        self.consecutive += 1
                        if self.consecutive >= self.max_consecutive_drops:
                            raise StreamError(
                                f"{self._where()}: {self.consecutive} rows in a row were dropped by the subset's "
                                f"transform ({self.dropped} of {self.read + j - i} read so far); refusing to spin "
                                "(all decontaminated or malformed?)")
                        continue
                    self.consecutive = 0
                    self.kept_epoch += 1
                    item.setdefault("task", task)
                    item.setdefault("own_negatives_only", own)
                    out.append(item)
            except StreamError:
                raise
            except Exception as err:
                err.add_note(f"(in the transform of {self._where()})")
                raise
            finally:
                self.offset += j - i
                self.rows_epoch += j - i
                self.read += j - i
        return out


def pa_indices(idx: np.ndarray):
    import pyarrow as pa

    return pa.array(idx, type=pa.int64())


# ---------------------------------------------------------------------------- the batches of one producer
def _local_homogeneous(batch_size: int, world_size: int, rank: int, ratio: float) -> int:
    """This rank's share of the ⌊r·B⌋ homogeneous items of a global batch (as even as possible over ranks)."""
    keep = int(np.floor(ratio * batch_size + 1e-9))
    return keep // world_size + (1 if rank < keep % world_size else 0)


class _Core:
    """Produces the local batches k = first, first + step, … of one process (step 1) or one DataLoader worker."""

    def __init__(self, cfg: dict, reader_rank: int, reader_world: int, first: int, step: int):
        self.cfg = cfg
        self.subsets: list[StreamSubset] = cfg["subsets"]
        self.cum = cfg["cum"]
        self.reader_rank, self.reader_world, self.next, self.step = reader_rank, reader_world, first, step
        self.keep = _local_homogeneous(cfg["batch_size"], cfg["world_size"], cfg["rank"], cfg["homogeneous_ratio"])
        self.per_rank = cfg["batch_size"] // cfg["world_size"]
        self.readers: dict[tuple[int, int], _Reader] = {}
        self._bases: dict[int, object] = {}
        self._pending: dict[str, dict] = {}   # reader states loaded before the reader exists

    def _base(self, i: int):
        if i not in self._bases:
            import datasets

            s = self.subsets[i]
            ds = datasets.load_dataset("parquet", data_files=list(map(str, s.data_files)), split="train",
                                       streaming=True)
            try:  # one shard per row group: a finer shard order each epoch, and more ways to split
                ds = ds.reshard()
            except Exception as err:  # noqa: BLE001 - resharding is an optimisation only
                log.debug("%s: reshard failed (%s); one shard per file", s.task, err)
            n = self.reader_world
            if n > 1 and ds.num_shards % n:
                log.info("%s: %d shard(s) do not divide the %d readers: every reader decodes all rows and keeps "
                         "1 in %d", s.task, ds.num_shards, n, n)
            self._bases[i] = ds
        return self._bases[i]

    def reader(self, i: int, kind: int) -> _Reader:
        key = (i, kind)
        if key not in self.readers:
            c = self.cfg
            r = _Reader(self.subsets[i], i, kind, seed=c["seed"], shuffle_buffer=c["shuffle_buffer"],
                        rank=self.reader_rank, world_size=self.reader_world, chunk_rows=c["chunk_rows"],
                        max_consecutive_drops=c["max_consecutive_drops"], base=lambda i=i: self._base(i))
            st = self._pending.pop(f"{self.subsets[i].task}|{kind}", None)
            if st is not None:
                r.load_state_dict(st)
            self.readers[key] = r
        return self.readers[key]

    def next_batch(self) -> tuple[int, list[dict]]:
        k, c = self.next, self.cfg
        t = task_index(c["seed"], k, self.cum)
        items = self.reader(t, 0).take(self.keep) if self.keep else []
        n_mixed = self.per_rank - self.keep
        if n_mixed:
            u = np.random.default_rng([c["seed"], k, 1, c["rank"]]).random(n_mixed)
            for j in np.minimum(np.searchsorted(self.cum, u, side="right"), len(self.cum) - 1):
                items += self.reader(int(j), 1).take(1)
        self.next += self.step
        return k, items

    def state_dict(self) -> dict:
        st = dict(self._pending)
        st.update({f"{self.subsets[i].task}|{kind}": r.state_dict() for (i, kind), r in self.readers.items()})
        return {"next": self.next, "readers": st}

    def load_state_dict(self, st: dict) -> None:
        for r in self.readers.values():
            r.close()
        self.readers.clear()
        self.next = int(st["next"])
        self._pending = dict(st["readers"])

    def close(self) -> None:
        for r in self.readers.values():
            r.close()


def task_index(seed: int, k: int, cum: np.ndarray) -> int:
    """The subset of global batch k: one uniform draw of an RNG seeded by (seed, k), through the cumulative p_i."""
    u = np.random.default_rng([seed, k]).random()
    return int(min(np.searchsorted(cum, u, side="right"), len(cum) - 1))


# ---------------------------------------------------------------------------- DataLoader workers
def _identity(x):
    return x


class _Feed(torch.utils.data.IterableDataset):
    """The DataLoader's dataset in worker mode: DataLoader worker j plays logical worker (start + j) mod n, so that
    batch k always comes from logical worker k mod n and the DataLoader's round-robin order is the order of k."""

    def __init__(self, cfg: dict, start: int, states: list, num_workers: int):
        self.cfg, self.start, self.states, self.n = cfg, start, states, num_workers

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        j, n = (info.id, info.num_workers) if info is not None else (0, 1)
        assert n == self.n, (n, self.n)
        w = (self.start + j) % n
        c = self.cfg
        core = _Core(c, reader_rank=c["rank"] * n + w, reader_world=c["world_size"] * n, first=self.start + j, step=n)
        if self.states[w] is not None:
            core.load_state_dict(self.states[w])
            if core.next != self.start + j:
                raise RuntimeError(f"stream worker {w}: its saved state is at batch {core.next}, expected "
                                   f"{self.start + j} (a state saved with another number of workers?)")
        try:
            while True:
                k, items = core.next_batch()
                yield w, k, items, json.loads(json.dumps(core.state_dict()))
        finally:
            core.close()


# ---------------------------------------------------------------------------- the stream
class TaskStream:
    """Local batches (lists of items), one task per global batch, from streamed parquet subsets; endless.

    ``batch_size`` is the GLOBAL batch (divisible by ``world_size``); each iteration step yields this rank's share.
    Iterating continues from the current position (``position`` = global batches consumed), so the trainer may call
    ``iter()`` again after a :meth:`load_state_dict`. See the module docstring for the sampling, resuming, memory and
    worker rules.
    """

    def __init__(self, subsets: Sequence[StreamSubset], batch_size: int, *, rank: int = 0, world_size: int = 1,
                 homogeneous_ratio: float = 1.0, seed: int = 0, shuffle_buffer: int = 10_000, num_workers: int = 0,
                 chunk_rows: int = 256, max_consecutive_drops: int = 10_000, num_negatives: int | None = None,
                 decontaminated: bool = True, prefetch_factor: int = 2):
        subsets = list(subsets)
        if not subsets:
            raise ValueError("TaskStream: no subsets")
        tasks = [s.task for s in subsets]
        dup = sorted({t for t in tasks if tasks.count(t) > 1})
        if dup:
            raise ValueError(f"TaskStream: task(s) {dup} appear in more than one subset")
        for s in subsets:
            if not s.data_files:
                raise StreamError(f"task {s.task!r}: no data files")
        p = np.asarray([float(s.probability) for s in subsets])
        if not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1.0) > 1e-6:
            raise ValueError(f"TaskStream: the subsets' probabilities must be ≥ 0 and sum to 1, got "
                             f"{dict(zip(tasks, p.round(6).tolist()))} (sum {p.sum():.6g})")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"TaskStream: seed must be an integer ≥ 0, got {seed!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"TaskStream: rank {rank} not in [0, {world_size})")
        if batch_size < world_size or batch_size % world_size:
            raise ValueError(f"TaskStream: global batch_size {batch_size} must be a positive multiple of "
                             f"world_size {world_size}")
        if not 0.0 <= homogeneous_ratio <= 1.0:
            raise ValueError(f"TaskStream: homogeneous_ratio must be in [0, 1], got {homogeneous_ratio}")
        for name, v, lo in (("shuffle_buffer", shuffle_buffer, 0), ("num_workers", num_workers, 0),
                            ("chunk_rows", chunk_rows, 1), ("max_consecutive_drops", max_consecutive_drops, 1)):
            if int(v) != v or v < lo:
                raise ValueError(f"TaskStream: {name} must be an integer ≥ {lo}, got {v!r}")
        cum = np.cumsum(p / p.sum())
        cum[-1] = 1.0
        self.subsets = subsets
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.homogeneous_ratio, self.seed = float(homogeneous_ratio), int(seed)
        self.shuffle_buffer, self.num_workers, self.prefetch_factor = int(shuffle_buffer), int(num_workers), prefetch_factor
        self.num_negatives, self.decontaminated = num_negatives, decontaminated
        self._cfg = {"subsets": subsets, "cum": cum, "batch_size": self.batch_size, "rank": self.rank,
                     "world_size": self.world_size, "homogeneous_ratio": self.homogeneous_ratio, "seed": self.seed,
                     "shuffle_buffer": self.shuffle_buffer, "chunk_rows": int(chunk_rows),
                     "max_consecutive_drops": int(max_consecutive_drops)}
        self.position = 0                                      # global batches consumed
        self._states: list = [None] * max(1, self.num_workers)  # per producer: its state after its last consumed batch
        self._core: _Core | None = None                        # num_workers == 0: the live producer

    # -------------------------------------------------------------- what it holds
    @property
    def tasks(self) -> list[str]:
        return [s.task for s in self.subsets]

    @property
    def probabilities(self) -> dict[str, float]:
        return {s.task: float(s.probability) for s in self.subsets}

    @property
    def per_rank(self) -> int:
        return self.batch_size // self.world_size

    def batch_task(self, k: int) -> str:
        """The task of global batch k (the same on every rank)."""
        return self.subsets[task_index(self.seed, k, self._cfg["cum"])].task

    def num_rows(self) -> int | None:
        """Σ num_rows over the subsets, or None when a subset's count is unknown."""
        rows = [s.num_rows for s in self.subsets]
        return None if any(r is None for r in rows) else int(sum(rows))

    def __len__(self) -> int:
        n = self.num_rows()
        if n is None:
            unknown = [s.task for s in self.subsets if s.num_rows is None]
            raise TypeError(f"TaskStream has no length: the row count of {unknown} is unknown (num_rows=None)")
        return n

    # -------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[list[dict]]:
        if self.num_workers == 0:
            yield from self._iter_local()
        else:
            yield from self._iter_workers()

    def _iter_local(self):
        if self._core is None:
            c = self._cfg
            self._core = _Core(c, reader_rank=self.rank, reader_world=self.world_size, first=self.position, step=1)
            if self._states[0] is not None:
                self._core.load_state_dict(self._states[0])
        core = self._core
        while True:
            if core is not self._core:  # a load_state_dict() replaced the producer: continue from there
                return (yield from self._iter_local())
            k, items = core.next_batch()
            self.position = k + 1
            yield items

    def _iter_workers(self):
        start = self.position
        loader = torch.utils.data.DataLoader(_Feed(self._cfg, start, list(self._states), self.num_workers),
                                             batch_size=None, num_workers=self.num_workers, collate_fn=_identity,
                                             prefetch_factor=self.prefetch_factor)
        for w, k, items, state in loader:
            if k != self.position:
                raise RuntimeError(f"TaskStream: worker {w} delivered batch {k}, expected {self.position}")
            self._states[w] = state
            self.position = k + 1
            yield items

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """JSON-serialisable: the position and, per producer (the process, or each worker), every reader's epoch,
        datasets state before its current chunk, and rows consumed of that chunk."""
        states = list(self._states)
        if self.num_workers == 0 and self._core is not None:
            states[0] = self._core.state_dict()
        return json.loads(json.dumps({"version": STATE_VERSION, "position": self.position, "seed": self.seed,
                                      "rank": self.rank, "world_size": self.world_size,
                                      "num_workers": self.num_workers, "producers": states}))

    def load_state_dict(self, state: dict) -> None:
        want = {"version": STATE_VERSION, "seed": self.seed, "world_size": self.world_size,
                "num_workers": self.num_workers}
        diff = [f"{k}: {state.get(k)!r} (saved) -> {v!r} (now)" for k, v in want.items() if state.get(k) != v]
        if diff:
            raise ValueError("TaskStream: cannot resume this stream state: " + "; ".join(diff))
        if self._core is not None:
            self._core.close()
            self._core = None
        self.position = int(state["position"])
        self._states = list(state["producers"])

    def reset(self) -> None:
        """Back to batch 0 with fresh readers (a restarted schedule)."""
        if self._core is not None:
            self._core.close()
        self._core, self.position, self._states = None, 0, [None] * max(1, self.num_workers)

    def close(self) -> None:
        if self._core is not None:
            self._core.close()

    # -------------------------------------------------------------- reports
    def counts(self) -> dict[str, dict]:
        """Per task, over every producer and both readers: rows read, dropped (transform returned None), and the
        homogeneous reader's epoch (0 = still in its first pass)."""
        out = {s.task: {"read": 0, "dropped": 0, "epoch": 0} for s in self.subsets}
        for st in self.state_dict()["producers"]:
            for key, r in (st or {}).get("readers", {}).items():
                task, kind = key.rsplit("|", 1)
                out[task]["read"] += r["read"]
                out[task]["dropped"] += r["dropped"]
                if kind == "0":
                    out[task]["epoch"] = max(out[task]["epoch"], r["epoch"])
        return out

    @property
    def drops(self) -> dict[str, int]:
        return {t: c["dropped"] for t, c in self.counts().items()}

    def summary(self):
        """One row per task, with the columns of ``KaLMTrainingDataset.summary()`` that notebooks read
        (``dataset, examples, origin, left_out, negatives, decontaminated, empty``) plus the stream's own."""
        import pandas as pd

        counts = self.counts()
        rows = []
        for s in self.subsets:
            c = counts[s.task]
            rows.append({"dataset": s.task, "examples": s.num_rows, "origin": "stream", "read": c["read"],
                         "malformed_skipped": 0, "left_out": c["dropped"], "not_sampled": 0,
                         "random_neg_examples": 0, "empty": False, "decontaminated": bool(self.decontaminated),
                         "negatives": "own only" if s.own_negatives_only else "in-batch + hard",
                         "probability": float(s.probability), "epoch": c["epoch"], "files": len(s.data_files)})
        return pd.DataFrame(rows)
