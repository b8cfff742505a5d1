"""Without the data mirror the evaluation sets are MTEB's own tasks read from the Hub (kalm_lib/data/hub_eval.py).

The Hub is a local fixture in the layout mteb's own loaders read (tests/hub_fixture.py: every MTEB repository that
a local task stands for, written from the mirror's rows), reached through KALM_HUB_DIR with KALM_DATA_DIR unset. The
reference is the mirror path itself: the same rows must give the same row caps, the same scores to 1e-9 and the same
forbidden texts.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_fixture import build_eval_fixture  # noqa: E402


@pytest.fixture(scope="module")
def hub_eval_dir(data_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    build_eval_fixture(root, data_dir)
    return root


@pytest.fixture
def no_mirror(hub_eval_dir, monkeypatch):
    monkeypatch.delenv("KALM_DATA_DIR", raising=False)
    monkeypatch.setenv("KALM_HUB_DIR", str(hub_eval_dir))
    return hub_eval_dir


def _sizes(task) -> dict:
    """Rows per split (retrieval: queries and documents) of a loaded task, whatever its structure."""
    ds = task.dataset
    if "default" in ds and isinstance(ds["default"], dict) and ds["default"]:
        return {sp: (len(d["queries"]), len(d["corpus"]), len(d["relevant_docs"])) for sp, d in ds["default"].items()}
    return {sp: len(d) if len(d) != 1 else len(next(iter(d.to_dict().values()))[0]) for sp, d in ds.items()}


def test_every_local_task_reads_its_mteb_task_from_the_hub_with_the_same_caps(data_dir, no_mirror, monkeypatch):
    from kalm_lib.evaluation.local_tasks import LOCAL_SUITE, SPECS, task_for

    cap = 37
    for name in LOCAL_SUITE:
        hub = task_for(name, max_rows=cap)
        assert getattr(hub, "hub_task", False) and hub.metadata.name == SPECS[name].base, name
        hub.load_data()
        monkeypatch.setenv("KALM_DATA_DIR", str(data_dir))
        local = task_for(name, max_rows=cap)
        assert not getattr(local, "hub_task", False)
        local.load_data()
        monkeypatch.delenv("KALM_DATA_DIR")
        got, want = _sizes(hub), _sizes(local)
        # a split the MTEB task calls differently (THUCNews-local's test is TNews's validation) keeps its rows
        assert sorted(got.values()) == sorted(want.values()), (name, got, want)
        if SPECS[name].kind in ("sts", "pair", "classification", "clustering"):
            assert all(n <= cap for n in got.values()), (name, got)


def test_scores_from_the_hub_equal_the_mirror_scores(data_dir, no_mirror, monkeypatch):
    """One task of each kind, capped: the same rows through mteb's own loader give the same score. (Clustering is
    left out: the local copies embed every document, MTEB's v2 tasks subsample their own way.)"""
    from kalm_lib.evaluation import evaluate_model
    from kalm_lib.model import KaLMEmbedder

    monkeypatch.setenv("KALM_DATA_DIR", str(data_dir))  # the tokenizer of the tiny model
    model = KaLMEmbedder.tiny(seed=0)
    tasks = {"STSBenchmark": 120, "SciFact": 15, "MRPC-local": 80, "TrecQA-local": 6, "Banking77Classification": 200}
    mirror = evaluate_model(model, tasks=tasks)
    monkeypatch.delenv("KALM_DATA_DIR")
    hub = evaluate_model(model, tasks=tasks)
    m = mirror[mirror.main_split].set_index("task")["main_score"]
    h = hub[hub.main_split].set_index("task")["main_score"]
    pairs = {"STSBenchmark": "STSBenchmark", "SciFact": "SciFact", "MRPC-local": "TwitterSemEval2015",
             "TrecQA-local": "AskUbuntuDupQuestions", "Banking77Classification": "Banking77Classification"}
    for local, mteb_name in pairs.items():
        assert h[mteb_name] == pytest.approx(m[local], abs=1e-9), (local, h[mteb_name], m[local])
    notes = hub.set_index("task")["note"]
    assert "in place of MRPC-local (no data mirror)" in notes["TwitterSemEval2015"]
    assert "from the Hub" not in notes["STSBenchmark"]  # the same task: nothing stands in for it
    assert not hub.comparable.any()  # capped


