"""Local MTEB tasks: one per mirrored dataset, built on MTEB's own task classes, complete copies
matching MTEB's row counts, deterministic row caps, and clear errors for corrupted files."""

import json
import shutil
from pathlib import Path

import pytest

mteb = pytest.importorskip("mteb")

from kalm_lib.evaluation import (  # noqa: E402
    COMPLETE_TASKS,
    LOCAL_SUITE,
    LOCAL_TASK_SPECS,
    SMOKE_SUITE,
    LocalDataError,
    get_local_task,
)
from kalm_lib.evaluation.local_tasks import SPECS  # noqa: E402

STATS = Path(mteb.__file__).parent / "descriptive_stats"


def test_every_mirrored_dataset_is_a_task(data_dir):
    folders = {f"{lang}/{p.name}" for lang in ("en", "zh") for p in (data_dir / lang).iterdir() if p.is_dir()}
    assert folders == {s.folder for s in LOCAL_TASK_SPECS}
    assert {s.language for s in LOCAL_TASK_SPECS} == {"en", "zh"}
    assert set(SMOKE_SUITE) <= set(LOCAL_SUITE)


def test_overview_suite_covers_every_type_in_both_languages():
    from kalm_lib.evaluation import OVERVIEW_SUITE

    assert set(OVERVIEW_SUITE) <= set(LOCAL_SUITE)
    covered = {(SPECS[t].language, get_local_task(t).metadata.type) for t in OVERVIEW_SUITE}
    every = {(s.language, get_local_task(s.name).metadata.type) for s in LOCAL_TASK_SPECS}
    assert covered == every


@pytest.mark.parametrize("spec", LOCAL_TASK_SPECS, ids=lambda s: s.name)
def test_subclasses_the_matching_mteb_task(spec):
    task, base = get_local_task(spec.name), mteb.get_task(spec.base)
    assert isinstance(task, type(base))
    m, b = task.metadata, base.metadata
    assert (m.type, m.main_score, m.eval_langs) == (b.type, b.main_score, b.eval_langs)
    if spec.complete:
        assert m.name == b.name  # same rows, same name
        assert set(m.eval_splits) == set(b.eval_splits)
    else:
        assert m.name != b.name  # a differing copy must not pass for MTEB's


def _n_rows(task, split):
    d = task.dataset
    if isinstance(d, dict) and "default" in d and isinstance(d["default"], dict):
        return len(d["default"][split]["corpus"]) + len(d["default"][split]["queries"])
    return len(d[split])


def _stats(spec):
    hits = list(STATS.glob(f"*/{spec.base}.json"))
    assert hits, f"no mteb descriptive stats for {spec.base}"
    return json.loads(hits[0].read_text())


@pytest.mark.parametrize("name", COMPLETE_TASKS)
def test_complete_copies_have_mtebs_row_counts(name, data_dir):
    spec = SPECS[name]
    task = get_local_task(name)
    task.load_data()
    stats = _stats(spec)
    for split in spec.evaluated_splits:
        assert _n_rows(task, split) == stats[split]["num_samples"], (name, split)


def test_row_cap_is_deterministic_and_applies_to_every_split(data_dir):
    a, b = get_local_task("ATEC", max_rows=50), get_local_task("ATEC", max_rows=50)
    a.load_data(), b.load_data()
    for split in ("validation", "test"):
        assert len(a.dataset[split]) == 50
        assert a.dataset[split]["sentence1"] == b.dataset[split]["sentence1"]
    c = get_local_task("Banking77Classification", max_rows=300)
    c.load_data()
    assert len(c.dataset["train"]) == len(c.dataset["test"]) == 300


def test_retrieval_cap_keeps_relevant_docs(data_dir):
    t = get_local_task("SciFact", max_rows=20)
    t.load_data()
    s = t.dataset["default"]["test"]
    assert len(s["queries"]) == 20
    ids = set(s["corpus"]["id"])
    assert all(d in ids for q in s["relevant_docs"].values() for d in q)
    assert len(ids) <= 20 * 10 + sum(len(q) for q in s["relevant_docs"].values())


def test_ocnli_drops_neutral_like_cmteb(data_dir):
    t = get_local_task("Ocnli")
    t.load_data()
    assert set(t.dataset["validation"]["labels"]) == {0, 1}


def _copy_task(data_dir, tmp_path, folder):
    dst = tmp_path / folder
    shutil.copytree(data_dir / folder, dst)
    return tmp_path, dst


def test_corrupted_jsonl_names_file_and_line(data_dir, tmp_path):
    root, dst = _copy_task(data_dir, tmp_path, "en/sts-sts16")
    f = dst / "test.jsonl"
    lines = f.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # truncated line 3
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = get_local_task("STS16", data_root=root)
    with pytest.raises(LocalDataError, match=r"sts-sts16/test\.jsonl:3: invalid JSON"):
        task.load_data()


def test_missing_or_mistyped_field_is_named(data_dir, tmp_path):
    root, dst = _copy_task(data_dir, tmp_path, "en/sts-sts16")
    f = dst / "test.jsonl"
    rows = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines()]
    rows[4]["score"] = "high"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(LocalDataError, match=r"test\.jsonl:5: field 'score' must be"):
        get_local_task("STS16", data_root=root).load_data()
    del rows[4]["score"]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(LocalDataError, match=r"test\.jsonl:5: missing field 'score'"):
        get_local_task("STS16", data_root=root).load_data()


def test_corrupted_qrels_and_dangling_ids(data_dir, tmp_path):
    root, dst = _copy_task(data_dir, tmp_path, "zh/retr-cmrc2018")
    q = dst / "qrels" / "test.tsv"
    lines = q.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace("\t", " ")
    q.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LocalDataError, match=r"qrels/test\.tsv:4: expected 3 tab-separated fields"):
        get_local_task("CMRC2018Retrieval-local", data_root=root).load_data()
    lines[3] = "NOPE_QUERY\tDEV_0\t1"
    q.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LocalDataError, match=r"query-id 'NOPE_QUERY' is not in .*queries\.jsonl"):
        get_local_task("CMRC2018Retrieval-local", data_root=root).load_data()


def test_missing_file_and_unknown_task(tmp_path):
    (tmp_path / "en").mkdir()
    with pytest.raises(LocalDataError, match=r"sts-stsbenchmark/test\.jsonl: file not found"):
        get_local_task("STSBenchmark", data_root=tmp_path).load_data()
    with pytest.raises(KeyError, match="unknown local task"):
        get_local_task("NoSuchTask")
    with pytest.raises(ValueError, match="max_rows"):
        get_local_task("STSBenchmark", max_rows=0)
