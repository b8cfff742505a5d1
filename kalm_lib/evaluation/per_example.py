"""Per-example scores from mteb's saved predictions, and the paired gain of one model over another.

``evaluate_model(..., save_predictions=True)`` passes mteb a ``prediction_folder``; mteb then writes
``<task>_predictions.json`` beside the results: for an STS task the cosine similarity of every pair, for a
retrieval task the ranked documents of every query. From those and the task's gold data this module rebuilds
the task's main score example by example, with mteb's own metric code where it has one:

* STS (main score ``cosine_spearman``): examples = sentence pairs; S = Spearman(cosine, gold);
* retrieval (main score ``ndcg_at_10``): examples = queries; nDCG@10 per query from
  ``mteb._evaluators.retrieval_metrics.calculate_retrieval_scores`` (pytrec_eval, as mteb scores it);
  S = their mean.

``paired_gain`` then gives Δ = S(A) − S(B) with its paired-bootstrap interval (``paired.py``). Other task
types (classification trains a probe, clustering scores a partition) have no per-example main score; for
them the intervals must come from seeds, and asking here is a clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import stats

from .benchmarks import main_split
from .paired import PairedDifference, paired_bootstrap


def _spearman(pred, gold) -> float:
    return float(stats.spearmanr(pred, gold).statistic)


@dataclass
class PerExample:
    """A task's main score, example by example: ``metric(*values)`` is the score; ``ids`` name the examples."""

    task: str
    split: str
    ids: list[str]
    values: tuple[np.ndarray, ...]
    metric: Callable[..., float]
    vectorized: bool

    def score(self) -> float:
        return float(self.metric(*self.values))


def predictions_path(folder: str | Path, task_name: str) -> Path:
    return Path(folder) / f"{task_name}_predictions.json"


def _split_rows(dataset: Any, subset: str, split: str):
    if subset in dataset and split in dataset[subset]:
        return dataset[subset][split]
    return dataset[split]


def per_example_scores(task, predictions_file: str | Path, *, split: str | None = None,
                       subset: str = "default") -> PerExample:
    """``task``: the mteb task object that was evaluated (the same row cap), its data loaded or loadable."""
    path = Path(predictions_file)
    meta = task.metadata
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved predictions for {meta.name}; evaluate with "
                                "evaluate_model(..., save_predictions=True)")
    saved = json.loads(path.read_text(encoding="utf-8"))
    if subset not in saved:
        raise KeyError(f"{path}: no subset {subset!r} (has {sorted(k for k in saved if k != 'mteb_model_meta')})")
    split = split or main_split(list(saved[subset]))
    if split not in saved[subset]:
        raise KeyError(f"{path}: subset {subset!r} has no split {split!r} (has {sorted(saved[subset])})")
    pred = saved[subset][split]
    if not getattr(task, "data_loaded", False):
        task.load_data()
    rows = _split_rows(task.dataset, subset, split)
    if meta.type == "STS":
        if meta.main_score != "cosine_spearman":
            raise ValueError(f"{meta.name}: main score {meta.main_score!r}; per-example STS supports cosine_spearman")
        cos = np.asarray(pred["cosine_scores"], dtype=float)
        gold = np.asarray(rows["score"], dtype=float)
        if len(cos) != len(gold):
            raise ValueError(f"{path}: {len(cos)} cosine scores for {len(gold)} pairs of {meta.name}/{split}: the "
                             "predictions come from another row cap or version of the task")
        return PerExample(meta.name, split, [str(i) for i in range(len(gold))], (cos, gold), _spearman, False)
    if meta.type == "Retrieval":
        if meta.main_score != "ndcg_at_10":
            raise ValueError(f"{meta.name}: main score {meta.main_score!r}; per-query retrieval supports ndcg_at_10")
        from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

        qrels = rows["relevant_docs"]
        missing = sorted(set(qrels) - set(pred))
        if missing:
            raise ValueError(f"{path}: no ranking for {len(missing)} of the {len(qrels)} judged queries of "
                             f"{meta.name}/{split} (first: {missing[0]!r}): predictions of another row cap?")
        per_query = calculate_retrieval_scores(pred, qrels, [10]).all_scores
        ids = sorted(per_query)
        ndcg = np.array([per_query[q]["ndcg_cut_10"] for q in ids], dtype=float)
        return PerExample(meta.name, split, ids, (ndcg,), np.mean, True)
    raise ValueError(f"{meta.name}: a {meta.type} task has no per-example main score (only STS and retrieval "
                     "here); use intervals over seeds")


def paired_gain(task, predictions_a: str | Path, predictions_b: str | Path, **kw) -> PairedDifference:
    """Δ = S(A) − S(B) on ``task`` with its paired-bootstrap interval (``paired_bootstrap``'s keywords)."""
    a = per_example_scores(task, predictions_a)
    return gain(a, per_example_scores(task, predictions_b, split=a.split), **kw)


def gain(a: PerExample, b: PerExample, **kw) -> PairedDifference:
    """Δ = S(A) − S(B) of two models' per-example scores on the same examples, with its interval."""
    if a.ids != b.ids:
        raise ValueError(f"{a.task}: the two prediction files score different examples "
                         f"({len(a.ids)} vs {len(b.ids)}); evaluate both with the same row cap")
    return paired_bootstrap(a.metric, a.values, b.values, vectorized=a.vectorized, **kw)
