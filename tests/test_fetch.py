"""``make data`` (kalm_lib/fetch.py): every Hub repository a profile reads, fetched into a KALM_HUB_DIR copy.

``snapshot_download`` is replaced by a stand-in that copies from a fake Hub folder (the Hub is unreachable here) and
records each call, so what is fetched, at which revision, with which file patterns, and what a rerun skips is checked.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kalm_lib import fetch, preflight


class FakeHub:
    """A folder per repository; ``fail`` names one that is "missing on the Hub" (raises as huggingface_hub does)."""

    def __init__(self, root: Path, fail: str | None = None):
        self.root, self.fail, self.calls = root, fail, []

    def __call__(self, repo_id, repo_type, revision, local_dir, allow_patterns=None):
        self.calls.append((repo_id, repo_type, revision, allow_patterns))
        if repo_id == self.fail:
            class RepositoryNotFoundError(Exception):
                pass
            raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for url: .../{repo_id}")
        src = self.root / repo_id
        for f in src.rglob("*"):
            rel = f.relative_to(src)
            if f.is_file() and (allow_patterns is None or any(rel.match(p) for p in allow_patterns)):
                (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, Path(local_dir) / rel)
        return local_dir


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    monkeypatch.delenv("KALM_DATA_DIR", raising=False)
    monkeypatch.delenv("KALM_HUB_DIR", raising=False)
    root = tmp_path / "remote"
    for r in fetch.profile_repos("smoke"):
        (root / r.repo).mkdir(parents=True)
        (root / r.repo / "README.md").write_text(r.repo)
        for sub in ("Amazon-Reviews-2023", "wikipedia", "an-unread-subset"):
            (root / r.repo / sub).mkdir()
            (root / r.repo / sub / "train-00000-of-00001.parquet").write_text(sub)
    return root


def test_make_data_fetches_what_the_run_reads_and_a_rerun_skips_it(fake_hub, tmp_path, monkeypatch):
    repos = fetch.profile_repos("smoke")
    names = [r.repo for r in repos]
    # the tiny model's tokenizer, the paper's training data, the quick/final suites and decontamination's MTEB sets
    assert {"Qwen/Qwen2-0.5B", "HIT-TMG/KaLM-embedding-pretrain-data", "KaLM-Embedding/KaLM-embedding-finetuning-data",
            "mteb/stsbenchmark-sts", "mteb/T2Retrieval", "C-MTEB/TNews-classification"} <= set(names)
    assert len(names) == len(set(names))
    hub = FakeHub(fake_hub)
    out = tmp_path / "copy"
    fetch.fetch("smoke", out, download=hub)
    assert [c[0] for c in hub.calls] == names
    calls = {c[0]: c for c in hub.calls}
    assert calls["mteb/stsbenchmark-sts"][1:] == ("dataset", "b0fddb56ed78048fa8b90373c8a3cfc37b684831", None)
    pre = calls["HIT-TMG/KaLM-embedding-pretrain-data"][3]
    assert "Amazon-Reviews-2023/*" in pre and "an-unread-subset/*" not in pre and len(pre) == 11  # README + 10
    assert not (out / "HIT-TMG/KaLM-embedding-pretrain-data/an-unread-subset").exists()
    assert (out / "KaLM-Embedding/KaLM-embedding-finetuning-data/an-unread-subset").is_dir()  # '*': every subset
    assert calls["Qwen/Qwen2-0.5B"][1] == "model"
    monkeypatch.setenv("KALM_HUB_DIR", str(out))
    assert not [e for e in preflight.check("smoke", tmp_path).errors if e.startswith("Hub")]
    again = FakeHub(fake_hub)
    fetch.fetch("smoke", out, download=again)
    assert again.calls == []


def test_a_missing_repository_stops_with_its_name_and_a_rerun_resumes(fake_hub, tmp_path):
    names = [r.repo for r in fetch.profile_repos("smoke")]
    out = tmp_path / "copy"
    broken = FakeHub(fake_hub, fail=names[3])
    with pytest.raises(RuntimeError, match=rf"dataset {names[3]}@[0-9a-f]+ \(read by evaluation: \w+\) could not be "
                                           r"fetched: RepositoryNotFoundError.*missing or renamed on the Hub.*3 "
                                           r"repositories fetched so far are kept"):
        fetch.fetch("smoke", out, download=broken)
    assert [(out / n / fetch.COMPLETE).is_file() for n in names[:4]] == [True, True, True, False]
    resumed = FakeHub(fake_hub)
    fetch.fetch("smoke", out, download=resumed)
    assert [c[0] for c in resumed.calls] == names[3:]


def test_a_half_written_or_outdated_copy_is_named_and_fetched_again(fake_hub, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    fetch.fetch("smoke", out, download=FakeHub(fake_hub))
    sts = out / "mteb/stsbenchmark-sts"
    (sts / fetch.COMPLETE).write_text("0123abc\n")  # a copy an older mteb pinned
    part = out / "mteb/scifact/.cache/huggingface/download/corpus.jsonl.incomplete"
    part.parent.mkdir(parents=True)
    part.write_text("half")
    monkeypatch.setenv("KALM_HUB_DIR", str(out))
    errors = [e for e in preflight.check("smoke", tmp_path).errors if e.startswith("Hub")]
    assert len(errors) == 2
    assert "stsbenchmark-sts (read by evaluation: STSBenchmark) is fetched at revision 0123abc, but the run reads " \
           "b0fddb56ed78048fa8b90373c8a3cfc37b684831" in errors[0]
    assert "scifact (read by evaluation: SciFact) is half-written" in errors[1] and "make data PROFILE=smoke" in errors[1]
    again = FakeHub(fake_hub)
    fetch.fetch("smoke", out, download=again)
    assert [c[0] for c in again.calls] == ["mteb/stsbenchmark-sts", "mteb/scifact"]
