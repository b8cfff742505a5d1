"""The catalog names every dataset of the mirror once, with all the fields the pipeline needs."""
from pathlib import Path

import pytest
import yaml

from kalm_lib.data import CATALOG, STAGES, get_entry, load_catalog, names_for_stage
from kalm_lib.data.catalog import CATALOG_FILE


def test_every_mirror_training_file_is_catalogued(data_dir):
    paths = {e.path for e in CATALOG.values() if e.path}
    train_files = {str(p.relative_to(data_dir)) for p in (data_dir / "train").glob("*/train.jsonl.gz")}
    eval_train = {str(p.relative_to(data_dir)) for p in data_dir.glob("[ez][nh]/*/train.jsonl")}
    assert train_files and eval_train
    assert train_files <= paths, train_files - paths
    assert eval_train <= paths, eval_train - paths
    for e in CATALOG.values():
        if e.path:
            assert (data_dir / e.path).is_file(), e.name


def test_entries_are_complete_and_named_once():
    raw = yaml.safe_load(CATALOG_FILE.read_text())["datasets"]
    names = [d["name"] for d in raw]
    assert len(names) == len(set(names)) == len(CATALOG)
    for e in CATALOG.values():
        assert e.instruction and e.language and e.task_type and e.stages
        assert set(e.stages) <= set(STAGES)
        assert e.path or e.hub
    hub_repos = {e.hub.repo for e in CATALOG.values() if e.hub}
    assert hub_repos == {"HIT-TMG/KaLM-embedding-pretrain-data", "KaLM-Embedding/KaLM-embedding-finetuning-data"}
    pre = [e for e in CATALOG.values() if e.hub and e.hub.repo.startswith("HIT-TMG")]
    # the 25 sub-folders PAPER.md lists, one entry each, plus hub-pretrain-kalm: every subset, one task each ("*")
    assert len({e.hub.data_dir for e in pre if e.hub.data_dir != "*"}) == 25
    assert [e.name for e in pre if e.hub.data_dir == "*"] == ["hub-pretrain-kalm"]


def test_duplicate_name_and_bad_fields_are_rejected(tmp_path):
    good = yaml.safe_load(CATALOG_FILE.read_text())["datasets"][0]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"datasets": [good, good]}))
    with pytest.raises(ValueError, match="named twice"):
        load_catalog(p)
    p.write_text(yaml.safe_dump({"datasets": [dict(good, stages=["pretraining"])]}))
    with pytest.raises(ValueError, match="unknown stage"):
        load_catalog(p)
    p.write_text(yaml.safe_dump({"datasets": [dict(good, instructions="typo")]}))
    with pytest.raises(ValueError, match="unknown catalog field"):
        load_catalog(p)


def test_names_for_stage():
    pre = names_for_stage("pretrain")
    ft = names_for_stage("finetune")
    assert "en-wordnet-gloss" in pre and "en-wordnet-gloss" not in ft
    assert "en-banking77-train" in ft and "en-mrpc-train" not in ft  # duplicate of en-mrpc-paraphrase
    assert "en-mrpc-train" in names_for_stage("finetune", include_non_default=True)
    assert all(get_entry(n).hub for n in names_for_stage("pretrain", source="hub"))
    with pytest.raises(KeyError, match="unknown dataset"):
        get_entry("no-such-set")
