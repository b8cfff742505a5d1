"""Per-example scores from mteb's saved predictions (kalm_lib/evaluation/per_example.py; issue 18 item 1's
stage-gain intervals): rebuilt example by example, they give back the main score mteb reported, and the paired
gain of one model over another is the difference of those scores with an interval."""

import pytest

pytest.importorskip("mteb")

from kalm_lib.evaluation import evaluate_model, get_local_task, paired_gain, per_example_scores  # noqa: E402
from kalm_lib.evaluation.per_example import predictions_path  # noqa: E402
from kalm_lib.model import KaLMEmbedder  # noqa: E402

CAPS = {"STSBenchmark": 60, "SciFact": 12}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("eval")
    scores = {}
    for seed in (0, 1):
        df = evaluate_model(KaLMEmbedder.tiny(seed=seed), tasks=CAPS, output_dir=out, model_name=f"t/seed{seed}",
                            save_predictions=True)
        scores[seed] = df[df.main_split].set_index("task").main_score.to_dict()
    return out, scores


def _preds(out, seed, task):
    return predictions_path(out / f"t__seed{seed}" / "predictions", task)


@pytest.mark.parametrize("task,tol", [("STSBenchmark", 1e-9), ("SciFact", 1e-5)])  # mteb rounds nDCG to 5 digits
def test_per_example_scores_give_back_mtebs_main_score(runs, task, tol):
    out, scores = runs
    for seed in (0, 1):
        pe = per_example_scores(get_local_task(task, max_rows=CAPS[task]), _preds(out, seed, task))
        assert len(pe.ids) == CAPS[task]  # pairs / queries
        assert pe.score() == pytest.approx(scores[seed][task], abs=tol)


@pytest.mark.parametrize("task", list(CAPS))
def test_paired_gain_is_the_score_difference_with_an_interval(runs, task):
    out, scores = runs
    t = get_local_task(task, max_rows=CAPS[task])
    d = paired_gain(t, _preds(out, 0, task), _preds(out, 1, task), n_resamples=500, method="percentile")
    assert d.estimate == pytest.approx(scores[0][task] - scores[1][task], abs=1e-5)
    assert d.low <= d.estimate <= d.high and d.n == CAPS[task]
    same = paired_gain(t, _preds(out, 0, task), _preds(out, 0, task), n_resamples=200)
    assert same.estimate == same.low == same.high == 0


def test_mismatched_or_missing_predictions_are_clear_errors(runs, tmp_path):
    out, _ = runs
    with pytest.raises(ValueError, match="another row cap"):
        per_example_scores(get_local_task("STSBenchmark", max_rows=30), _preds(out, 0, "STSBenchmark"))
    with pytest.raises(FileNotFoundError, match="save_predictions=True"):
        per_example_scores(get_local_task("SciFact", max_rows=12), tmp_path / "SciFact_predictions.json")
    with pytest.raises(ValueError, match="no per-example main score"):
        per_example_scores(get_local_task("Banking77Classification", max_rows=50), _preds(out, 0, "STSBenchmark"))
    with pytest.raises(ValueError, match="needs an output_dir"):
        evaluate_model(KaLMEmbedder.tiny(seed=0), tasks={"STSBenchmark": 10}, save_predictions=True)


def test_stage_gains_table(runs):
    """Consecutive models' gains per STS/retrieval task, ×100, equal to the main-score differences."""
    import pandas as pd

    from kalm_lib.evaluation import stage_gains

    out, scores = runs
    df = pd.concat([pd.read_csv(out / f"t__seed{s}" / "results.csv") for s in (0, 1)], ignore_index=True)
    g = stage_gains(df, out, ["t/seed0", "t/seed1"], n_resamples=300).set_index("task")
    assert set(g.index) == set(CAPS) and (g["from"] == "t/seed0").all() and (g["to"] == "t/seed1").all()
    for task in CAPS:
        assert g.loc[task, "gain"] == pytest.approx(100 * (scores[1][task] - scores[0][task]), abs=1e-3)
        assert g.loc[task, "ci_low"] <= g.loc[task, "gain"] <= g.loc[task, "ci_high"]
        assert g.loc[task, "n"] == CAPS[task]
