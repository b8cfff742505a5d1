"""Paired bootstrap: is model A's score really above model B's on the same evaluation examples?

Two models scored on the same N examples give per-example values (a_i, b_i). Their score difference

    Δ = S(a_1 … a_N) − S(b_1 … b_N)

(S = the task's metric: a mean of per-query nDCG, a Spearman correlation of predictions with gold, …) is
uncertain because the N examples are a sample. The paired bootstrap draws N example indices with
replacement, i*_1 … i*_N, and recomputes

    Δ* = S(a_{i*_1} … a_{i*_N}) − S(b_{i*_1} … b_{i*_N})

with the *same* indices on both sides, so what the two models share (an example that is hard for both)
cancels; the 95% interval of Δ is read from many Δ* (BCa by default; percentile on request, or where BCa is
undefined or some Δ* are, and ``PairedDifference.method`` says which). An interval
that excludes 0 is evidence that the difference is not the examples' noise; one that includes 0 is not
evidence of equality, only of not knowing.

The resampling and the interval are ``scipy.stats.bootstrap`` (``paired=True``); this module only says
what is paired with what and handles the cases where scipy's BCa returns NaN (every Δ* equal, e.g. a model
against itself; a resample on which the metric is undefined).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """Δ = S(A) − S(B) on the same examples, with its bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    n_resamples: int
    method: str
    undefined_resamples: int = 0  # resamples whose metric is undefined (NaN), left out of the interval

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.estimate:+.4g} [{self.low:+.4g}, {self.high:+.4g}]"


def _parts(x, side: str) -> tuple[np.ndarray, ...]:
    parts = tuple(np.asarray(p, dtype=float) for p in (x if isinstance(x, tuple) else (x,)))
    for k, p in enumerate(parts):
        if p.ndim == 0:
            raise ValueError(f"paired bootstrap: {side}[{k}] is a scalar; pass one value per evaluation example")
        if not np.isfinite(p).all():
            bad = int(np.flatnonzero(~np.isfinite(p.reshape(len(p), -1)).all(axis=1))[0])
            raise ValueError(f"paired bootstrap: {side}[{k}] has a non-finite value at example {bad}")
    return parts


def paired_bootstrap(metric: Callable[..., float], a, b, *, confidence: float = 0.95, n_resamples: int = 9999,
                     seed: int = 0, method: str = "BCa", vectorized: bool = False) -> PairedDifference:
    """Interval of ``metric(*a) − metric(*b)`` under joint resampling of the evaluation examples.

    ``a`` and ``b`` are each a per-example array (N, …) or a tuple of them that ``metric`` maps to one score,
    e.g. ``(predicted_similarity, gold)`` with ``metric = lambda p, g: spearmanr(p, g).statistic``. Every array
    of both sides must have the same N: example i of A is example i of B. ``vectorized=True`` means that
    ``metric(*arrays, axis=-1)`` scores a batch of resamples at once (as ``np.mean`` does): much faster.
    """
    pa, pb = _parts(a, "a"), _parts(b, "b")
    ns = {len(p) for p in pa + pb}
    if len(ns) != 1:
        raise ValueError(f"paired bootstrap: the two sides must score the same examples; got lengths "
                         f"{[len(p) for p in pa]} (a) and {[len(p) for p in pb]} (b)")
    n = ns.pop()
    if n < 2:
        raise ValueError(f"paired bootstrap: {n} evaluation example(s); at least 2 are needed")
    k = len(pa)

    if vectorized:
        def delta(*arrays, axis=-1):
            return metric(*arrays[:k], axis=axis) - metric(*arrays[k:], axis=axis)
    else:
        def delta(*arrays):
            return metric(*arrays[:k]) - metric(*arrays[k:])

    return _bootstrap(delta, (*pa, *pb), n, confidence=confidence, n_resamples=n_resamples, seed=seed,
                      method=method, vectorized=vectorized)


def score_interval(metric: Callable[..., float], a, *, confidence: float = 0.95, n_resamples: int = 9999,
                   seed: int = 0, method: str = "BCa", vectorized: bool = False) -> PairedDifference:
    """One model's score ``metric(*a)`` with its bootstrap interval over the evaluation examples (the same
    resampling as :func:`paired_bootstrap`, one side only); ``estimate`` is the score itself."""
    pa = _parts(a, "a")
    ns = {len(p) for p in pa}
    if len(ns) != 1:
        raise ValueError(f"bootstrap: the arrays must score the same examples; got lengths {[len(p) for p in pa]}")
    n = ns.pop()
    if n < 2:
        raise ValueError(f"bootstrap: {n} evaluation example(s); at least 2 are needed")
    return _bootstrap(metric, pa, n, confidence=confidence, n_resamples=n_resamples, seed=seed, method=method,
                      vectorized=vectorized)


def _bootstrap(stat: Callable[..., float], data: tuple[np.ndarray, ...], n: int, *, confidence: float,
               n_resamples: int, seed: int, method: str, vectorized: bool) -> PairedDifference:
    """scipy's paired bootstrap of ``stat(*data)`` with the degenerate cases handled (see the module doc)."""
    estimate = float(stat(*data))
    if not np.isfinite(estimate):
        raise ValueError(f"paired bootstrap: the metric is undefined on the {n} examples themselves (Δ = {estimate}; "
                         "e.g. constant predictions or gold scores for a correlation)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = stats.bootstrap(data, stat, paired=True, vectorized=vectorized, n_resamples=n_resamples,
                              confidence_level=confidence, method=method, random_state=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    defined = dist[np.isfinite(dist)]
    undefined = dist.size - defined.size
    if undefined > n_resamples // 2:
        # a resample of few examples can make the metric undefined (all its gold scores tied: Spearman is NaN)
        raise ValueError(f"paired bootstrap: the metric is undefined on {undefined} of {n_resamples} resamples "
                         f"of the {n} examples: too few examples for an interval")
    if np.ptp(defined) <= 1e-12 * max(1.0, abs(estimate)):
        # every Δ* equal (a model against itself, or against itself plus a constant): the interval is the
        # point itself; scipy's BCa is undefined here (it warns and returns NaN), and its warnings say nothing more
        low = high = estimate
        caught = []
    elif undefined or not (np.isfinite(low) and np.isfinite(high)):
        # resamples with an undefined metric are left out and counted, or BCa itself is undefined (e.g. a
        # handful of queries, most scoring 0): the percentile interval of the same resamples, and ``method`` says so
        q = (1 - confidence) / 2
        low, high = (float(x) for x in np.quantile(defined, [q, 1 - q]))
        method = "percentile"
        caught = []
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return PairedDifference(estimate, low, high, confidence, n, n_resamples, method, undefined)


def mean_difference(a: Sequence[float], b: Sequence[float], **kw) -> PairedDifference:
    """Δ of two per-example score lists whose task score is their mean (nDCG@10 per query, accuracy per item)."""
    return paired_bootstrap(np.mean, a, b, vectorized=True, **kw)
