"""Malformed records raise errors naming file:line:field; skip_invalid counts and reports them."""
import gzip
import json
import re

import pytest

from kalm_lib.data import RecordError, get_entry, iter_jsonl, load_records, load_with_report, validate_record

GOOD = {"query": "what is a cat", "pos": ["a small domesticated feline"], "neg": ["a large dog"]}


@pytest.fixture
def fake_data(tmp_path):
    """A minimal mirror: one evaluation test file, so decontamination has something to read."""
    (tmp_path / "en" / "sts-fake").mkdir(parents=True)
    (tmp_path / "en" / "sts-fake" / "test.jsonl").write_text(
        json.dumps({"sentence1": "A test sentence.", "sentence2": "Another test sentence.", "score": 3.0}) + "\n")
    (tmp_path / "zh").mkdir()
    return tmp_path


def _write(path, lines: list[bytes]):
    path.write_bytes(b"".join(l + b"\n" for l in lines))
    return path


def _line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _load(path, fake_data, **kw):
    return load_with_report(get_entry("en-snli-triplets"), path=path, data_dir=fake_data, **kw)


@pytest.mark.parametrize("bad,field,problem", [
    (dict(GOOD, query=""), "query", "empty string"),
    (dict(GOOD, query="   "), "query", "empty string"),
    (dict(GOOD, query=42), "query", "expected a string, got int"),
    ({"pos": ["x"]}, "query", "missing"),
    (dict(GOOD, pos="a single string"), "pos", "expected a list of strings, got str"),
    (dict(GOOD, pos=[]), "pos", "empty list"),
    (dict(GOOD, pos=["ok", ""]), "pos", "item 1: empty string"),
    (dict(GOOD, neg="not a list"), "neg", "expected a list of strings, got str"),
    (dict(GOOD, neg=["fine", 3]), "neg", "item 1: expected a string, got int"),
    (dict(GOOD, neg_scores=[0.1, 0.2]), "neg_scores", "has 2 values for 1 texts"),
    (dict(GOOD, pos_scores=["high"]), "pos_scores", "item 0: expected a finite number"),
    (dict(GOOD, pos_scores=[True]), "pos_scores", "item 0: expected a finite number"),
    (dict(GOOD, negs=["typo"]), "negs", "unknown field"),
])
def test_bad_train_record_names_file_line_field(tmp_path, fake_data, bad, field, problem):
    path = _write(tmp_path / "broken.jsonl", [_line(GOOD), _line(GOOD), _line(bad), _line(GOOD)])
    with pytest.raises(RecordError) as exc:
        _load(path, fake_data)
    err = exc.value
    assert (err.source, err.line, err.field) == (str(path), 3, field)
    assert str(err).startswith(f"{path}:3: field '{field}': ")
    assert problem in str(err)


def test_truncated_line(tmp_path, fake_data):
    cut = _line(GOOD)[:-9]  # the last line lost its end (e.g. a copy that stopped early)
    path = _write(tmp_path / "cut.jsonl", [_line(GOOD), cut])
    with pytest.raises(RecordError, match=re.escape(f"{path}:2: field '<json>': truncated JSON")):
        _load(path, fake_data)


def test_malformed_json_mid_line(tmp_path, fake_data):
    path = _write(tmp_path / "bad.jsonl", [b'{"query": "a", "pos": ["b"] "neg": []}'])
    with pytest.raises(RecordError, match=re.escape(f"{path}:1: field '<json>': malformed JSON")):
        _load(path, fake_data)


def test_non_utf8_bytes(tmp_path, fake_data):
    latin1 = '{"query": "caf\u00e9", "pos": ["coffee"]}'.encode("latin-1")  # 0xe9 alone is not UTF-8
    path = _write(tmp_path / "latin1.jsonl", [_line(GOOD), _line(GOOD), latin1])
    with pytest.raises(RecordError) as exc:
        _load(path, fake_data)
    assert (exc.value.line, exc.value.field) == (3, "query")  # the field that holds the bad byte
    assert "not valid UTF-8 (byte 0xe9 at column 15)" in str(exc.value)  # {"query": "caf| é is column 15
    path = _write(tmp_path / "binary.jsonl", [b"\x80\x81 not json at all"])
    with pytest.raises(RecordError, match=":1: field '<bytes>': not valid UTF-8 \\(byte 0x80 at column 1\\)"):
        _load(path, fake_data)


