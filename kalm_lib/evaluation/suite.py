"""What notebooks/05_evaluate needs in one call each: the run's models, the Matryoshka curve, the
profile's final suite, and a released model on the paper's benchmarks (Hub)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from kalm_lib.recipe import STAGES

from .runner import evaluate_model



def stage_checkpoints(run_dir: str | os.PathLike, stages: Sequence[str] = STAGES) -> dict[str, Path]:
    """``{stage: run_dir/stage/final}`` for each finished stage; a missing one is skipped with a printed note."""
    found = {}
    for stage in stages:
        path = Path(run_dir) / stage / "final"
        if (path / "modules.json").is_file():
            found[stage] = path
        else:
            print(f"[evaluate] no {stage} checkpoint at {path}: skipped")
    return found


def final_suite(profile: str) -> tuple[Any, int | None]:
    """The profile's final evaluation tasks and row cap (``eval.final_tasks`` / ``eval.final_max_rows``).

    ``final_tasks`` is a list of task names, a ``{task: row cap}`` mapping, a suite name from
    ``local_tasks.SUITES`` ("overview", "smoke", "local", "complete", ...), a benchmark name, or null
    (the whole local suite)."""
    from kalm_lib.config import load_profile

    from .benchmarks import BENCHMARKS
    from .local_tasks import LOCAL_SUITE, SUITES

    ev = load_profile(profile).eval
    tasks = ev.final_tasks
    if tasks is None:
        tasks = LOCAL_SUITE
    elif isinstance(tasks, str) and tasks not in BENCHMARKS:
        if tasks not in SUITES:
            raise ValueError(f"configs/{profile}: eval.final_tasks={tasks!r} is not a suite "
                             f"({', '.join(SUITES)}), a benchmark ({', '.join(BENCHMARKS)}) or a list of tasks")
        tasks = SUITES[tasks]
    return (dict(tasks) if isinstance(tasks, dict) else list(tasks) if not isinstance(tasks, str) else tasks,
            ev.final_max_rows)


def untrained_student(profile: str, run_dir: str | os.PathLike):
    """The stage-1 starting model of this profile, before any training (same seed and size)."""
    from kalm_lib.config import stage_config
    from kalm_lib.model import build_model

    return build_model(stage_config(profile, "pretrain", run_dir))


def matryoshka_dims(profile: str, run_dir: str | os.PathLike, full_dim: int) -> list[int]:
    """The distillation stage's Matryoshka dims (≤ the model's size) plus the full dimension, ascending;
    halvings of the full dimension fill in when fewer than three remain (a curve needs points)."""
    from kalm_lib.config import stage_config

    dims = stage_config(profile, "distill", run_dir).objective.matryoshka_dims or []
    out = {int(d) for d in dims if int(d) <= full_dim} | {int(full_dim)}
    d = int(full_dim)
    while len(out) < 3 and d > 8:
        d //= 2
        out.add(d)
    return sorted(out)


def matryoshka_curve(model: Any, dims: Sequence[int], tasks: Any = ("STSBenchmark",), max_rows: int | None = None,
                     model_name: str | None = None, output_dir: str | Path | None = None,
                     max_length: int | None = None, bf16: bool | None = None, **kwargs) -> pd.DataFrame:
    """Main-split scores of ``model`` with its embeddings truncated to each of ``dims`` (one row per dim × task)."""
    from .encoder import KaLMEncoder, load_model

    if isinstance(model, (str, Path)):
        model = load_model(model)
    frames = []
    for d in dims:
        enc = KaLMEncoder(model, model_name=model_name, dim=int(d), max_length=max_length, bf16=bf16)
        out = Path(output_dir) / f"dim{int(d)}" if output_dir is not None else None
        frames.append(evaluate_model(enc, tasks=tasks, max_rows=max_rows, output_dir=out, **kwargs))
    df = pd.concat(frames, ignore_index=True)
    df["dim"] = df["dim"].astype(int)
    return df[df["main_split"]].reset_index(drop=True)


def stage_gains(df: pd.DataFrame, output_dir: str | Path, order: Sequence[str], *, confidence: float = 0.95,
                n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each model's gain over the one before it in ``order`` (e.g. untrained → pretrain → finetune → distill) on
    every local STS and retrieval task of ``df``, main split, ×100, with a paired-bootstrap interval over the
    task's examples (pairs, queries). Reads the predictions ``evaluate_model(..., save_predictions=True)`` kept
    under ``output_dir``. BCa intervals, or percentile ones where BCa is undefined (the row's ``method`` says which;
    resamples on which the metric is undefined are counted in ``undefined_resamples``). Each task is loaded and
    each model's per-example scores are read once. Other task types have no per-example score: not here.
    """
    from .per_example import gain, per_example_scores, predictions_path
    from .runner import slug

    main = df[df["main_split"]]
    rows = []
    for task, t in per_example_tasks(main).items():
        grp = main[main["task"] == task]
        present = [m for m in order if m in set(grp["model"])]
        scores = {m: per_example_scores(t, predictions_path(Path(output_dir) / slug(m) / "predictions", task))
                  for m in present}
        for before, after in zip(present, present[1:]):
            d = gain(scores[after], scores[before], confidence=confidence, n_resamples=n_resamples, seed=seed)
            rows.append({"task": task, "task_type": grp["task_type"].iloc[0], "from": before, "to": after,
                         "gain": 100 * d.estimate, "ci_low": 100 * d.low, "ci_high": 100 * d.high,
                         "excludes_zero": d.excludes_zero, "n": d.n, "method": d.method,
                         "undefined_resamples": d.undefined_resamples})
    return pd.DataFrame(rows, columns=["task", "task_type", "from", "to", "gain", "ci_low", "ci_high",
                                       "excludes_zero", "n", "method", "undefined_resamples"])


def hub_reachable() -> bool:
    """False when the environment says the Hugging Face Hub is off (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in {"1", "true", "yes"}


def evaluate_released(name: str, benchmarks: Sequence[str] = ("MTEB(eng, v1)", "MTEB(cmn, v1)"),
                      output_dir: str | Path | None = None, **kwargs) -> pd.DataFrame | None:
    """A released model (e.g. ``KaLM-Embedding/KaLM-embedding-multilingual-mini-instruct-v2.5``) on the
    paper's benchmarks, loaded and prompted as mteb's reference loader does. Needs the Hub; returns None
    (with a note) when it is switched off."""
    if not hub_reachable():
        print(f"[evaluate] HF_HUB_OFFLINE is set: {name} on {', '.join(benchmarks)} needs the Hub; skipped")
        return None
    from .encoder import KaLMEncoder, load_model

    enc = KaLMEncoder(load_model(name, max_length=512), model_name=name, use_instructions=True, max_length=512)
    return pd.concat([evaluate_model(enc, tasks=b, output_dir=output_dir, **kwargs) for b in benchmarks],
                     ignore_index=True)


def per_example_tasks(main: pd.DataFrame) -> dict:
    """The STS and retrieval tasks of the result rows ``main`` (main splits), as task objects with the rows' row cap
    (``local_tasks.task_for``: the mirror's copy, or MTEB's task from the Hub): the task types whose predictions
    give a per-example score, so a difference between two models gets a paired interval. In the rows' order."""
    from .local_tasks import task_for

    out = {}
    for task, grp in main.groupby("task", sort=False):
        if grp["task_type"].iloc[0] in ("STS", "Retrieval"):
            cap = grp["max_rows"].iloc[0]
            out[task] = task_for(task, max_rows=None if pd.isna(cap) else int(cap))
    return out
