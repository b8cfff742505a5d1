"""The whole run without the data mirror (KALM_DATA_DIR unset), on a local copy of the Hub (KALM_HUB_DIR): the ci
profile's pipeline reads its stages' hub_datasets (the paper's public data, one task per subset), decontaminates
against MTEB's tasks read from the Hub, scores MTEB's own tasks, and notebook 01 describes those datasets. One slow
end-to-end test (the other paths: tests/test_stages.py with a mirror, tests/test_gpu_path.py for the gpu profile).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_fixture import CONTAMINATED, build_eval_fixture, build_hub_fixture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ci_pipeline_and_notebook_01_run_from_the_hub(data_dir, tmp_path, monkeypatch):
    from kalm_lib.__main__ import main
    from kalm_lib.data.overlap import normalize_text

    hub = tmp_path / "hub"
    build_hub_fixture(hub, data_dir, models=False)
    build_eval_fixture(hub, data_dir)
    monkeypatch.delenv("KALM_DATA_DIR")
    monkeypatch.setenv("KALM_HUB_DIR", str(hub))
    run = tmp_path / "run"
    assert main(["pipeline", "--profile", "ci", "--run-dir", str(run)]) == 0

    pre = pd.DataFrame(json.loads((run / "pretrain" / "training_set.json").read_text())).set_index("dataset")
    # configs/ci/pretrain.yaml names two mirror sets; without the mirror smoke's ten hub-pretrain-* subsets train
    assert list(pre.index) == [n for n in pre.index if n.startswith("hub-pretrain-")] and len(pre) == 10
    fine = pd.DataFrame(json.loads((run / "finetune" / "training_set.json").read_text())).set_index("dataset")
    assert sorted(fine.index) == ["hub-finetune-kalm." + s for s in ("msmarco", "quora_duplicates", "stsb_en", "tnews")]
    # the contaminated fine-tuning query (an MRPC test sentence; TwitterSemEval2015's as the Hub fixture has it) is
    # dropped by decontamination against the MTEB tasks read from the Hub, and nothing else is
    from kalm_lib.data.hub import expand_datasets
    from kalm_lib.data.loader import load_with_report

    for entry, _ in expand_datasets(["hub-finetune-kalm"]):
        recs, report = load_with_report(entry)
        assert report.dropped.get("query is an evaluation test text", 0) == int(entry.name.endswith("msmarco"))
        assert not any(normalize_text(CONTAMINATED) in normalize_text(r["query"]) for r in recs)
    seen = [json.loads(x) for x in (run / "finetune" / "examples.jsonl").read_text().splitlines()]
    assert seen and not any(normalize_text(CONTAMINATED) in normalize_text(e["query"]) for e in seen)
    results = pd.concat(pd.read_csv(p) for p in (run / "eval" / "final").glob("*/results.csv"))
    assert {"STSBenchmark", "ATEC"} <= set(results.task)  # configs/ci: final_tasks, MTEB's own tasks

    import papermill as pm

    out = tmp_path / "nb01"
    out.mkdir()
    pm.execute_notebook(str(ROOT / "notebooks" / "01_data.ipynb"), str(out / "01.ipynb"), cwd=str(ROOT),
                        parameters={"profile": "ci", "output_dir": str(out), "max_rows_per_dataset": 40,
                                    "mining_max_queries": 20}, progress_bar=False)
    table = pd.read_csv(out / "datasets.csv")
    assert table.dataset.str.startswith("hub-").all() and len(table) > 4
    assert "hub-finetune-kalm.msmarco" in set(table.dataset)  # one row per Hub subset, as they train
