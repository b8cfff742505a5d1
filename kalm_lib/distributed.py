"""The processes of one launch (``accelerate launch`` / ``torchrun``) sharing one job that is not training: the
helpers with which mining and teacher scoring split their encoding across processes, gather the results in the
original order, and let one process write.

Without a launcher (``WORLD_SIZE`` unset or 1: a notebook, plain ``python``) nothing here starts anything and every
helper is the one-process identity: ``rank_world() == (0, 1)``, ``on_main(fn)`` is ``fn()``.

Traps handled here:

* A process group is joined the way the trainer's ``Accelerator(cpu=not cuda)`` joins it (accelerate's
  ``PartialState``: nccl on GPUs with each process's device set, gloo on CPUs), so a later ``Accelerator`` in the
  same process reuses it.
* NCCL's object collectives run on ``torch.cuda.current_device()``; a process that never set its device would put
  all of them on GPU 0 (wrong device or hang). :func:`collective_device` sets it to this process's
  ``compute_device`` (``cuda:LOCAL_RANK``) before any collective.
* A failure on one process must not leave the others waiting forever in a collective: :func:`on_main` broadcasts
  the main process's exception, and :func:`gather_strided` exchanges an ok flag before any data.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

T = TypeVar("T")

GATHER_BLOCK_BYTES = 256 * 2**20   # device buffer of one all_gather round, all processes' rows together


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() else None


def ensure_process_group() -> bool:
    """Join the launch's process group when a launcher started several processes (``WORLD_SIZE`` > 1) and none is
    initialised yet; return whether this process works with others (world size > 1)."""
    dist = _dist()
    if dist is None:
        return False
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return False
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    return dist.get_world_size() > 1


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, else ``(0, 1)``."""
    dist = _dist()
    if dist is None or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    return rank_world()[0] == 0


def collective_device() -> torch.device:
    """Where this process's collectives put their tensors: its own GPU under nccl (made the current CUDA device),
    the CPU under gloo."""
    dist = _dist()
    if dist is None or not dist.is_initialized() or "nccl" not in str(dist.get_backend()):
        return torch.device("cpu")
    from kalm_lib.device import compute_device

    dev = compute_device()
    if dev.type != "cuda":   # KALM_DEVICE=cpu under nccl: the collectives still need this process's GPU
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if torch.cuda.current_device() != dev.index:
        torch.cuda.set_device(dev)
    return dev


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """``obj`` of process ``src``, on every process (pickled)."""
    rank, world = rank_world()
    if world == 1:
        return obj
    box = [obj if rank == src else None]
    _dist().broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def gather_objects(obj: Any) -> list:
    """Every process's ``obj``, indexed by rank, on every process (pickled)."""
    rank, world = rank_world()
    if world == 1:
        return [obj]
    collective_device()   # all_gather_object uses the current CUDA device under nccl
    out: list = [None] * world
    _dist().all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main process only (rank 0: the one that writes files); the others wait for it and
    get its (picklable) result, or raise if it failed, so no process is left waiting at a barrier."""
    rank, world = rank_world()
    if world == 1:
        return fn()
    if rank == 0:
        try:
            result = fn()
        except BaseException as e:
            broadcast_object((False, f"{type(e).__name__}: {e}"))
            raise
        broadcast_object((True, result))
        return result
    ok, result = broadcast_object()
    if not ok:
        raise RuntimeError(f"the main process (rank 0) failed: {result}")
    return result


def texts_digest(texts: Sequence[str]) -> int:
    """A 63-bit digest of a list of texts, in order (to check that every process was given the same list)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return int.from_bytes(h.digest()[:8], "little") >> 1


def gather_strided(compute: Callable[[], np.ndarray | None], n_total: int, digest: int = 0,
                   block_bytes: int = GATHER_BLOCK_BYTES) -> np.ndarray:
    """Rows computed in strides, gathered in the original order on every process.

    Process r of W computes (``compute()``) the rows r, r + W, r + 2W, … of an ``(n_total, d)`` float32 matrix
    (``None`` when it has none); every process gets the whole matrix. Before any data the processes exchange
    (ok, n_total, rows, d, digest): a process that failed, or was given another ``n_total`` or ``digest`` (the
    caller's fingerprint of its inputs), makes every process raise instead of gathering mismatched rows. The data
    moves in ``all_gather`` rounds of padded ``(block, d)`` tensors on :func:`collective_device`, at most
    ``block_bytes`` for all processes' rows of one round, so the device buffer stays bounded; the result costs
    ``n_total × d × 4`` bytes of host memory on every process."""
    rank, world = rank_world()
    dist = _dist()
    dev = collective_device()
    err: BaseException | None = None
    local = None
    try:
        local = compute()
        if local is not None:
            local = np.ascontiguousarray(local, dtype=np.float32)
            if local.ndim != 2:
                raise ValueError(f"expected a 2-d array of rows, got shape {local.shape}")
    except Exception as e:       # let the others know before raising: they would wait in all_gather forever
        err, local = e, None
    expected = len(range(rank, n_total, world))
    rows = 0 if local is None else len(local)
    meta = torch.tensor([0 if err else 1, n_total, rows, 0 if local is None else local.shape[1], digest],
                        dtype=torch.int64, device=dev)
    metas = [torch.empty_like(meta) for _ in range(world)]
    dist.all_gather(metas, meta)
    metas = [m.tolist() for m in metas]
    if err is not None:
        raise err
    failed = [r for r, m in enumerate(metas) if not m[0]]
    if failed:
        raise RuntimeError(f"process(es) {failed} failed to compute their rows (see their log)")
    if len({(m[1], m[4]) for m in metas}) != 1:
        raise RuntimeError(f"the processes were given different inputs (n_total, digest per rank: "
                           f"{[(m[1], m[4]) for m in metas]}): every process must encode the same list")
    counts = [m[2] for m in metas]
    want = [len(range(r, n_total, world)) for r in range(world)]
    if counts != want:
        raise RuntimeError(f"rows per process {counts}, expected {want} (rank {rank} expected {expected})")
    dims = {m[3] for m in metas if m[2]}
    if len(dims) != 1:
        raise RuntimeError(f"the processes' rows have different widths {sorted(dims)}")
    d = dims.pop()
    out = np.empty((n_total, d), dtype=np.float32)
    m_rows = max(counts)
    block = max(1, block_bytes // (4 * d * world))
    for s in range(0, m_rows, block):
        e = min(m_rows, s + block)
        t = torch.zeros((e - s, d), dtype=torch.float32, device=dev)
        if local is not None and s < rows:
            piece = local[s:e]
            t[:len(piece)] = torch.from_numpy(piece).to(dev)
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        for r, part in enumerate(parts):
            valid = min(e, counts[r]) - s
            if valid > 0:   # rank r's row j is row r + j·W of the whole
                out[r + world * s: r + world * (s + valid): world] = part[:valid].cpu().numpy()
    return out