def test_decontamination_without_a_mirror_forbids_the_hub_tasks_texts(data_dir, no_mirror):
    """The forbidden set read from the Hub equals the mirror's scored texts of the rows the fixture was made of
    (the first local task of each MTEB task; Ocnli's neutral pairs are not in C-MTEB's copy), nothing more."""
    import json

    from kalm_lib.data.eval_sets import LOCAL_TASK_SPECS
    from kalm_lib.data.overlap import _file_texts, eval_test_texts, normalize_text

    want, seen = set(), set()
    for spec in LOCAL_TASK_SPECS:
        if spec.base in seen:
            continue
        seen.add(spec.base)
        for split in spec.evaluated_splits:
            for f in spec.splits[split]:
                path = data_dir / spec.folder / f
                if spec.row_filter:  # read by hand: the reference must not share the code under test
                    key, drop = spec.row_filter
                    for line in path.read_text(encoding="utf-8").splitlines():
                        rec = json.loads(line)
                        if rec.get(key) not in drop:
                            want |= {normalize_text(rec["sentence1"]), normalize_text(rec["sentence2"])}
                else:
                    want |= {normalize_text(t) for t in _file_texts(path)}
    want.discard("")
    got = eval_test_texts()
    assert got == want, (len(got - want), len(want - got), sorted(want - got)[:3])
    # a clustering set is forbidden whole, though mteb scores a 2,048-title sample of it
    csl = (data_dir / "zh/clu-csl-s2s/test.jsonl").read_text(encoding="utf-8").splitlines()
    assert {normalize_text(json.loads(x)["text"]) for x in csl} <= got


def test_a_missing_or_broken_hub_dataset_names_the_fix(no_mirror, tmp_path, monkeypatch):
    from kalm_lib.data.hub_eval import HubDataError
    from kalm_lib.evaluation.local_tasks import task_for

    monkeypatch.setenv("KALM_HUB_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no copy of the Hub dataset mteb/stsbenchmark-sts.*huggingface-cli "
                                                r"download mteb/stsbenchmark-sts --repo-type dataset"):
        task_for("STSBenchmark").load_data()
    repo = tmp_path / "mteb" / "stsbenchmark-sts" / "data"
    repo.mkdir(parents=True)
    (repo / "test-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(HubDataError, match=r"MTEB task STSBenchmark: could not read .*stsbenchmark-sts.*--revision "
                                           r"b0fddb56ed78048fa8b90373c8a3cfc37b684831"):
        task_for("STSBenchmark").load_data()


def test_a_data_dir_that_is_not_a_folder_is_an_error_not_the_hub(monkeypatch, tmp_path):
    from kalm_lib.evaluation.local_tasks import task_for

    monkeypatch.setenv("KALM_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match="KALM_DATA_DIR=.*typo is not a folder"):
        task_for("STSBenchmark")


def test_stages_read_their_hub_datasets_without_a_mirror(data_dir, monkeypatch):
    from kalm_lib.config import load_profile, stage_config

    with_mirror = stage_config("smoke", "pretrain", "runs/x").data.datasets
    assert with_mirror[0] == "en-wordnet-gloss"
    monkeypatch.delenv("KALM_DATA_DIR")
    cfg = stage_config("smoke", "pretrain", "runs/x")
    assert cfg.data.datasets == cfg.data.hub_datasets and cfg.data.datasets[0] == "hub-pretrain-amazon-reviews-2023"
    assert stage_config("cpu", "finetune", "runs/x").data.datasets == ["hub-finetune-kalm"]
    assert load_profile("cpu").mining.datasets == ["hub-finetune-kalm"]
    assert stage_config("gpu", "pretrain", "runs/x").data.datasets[0] == "hub-pretrain-amazon-reviews-2023"


def test_the_evaluation_cache_keeps_mirror_and_hub_scores_apart(data_dir, no_mirror, monkeypatch, tmp_path):
    """STSBenchmark is the same name either way; a score cached from the mirror's copy is not read back for MTEB's
    (their texts may differ in whitespace), while a rerun on the same source is."""
    from kalm_lib.evaluation import evaluate_model
    from kalm_lib.model import KaLMEmbedder

    monkeypatch.setenv("KALM_DATA_DIR", str(data_dir))
    model = KaLMEmbedder.tiny(seed=0)
    calls = []
    real = type(model).encode
    monkeypatch.setattr(type(model), "encode", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    kw = dict(tasks={"STSBenchmark": 30}, cache_dir=tmp_path / "cache")
    evaluate_model(model, **kw)
    n_mirror = len(calls)
    evaluate_model(model, **kw)
    assert len(calls) == n_mirror > 0  # read back
    monkeypatch.delenv("KALM_DATA_DIR")
    evaluate_model(model, **kw)
    assert len(calls) == 2 * n_mirror  # the Hub's copy is scored afresh
    evaluate_model(model, **kw)
    assert len(calls) == 2 * n_mirror
