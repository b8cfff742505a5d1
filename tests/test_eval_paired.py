"""The paired bootstrap of score differences (kalm_lib/evaluation/paired.py; issue 18 item 4).

Known answers: a model against itself (Δ = 0, interval [0, 0]); against its own per-example scores plus a
constant c (every resample's Δ is c: the interval is [c, c]); a mean difference on many examples (the interval
approaches the paired t interval, mean ± t·sd/√N, and a naive percentile bootstrap written out here); a
correlation metric whose two models share most of their error (the paired interval is much narrower than an
unpaired one, which is the point of pairing: it fails if the resampling is not joint).
"""

import numpy as np
import pytest
from scipy import stats

from kalm_lib.evaluation import mean_difference, paired_bootstrap


def _spearman(pred, gold):
    return stats.spearmanr(pred, gold).statistic


def test_a_model_against_itself_is_zero():
    a = np.random.default_rng(0).random(200)
    d = mean_difference(a, a.copy())
    assert d.estimate == 0 and d.low == d.high == 0 and not d.excludes_zero


@pytest.mark.parametrize("c", [0.25, -0.03])
def test_own_scores_plus_a_constant_is_the_constant(c):
    a = np.random.default_rng(1).random(300)
    d = mean_difference(a + c, a)
    assert d.estimate == pytest.approx(c, abs=1e-12)
    assert d.low == pytest.approx(c, abs=1e-12) and d.high == pytest.approx(c, abs=1e-12) and d.excludes_zero


def _naive_percentile(a, b, n_resamples, seed, confidence=0.95):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_resamples, len(a)))
    deltas = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    q = (1 - confidence) / 2
    return np.quantile(deltas, [q, 1 - q])


def test_mean_difference_matches_the_t_interval_and_a_naive_bootstrap():
    rng = np.random.default_rng(2)
    shared = rng.normal(size=3000)                      # what both models get right or wrong alike
    a = shared + rng.normal(0.05, 0.5, size=3000)
    b = shared + rng.normal(0.0, 0.5, size=3000)
    d = mean_difference(a, b, n_resamples=4000, seed=3)
    t = stats.ttest_rel(a, b).confidence_interval(0.95)
    width = t.high - t.low
    assert d.estimate == pytest.approx(np.mean(a - b))
    assert abs(d.low - t.low) < 0.05 * width and abs(d.high - t.high) < 0.05 * width
    lo, hi = _naive_percentile(a, b, 4000, seed=4)
    assert abs(d.low - lo) < 0.05 * width and abs(d.high - hi) < 0.05 * width
    assert d.excludes_zero  # 0.05 mean gain, sd of the difference 0.71 over 3000 examples: ~3.9 standard errors


def test_pairing_cancels_the_shared_error_of_a_correlation_metric():
    rng = np.random.default_rng(5)
    gold = rng.normal(size=400)
    shared = rng.normal(scale=1.0, size=400)           # both models' common mistakes
    a = gold + shared + rng.normal(scale=0.2, size=400)
    b = gold + shared + rng.normal(scale=0.6, size=400)
    d = paired_bootstrap(_spearman, (a, gold), (b, gold), n_resamples=1000, method="percentile", seed=0)
    assert d.estimate == pytest.approx(_spearman(a, gold) - _spearman(b, gold))
    assert d.low < d.estimate < d.high and d.excludes_zero
    # unpaired: each model's score from its own independent resample of the examples
    r = np.random.default_rng(1)
    un = []
    for _ in range(1000):
        i, j = r.integers(0, 400, 400), r.integers(0, 400, 400)
        un.append(_spearman(a[i], gold[i]) - _spearman(b[j], gold[j]))
    lo, hi = np.quantile(un, [0.025, 0.975])
    assert (d.high - d.low) < 0.5 * (hi - lo)
    assert lo < 0 < hi  # without pairing the same gain is not distinguishable from noise


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="same examples"):
        mean_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite value at example 1"):
        mean_difference([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2"):
        mean_difference([1.0], [2.0])
    with pytest.raises(ValueError, match=r"lengths \[3, 2\]"):
        paired_bootstrap(_spearman, ([1.0, 2.0, 3.0], [1.0, 2.0]), ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]))


def test_resamples_with_an_undefined_metric_are_left_out_and_counted():
    """Spearman is undefined on a resample whose gold scores all tie (likely with few examples): such resamples
    are counted and the interval comes from the others; undefined on the sample itself is an error."""
    gold = np.array([0.0, 0.0, 0.0, 1.0, 2.0])
    a, b = np.array([0.1, 0.2, 0.3, 0.9, 0.8]), np.array([0.3, 0.2, 0.1, 0.5, 0.9])
    d = paired_bootstrap(_spearman, (a, gold), (b, gold), n_resamples=400, seed=0)
    assert 0 < d.undefined_resamples < 200 and d.method == "percentile"
    assert np.isfinite([d.low, d.high]).all() and d.low <= d.high
    with pytest.raises(ValueError, match="undefined on the 5 examples themselves"):
        paired_bootstrap(_spearman, (a, np.zeros(5)), (b, np.zeros(5)))


def test_score_interval_of_a_mean_is_the_t_interval():
    """One model's own interval: for a mean on many examples it approaches mean ± t·sd/√N."""
    from kalm_lib.evaluation.paired import score_interval

    a = np.random.default_rng(5).normal(0.6, 0.2, size=2000)
    d = score_interval(np.mean, a, vectorized=True, n_resamples=4000)
    half = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    assert d.estimate == pytest.approx(a.mean())
    assert d.low == pytest.approx(a.mean() - half, abs=0.15 * half)
    assert d.high == pytest.approx(a.mean() + half, abs=0.15 * half)
    const = score_interval(np.mean, np.full(50, 0.3), vectorized=True)
    assert const.low == const.high == pytest.approx(0.3)
    with pytest.raises(ValueError, match="same examples"):
        score_interval(_spearman, (np.arange(5.0), np.arange(4.0)))
