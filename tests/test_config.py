"""One typed configuration: every profile × stage against a table of the paper-relevant values written here,
one entry point, one merge rule, a typed profile, and no stage file borrowed silently from another profile."""

import dataclasses

import pytest

from kalm_lib.config import (STAGES, ConfigError, ProfileConfig, available_profiles, load_config, load_profile,
                             merge, stage_config)
from kalm_lib.losses import ObjectiveConfig

MRL_SMOKE = ((128, 64, 32, 16), (1.0, 0.3, 0.2, 0.1))
MRL_PAPER = ((896, 512, 256, 128, 64), (1.0, 0.3, 0.2, 0.1, 0.1))
MRL_CI = ((32, 16), (1.0, 0.3))
MRL_CPU = ((576, 256, 128, 64), (1.0, 0.3, 0.2, 0.1))

# profile, stage: τ, γ, M, global batch, lr, (MRL dims, weights), (pairwise mixes, list-wise), (α_cl, α_kd), τ_kd
TABLE = {
    ("smoke", "pretrain"): (0.05, 0.0, 0, 32, 2e-4, MRL_SMOKE, (0, False), (1.0, 0.0), 0.05),
    ("smoke", "finetune"): (0.05, 0.5, 3, 16, 1e-4, MRL_SMOKE, (1, True), (1.0, 0.0), 0.05),
    ("smoke", "distill"): (0.05, 0.5, 3, 16, 1e-4, MRL_SMOKE, (1, True), (1.0, 1.0), 0.05),
    ("ci", "pretrain"): (0.05, 0.0, 0, 8, 2e-4, MRL_CI, (0, False), (1.0, 0.0), 0.05),
    ("ci", "finetune"): (0.05, 0.5, 3, 8, 1e-4, MRL_CI, (1, True), (1.0, 0.0), 0.05),
    ("ci", "distill"): (0.05, 0.5, 3, 8, 1e-4, MRL_CI, (1, True), (1.0, 1.0), 0.05),
    ("cpu", "pretrain"): (0.05, 0.0, 0, 32, 5e-5, MRL_CPU, (0, False), (1.0, 0.0), 0.05),
    ("cpu", "finetune"): (0.05, 0.5, 3, 16, 5e-5, MRL_CPU, (1, True), (1.0, 0.0), 0.05),
    ("cpu", "distill"): (0.05, 0.5, 3, 16, 3e-5, MRL_CPU, (1, True), (1.0, 1.0), 0.05),
    # the paper (PAPER.md §2-§3): τ 0.01, M 7, lr 1e-5, MRL 896..64 with 1/.3/.2/.1/.1, τ_kd 0.05; γ 0.5, one mix
    # of each kind and CL:KL 1:1 are our choices where the paper is silent
    ("gpu", "pretrain"): (0.01, 0.0, 0, 512, 1e-4, MRL_PAPER, (0, False), (1.0, 0.0), 0.05),
    ("gpu", "finetune"): (0.01, 0.5, 7, 64, 1e-5, MRL_PAPER, (1, True), (1.0, 0.0), 0.05),
    ("gpu", "distill"): (0.01, 0.5, 7, 64, 5e-6, MRL_PAPER, (1, True), (1.0, 1.0), 0.05),
    ("paper", "pretrain"): (0.01, 0.0, 0, 4096, 1e-4, MRL_PAPER, (0, False), (1.0, 0.0), 0.05),
    ("paper", "finetune"): (0.01, 0.5, 7, 384, 1e-5, MRL_PAPER, (1, True), (1.0, 0.0), 0.05),
    ("paper", "distill"): (0.01, 0.5, 7, 384, 1e-5, MRL_PAPER, (1, True), (1.0, 1.0), 0.05),
}


def test_the_table_covers_every_profile_and_stage():
    assert set(TABLE) == {(p, s) for p in available_profiles() for s in STAGES}


@pytest.mark.parametrize("profile, stage", sorted(TABLE))
def test_paper_values_of_every_profile_and_stage(tmp_path, profile, stage):
    cfg = stage_config(profile, stage, tmp_path)
    o = cfg.objective
    assert isinstance(o, ObjectiveConfig)  # built and checked once, typed
    got = (o.tau, o.gamma, cfg.data.num_negatives, cfg.optim.batch_size, cfg.optim.lr,
           (o.matryoshka_dims, o.matryoshka_weights), (o.mix_pairwise, o.mix_listwise),
           (o.contrastive_weight, o.distill_weight), o.tau_kd)
    assert got == TABLE[profile, stage]
    assert cfg.stage == stage and o.use_hard_negatives == (stage != "pretrain")
    # one entry point: the file, the profile name and stage_config give the same config
    via_file = load_config(f"configs/{profile}/{stage}.yaml", run_dir=tmp_path)
    via_name = load_config(profile, stage, run_dir=tmp_path)
    for other in (via_file, via_name):
        a, b = cfg.to_dict(), other.to_dict()
        a.pop("source"), b.pop("source")
        assert a == b


