"""The preflight of `make reproduce` (issue 15 item 2): one clear line per problem, with the command that fixes it."""
from __future__ import annotations

from collections import namedtuple

import pytest

from kalm_lib import preflight, reproduce


def test_a_complete_setup_passes(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KALM_DATA_DIR", str(data_dir))
    assert preflight.check("smoke", tmp_path / "build").errors == []


def test_missing_and_incomplete_data(tmp_path, monkeypatch):
    monkeypatch.delenv("KALM_DATA_DIR", raising=False)
    errors = preflight.check("smoke", tmp_path).errors
    assert len(errors) == 1 and "KALM_DATA_DIR=unset" in errors[0] and "../shared/data" in errors[0]
    (tmp_path / "mirror" / "en").mkdir(parents=True)
    monkeypatch.setenv("KALM_DATA_DIR", str(tmp_path / "mirror"))
    errors = preflight.check("smoke", tmp_path).errors
    assert [e.split(" is missing")[0].rsplit("/", 1)[-1] for e in errors] == ["zh", "train", "tokenizer.json"]


def test_the_gpu_profile_needs_the_hub_or_a_mirror(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KALM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("KALM_HUB_DIR", raising=False)
    errors = preflight.check("gpu", tmp_path).errors
    named = {e.split(" cannot be read")[0].rsplit(" ", 1)[-1] for e in errors}
    assert {"Qwen/Qwen2-0.5B", "Qwen/Qwen3-Embedding-0.6B", "HIT-TMG/KaLM-embedding-pretrain-data",
            "KaLM-Embedding/KaLM-embedding-finetuning-data"} <= named
    monkeypatch.setenv("KALM_HUB_DIR", str(tmp_path))
    (tmp_path / "Qwen" / "Qwen2-0.5B").mkdir(parents=True)
    errors = preflight.check("gpu", tmp_path).errors
    assert not any("Qwen2-0.5B" in e for e in errors)
    assert any("huggingface-cli download KaLM-Embedding/KaLM-embedding-finetuning-data --repo-type dataset "
               f"--local-dir {tmp_path}/KaLM-Embedding/KaLM-embedding-finetuning-data" in e for e in errors)


def test_too_little_disk(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KALM_DATA_DIR", str(data_dir))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(10**12, 10**12, 5 * 10**8))
    errors = preflight.check("smoke", tmp_path).errors
    assert len(errors) == 1 and errors[0].startswith("disk: 0.5 GB free") and "BUILD=" in errors[0]


def test_reproduce_stops_before_the_first_notebook(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KALM_DATA_DIR", raising=False)
    ran = []
    monkeypatch.setattr(reproduce, "run_notebooks", lambda *a, **k: ran.append(a))
    with pytest.raises(SystemExit, match="1 problem"):
        reproduce.reproduce("smoke", tmp_path)
    assert ran == [] and "[preflight] ERROR: data: no data mirror" in capsys.readouterr().out
