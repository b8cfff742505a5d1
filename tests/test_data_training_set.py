"""build_training_set: instructed items, exactly M negatives, per-epoch determinism, mined and teacher files."""
import logging

import numpy as np
import pytest
import torch

from kalm_lib.data import (CATALOG, TaskBatchSampler, build_training_set, format_query, load_records,
                           mine_hard_negatives, score_datasets)

FT = ["en-snli-triplets", "en-scifact", "zh-tnews-train", "en-stsbenchmark-train"]


def _strip(text, name):
    prefix = format_query("", CATALOG[name].instruction)
    return text[len(prefix):] if text.startswith(prefix) else text


def test_finetune_items(data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="kalm_lib.data"):
        ds = build_training_set(FT, "finetune", data_dir=data_dir, num_negatives=7, max_rows_per_dataset=40, seed=0)
    assert set(ds.tasks) == set(FT) and len(ds.tasks) == len(ds) == len(ds.lengths)
    assert "RANDOM in-dataset negatives" in caplog.text and "en-scifact" in caplog.text   # loud fallback
    assert ds.origins["zh-tnews-train"] == "source" and ds.origins["en-scifact"] == "source+random-negatives"
    for i in range(len(ds)):
        it = ds[i]
        assert set(it) == {"query", "pos", "neg", "task", "teacher_scores", "own_negatives_only", "instruction",
                           "symmetric"}
        entry = CATALOG[it["task"]]   # what examples.jsonl shows: the catalog's instruction, applied once
        assert it["instruction"] == entry.instruction and it["symmetric"] is entry.symmetric
        assert it["query"].startswith(format_query("", entry.instruction)) and it["query"].count("Instruct:") == 1
        # labelled classification data (TNEWS) without in-batch negatives, retrieval (SciFact) with them
        assert it["own_negatives_only"] is (it["task"] == "zh-tnews-train")
        assert len(it["neg"]) == 7 and it["teacher_scores"] is None and it["task"] == ds.tasks[i]
        ex = ds.examples[i]
        assert it["pos"] in ex["pos"] and set(it["neg"]) <= set(ex["neg"]) and it["pos"] not in it["neg"]
    # SNLI keeps its real contradiction among the 7 negatives
    raw = load_records("en-snli-triplets", data_dir=data_dir, max_rows=40, seed=0)
    snli = [i for i, t in enumerate(ds.tasks) if t == "en-snli-triplets"]
    for r, i in zip(raw, snli):
        assert set(r["neg"][:7]) <= {_strip(n, "en-snli-triplets") for n in ds.examples[i]["neg"]}
    assert ds.summary()["examples"].sum() == len(ds)


def test_determinism_and_epochs(data_dir):
    a = build_training_set(["zh-tnews-train"], "finetune", data_dir=data_dir, max_rows_per_dataset=30, seed=1)
    b = build_training_set(["zh-tnews-train"], "finetune", data_dir=data_dir, max_rows_per_dataset=30, seed=1)
    items = [a[i] for i in range(len(a))]
    assert items == [b[i] for i in range(len(b))]
    a.set_epoch(1)
    assert items != [a[i] for i in range(len(a))]   # another positive / other negatives next epoch
    a.set_epoch(0)
    assert items == [a[i] for i in range(len(a))]


def test_pretrain_has_no_negatives(data_dir):
    ds = build_training_set(["zh-debian-pkg-desc", "zh-csl-title-abstract"], "pretrain", data_dir=data_dir,
                            max_rows_per_dataset=25)
    assert len(ds) == 50 and all(ds[i]["neg"] == [] for i in range(len(ds)))


def test_mined_file_is_used(tmp_path, data_dir):
    recs = load_records("en-scifact", data_dir=data_dir, max_rows=30)
    rng = np.random.default_rng(0)
    vec = {}

    def enc(texts):
        return np.stack([vec.setdefault(t, rng.normal(size=8)) for t in texts])

    mined, rep = mine_hard_negatives(recs, encode_fn=enc, num_negatives=7, sample_range=(0, 12), filter_topk=20,
                                     scale_to_corpus=False, output_path=tmp_path / "en-scifact.jsonl")
    ds = build_training_set(["en-scifact"], "finetune", data_dir=data_dir, mined_dir=tmp_path)
    assert ds.origins["en-scifact"] == "mined" and len(ds) == rep.n_kept
    for i, m in enumerate(mined):
        assert sorted(ds[i]["neg"]) == sorted(m["neg"])       # all 7 mined negatives, no random ones


def test_distill_reads_aligned_teacher_scores(tmp_path, data_dir):
    teacher_vecs = {}
    rng = np.random.default_rng(1)

    def teacher(texts):
        return np.stack([teacher_vecs.setdefault(t, rng.normal(size=8)) for t in texts])

    names = ["en-trecqa", "zh-chnsenticorp-train"]
    with pytest.raises(FileNotFoundError, match="no teacher scores"):
        build_training_set(names, "distill", data_dir=data_dir, teacher_scores_path=tmp_path)
    score_datasets(names, teacher, tmp_path / "teacher", tmp_path / "cache", data_dir=data_dir,
                   max_rows_per_dataset=20, teacher_name="toy", show_progress_bar=False)
    ds = build_training_set(names, "distill", data_dir=data_dir, max_rows_per_dataset=20,
                            teacher_scores_path=tmp_path / "teacher")
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    for i in range(len(ds)):
        it = ds[i]
        assert len(it["teacher_scores"]) == 1 + 7
        q = _strip(it["query"], it["task"])
        texts = [_strip(t, it["task"]) for t in [it["pos"], *it["neg"]]]
        ref = [float(unit(teacher_vecs[q]) @ unit(teacher_vecs[t])) for t in texts]
        assert it["teacher_scores"] == pytest.approx(ref, abs=1e-5)


def test_dataloader_with_task_sampler(data_dir):
    ds = build_training_set(["zh-tnews-train", "zh-chnsenticorp-train"], "finetune", data_dir=data_dir,
                            max_rows_per_dataset=64, tokenizer=lambda texts, add_special_tokens: {
                                "input_ids": [list(t) for t in texts]})
    assert ds.lengths[0] == max(len(ds.examples[0]["query"]), len(ds.examples[0]["pos"][0]))
    sampler = TaskBatchSampler(ds.tasks, 16, homogeneous_ratio=1.0, seed=0, num_replicas=2, rank=0,
                               group_by_length=True, lengths=ds.lengths)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=lambda items: items)
    batches = list(loader)
    assert len(batches) == len(sampler) == 8
    assert all(len(b) == 8 and len({x["task"] for x in b}) == 1 for b in batches)
