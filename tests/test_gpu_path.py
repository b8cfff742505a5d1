"""The gpu profile's own code path, end to end on CPU with toy sizes (issue 13 item 8).

A Hub-layout mirror (tests/hub_fixture.py) stands in for the Hub through ``KALM_HUB_DIR``: the paper's two
datasets with their real columns, several subsets and shards, a Qwen2-0.5B-shaped 2-layer checkpoint stored in
bf16 as ``Qwen/Qwen2-0.5B`` (the profile's ``model.init``) and MiniLM as the profile's teacher id. The command
line a GPU user runs does the rest: ``python -m kalm_lib pipeline --profile gpu`` (pretrain -> mine -> finetune
-> teacher -> distill) and ``evaluate``. Only sizes are overridden (steps, batch, lengths).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import hub_fixture as hf  # noqa: E402

from kalm_lib.__main__ import main  # noqa: E402
from kalm_lib.data.examples import instruction_count, read_examples  # noqa: E402

pytestmark = pytest.mark.slow

TOY = ["optim.max_steps=3", "optim.batch_size=8", "data.query_max_len=32", "data.passage_max_len=32", "log_every=1"]


def _decoder_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({k.removeprefix("model."): v for k, v in load_file(f).items()})
    return {k: v for k, v in out.items() if k.startswith("layers.")}


def _changed(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    total = sum(v.numel() for v in a.values())
    return sum((a[k].float() != b[k].float()).sum().item() for k in a) / total


def _strings(rec: dict) -> list[str]:
    return [rec["query"], rec["pos"], *rec["neg"]]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, data_dir):
    root = hf.build_hub_fixture(tmp_path_factory.mktemp("hub"), data_dir)
    mp = pytest.MonkeyPatch()
    mp.setenv("KALM_HUB_DIR", str(root))
    run = tmp_path_factory.mktemp("run")
    sets = [x for kv in TOY for x in ("--set", kv)]
    try:
        assert main(["pipeline", "--profile", "gpu", "--run-dir", str(run), "--no-eval", *sets]) == 0
        assert main(["evaluate", "--profile", "gpu", "--run-dir", str(run), "--stages", "pretrain", "distill",
                     "--tasks", "STSBenchmark", "--max-rows", "40"]) == 0
        yield root, run
    finally:
        mp.undo()


def test_stage_outputs_keep_fp32_and_fine_tuning_moves_the_weights(gpu_run):
    root, run = gpu_run
    init = _decoder_weights(root / hf.MODEL_REPO)
    assert {v.dtype for v in init.values()} == {torch.bfloat16}          # stored the way the Hub stores it
    pre, fine, dist = (_decoder_weights(run / s / "final") for s in ("pretrain", "finetune", "distill"))
    for w in (pre, fine, dist):
        assert {v.dtype for v in w.values()} == {torch.float32}          # the next stage starts from exactly this
    assert _changed(init, pre) >= 0.99
    # 3 steps at the gpu profile's lr 1e-5: bf16 master weights would move ~15% of them
    assert json.loads((run / "finetune" / "config.json").read_text())["optim"]["lr"] == pytest.approx(1e-5)
    assert _changed(pre, fine) >= 0.99
    assert _changed(fine, dist) >= 0.99


def test_every_subset_is_its_own_task(gpu_run):
    _, run = gpu_run
    pre = {r["dataset"] for r in json.loads((run / "pretrain" / "training_set.json").read_text())}
    assert len(pre) == len(hf.PRETRAIN_SUBSETS)
    want = {f"hub-finetune-kalm.{s}" for s in hf.FINETUNE_SUBSETS}
    for stage in ("finetune", "distill"):
        rows = json.loads((run / stage / "training_set.json").read_text())
        assert {r["dataset"] for r in rows} == want
        assert all(r["examples"] > 0 for r in rows)
    assert {p.stem for p in (run / "mined").glob("*.jsonl")} >= want
    assert {p.stem for p in (run / "teacher_scores").glob("*.jsonl")} >= want
    shown = read_examples(run / "finetune")
    kinds = {hf.FINETUNE_SUBSETS[r["task"].split(".", 1)[1]][1:] for r in shown}
    for r in shown:  # the subset's own instruction and symmetric flag reached the model
        instruction, _, symmetric = hf.FINETUNE_SUBSETS[r["task"].split(".", 1)[1]]
        assert r["instruction"] == instruction and r["symmetric"] is symmetric
        assert r["pos"].startswith("Instruct:") is symmetric
    assert kinds


def test_no_string_carries_two_instructions(gpu_run):
    _, run = gpu_run
    folders = [run / s for s in ("pretrain", "finetune", "distill")]
    files = [(f, "examples.jsonl") for f in folders]
    for kind in ("mined", "teacher_scores"):   # the miner's and the teacher's strings, one file per subset
        shown = sorted((run / kind / "examples").glob("*.jsonl"))
        assert {p.stem for p in shown} == {f"hub-finetune-kalm.{s}" for s in hf.FINETUNE_SUBSETS}
        files += [(p.parent, p.name) for p in shown]
    seen = 0
    for folder, name in files:
        for rec in read_examples(folder, name):
            for text in _strings(rec):
                assert instruction_count(text) <= 1, (folder.name, text[:120])
                seen += 1
            assert instruction_count(rec["query"]) == 1   # every query carries its instruction, once
    assert seen > 100


def test_evaluation_texts_never_reach_training(gpu_run):
    _, run = gpu_run
    for f in [*run.glob("*/examples.jsonl"), *run.glob("mined/*.jsonl"), *run.glob("teacher_scores/*.jsonl")]:
        assert hf.CONTAMINATED not in f.read_text(encoding="utf-8"), f


def test_evaluation_ran_on_the_stage_models(gpu_run):
    import pandas as pd

    _, run = gpu_run
    frames = [pd.read_csv(p) for p in (run / "eval" / "final").glob("*/results.csv")]
    df = pd.concat(frames)
    assert set(df["model"]) == {"pretrain", "distill"}
    assert df["main_score"].notna().all()
