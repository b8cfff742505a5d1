"""The ablation arms (kalm_lib/ablations.py; issue 18 item 2): what an arm is made of, the errors for bad input,
and the table's reading of the intervals. Notebook 06 itself runs (two arms, ci profile) in test_notebooks."""

import json

import pandas as pd
import pytest

from kalm_lib import ablations as ab


def test_every_arm_varies_one_thing_from_its_reference():
    for arm in ab.ARMS.values():
        ref = ab.ARMS[ab.REFERENCE[arm.group]]
        if arm.name == ref.name:
            continue
        differs = (arm.schedule != ref.schedule) + (arm.overrides != ref.overrides)
        assert differs == 1, arm.name  # a schedule or a config, never both
        if arm.overrides != ref.overrides:
            assert len(set(arm.overrides.items()) ^ set(ref.overrides.items())) <= 2, arm.name


def test_unknown_arm_is_a_clear_error_and_references_are_added():
    with pytest.raises(ab.AblationError, match="unknown ablation arm.*'focal-g3'.*known: focal-g0"):
        ab.resolve_arms(["focal-g3"])
    assert [a.name for a in ab.resolve_arms(["mix-none"])] == ["ft", "mix-none"]
    assert [a.name for a in ab.resolve_arms(["kd-interleaved"])] == ["kd-after-ft", "kd-interleaved"]
    assert len(ab.resolve_arms(None)) == len(ab.ARMS)


def _stage1(run_dir, profile="ci"):
    final = run_dir / "pretrain" / "final"
    final.mkdir(parents=True)
    (final / "modules.json").write_text("[]")
    (run_dir / "pretrain" / "config.json").write_text(json.dumps({"source": f"configs/{profile}/pretrain.yaml"}))
    return final


def test_stage1_checkpoint_missing_or_from_another_profile(tmp_path):
    with pytest.raises(ab.AblationError, match="no stage-1 checkpoint; run notebook 02"):
        ab.stage1_checkpoint("ci", tmp_path)
    _stage1(tmp_path, profile="smoke")
    with pytest.raises(ab.AblationError, match="not from profile 'ci'"):
        ab.stage1_checkpoint("ci", tmp_path)


def test_segments_chain_from_stage1_and_split_the_steps(tmp_path):
    final = _stage1(tmp_path)
    segs = ab.segment_configs(ab.ARMS["kd-interleaved"], "ci", tmp_path, steps=10)
    assert [c.stage for c in segs] == ["finetune", "distill", "finetune", "distill"]
    assert sum(c.optim.max_steps for c in segs) == 10
    assert segs[0].model.init == str(final)
    for before, after in zip(segs, segs[1:]):
        assert after.model.init == f"{before.output_dir}/final"
    (causal,) = ab.segment_configs(ab.ARMS["causal"], "ci", tmp_path, steps=7)
    assert causal.model.causal is True and causal.optim.max_steps == 7
    assert causal.output_dir.endswith("ablations/causal/0_finetune")
    (plain,) = ab.segment_configs(ab.ARMS["no-instructions"], "ci", tmp_path, steps=7)
    assert plain.data.use_instructions is False
    (kl,) = ab.segment_configs(ab.ARMS["kd-kl"], "ci", tmp_path, steps=3)
    assert kl.stage == "distill" and kl.objective.contrastive_weight == 0.0
    with pytest.raises(ab.AblationError, match="raise ablations.steps"):
        ab.segment_configs(ab.ARMS["kd-interleaved"], "ci", tmp_path, steps=2)


def _table():
    rows = []
    for model, arm, gains in [("ft", "γ = 0.5 (the recipe)", None), ("focal-g0", "γ = 0 (plain InfoNCE)",
                                                                      [(-2.0, -3.0, -1.0), (0.5, -0.5, 1.5)])]:
        for k, task in enumerate(["STSBenchmark", "SciFact"]):
            g = gains[k] if gains else (None, None, None)
            rows.append({"group": "focal", "arm": arm, "model": model, "reference": "ft", "task": task,
                         "score": 50.0, "score_low": 48.0, "score_high": 52.0, "gain": g[0], "gain_low": g[1],
                         "gain_high": g[2], "excludes_zero": None if g[0] is None else not (g[1] <= 0 <= g[2]),
                         "n": 100})
    return pd.DataFrame(rows)


def test_verdicts_say_only_what_the_intervals_support():
    (line,) = ab.verdicts(_table())
    assert line.startswith("focal: 'γ = 0 (plain InfoNCE)' against 'γ = 0.5 (the recipe)'")
    assert "worse on STSBenchmark -2.00 [-3.00, -1.00]" in line
    assert "not resolved on SciFact" in line and "better" not in line


def test_summary_counts_resolved_gains_and_shows_the_papers_number():
    s = ab.summary(_table()).set_index("arm")
    assert s.loc["γ = 0 (plain InfoNCE)", "gains ≠ 0 (+/−)"] == "1 of 2 (0/1)"
    assert s.loc["γ = 0 (plain InfoNCE)", "mean gain"] == pytest.approx(-0.75)
    assert s.loc["γ = 0 (plain InfoNCE)", "paper cmn MTK"] == 69.41  # PAPER.md §5.3: w/o focal
    assert s.loc["γ = 0.5 (the recipe)", "paper cmn MTK"] == 70.93 and s.loc["γ = 0.5 (the recipe)", "gains ≠ 0 (+/−)"] == "reference"
