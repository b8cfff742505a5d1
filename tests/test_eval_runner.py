"""evaluate_model end to end with a tiny KaLMEmbedder: rows, files, caps, Matryoshka, checkpoints."""

import json

import pandas as pd
import pytest

pytest.importorskip("mteb")

from kalm_lib.evaluation import RESULT_COLUMNS, evaluate_checkpoints, evaluate_model  # noqa: E402
from kalm_lib.model import KaLMEmbedder  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return KaLMEmbedder.tiny(seed=0)


def test_evaluate_model_writes_results(tiny, tmp_path):
    df = evaluate_model(tiny, tasks={"STSB": 30, "SciFact": 5}, output_dir=tmp_path, model_name="test/tiny")
    assert list(df.columns) == RESULT_COLUMNS
    assert set(df.task) == {"STSB", "SciFact"}
    # STSB has a validation and a test split; only test is the main split
    stsb = df[df.task == "STSB"].set_index("split")
    assert stsb.loc["test", "main_split"] and not stsb.loc["validation", "main_split"]
    assert (~df.comparable).all() and (df.max_rows.isin([30, 5])).all()
    assert df.note.str.contains("not comparable").all()
    assert df.main_score.between(-1, 1).all()
    out = tmp_path / "test__tiny"
    back = json.loads((out / "results.json").read_text())
    assert len(back) == len(df)
    assert pd.read_csv(out / "results.csv").shape[0] == len(df)
    assert json.loads((out / "mteb" / "SciFact.json").read_text())["task_name"] == "SciFact"


def test_global_cap_and_instructions_flag(tiny):
    df = evaluate_model(tiny, tasks=["STSBenchmark"], max_rows=20, model_name="test/tiny", dim=16)
    assert df.max_rows.tolist() == [20] and df.dim.tolist() == [16]
    with_instr = evaluate_model(tiny, tasks=["STSBenchmark"], max_rows=20, model_name="test/tiny")
    without = evaluate_model(tiny, tasks=["STSBenchmark"], max_rows=20, model_name="test/tiny",
                             use_instructions=False)
    assert with_instr.main_score.iloc[0] != without.main_score.iloc[0]  # the prompt reaches the model


def test_checkpoint_folder_and_missing_ones(tiny, tmp_path, capsys):
    ckpt = tiny.save(tmp_path / "finetune" / "final")
    df = evaluate_checkpoints({"finetune": ckpt, "distill": tmp_path / "distill" / "final"},
                              tasks={"STSBenchmark": 20})
    assert df.model.tolist() == ["finetune"]
    assert "skipping distill" in capsys.readouterr().out
    same = evaluate_model(tiny, tasks={"STSBenchmark": 20}, model_name="x/y")
    assert df.main_score.iloc[0] == pytest.approx(same.main_score.iloc[0], abs=1e-5)


def test_reuse_takes_earlier_rows_of_a_fixed_model(tiny, tmp_path):
    first = evaluate_model(tiny, tasks={"STSBenchmark": 20}, output_dir=tmp_path, model_name="t/x")
    other = KaLMEmbedder.tiny(seed=5)  # a different model under the same name: reuse must not re-evaluate
    again = evaluate_model(other, tasks={"STSBenchmark": 20}, output_dir=tmp_path, model_name="t/x", reuse=True)
    assert again.main_score.tolist() == pytest.approx(first.main_score.tolist())
    fresh = evaluate_model(other, tasks={"STSBenchmark": 20}, output_dir=tmp_path, model_name="t/x")
    assert fresh.main_score.iloc[0] != pytest.approx(first.main_score.iloc[0])
    recapped = evaluate_model(other, tasks={"STSBenchmark": 25}, output_dir=tmp_path, model_name="t/x", reuse=True)
    assert recapped.max_rows.tolist() == [25]  # a different cap is evaluated, not reused


def test_matryoshka_curve_and_dims(tiny, tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    import kalm_lib.config
    from kalm_lib.evaluation import matryoshka_curve, matryoshka_dims, stage_checkpoints

    curve = matryoshka_curve(tiny, [16, 64], tasks={"STSBenchmark": 20}, model_name="t/m")
    assert curve.dim.tolist() == [16, 64] and curve.task.tolist() == ["STSBenchmark"] * 2
    assert curve.main_score.iloc[0] != curve.main_score.iloc[1]
    cfg = SimpleNamespace(objective=SimpleNamespace(matryoshka_dims=[256, 128, 64, 32]))
    monkeypatch.setattr(kalm_lib.config, "stage_config", lambda *a, **k: cfg)
    assert matryoshka_dims("smoke", tmp_path, 256) == [32, 64, 128, 256]
    assert matryoshka_dims("smoke", tmp_path, 48) == [24, 32, 48]  # a halving fills in the third point
    assert stage_checkpoints(tmp_path) == {}
    assert capsys.readouterr().out.count("skipped") == 3


@pytest.mark.parametrize("final_tasks,expected", [
    (None, "LOCAL_SUITE"), ("overview", "OVERVIEW_SUITE"), (["STSB"], ["STSB"]), ({"STSB": 5}, {"STSB": 5}),
    ("MTEB(eng, v1)", "MTEB(eng, v1)"),
])
def test_final_suite_reads_the_profile(monkeypatch, final_tasks, expected):
    import kalm_lib.config
    from kalm_lib import evaluation as ev

    monkeypatch.setattr(kalm_lib.config, "load_profile", lambda p: kalm_lib.config.ProfileConfig(
        eval=kalm_lib.config.EvalConfig(final_tasks=final_tasks, final_max_rows=7)))
    tasks, cap = ev.final_suite("any")
    want = getattr(ev, expected) if isinstance(expected, str) and hasattr(ev, expected) else expected
    assert tasks == (list(want) if isinstance(want, list) else want) and cap == 7


def test_final_suite_rejects_unknown_names(monkeypatch):
    import kalm_lib.config
    from kalm_lib import evaluation as ev

    monkeypatch.setattr(kalm_lib.config, "load_profile", lambda p: kalm_lib.config.ProfileConfig(
        eval=kalm_lib.config.EvalConfig(final_tasks="everything")))
    with pytest.raises(ValueError, match="eval.final_tasks='everything'"):
        ev.final_suite("any")