def test_gpu_and_paper_stage_files_are_complete():
    """No value of the paper profiles comes from the smoke profile's files."""
    import yaml
    from kalm_lib.config import CONFIG_ROOT
    for profile in ("gpu", "paper"):
        for stage in STAGES:
            raw = yaml.safe_load((CONFIG_ROOT / profile / f"{stage}.yaml").read_text())
            assert "extends" not in raw
            keys = {"tau", "matryoshka_dims", "matryoshka_weights"} | (
                {"gamma", "mix_pairwise", "mix_listwise"} if stage != "pretrain" else set()) | (
                {"contrastive_weight", "distill_weight", "tau_kd"} if stage == "distill" else set())
            assert keys <= set(raw["objective"]), (profile, stage)
            assert {"lr", "batch_size"} <= set(raw["optim"]) and "num_negatives" in raw["data"]


def test_merge_keeps_the_parents_values_and_replaces_whole_leaves():
    parent = {"optim": {"lr": 1.0, "batch_size": 8}, "model": {"tiny": {"hidden_size": 8, "num_hidden_layers": 2}},
              "data": {"datasets": ["a", "b"]}, "log_every": 1}
    child = {"optim": {"lr": 2.0}, "model": {"tiny": {}}, "data": {"datasets": ["c"]}}
    assert merge(parent, child) == {"optim": {"lr": 2.0, "batch_size": 8}, "model": {"tiny": {}},
                                    "data": {"datasets": ["c"]}, "log_every": 1}
    # the ci profile's stage file extends smoke's: what it does not name is smoke's
    ci, smoke = stage_config("ci", "finetune", "r"), stage_config("smoke", "finetune", "r")
    assert ci.objective.gamma == smoke.objective.gamma and ci.data.mined_dir == smoke.data.mined_dir
    assert ci.model.tiny["hidden_size"] == 32 and stage_config("cpu", "pretrain", "r").model.tiny == {}


def test_profiles_are_typed_and_extend_their_parents():
    gpu, smoke = load_profile("gpu"), load_profile("smoke")
    assert isinstance(gpu, ProfileConfig) and gpu.name == "gpu" and gpu.extends == "smoke"
    assert gpu.mining.num_negatives == 7 and gpu.mining.sample_range == smoke.mining.sample_range == [50, 100]
    assert gpu.mining.filter_topk == 50 and gpu.teacher == "Qwen/Qwen3-Embedding-0.6B"
    assert load_profile("paper").teacher_query_prompt == gpu.teacher_query_prompt  # inherited from gpu


def test_bad_profile_and_stage_files_are_named(tmp_path, monkeypatch):
    import kalm_lib.config as config
    root = tmp_path / "configs"
    (root / "p").mkdir(parents=True)
    monkeypatch.setattr(config, "CONFIG_ROOT", root)
    (root / "p" / "profile.yaml").write_text("stage_overrides: {all: {optim.lr: 1}}\n")
    with pytest.raises(ConfigError, match=r"p/profile.yaml: unknown key\(s\) \['stage_overrides'\]"):
        load_profile("p")
    (root / "p" / "profile.yaml").write_text("mining: {sample_range: [100, 50]}\n")
    with pytest.raises(ConfigError, match="mining.sample_range"):
        load_profile("p")
    (root / "p" / "profile.yaml").write_text("mining: {filter_topk: 0}\n")
    with pytest.raises(ConfigError, match=r"'mining.filter_topk' = 0 is outside"):
        load_profile("p")
    (root / "p" / "profile.yaml").write_text("ablations: {arms: [focal-g0, focal-g9]}\n")
    with pytest.raises(ConfigError, match=r"p/profile.yaml: field 'ablations.arms'.*\['focal-g9'\].*known: focal-g0"):
        load_profile("p")
    (root / "p" / "profile.yaml").write_text("ablations: {steps: 0}\n")
    with pytest.raises(ConfigError, match=r"'ablations.steps' = 0 is outside"):
        load_profile("p")
    (root / "p" / "profile.yaml").write_text("description: x\n")
    with pytest.raises(FileNotFoundError, match=r"p/finetune.yaml"):  # no silent fallback to another profile
        stage_config("p", "finetune", tmp_path)
    (root / "p" / "finetune.yaml").write_text("extends: nowhere\nstage: finetune\n")
    with pytest.raises(ConfigError, match="extends 'nowhere', which is not a profile"):
        stage_config("p", "finetune", tmp_path)
    (root / "p" / "finetune.yaml").write_text("stage: finetune\noptim: [1, 2]\n")
    with pytest.raises(ConfigError, match="section 'optim' must be a mapping"):
        stage_config("p", "finetune", tmp_path)
    assert dataclasses.asdict(load_profile("p"))["description"] == "x"
