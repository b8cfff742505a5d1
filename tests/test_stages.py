"""A few-step run of each stage on the real local data (ci profile, cut further) whose loss falls."""

import numpy as np
import pytest

from kalm_lib import stages
from kalm_lib.config import stage_config
from kalm_lib.train import read_metrics, train_stage

# Small data repeated over several epochs so that 24 steps show a clear downward trend.
FAST = {"data.max_rows_per_dataset": 16, "optim.max_steps": 24, "optim.batch_size": 8, "optim.lr": 2e-3,
        "optim.warmup_ratio": 0.0, "progress_bar": False}


def _falls(run_dir, stage, key="loss"):
    m = read_metrics(run_dir / stage)
    first, last = np.mean(m[key][:6]), np.mean(m[key][-6:])
    assert last < 0.8 * first, f"{stage}: {key} did not fall ({first:.3f} -> {last:.3f})"


def test_mining_options_reach_mine_dataset(tmp_path, monkeypatch, data_dir):
    """A profile's mining.sample_range / filter_topk are passed on; absent, mine_dataset's defaults apply."""
    import kalm_lib.data as data
    from kalm_lib.data.mining import MiningReport

    seen = []

    def fake_mine(name, embedder, out_dir, **kw):
        seen.append(kw)
        return [], MiningReport(name=name, n_queries=1, n_kept=1, n_filtered=0, corpus_size=1,
                                sample_range=kw.get("sample_range", (50, 100)), filter_topk=kw.get("filter_topk", 50),
                                seconds=0.0)

    monkeypatch.setattr(data, "mine_dataset", fake_mine)
    import dataclasses
    base = stages.load_profile("ci")
    # the profile's own values, then the paper's defaults when a profile does not set them
    for mining, want in (({"sample_range": [10, 20], "filter_topk": None}, {"sample_range": (10, 20), "filter_topk": None}),
                         ({"sample_range": [50, 100], "filter_topk": 50}, {"sample_range": (50, 100), "filter_topk": 50})):
        prof = dataclasses.replace(base, mining=dataclasses.replace(base.mining, **mining))
        monkeypatch.setattr(stages, "load_profile", lambda _p, prof=prof: prof)
        seen.clear()
        df = stages.mine_for_finetune("ci", tmp_path, embedder=object())
        assert len(seen) == len(base.mining.datasets) == len(df)
        for kw in seen:
            assert {k: kw[k] for k in ("sample_range", "filter_topk")} == want
    from kalm_lib.config import MiningConfig
    assert (MiningConfig().sample_range, MiningConfig().filter_topk) == ([50, 100], 50)


@pytest.mark.slow
def test_three_stages_loss_falls(tmp_path):
    run = tmp_path / "run"
    train_stage(stage_config("ci", "pretrain", run, FAST))
    _falls(run, "pretrain")
    mined = stages.mine_for_finetune("ci", run)
    assert mined["queries"].sum() > 0 and (run / "mined").is_dir()
    train_stage(stage_config("ci", "finetune", run, FAST))
    _falls(run, "finetune")
    written = stages.score_for_distill("ci", run)
    # one teacher file per dataset as it trains (without a mirror: per Hub subset of hub-finetune-kalm)
    from kalm_lib.data.hub import expand_datasets

    assert set(written) == {e.name for e, _ in expand_datasets(stage_config("ci", "distill", run).data.datasets)}
    train_stage(stage_config("ci", "distill", run, FAST))
    _falls(run, "distill")
    _falls(run, "distill", key="distill")
