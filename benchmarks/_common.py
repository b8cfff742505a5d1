"""Shared helpers for the benchmarks: environment, machine description, interleaved timing, models.

Timing rule used by every script: the two sides (kalm_lib and its peer) run alternately in ONE process,
in ABBA order (round r runs kalm first when r is even, the peer first when r is odd), on the same inputs,
after warm-up rounds. We report the median time of each side and the ratio of the medians, plus the
quartiles of the per-round ratios (each round pairs the two sides on the same input, so the per-round
ratio cancels slow drifts of a shared, noisy machine).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Benchmarks never touch the network (the Hub is unreachable on these machines).
for _k, _v in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
               ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_k, _v)

OUT_DIR = ROOT / "build" / "bench"


SMOKE_TINY = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2)
"""The CPU throughput benchmarks' backbone: a tiny random-init Qwen2 with the real 152k-token vocabulary,
hidden 256, 4 layers (the issue's example; the smoke profile's first shape). Pinned here, not read from
configs/smoke, so that figures stay comparable when the profile is re-sized."""


def data_dir() -> Path:
    """``$KALM_DATA_DIR``, else ``../shared/data`` next to the repository, else ``shared/data`` inside it."""
    for cand in (os.environ.get("KALM_DATA_DIR"), ROOT.parent / "shared" / "data", ROOT / "shared" / "data"):
        if cand and (Path(cand) / "tokenizers" / "qwen2" / "tokenizer.json").is_file():
            os.environ["KALM_DATA_DIR"] = str(cand)
            return Path(cand)
    raise FileNotFoundError("no data mirror: set KALM_DATA_DIR to the folder holding tokenizers/qwen2 "
                            "(e.g. /work/shared/data)")


def machine_info() -> dict:
    """What the figures were measured on (printed by every script, written to RESULTS.md by hand)."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host_cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "sentence_transformers", "accelerate"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing peer is reported, not fatal here
            info[mod] = "missing"
    try:
        info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_header(title: str) -> dict:
    info = machine_info()
    print(f"== {title}")
    print("   " + ", ".join(f"{k}={v}" for k, v in info.items()))
    return info


# ---------------------------------------------------------------------------- timing
def interleave(sides: dict[str, Callable[[int], object]], rounds: int, warmup: int = 1,
               sync: Callable[[], None] | None = None) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Run each side's ``fn(round_index)`` alternately (ABBA), ``warmup`` untimed rounds first.

    Returns (wall seconds, process CPU seconds) of the timed rounds per side. The CPU time is a second
    opinion on a shared machine: it does not count the time other workers hold the core. ``sync`` (e.g.
    ``torch.cuda.synchronize``) is called before reading each clock.
    """
    names = list(sides)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            if sync:
                sync()
            t0, c0 = time.perf_counter(), time.process_time()
            sides[n](r)
            if sync:
                sync()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if r >= warmup:
                wall[n].append(dt)
                cpu[n].append(dc)
    return wall, cpu


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def speed_ratio(t_ours: list[float], t_peer: list[float]) -> dict:
    """kalm speed / peer speed = median(peer time) / median(our time), and per-round ratio quartiles."""
    per_round = [p / o for o, p in zip(t_ours, t_peer)]
    q1, med, q3 = quartiles(per_round)
    return {"ratio": statistics.median(t_peer) / statistics.median(t_ours),
            "round_ratio_q1": q1, "round_ratio_median": med, "round_ratio_q3": q3}


# ---------------------------------------------------------------------------- models
def build_pair(tiny: dict | None = None, seed: int = 0, max_length: int = 64, tokenizer: str | None = None,
               folder: str | os.PathLike | None = None, st_kwargs: dict | None = None):
    """The same random-init tiny Qwen2 twice: a KaLMEmbedder and the SentenceTransformer loaded from its
    ``save()`` folder (identical weights; the peer reads ``config.json``'s ``is_causal=False``, so both
    are bidirectional). Returns (kalm, st, folder)."""
    from sentence_transformers import SentenceTransformer

    from kalm_lib.model import KaLMEmbedder

    if tokenizer is None:
        tokenizer = str(data_dir() / "tokenizers" / "qwen2")
    kalm = KaLMEmbedder.tiny(seed=seed, max_length=max_length, tokenizer=tokenizer, **(tiny or SMOKE_TINY))
    folder = Path(folder or tempfile.mkdtemp(prefix="kalm-bench-"))
    kalm.save(folder / "model")
    st = SentenceTransformer(str(folder / "model"), device="cpu", **(st_kwargs or {}))
    st.max_seq_length = max_length
    return kalm, st, folder


def st_backbone(st):
    """The Hugging Face model inside a SentenceTransformer's first (Transformer) module."""
    return getattr(st[0], "auto_model", None) or st[0].model


