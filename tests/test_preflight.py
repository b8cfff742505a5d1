"""The preflight of `make reproduce` (issue 15 item 2): one clear line per problem, with the command that fixes it."""
from __future__ import annotations

from collections import namedtuple

import pytest

from kalm_lib import preflight, reproduce


def test_a_complete_setup_passes(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KALM_DATA_DIR", str(data_dir))
    assert preflight.check("smoke", tmp_path / "build").errors == []


def test_no_mirror_reads_the_hub_and_a_bad_or_incomplete_mirror_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("KALM_DATA_DIR", raising=False)
    monkeypatch.delenv("KALM_HUB_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = preflight.check("smoke", tmp_path)
    assert any("no data mirror (KALM_DATA_DIR unset)" in w for w in got.warnings)
    assert len(got.errors) == 1 and "HF_HUB_OFFLINE is set and KALM_HUB_DIR is not" in got.errors[0]
    assert "mteb/stsbenchmark-sts" in got.errors[0] or "Qwen/Qwen2-0.5B" in got.errors[0]
    monkeypatch.setenv("KALM_HUB_DIR", str(tmp_path / "hub"))
    errors = preflight.check("smoke", tmp_path).errors
    assert len(errors) == preflight.SHOWN + 1 and "more repositories missing" in errors[-1]
    assert any("has no mteb/stsbenchmark-sts (read by evaluation: STSBenchmark): huggingface-cli download "
               "mteb/stsbenchmark-sts --repo-type dataset --revision b0fddb56ed78048fa8b90373c8a3cfc37b684831" in e
               for e in errors)
    monkeypatch.setenv("KALM_DATA_DIR", str(tmp_path / "typo"))
    errors = preflight.check("smoke", tmp_path).errors
    assert len(errors) == 1 and "KALM_DATA_DIR=" in errors[0] and "is not a folder" in errors[0]
    (tmp_path / "mirror" / "en").mkdir(parents=True)
    monkeypatch.setenv("KALM_DATA_DIR", str(tmp_path / "mirror"))
    errors = preflight.check("smoke", tmp_path).errors
    assert [e.split(" is missing")[0].rsplit("/", 1)[-1] for e in errors] == ["zh", "train", "tokenizer.json"]


def test_the_gpu_profile_needs_the_hub_or_a_mirror(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KALM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("KALM_HUB_DIR", raising=False)
    errors = preflight.check("gpu", tmp_path).errors
    assert len(errors) == 1 and "HF_HUB_OFFLINE is set" in errors[0] and "Qwen/Qwen3-Embedding-0.6B" in errors[0]
    monkeypatch.setenv("KALM_HUB_DIR", str(tmp_path))
    (tmp_path / "Qwen" / "Qwen2-0.5B").mkdir(parents=True)
    errors = preflight.check("gpu", tmp_path).errors
    assert not any("Qwen2-0.5B" in e for e in errors)
    named = {e.split(" has no ")[1].split(" ")[0] for e in errors if " has no " in e}
    # with a mirror: the models, the training data and the paper's benchmarks (final_tasks: MTEB's own tasks, so
    # STSBenchmark's too, though the quick suite reads the local copy)
    assert {"Qwen/Qwen3-Embedding-0.6B", "HIT-TMG/KaLM-embedding-pretrain-data"} <= named
    assert "more repositories missing" in errors[-1] and "mteb/msmarco" in errors[-1]
    assert "mteb/stsbenchmark-sts" in " ".join(errors)
    assert any("huggingface-cli download KaLM-Embedding/KaLM-embedding-finetuning-data --repo-type dataset "
               f"--local-dir {tmp_path}/KaLM-Embedding/KaLM-embedding-finetuning-data" in e for e in errors)


def test_too_little_disk(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KALM_DATA_DIR", str(data_dir))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(10**12, 10**12, 5 * 10**8))
    errors = preflight.check("smoke", tmp_path).errors
    assert len(errors) == 1 and errors[0].startswith("disk: 0.5 GB free") and "BUILD=" in errors[0]


def test_reproduce_stops_before_the_first_notebook(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KALM_DATA_DIR", str(tmp_path / "typo"))
    ran = []
    monkeypatch.setattr(reproduce, "run_notebooks", lambda *a, **k: ran.append(a))
    with pytest.raises(SystemExit, match="1 problem"):
        reproduce.reproduce("smoke", tmp_path)
    assert ran == [] and "[preflight] ERROR: data: KALM_DATA_DIR=" in capsys.readouterr().out
