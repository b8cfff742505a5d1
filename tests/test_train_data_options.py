"""The data options of a stage config reach the training set: a user's own dataset declared in the YAML,
decontamination switched off explicitly (and shown), empty datasets, and which data types use in-batch negatives."""

import gzip
import json
import logging
from pathlib import Path

import pytest

from kalm_lib.config import ConfigError, load_config
from kalm_lib.data import EmptyDatasetError
from kalm_lib.data.catalog import CatalogEntry
from kalm_lib.train import StageTrainer


def _write(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _stage_yaml(tmp_path, datasets, **data):
    cfg_dir = tmp_path / "myconfigs"
    _write(cfg_dir / "mine" / "pairs.jsonl", [{"query": f"question {i}", "pos": [f"answer {i}"],
                                               "neg": [f"other {i}", f"more {i}"]} for i in range(12)])
    lines = ["stage: finetune", f"output_dir: {tmp_path / 'run'}", "model:", "  init: tiny",
             "  tiny: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 4, "
             "num_key_value_heads: 2}", "data:", f"  datasets: {json.dumps(datasets)}", "  num_negatives: 2",
             "  max_rows_per_dataset: 12", "  query_max_len: 16", "  passage_max_len: 16"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in data.items()]
    lines += ["objective: {tau: 0.05}", "optim: {batch_size: 4, max_steps: 2, lr: 1.0e-4}", "progress_bar: false"]
    (cfg_dir / "finetune.yaml").write_text("\n".join(lines) + "\n")
    return cfg_dir / "finetune.yaml"


MINE = {"name": "my-qa", "path": "mine/pairs.jsonl", "format": "train", "task_type": "retrieval",
        "instruction": "Given a question, retrieve its answer", "symmetric": False}


def test_own_dataset_declared_in_the_stage_yaml_trains(tmp_path, data_dir):
    path = _stage_yaml(tmp_path, [MINE, "en-banking77-train"])
    cfg = load_config(path)
    own = cfg.data.datasets[0]
    assert isinstance(own, CatalogEntry) and own.path == str(path.parent / "mine" / "pairs.jsonl")
    trainer = StageTrainer(cfg)
    ds = trainer.dataset
    assert ds.tasks.count("my-qa") == 12
    # labelled classification data: no in-batch negatives; retrieval data keeps them (config default)
    assert cfg.data.own_negatives_only == ["classification", "clustering"]
    assert ds[ds.tasks.index("en-banking77-train")]["own_negatives_only"] is True
    assert ds[ds.tasks.index("my-qa")]["own_negatives_only"] is False
    table = ds.summary().set_index("dataset")
    assert table.loc["en-banking77-train", "negatives"] == "own only"
    assert table.loc["my-qa", "negatives"] == "in-batch + hard"
    final = trainer.run()
    assert (final / "modules.json").is_file()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["datasets"][0]["name"] == "my-qa"  # the run records what it trained on


def test_decontamination_off_is_explicit_logged_and_shown(tmp_path, data_dir, caplog):
    from kalm_lib import stages

    cfg = load_config(_stage_yaml(tmp_path, ["en-scifact"], decontaminate=False, own_negatives_only=[]))
    with caplog.at_level(logging.WARNING):
        trainer = StageTrainer(cfg)
    assert "decontamination is OFF" in caplog.text
    assert not trainer.dataset.decontaminated
    table = stages.training_set_table(trainer)
    assert table.loc["en-scifact", "decontaminated"] == False  # noqa: E712 (the column is shown because it is off)
    assert trainer.dataset[0]["own_negatives_only"] is False


def test_an_empty_own_dataset_is_an_error_unless_allowed(tmp_path, data_dir):
    path = _stage_yaml(tmp_path, [dict(MINE, path="mine/empty.jsonl.gz"), "en-scifact"])
    with gzip.open(path.parent / "mine" / "empty.jsonl.gz", "wt"):
        pass
    with pytest.raises(EmptyDatasetError, match="my-qa"):
        StageTrainer(load_config(path))
    trainer = StageTrainer(load_config(path, overrides={"data.allow_empty": True}))
    assert trainer.dataset.empty_datasets == ["my-qa"]


def test_a_bad_declaration_names_the_yaml_and_the_entry(tmp_path):
    path = _stage_yaml(tmp_path, [dict(MINE, symmetric="no")])
    with pytest.raises(ValueError, match=r"finetune.yaml: data.datasets\[0\] \(my-qa\): field 'symmetric'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"data.datasets\[0\]' must be a catalog name or a mapping"):
        load_config(_stage_yaml(tmp_path, [[1, 2]]))


@pytest.mark.parametrize("use", [True, False])
def test_use_instructions_reaches_the_training_texts(tmp_path, use):
    """data.use_instructions (the ablations' "trained without instructions" arm): off, the queries are the raw
    texts; on, each carries the KaLM template with its dataset's instruction."""
    cfg = load_config(_stage_yaml(tmp_path, [MINE], use_instructions=use))
    assert cfg.data.use_instructions is use
    ds = StageTrainer(cfg).dataset
    queries = [ds[i]["query"] for i in range(len(ds))]
    if use:
        assert all(q.startswith("Instruct: Given a question, retrieve its answer") for q in queries)
    else:
        assert sorted(queries) == sorted(f"question {i}" for i in range(12))
