"""The Hub path (gpu/paper profiles) without the Hub: a fake stream goes through the same pipeline."""
import pytest

from kalm_lib.data import RecordError, load_hf_dataset, load_with_report
from kalm_lib.data import loader as loader_mod
from kalm_lib.data.hub import map_hub_row


def _fake_stream(rows):
    def iter_hub_rows(hub, seed=0, shuffle_buffer=10_000):
        assert hub.repo == "HIT-TMG/KaLM-embedding-pretrain-data" and hub.data_dir == "paq"
        for i, row in enumerate(rows):
            yield f"hf://datasets/{hub.repo}/{hub.data_dir}", i + 1, row
    return iter_hub_rows


def test_hub_rows_are_mapped_validated_decontaminated(monkeypatch, data_dir):
    rows = [{"anchor": f"question {i}", "positive": f"answer {i}", "id": i} for i in range(10)]
    rows[2] = {"query": "What do practitioners of Wicca worship ?", "pos": ["x"]}   # a TrecQA test query
    rows[4] = {"query": "q", "positive": ["a"], "negative": ["n1", "n2"], "instruction": "Find it"}
    monkeypatch.setattr(loader_mod, "iter_hub_rows", _fake_stream(rows))
    recs, rep = load_with_report("hub-pretrain-paq", data_dir=data_dir, max_rows=5)
    assert [r["query"] for r in recs] == ["question 0", "question 1", "question 3", "q", "question 5"]
    assert recs[3] == {"query": "q", "pos": ["a"], "neg": ["n1", "n2"], "instruction": "Find it"}
    assert rep.dropped["query is an evaluation test text"] == 1 and rep.ignored_fields["id"] == 4
    assert rep.read == 6  # the stream stops once max_rows records are kept


def test_hub_row_without_known_columns_names_them(monkeypatch, data_dir):
    monkeypatch.setattr(loader_mod, "iter_hub_rows", _fake_stream([{"anchor": "a", "positive": "b"},
                                                                    {"context": "c", "target": "d"}]))
    with pytest.raises(RecordError, match=r"paq:2: field 'query': no column for it among \['context', 'target'\]"):
        load_with_report("hub-pretrain-paq", data_dir=data_dir, max_rows=5)
    with pytest.raises(RecordError, match="field 'pos': item 0: empty string"):
        from kalm_lib.data import validate_record
        validate_record(map_hub_row({"query": "a", "pos": [""]}, "s", 1), "hub", "s", 1)


def test_local_records_as_datasets_dataset(data_dir):
    ds = load_hf_dataset("en-trecqa", data_dir=data_dir)
    assert type(ds).__name__ == "Dataset" and ds.num_rows == 83 and set(ds.column_names) == {"query", "pos", "neg"}