def kalm_on(st, tokenizer, max_length: int):
    """A KaLMEmbedder around the peer's own backbone module: the two sides then run the very same
    parameter tensors, so the comparison measures the libraries' code paths and not where each copy of
    the weights happens to sit in memory (on the shared CPU machine, two separately allocated copies of
    the same weights encoded up to ±10% apart, in either direction, from one process to the next)."""
    from kalm_lib.model import KaLMEmbedder

    return KaLMEmbedder(st_backbone(st), tokenizer, max_length=max_length, name="kalm-on-peer-weights")


def check_same_model(kalm, st, texts: list[str], atol: float = 1e-4) -> float:
    """Max |Δ| between the two sides' normalised embeddings of ``texts`` (proves the peer runs our model)."""
    import numpy as np

    a = kalm.encode(texts, batch_size=8)
    b = st.encode(texts, batch_size=8, convert_to_numpy=True)
    diff = float(np.abs(a - b).max())
    if diff > atol:
        raise AssertionError(f"the peer does not compute the same embeddings (max |Δ| = {diff:.2e} > {atol})")
    return diff


def sts_sentences(limit: int | None = None) -> list[str]:
    """Real mixed-length English sentences: STS Benchmark test, both columns, first occurrence kept."""
    path = data_dir() / "en" / "sts-stsbenchmark" / "test.jsonl"
    seen, out = set(), []
    with path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            for key in ("sentence1", "sentence2"):
                s = rec[key]
                if s not in seen:
                    seen.add(s)
                    out.append(s)
    return out[:limit] if limit else out


TRAIN_DATASETS = ("en-snli-triplets", "zh-ocnli-triplets", "en-scifact", "en-mrpc-paraphrase",
                  "en-banking77-train", "zh-cmrc2018-qp")
"""Local-mirror fine-tuning sets for the training benchmark: short NLI triplets, long SciFact abstracts,
paraphrases, classification-as-pairs and Chinese QA, so batches have mixed lengths and languages."""


def smoke_training_set(tokenizer, names=TRAIN_DATASETS, num_negatives: int = 1, max_rows: int | None = 256,
                       seed: int = 0, stage: str = "finetune"):
    """``kalm_lib.data.build_training_set`` on local datasets, lengths in Qwen2 tokens (quietly)."""
    import logging

    data_dir()
    from kalm_lib.data import build_training_set

    logging.getLogger("kalm_lib").setLevel(logging.ERROR)
    return build_training_set(list(names), stage=stage, num_negatives=num_negatives,
                              max_rows_per_dataset=max_rows, seed=seed, tokenizer=tokenizer)


class ListDataset:
    """The minimal dataset a StageTrainer needs: items with query/pos/neg, ``.tasks``, ``.lengths``."""

    def __init__(self, items: list[dict], num_negatives: int = 1):
        self.items, self.tasks = items, [e.get("task", "bench") for e in items]
        self.lengths = [len(e["query"]) for e in items]
        self.num_negatives = num_negatives

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def write_json(name: str, obj: dict) -> Path:
    """Atomically write ``build/bench/<name>.json`` (temp file in the same folder, then os.replace)."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=OUT_DIR)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)
    return path


def fmt(x: float, nd: int = 2) -> str:
    return f"{x:,.{nd}f}"
