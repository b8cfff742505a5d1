"""The Hub datasets by task (kalm_lib/data/hub.py) on a small mirror in the Hub's layout (tests/hub_fixture.py rows,
parquet only: no model), and the local Hub mirror lookup (kalm_lib/paths.hub_path)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hub_fixture as hf  # noqa: E402

from kalm_lib.data import build_training_set, get_entry, hub  # noqa: E402
from kalm_lib.data.errors import DataError  # noqa: E402
from kalm_lib.data.examples import instruction_count  # noqa: E402
from kalm_lib.paths import hub_path  # noqa: E402

FT_ROWS = {"msmarco": 30, "stsb_en": 12, "quora_duplicates": 6, "tnews": 3}  # unequal sizes, two sharded


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    for k, (subset, n) in enumerate(FT_ROWS.items()):
        instruction, _, symmetric = hf.FINETUNE_SUBSETS[subset]
        hf._write_shards(tmp_path / hf.FINETUNE_REPO / subset, hf.finetune_rows(subset, instruction, n, k, symmetric),
                         shards=2 if k % 2 == 0 else 1)
    for k, subset in enumerate(("wikipedia", "paq")):
        hf._write_shards(tmp_path / hf.PRETRAIN_REPO / subset, hf.pretrain_rows(subset, 10, k), shards=1)
    monkeypatch.setenv("KALM_HUB_DIR", str(tmp_path))
    hub._listing.cache_clear()
    yield tmp_path
    hub._listing.cache_clear()


# ---------------------------------------------------------------------------- instructions
@pytest.mark.parametrize("text, want", [
    ("Instruct: Find passages \n Query: what is a cat", ("Find passages", "what is a cat")),
    ("Instruct: Find passages\nQuery:what is a cat", ("Find passages", "what is a cat")),      # Qwen3-Embedding's
    ("Instruct: A \n Query: line one\nline two", ("A", "line one\nline two")),
    ("what is a cat", (None, "what is a cat")),
    ("Instruct:  \n Query: bare", (None, "bare")),
    ("an Instruct: inside \n Query: the text", (None, "an Instruct: inside \n Query: the text")),
])
def test_split_instruction(text, want):
    assert hub.split_instruction(text) == want


def test_map_hub_row_takes_the_instruction_off_once():
    row = {"query": "Instruct: Retrieve similar text. \n Query: a dog runs",
           "pos": ["Instruct: Retrieve similar text. \n Query: a dog is running"], "neg": ["a cat sleeps"],
           "relevance": 0.9}
    rep = hub.LoadReport("x")
    out = hub.map_hub_row(row, "src", 1, rep)
    assert out == {"query": "a dog runs", "pos": ["a dog is running"], "neg": ["a cat sleeps"],
                   "instruction": "Retrieve similar text."}
    assert rep.ignored_fields["relevance"] == 1
    assert hub.map_hub_row(dict(row, instruction="Own column"), "src", 1)["instruction"] == "Own column"


# ---------------------------------------------------------------------------- the layout
def test_subsets_files_and_rows_from_the_layout(mirror):
    assert hub.list_subsets(hf.FINETUNE_REPO) == sorted(FT_ROWS)
    files = hub.subset_files(hf.FINETUNE_REPO, "msmarco")
    assert [Path(f).name for f in files] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    for subset, n in FT_ROWS.items():
        assert hub.subset_rows(hf.FINETUNE_REPO, subset) == n
    with pytest.raises(DataError, match="no subset 'nope'.*msmarco"):
        hub.subset_files(hf.FINETUNE_REPO, "nope")


def test_a_folder_without_the_layout_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "data.csv").write_text("x\n")
    monkeypatch.setenv("KALM_HUB_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"a/b .*no <subset>/\*\.parquet"):
        hub.list_subsets("a/b")


def test_one_task_per_subset_with_its_instruction_and_kind(mirror):
    subs = {e.name: e for e in hub.expand_entry(get_entry("hub-finetune-kalm"))}
    assert set(subs) == {f"hub-finetune-kalm.{s}" for s in FT_ROWS}
    for subset in FT_ROWS:
        instruction, task_type, symmetric = hf.FINETUNE_SUBSETS[subset]
        e = subs[f"hub-finetune-kalm.{subset}"]
        assert (e.instruction, e.task_type, e.symmetric, e.hub.data_dir) == (instruction, task_type, symmetric, subset)
    assert hub.expand_entry(get_entry("hub-pretrain-wikipedia")) == [get_entry("hub-pretrain-wikipedia")]


def test_iter_hub_rows_is_a_seeded_permutation(mirror):
    src = get_entry("hub-finetune-kalm")
    sub = hub.expand_entry(src)[0].hub  # msmarco, two shards, 30 rows
    rows = [r["query"] for _, _, r in hub.iter_hub_rows(sub, seed=3, shuffle_buffer=7)]
    again = [r["query"] for _, _, r in hub.iter_hub_rows(sub, seed=3, shuffle_buffer=7)]
    plain = [r["query"] for _, _, r in hub.iter_hub_rows(sub, seed=3, shuffle_buffer=0)]
    assert rows == again and sorted(rows) == sorted(plain) and len(set(plain)) == 30
    assert rows != plain


# ---------------------------------------------------------------------------- sampling over subsets
def test_subset_probabilities_hand_computed():
    np.testing.assert_allclose(hub.subset_probabilities([100, 400]), [0.2, 0.8])
    np.testing.assert_allclose(hub.subset_probabilities([100, 400], temperature=2), [1 / 3, 2 / 3])
    np.testing.assert_allclose(hub.subset_probabilities([100, 400, 0], temperature=float("inf")), [0.5, 0.5, 0])
    with pytest.raises(ValueError):
        hub.subset_probabilities([1, 2], temperature=0)


@pytest.mark.parametrize("cap, rows, want", [
    (10, [1000, 10, 1], [8, 1, 1]),     # every subset keeps one row, the rest by size
    (100, [20, 5, 1], [20, 5, 1]),      # a cap above the total takes everything
    (6, [30, 12, 6, 3], [3, 1, 1, 1]),
    (2, [30, 12, 6], [2, 0, 0]),        # fewer rows than subsets: by probability
])
def test_allocate_rows(cap, rows, want):
    got = hub.allocate_rows(cap, rows, hub.subset_probabilities(rows))
    assert got == want and sum(got) == min(cap, sum(rows))


def test_a_row_cap_keeps_every_subset_and_one_instruction(mirror, data_dir):
    ds = build_training_set(["hub-finetune-kalm"], "finetune", data_dir=data_dir, num_negatives=7,
                            max_rows_per_dataset=12)
    counts = {t: ds.tasks.count(t) for t in set(ds.tasks)}
    assert set(counts) == {f"hub-finetune-kalm.{s}" for s in FT_ROWS}
    assert sum(counts.values()) == 12 - 0 and counts["hub-finetune-kalm.msmarco"] >= counts["hub-finetune-kalm.tnews"]
    for i in range(len(ds)):
        item = ds[i]
        instruction, _, symmetric = hf.FINETUNE_SUBSETS[item["task"].split(".", 1)[1]]
        assert item["query"].startswith(f"Instruct: {instruction} \n Query: ") and instruction_count(item["query"]) == 1
        for t in (item["pos"], *item["neg"]):
            assert instruction_count(t) == (1 if symmetric else 0)


def test_decontamination_compares_the_bare_query(mirror, data_dir):
    ds = build_training_set(["hub-finetune-kalm"], "finetune", data_dir=data_dir, num_negatives=7)
    assert not any(hf.CONTAMINATED in ds[i]["query"] for i in range(len(ds)))
    assert ds.reports["hub-finetune-kalm.msmarco"].dropped["query is an evaluation test text"] == 1
    assert len(ds) == sum(FT_ROWS.values()) - 1


# ---------------------------------------------------------------------------- the local Hub mirror
def test_hub_path(tmp_path, monkeypatch):
    monkeypatch.delenv("KALM_HUB_DIR", raising=False)
    assert hub_path("Qwen/Qwen2-0.5B", "model") == "Qwen/Qwen2-0.5B"
    monkeypatch.setenv("KALM_HUB_DIR", str(tmp_path))
    (tmp_path / "Qwen" / "Qwen2-0.5B").mkdir(parents=True)
    assert hub_path("Qwen/Qwen2-0.5B", "model") == str(tmp_path / "Qwen" / "Qwen2-0.5B")
    with pytest.raises(FileNotFoundError, match=r"no copy of the Hub dataset a/b .*huggingface-cli download a/b "
                                                r"--repo-type dataset --local-dir"):
        hub_path("a/b")
    assert hub_path("tiny") == "tiny" and hub_path(str(tmp_path)) == str(tmp_path)


def test_the_row_transform_depends_on_the_row_not_its_arrival(mirror):
    """A resumed stream or a DataLoader worker sees rows in another order: each row must give the same item."""
    entry = [e for e in hub.expand_entry(get_entry("hub-finetune-kalm")) if e.hub.data_dir == "msmarco"][0]
    rows = [r for _, _, r in hub.iter_hub_rows(entry.hub, shuffle_buffer=0)]
    a = hub.row_transform(entry, "finetune", 5, frozenset(), seed=1)
    b = hub.row_transform(entry, "finetune", 5, frozenset(), seed=1)
    first = {it["query"]: it for it in map(a, rows)}
    again = {it["query"]: it for it in map(b, reversed(rows))}
    assert first == again and len(first) == len(rows)
    for it in first.values():
        assert len(it["neg"]) == 5 and len(set(it["neg"])) == 5 and it["pos"] not in it["neg"]
    other = hub.row_transform(entry, "finetune", 5, frozenset(), seed=2)
    assert [other(r)["neg"] for r in rows] != [it["neg"] for it in first.values()]   # the seed still matters
    assert a.report.read == len(rows) and a.report.kept == len(rows)
