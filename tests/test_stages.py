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
    assert set(written) == set(stage_config("ci", "distill", run).data.datasets)
    train_stage(stage_config("ci", "distill", run, FAST))
    _falls(run, "distill")
    _falls(run, "distill", key="distill")
