"""A content-addressed cache of evaluation results: a task is scored once per distinct model.

Why: the cpu profile's stage notebooks score the model before and after each stage, and notebook 05 scores every
stage's model again; stage 2's "before" is stage 1's "after", and 05's "pretrain" is both. With a 135M-parameter
model on 2 cores one pass over the suite costs minutes, so six passes of three distinct models were a third of the
run. Here a result is keyed by what determines it, never by a label:

    key = H(weights and buffers of the model, its attention mode and token cap,
            task name, row cap, Matryoshka dim, instruction settings, mteb version)

so a model that changed (one more step, another arm of an ablation, the causal mask) misses the cache and is
scored again, and the same weights under another label ("after pre-training" in 02, "pretrain" in 05) hit it.
A hit costs one hash of the weights (about 1 s per 500 MB on a CPU core), not an encode of the corpus.

Layout: ``<cache_dir>/<key[:2]>/<key>/{rows.csv, key.json, mteb.json, predictions.json?}``; each entry is written into a
temporary folder and renamed, so an interrupted write leaves no half entry (``kalm_lib.atomic``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when a cached entry's layout or meaning changes: every older entry then misses


def model_fingerprint(model: Any) -> str:
    """A hash of a torch module's parameters and buffers (names, dtypes, shapes, bytes) and, for a
    ``KaLMEmbedder``, its attention mode and token cap. Two models with equal fingerprints embed identically."""
    import torch

    h = hashlib.blake2b(digest_size=20)
    h.update(type(model).__name__.encode())
    for attr in ("causal", "max_length", "max_seq_length"):
        if hasattr(model, attr):
            h.update(f"{attr}={getattr(model, attr)!r};".encode())
    state = model.state_dict()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def entry_key(fingerprint: str, **settings: Any) -> str:
    """The cache key of one (model, task, settings) evaluation; ``settings`` must be JSON-serialisable."""
    import mteb

    payload = json.dumps({"format": FORMAT, "model": fingerprint, "mteb": mteb.__version__, **settings},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _entry_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / key


def load(cache_dir: str | os.PathLike, key: str, copy_to: dict[str, Path | None] | None = None,
         required: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """The cached rows of ``key``, or None on a miss (no entry, or one without a file named in ``required``).
    ``copy_to`` maps an entry's file ("predictions.json", "mteb.json") to where it is copied (atomically)."""
    d = _entry_dir(Path(cache_dir), key)
    if not (d / "rows.csv").is_file() or any(not (d / f).is_file() for f in required):
        return None
    for fname, dest in (copy_to or {}).items():
        if dest is None or not (d / fname).is_file():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(d / fname, tmp)
        os.replace(tmp, dest)
    return pd.read_csv(d / "rows.csv", keep_default_na=False, na_values=[""])


def store(cache_dir: str | os.PathLike, key: str, rows: pd.DataFrame, settings: dict,
          files: dict[str, Path | None] | None = None) -> Path:
    """Write one entry atomically (a temporary folder renamed into place): ``rows``, the ``settings`` it was keyed
    by (``key.json``, for a reader) and copies of ``files`` ({name in the entry: source}, None = not kept)."""
    files = {k: Path(v) for k, v in (files or {}).items() if v is not None and Path(v).is_file()}
    d = _entry_dir(Path(cache_dir), key)
    if (d / "rows.csv").is_file() and all((d / f).is_file() for f in files):
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=d.parent))
    try:
        rows.to_csv(tmp / "rows.csv", index=False)
        (tmp / "key.json").write_text(json.dumps(settings, indent=1, sort_keys=True, default=str), encoding="utf-8")
        for fname, src in files.items():
            shutil.copyfile(src, tmp / fname)
        if d.exists():  # an older entry that lacks a file asked for now: replace it
            shutil.rmtree(d)
        os.replace(tmp, d)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def run_cache_dir(run_dir: str | os.PathLike) -> Path:
    """The one evaluation cache of a run, shared by the stage notebooks' quick scores and notebook 05."""
    return Path(run_dir) / "eval" / "cache"