def test_blank_line_and_non_object(tmp_path, fake_data):
    path = _write(tmp_path / "blank.jsonl", [_line(GOOD), b"   ", _line(GOOD)])
    with pytest.raises(RecordError, match=":2: field '<line>': blank line"):
        _load(path, fake_data)
    path = _write(tmp_path / "list.jsonl", [b'["query", "pos"]'])
    with pytest.raises(RecordError, match=":1: field '<record>': expected a JSON object, got list"):
        _load(path, fake_data)


def test_gzip_works_and_damaged_gzip_is_reported(tmp_path, fake_data):
    path = tmp_path / "ok.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"".join(_line(GOOD) + b"\n" for _ in range(50)))
    recs, rep = _load(path, fake_data)
    assert len(recs) == 50 and rep.kept == 50
    damaged = tmp_path / "damaged.jsonl.gz"
    damaged.write_bytes(path.read_bytes()[:-12])  # cut the gzip trailer
    with pytest.raises(RecordError, match=re.escape(f"{damaged}:") + r"\d+: field '<gzip>'"):
        _load(damaged, fake_data)


def test_sts_pair_cls_schemas():
    with pytest.raises(RecordError, match="f.jsonl:7: field 'score': expected a finite number, got '4.5'"):
        validate_record({"sentence1": "a", "sentence2": "b", "score": "4.5"}, "sts", "f.jsonl", 7)
    with pytest.raises(RecordError, match="field 'score': expected a finite number, got nan"):
        validate_record({"sentence1": "a", "sentence2": "b", "score": float("nan")}, "sts", "f.jsonl", 1)
    with pytest.raises(RecordError, match="field 'label': expected 0 or 1, got 2"):
        validate_record({"sentence1": "a", "sentence2": "b", "label": 2}, "pair", "f.jsonl", 1)
    with pytest.raises(RecordError, match="field 'text': empty string"):
        validate_record({"text": "", "label": "x"}, "cls", "f.jsonl", 1)
    with pytest.raises(RecordError, match="field 'sentence2': missing"):
        validate_record({"sentence1": "a", "score": 1.0}, "sts", "f.jsonl", 1)
    assert validate_record({"sentence1": "a", "sentence2": "b", "score": 4, "genre": "news"}, "sts", "f", 1)


def test_skip_invalid_counts_and_reports_everything(tmp_path, fake_data, caplog):
    lines = [_line(GOOD), _line(dict(GOOD, query="")), b"\xff\xfe garbage", _line(GOOD)[:-3],
             _line(dict(GOOD, query="second good one")), b"",
             _line({"query": "A test sentence.", "pos": ["x"]})]  # the last one is an evaluation test text
    path = _write(tmp_path / "mixed.jsonl", lines)
    recs, rep = _load(path, fake_data, skip_invalid=True)
    assert [r["query"] for r in recs] == [GOOD["query"], "second good one"]
    assert rep.read == 7 and rep.invalid == 4 and rep.kept == 2
    assert rep.dropped["query is an evaluation test text"] == 1
    assert rep.read == rep.kept + rep.invalid + sum(rep.dropped.values())  # nothing unaccounted for
    assert [m.split(": field ")[0] for m in rep.invalid_examples] == [f"{path}:{i}" for i in (2, 3, 4, 6)]
    with caplog.at_level("WARNING", logger="kalm_lib.data"):
        load_records(get_entry("en-snli-triplets"), path=path, data_dir=fake_data, skip_invalid=True)
    assert "skipped 4 malformed" in caplog.text and f"{path}:2: field 'query': empty string" in caplog.text


def test_iter_jsonl_reports_line_numbers(tmp_path):
    path = _write(tmp_path / "x.jsonl", [_line({"a": 1}), _line({"b": 2})])
    assert [n for n, _ in iter_jsonl(path)] == [1, 2]


def test_real_mirror_malformed_records_are_named(data_dir):
    """The shared mirror itself has empty queries; strict loading names the first one precisely."""
    with pytest.raises(RecordError) as exc:
        load_records("zh-debian-pkg-desc", data_dir=data_dir)
    assert exc.value.source.endswith("train/zh-debian-pkg-desc/train.jsonl.gz")
    assert (exc.value.line, exc.value.field) == (374, "query")
    recs, rep = load_with_report("zh-debian-pkg-desc", data_dir=data_dir, skip_invalid=True)
    assert rep.invalid == 1 and rep.kept == len(recs) == 961
