"""One entry point: evaluate a model on local tasks (offline) or on MTEB benchmarks (Hub).

    from kalm_lib.evaluation import evaluate_model, LOCAL_SUITE, SMOKE_SUITE
    df = evaluate_model(model, tasks=SMOKE_SUITE, output_dir="runs/x/eval", model_name="student/init")

``model`` is a KaLMEmbedder, a SentenceTransformer or a path / Hub id. Returns one row per
(task, split, subset) with ``main_score`` (MTEB's main metric, 0–1) and ``main_split`` marking the
split that enters averages. Results are written atomically as JSON and CSV (plus mteb's own JSON
per task) under ``output_dir/<model slug>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from .benchmarks import BENCHMARKS, benchmark_tasks, main_split
from .encoder import KaLMEncoder
from .local_tasks import SPECS, SUITES, task_for
from .tables import slug, write_json, write_results

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["model", "task", "mteb_task", "task_type", "language", "split", "subset", "main_split",
                  "metric", "main_score", "max_rows", "dim", "comparable", "eval_seconds", "note"]


def resolve_tasks(tasks: Any, max_rows: int | None = None) -> list:
    """Task objects from names, a ``{name: row cap}`` dict, a suite name (``SUITES``), a benchmark name,
    or task objects.

    Local names (``LOCAL_SUITE``) load from the mirror, or without one stand for their MTEB task; any other name
    is MTEB's own task, its data from the Hub or ``KALM_HUB_DIR`` (``local_tasks.task_for``). A per-task cap and
    the global ``max_rows`` combine as their minimum; a capped score is never marked comparable.
    """
    if isinstance(tasks, str) and tasks in SUITES:
        tasks = SUITES[tasks]
    if isinstance(tasks, str):
        if tasks in BENCHMARKS:
            from kalm_lib.data.hub_eval import as_hub_task

            return [as_hub_task(t, max_rows) for t in benchmark_tasks(tasks)]
        tasks = [tasks]
    caps: Mapping[str, int | None] = tasks if isinstance(tasks, Mapping) else {}
    out = []
    for t in tasks:
        if not isinstance(t, str):
            out.append(t)
        elif t in BENCHMARKS:  # a list may name whole benchmarks: ["MTEB(eng, v1)", "MTEB(cmn, v1)"]
            out += resolve_tasks(t, _min_cap(caps.get(t), max_rows))
        else:
            out.append(task_for(t, _min_cap(caps.get(t), max_rows)))
    return out


@contextmanager
def _quiet(on: bool):
    """Silence what floods a notebook: datasets' per-map progress bars and sklearn's warnings about
    classes a weak model never predicts (the scores already say so)."""
    if not on:
        yield
        return
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ill-defined.*")
            warnings.filterwarnings("ignore", message=".*number of unique classes.*")
            yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _earlier_rows(out_dir: Path) -> pd.DataFrame | None:
    f = out_dir / "results.csv"
    if not f.is_file():
        return None
    d = pd.read_csv(f)
    if set(RESULT_COLUMNS) - set(d.columns):
        return None
    return _typed(d)


def _typed(d: pd.DataFrame) -> pd.DataFrame:
    """Result rows read back from CSV with their booleans and empty notes restored."""
    d["main_split"] = d["main_split"].astype(str).str.lower().isin(["true", "1"])
    d["comparable"] = d["comparable"].astype(str).str.lower().isin(["true", "1"])
    d["note"] = d["note"].fillna("")
    return d


def _same(col: pd.Series, value) -> pd.Series:
    return col.isna() if value is None else (col == value)


def _min_cap(a: int | None, b: int | None) -> int | None:
    caps = [int(c) for c in (a, b) if c is not None]
    return min(caps) if caps else None


def evaluate_model(model: Any, tasks: Any = None, output_dir: str | Path | None = None,
                   model_name: str | None = None, dim: int | None = None, max_rows: int | None = None,
                   batch_size: int = 32, use_instructions: bool | None = None, max_length: int | None = None,
                   show_progress_bar: bool = False, reuse: bool = False,
                   save_predictions: bool = False, cache_dir: str | Path | None = None,
                   bf16: bool | None = None) -> pd.DataFrame:
    """Evaluate ``model`` and return a results DataFrame (see ``RESULT_COLUMNS``).

    Args:
        model: KaLMEmbedder | SentenceTransformer | path / Hub id | a ready ``KaLMEncoder``.
        tasks: local task names (default: ``LOCAL_SUITE``), a ``{name: row cap}`` dict such as
            ``SMOKE_SUITE``, a benchmark name ("MTEB(eng, v1)", "MTEB(cmn, v1)"; needs the Hub), or task objects.
        output_dir: where ``<model slug>/results.{json,csv}`` and ``<model slug>/mteb/<task>.json`` go.
        model_name: the label in tables and the results folder name (default: the model's own name).
        dim: Matryoshka dimension (None = full embedding).
        max_rows: row cap per task for smoke runs; capped rows are marked ``comparable=False``.
        batch_size: encode batch size.
        use_instructions: KaLM-V2 prompts on/off (default on for KaLM models, off for other
            sentence-transformers models, as in their published MTEB runs).
        max_length: token cap at encode time (None = the model's own).
        reuse: take a task's rows from an earlier ``results.csv`` in the same folder when its row cap and
            dimension match (for a fixed model such as the teacher; never for a model that changed).
        save_predictions: also keep mteb's per-example predictions in ``<model slug>/predictions/`` (needs
            ``output_dir``), from which ``per_example.paired_gain`` gives a score difference's interval.
        bf16: bf16 autocast at encode time for a KaLMEmbedder (None: on a GPU only; see ``KaLMEmbedder.encode``).
        cache_dir: a content-addressed cache (``evaluation.cache``): a task already scored for a model with the
            same weights and settings is read from there, under any label, instead of being encoded again.
    """
    import mteb

    if tasks is None:
        from .local_tasks import LOCAL_SUITE

        tasks = LOCAL_SUITE
    task_objs = resolve_tasks(tasks, max_rows)
    encoder = model if isinstance(model, KaLMEncoder) else KaLMEncoder(
        model, model_name=model_name, dim=dim, use_instructions=use_instructions, max_length=max_length, bf16=bf16)
    name = encoder.display_name
    dim = encoder.dim
    out_dir = Path(output_dir) / slug(name) if output_dir is not None else None
    if save_predictions and out_dir is None:
        raise ValueError("evaluate_model(save_predictions=True) needs an output_dir to write them to")
    pred_dir = out_dir / "predictions" if save_predictions else None

    rows: list[dict] = []
    earlier = _earlier_rows(out_dir) if reuse and out_dir is not None else None
    fingerprint = None
    if cache_dir is not None:
        from . import cache

        fingerprint = cache.model_fingerprint(encoder.model)
        encoding = {"dim": dim, "use_instructions": encoder.use_instructions, "max_length": encoder.max_length,
                    "passages_instructed": encoder.apply_instruction_to_passages,
                    "bf16": encoder.bf16 if encoder.is_kalm else None,
                    "prompts": hashlib.sha256(json.dumps(encoder.prompts_dict, sort_keys=True).encode()).hexdigest()}
    for task in task_objs:
        task_name = task.metadata.name
        if fingerprint is not None:
            settings = {"task": task_name, "max_rows": getattr(task, "max_rows", None), **encoding}
            if getattr(task, "hub_task", False):  # MTEB's own copy, not the mirror's (a mirror key stays as it was)
                settings["source"] = "hub"
            key = cache.entry_key(fingerprint, **settings)
            pred_file = pred_dir / f"{task_name}_predictions.json" if pred_dir is not None else None
            mteb_json = out_dir / "mteb" / f"{slug(task_name)}.json" if out_dir is not None else None
            hit = cache.load(cache_dir, key, copy_to={"predictions.json": pred_file, "mteb.json": mteb_json},
                             required=("predictions.json",) if pred_file is not None else ())
            if hit is not None:
                hit = _typed(hit).assign(model=name)
                rows.extend(hit.to_dict(orient="records"))
                logger.info("%s on %s: %.4f (cached: same weights and settings)", name, task_name,
                            rows[-1]["main_score"])
                continue
        if earlier is not None:
            same = earlier[(earlier.task == task_name) & _same(earlier.max_rows, getattr(task, "max_rows", None))
                           & _same(earlier.dim, dim)]
            if len(same):
                rows.extend(same.to_dict(orient="records"))
                logger.info("%s on %s: reused %s", name, task_name, out_dir / "results.csv")
                continue
        task.load_data()  # here, not inside mteb, so a bad local file fails with its own message
        t0 = time.perf_counter()
        with _quiet(not show_progress_bar):
            result = mteb.evaluate(encoder, task, cache=None, raise_error=True, co2_tracker=False,
                                   show_progress_bar=False, prediction_folder=pred_dir,
                                   encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar})
        seconds = time.perf_counter() - t0
        task_result = result.task_results[0]
        new = _rows(task, task_result, name, dim, seconds)
        rows.extend(new)
        if out_dir is not None:
            write_json(out_dir / "mteb" / f"{slug(task_name)}.json", task_result.to_dict())
        if fingerprint is not None:
            cache.store(cache_dir, key, pd.DataFrame(new, columns=RESULT_COLUMNS), {"fingerprint": fingerprint, **settings},
                        files={"predictions.json": pred_file, "mteb.json": mteb_json})
        task.unload_data() if hasattr(task, "unload_data") else None
        logger.info("%s on %s: %.4f (%.0f s)", name, task_name, rows[-1]["main_score"], seconds)

    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if out_dir is not None:
        write_results(df, out_dir, stem="results")
    return df


def _rows(task, task_result, model_name: str, dim: int | None, seconds: float) -> list[dict]:
    meta = task.metadata
    spec = SPECS.get(meta.name) if getattr(task, "local_spec", None) is not None else None
    cap = getattr(task, "max_rows", None)
    primary = main_split(list(task_result.scores))
    out = []
    for split, entries in task_result.scores.items():
        for entry in entries:
            score = float(entry["main_score"])
            out.append({
                "model": model_name,
                "task": meta.name,
                "mteb_task": (spec.mteb_name if spec else meta.name),
                "task_type": meta.type,
                "language": spec.language if spec else _lang(entry.get("languages") or meta.eval_langs),
                "split": split,
                "subset": entry.get("hf_subset", "default"),
                "main_split": split == primary,
                "metric": meta.main_score,
                "main_score": score if not math.isnan(score) else float("nan"),
                "max_rows": cap,
                "dim": dim,
                "comparable": bool((spec.complete if spec else True) and cap is None),
                "eval_seconds": round(seconds, 2),
                "note": (spec.note if spec else "") + _hub_note(task)
                        + (f" capped at {cap} rows: not comparable with MTEB" if cap is not None else ""),
            })
    return out


def _hub_note(task) -> str:
    """Said in the row of an MTEB task read in place of a local one (no data mirror)."""
    stands = getattr(task, "stands_for", None)
    return f"MTEB's {task.metadata.name} from the Hub, in place of {stands} (no data mirror)" if stands else ""


def _lang(langs) -> str:
    """"en" / "zh" from the evaluated subset's ISO codes (e.g. ["eng-Latn"]), else the first code."""
    langs = langs if isinstance(langs, list) else [x for v in langs.values() for x in v]
    first = langs[0] if langs else ""
    return {"eng": "en", "cmn": "zh", "zho": "zh"}.get(first.split("-")[0], first)


MODELS_FILE = "models.json"
"""``output_dir/models.json``: the labels of the models the latest run evaluated there, in table order."""


def record_models(output_dir: str | Path, labels: Iterable[str]) -> Path:
    """Write ``output_dir/models.json`` (atomically): which result folders belong to the latest run.

    A results folder is named after its model's label, so renaming a label or dropping a stage leaves the
    old folder behind; it is kept (nothing computed is deleted), and readers such as the book use this
    list to show only the latest run's models, in this order (``listed_models``)."""
    labels = list(dict.fromkeys(str(x) for x in labels))
    return write_json(Path(output_dir) / MODELS_FILE, {"models": labels, "written": time.strftime("%Y-%m-%d %H:%M:%S %Z")})


def listed_models(output_dir: str | Path) -> list[str] | None:
    """The labels ``record_models`` wrote in ``output_dir``; None when there is no list (older runs)."""
    path = Path(output_dir) / MODELS_FILE
    if not path.is_file():
        return None
    try:
        models = json.loads(path.read_text(encoding="utf-8"))["models"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a model list written by record_models ({type(err).__name__}: {err}); "
                         f"delete it or re-run notebook 05_evaluate") from None
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ValueError(f"{path}: field 'models' must be a list of labels, got {models!r}")
    return models


def evaluate_checkpoints(checkpoints: Mapping[str, Any] | Iterable[tuple[str, Any]], **kwargs) -> pd.DataFrame:
    """``evaluate_model`` for several models ({name: model or path}); missing paths are skipped with a note."""
    items = checkpoints.items() if isinstance(checkpoints, Mapping) else checkpoints
    frames = []
    for name, model in items:
        if isinstance(model, (str, Path)) and not Path(model).exists() and Path(model).is_absolute():
            print(f"[evaluate] skipping {name}: {model} does not exist")
            continue
        frames.append(evaluate_model(model, model_name=name, **kwargs))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESULT_COLUMNS)
