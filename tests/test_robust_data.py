"""Issue 16, data layer: decontamination never silently off, evaluation-file errors name file/line/field,
empty datasets are errors (or counted warnings), a user's own dataset declared as a plain mapping.

Every fixture is a tiny mirror written under tmp_path; a few tests read the shared mirror (``data_dir``).
"""
import gzip
import json
import logging
import re

import pytest

from kalm_lib.data import (CATALOG, DataError, DataFileError, EmptyDatasetError, EntryError, RecordError,
                           build_training_set, entry_from_mapping, eval_test_texts, evaluated_files, get_entry,
                           iter_jsonl, load_with_report, validate_file)
from kalm_lib.data.__main__ import main as data_cli

TEST_TEXT = "A test sentence."


def _jsonl(path, rows, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.fixture
def mirror(tmp_path):
    """en/ and zh/ with one evaluation test file each; train/ for datasets."""
    root = tmp_path / "data"
    _jsonl(root / "en" / "sts-fake" / "test.jsonl", [{"sentence1": TEST_TEXT, "sentence2": "Other one.", "score": 3.0}])
    _jsonl(root / "zh" / "sts-fake" / "test.jsonl", [{"sentence1": "测试句子", "sentence2": "另一个", "score": 1.0}])
    return root


def _pairs(n, prefix="q"):
    return [{"query": f"{prefix} {i}", "pos": [f"passage {prefix} {i}"]} for i in range(n)]


def _user(path, name="my-set", **kw):
    return dict({"name": name, "path": str(path), "format": "train", "task_type": "retrieval",
                 "instruction": "Given a question, retrieve the answer", "symmetric": False}, **kw)


# ---------------------------------------------------------------- 5. decontamination never silently off
def test_data_folder_without_en_zh_is_an_error_unless_switched_off(tmp_path, caplog):
    root = tmp_path / "data"
    train = _jsonl(root / "train" / "x.jsonl", _pairs(5) + [{"query": TEST_TEXT, "pos": ["p"]}])
    with pytest.raises(DataFileError, match=re.escape(f"{root / 'en'}: evaluation folder missing")) as exc:
        eval_test_texts(root)
    assert "decontaminate=False" in str(exc.value)  # says how to switch it off on purpose
    with pytest.raises(DataFileError, match="evaluation folder missing"):
        build_training_set([_user(train)], "pretrain", data_dir=root)
    with caplog.at_level(logging.WARNING, logger="kalm_lib.data"):
        ds = build_training_set([_user(train)], "pretrain", data_dir=root, decontaminate=False)
    assert len(ds) == 6 and ds.decontaminated is False                  # the test text was NOT removed
    assert ds.reports["my-set"].decontaminated is False
    assert "decontamination OFF" in ds.reports["my-set"].summary()
    assert ds.summary()["decontaminated"].tolist() == [False]
    assert "decontamination is OFF (decontaminate=False)" in caplog.text
    (root / "en").mkdir()
    with pytest.raises(DataFileError, match=re.escape(f"{root / 'zh'}: evaluation folder missing")):
        eval_test_texts(root)


def test_decontamination_on_by_default_records_it(mirror):
    train = _jsonl(mirror / "train" / "x.jsonl", _pairs(5) + [{"query": TEST_TEXT, "pos": ["p"]}])
    ds = build_training_set([_user(train)], "pretrain", data_dir=mirror)
    assert len(ds) == 5 and ds.decontaminated is True and ds.summary()["decontaminated"].tolist() == [True]


@pytest.mark.parametrize("content,problem", [(b"", "empty file"),
                                             (b"query-id\tcorpus-id\tscore\n", "no qrels rows after the header")])
def test_empty_qrels_is_an_error(mirror, content, problem):
    folder = mirror / "en" / "retr-fake"
    _jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "a query"}])
    _jsonl(folder / "corpus.jsonl", [{"_id": "d1", "title": "", "text": "a doc"}])
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_bytes(content)
    with pytest.raises(DataFileError, match=re.escape(f"{folder / 'qrels' / 'test.tsv'}: {problem}")):
        eval_test_texts(mirror)


def _beir(mirror, qrels_lines):
    folder = mirror / "en" / "retr-fake"
    _jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "a query"}, {"_id": "q2", "text": "another"}])
    _jsonl(folder / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "a doc"}, {"_id": "d2", "text": "x"}])
    (folder / "qrels").mkdir()
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text("".join(line + "\n" for line in qrels_lines))
    return qrels


def test_beir_test_texts_are_forbidden(mirror):
    _beir(mirror, ["query-id\tcorpus-id\tscore", "q1\td1\t1"])
    forbidden = eval_test_texts(mirror)
    assert {"a query", "a doc", "t a doc"} <= forbidden and "another" not in forbidden


@pytest.mark.parametrize("lines,line,field,problem", [
    (["q1\td1\t1"], 1, "<header>", "expected the header 'query-id<TAB>corpus-id<TAB>score'"),  # was KeyError 'query-id'
    (["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td2"], 3, "<row>", "expected 3 tab-separated fields"),
    (["query-id\tcorpus-id\tscore", "q1\td1\thigh"], 2, "score", "expected a number"),
    (["query-id\tcorpus-id\tscore", "q1\td1\t1", "q9\td2\t1"], 3, "query-id", "'q9' is not in"),
    (["query-id\tcorpus-id\tscore", "q1\td7\t1"], 2, "corpus-id", "'d7' is not in"),
])
def test_broken_qrels_names_file_line_field(mirror, lines, line, field, problem):
    qrels = _beir(mirror, lines)
    with pytest.raises(RecordError) as exc:
        eval_test_texts(mirror)
    assert (exc.value.source, exc.value.line, exc.value.field) == (str(qrels), line, field)
    assert problem in str(exc.value)


def test_truncated_evaluation_line_names_its_own_line(mirror):
    rows = [json.dumps({"sentence1": f"s{i}", "sentence2": "t", "score": 1.0}) for i in range(1000)]
    rows[689] = rows[689][:-3]                                   # line 690 lost its end
    path = mirror / "en" / "sts-big" / "test.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(RecordError) as exc:
        eval_test_texts(mirror)
    assert (exc.value.source, exc.value.line, exc.value.field) == (str(path), 690, "<json>")
    assert "truncated JSON" in str(exc.value) and "line 2" not in str(exc.value)  # was: "line 2 column 1"


@pytest.mark.parametrize("raw,field,problem", [
    (b'{"sentence1": "caf\xe9", "sentence2": "t", "score": 1.0}', "sentence1", "not valid UTF-8 (byte 0xe9 at column 19)"),
    (b'{"score": 1.0}', "sentence1/sentence2/text/query", "no text field"),
    (b'{"sentence1": 3, "sentence2": "t"}', "sentence1", "expected a string, got int"),
    (b'{"query": "q", "positive": "not a list", "negative": []}', "positive", "expected a list of strings"),
    (b'[' * 100_000, "<json>", "nested too deeply"),
])
def test_bad_evaluation_record_names_line_and_field(mirror, raw, field, problem):
    path = mirror / "zh" / "sts-fake" / "test.jsonl"
    good = json.dumps({"sentence1": "a", "sentence2": "b", "score": 1.0}).encode()
    path.write_bytes(b"\n".join([good] * 4 + [raw, good]) + b"\n")
    with pytest.raises(RecordError) as exc:
        eval_test_texts(mirror)
    assert (exc.value.source, exc.value.line, exc.value.field) == (str(path), 5, field)
    assert problem in str(exc.value)


def test_empty_evaluation_file_or_folder_without_split_is_an_error(mirror):
    (mirror / "zh" / "sts-fake" / "test.jsonl").write_bytes(b"")
    with pytest.raises(DataFileError, match=re.escape(f"{mirror / 'zh' / 'sts-fake' / 'test.jsonl'}: no records")):
        eval_test_texts(mirror)
    (mirror / "zh" / "sts-fake" / "test.jsonl").unlink()
    _jsonl(mirror / "zh" / "sts-fake" / "train.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 1.0}])
    with pytest.raises(DataFileError, match=re.escape(f"{mirror / 'zh' / 'sts-fake'}: evaluation folder without")):
        eval_test_texts(mirror)


def test_empty_language_folder_is_a_warning(mirror, caplog):
    (mirror / "zh" / "sts-fake" / "test.jsonl").unlink()
    (mirror / "zh" / "sts-fake").rmdir()
    with caplog.at_level(logging.WARNING, logger="kalm_lib.data"):
        assert TEST_TEXT.lower() in eval_test_texts(mirror)
    assert f"{mirror / 'zh'}: no evaluation sets" in caplog.text


def test_scifact_positives_on_test_documents_stay_out_unless_switched_off(data_dir):
    """The issue's 259 SciFact examples whose positives are test documents."""
    recs, rep = load_with_report("en-scifact", data_dir=data_dir)
    assert rep.read == 809 and len(recs) == 550 and sum(rep.dropped.values()) == 259 and rep.decontaminated
    recs, rep = load_with_report("en-scifact", data_dir=data_dir, decontaminate=False)
    assert len(recs) == 809 and not rep.decontaminated and "decontamination OFF" in rep.summary()


def test_every_scored_local_split_is_forbidden(data_dir):
    """Decontamination covers every file that a local task's scored split reads (SICK-R's test = SICK train too)."""
    from kalm_lib.evaluation.benchmarks import main_split
    from kalm_lib.evaluation.local_tasks import LOCAL_TASK_SPECS

    forbidden_files = set(evaluated_files(data_dir))
    for spec in LOCAL_TASK_SPECS:
        for fname in spec.splits[main_split(spec.evaluated_splits)]:
            assert data_dir / spec.folder / fname in forbidden_files, (spec.name, fname)
    assert data_dir / "en" / "sts-sickr" / "train.jsonl" in forbidden_files
    assert not CATALOG["en-sickr-train"].default
    with pytest.raises(EmptyDatasetError, match="dataset 'en-sickr-train': contributes no example"):
        build_training_set(["en-sickr-train"], "finetune", data_dir=data_dir)


def test_local_task_readers_name_file_line_field(tmp_path):
    from kalm_lib.evaluation.local_tasks import LocalDataError, read_jsonl, read_qrels

    rows = [json.dumps({"sentence1": f"s{i}", "sentence2": "t", "label": 1}) for i in range(1000)]
    rows[689] = rows[689][:-3]
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(rows) + "\n")
    req = {"sentence1": str, "sentence2": str, "label": int}
    with pytest.raises(LocalDataError, match=re.escape(f"{path}:690: invalid JSON")) as exc:
        read_jsonl(path, req)
    assert (exc.value.line, exc.value.field) == (690, "<json>") and isinstance(exc.value, DataError)
    rows[689] = json.dumps({"sentence1": "s", "sentence2": "t", "label": 2})
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(LocalDataError, match=re.escape(f"{path}:690: field 'label' must be one of [0, 1], got 2")):
        read_jsonl(path, req, {"label": (0, 1)})
    path.write_bytes(b'{"sentence1": "ok", "sentence2": "t", "label": 1}\n{"sentence1": "caf\xe9"}\n')
    with pytest.raises(LocalDataError, match=re.escape(f"{path}:2: not valid UTF-8 (byte 0xe9")) as exc:
        read_jsonl(path, req)                                     # was a bare UnicodeDecodeError
    assert exc.value.field == "<bytes>"
    path.write_text('{"sentence1": "a", "sentence2": "b", "score": NaN}\n')
    with pytest.raises(LocalDataError, match=":1: field 'score' must be a finite number"):
        read_jsonl(path, {"sentence1": str, "sentence2": str, "score": (int, float)})
    qrels = tmp_path / "test.tsv"
    qrels.write_bytes(b"query-id\tcorpus-id\tscore\nq1\td\xff1\t1\n")
    with pytest.raises(LocalDataError, match=re.escape(f"{qrels}:2: not valid UTF-8")):
        read_qrels(qrels)
    qrels.write_bytes(b"")
    with pytest.raises(LocalDataError, match=re.escape(f"{qrels}: empty file")):
        read_qrels(qrels)


def test_retrieval_task_names_the_qrels_line_of_a_missing_id(tmp_path):
    from kalm_lib.evaluation.local_tasks import SPECS, LocalDataError, _build_retrieval

    folder = tmp_path / "en" / "retr-scifact"
    _jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "a"}])
    _jsonl(folder / "corpus.jsonl", [{"_id": "d1", "text": "b"}])
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td5\t1\n")
    with pytest.raises(LocalDataError, match=r"qrels/test\.tsv:3: corpus-id 'd5' is not in") as exc:
        _build_retrieval(SPECS["SciFact"], tmp_path, None)
    assert (exc.value.line, exc.value.field) == (3, "corpus-id")


def test_lone_surrogate_is_a_record_error(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"query": "ok", "pos": ["p"]}\n{"query": "bad \\ud83d", "pos": ["p"]}\n')
    assert len(list(iter_jsonl(path))) == 2                       # valid JSON ...
    with pytest.raises(RecordError, match=re.escape(f"{path}:2: field 'query': lone surrogate")):
        validate_file(path)                                       # ... but not UTF-8 text


# ---------------------------------------------------------------- 6. empty is an error or a warning you see
def _empty_kinds(mirror):
    t = mirror / "train"
    t.mkdir(exist_ok=True)
    (t / "zero.jsonl.gz").write_bytes(b"")
    (t / "empty-gzip.jsonl.gz").write_bytes(gzip.compress(b""))
    (t / "malformed.jsonl").write_text('{"query": ""}\n{"pos": []}\n')
    _jsonl(t / "all-test.jsonl", [{"query": TEST_TEXT, "pos": ["p"]}])
    return {"zero.jsonl.gz": "no records (empty file)", "empty-gzip.jsonl.gz": "no records (empty file)",
            "malformed.jsonl": "2 records read, none kept; 2 malformed",
            "all-test.jsonl": "1 records read, none kept; 1 dropped (query is an evaluation test text)"}


@pytest.mark.parametrize("fname", ["zero.jsonl.gz", "empty-gzip.jsonl.gz", "malformed.jsonl", "all-test.jsonl"])
def test_dataset_with_no_example_is_an_error(mirror, fname):
    why = _empty_kinds(mirror)[fname]
    path = mirror / "train" / fname
    with pytest.raises(EmptyDatasetError) as exc:
        build_training_set([_user(path, name="empty-one"), _user(_jsonl(mirror / "ok.jsonl", _pairs(4)), name="ok")],
                           "pretrain", data_dir=mirror)
    err = exc.value
    assert (err.dataset, err.source) == ("empty-one", str(path))
    assert str(err).startswith(f"{path}: dataset 'empty-one': contributes no example: {why}")
    assert "allow_empty=True" in str(err)


def test_allow_empty_is_a_counted_warning_and_the_log_counts_contributors(mirror, caplog):
    _empty_kinds(mirror)
    names = [_user(mirror / "train" / "zero.jsonl.gz", name="zero"), _user(_jsonl(mirror / "a.jsonl", _pairs(3)), name="a"),
             _user(_jsonl(mirror / "b.jsonl", _pairs(2, "b")), name="b")]
    with caplog.at_level(logging.INFO, logger="kalm_lib.data"):
        ds = build_training_set(names, "pretrain", data_dir=mirror, allow_empty=True)
    assert len(ds) == 5 and ds.empty_datasets == ["zero"] and ds.reports["zero"].empty
    summary = ds.summary().set_index("dataset")
    assert summary.loc["zero", "examples"] == 0 and summary.loc["zero", "empty"] and not summary.loc["a", "empty"]
    assert "pretrain training set: 5 examples from 2 datasets (1 empty, left out: zero)" in caplog.text
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "zero" in r.getMessage()]
    assert warned and "contributes no example" in warned[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kalm_lib.data"):
        build_training_set(names[1:], "pretrain", data_dir=mirror)
    assert "5 examples from 2 datasets" in caplog.text and "empty" not in caplog.text


def test_every_dataset_empty_is_an_error_even_when_allowed(mirror):
    _empty_kinds(mirror)
    with pytest.raises(DataError, match="none of the 2 datasets contributed an example"):
        build_training_set([_user(mirror / "train" / "zero.jsonl.gz", name="z"),
                            _user(mirror / "train" / "all-test.jsonl", name="t")], "pretrain", data_dir=mirror,
                           allow_empty=True)


def test_empty_mined_file_is_an_error(mirror, tmp_path):
    src = _jsonl(mirror / "src.jsonl", [{"query": f"q{i}", "pos": [f"p{i}"], "neg": ["n1", "n2"]} for i in range(4)])
    mined = tmp_path / "mined"
    mined.mkdir()
    (mined / "my-set.jsonl").write_bytes(b"")
    with pytest.raises(EmptyDatasetError, match=re.escape(f"{mined / 'my-set.jsonl'}: dataset 'my-set'")) as exc:
        build_training_set([_user(src)], "finetune", data_dir=mirror, num_negatives=2, mined_dir=mined)
    assert "mine again" in str(exc.value)
    (mined / "my-set.jsonl").unlink()                               # no mined file: the source's own negatives
    assert len(build_training_set([_user(src)], "finetune", data_dir=mirror, num_negatives=2, mined_dir=mined)) == 4


# Ids by name, and mtime=0: gzip stamps the time into its header, so the bytes (and
# an id made from them) differ between pytest-xdist workers, which then refuse to run.
@pytest.mark.parametrize("content", [b"", gzip.compress(b"", mtime=0)], ids=["plain", "gzip"])
def test_validate_exits_nonzero_on_an_empty_file(tmp_path, capsys, content):
    path = tmp_path / ("e.jsonl.gz" if content else "e.jsonl")
    path.write_bytes(content)
    assert data_cli(["validate", str(path)]) == 1
    assert f"error: {path}: no records (empty file)" in capsys.readouterr().err
    with pytest.raises(DataFileError, match="no records"):
        validate_file(path)
    good = _jsonl(tmp_path / "good.jsonl", _pairs(2))
    assert data_cli(["validate", str(good)]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": ""}\n')
    assert data_cli(["validate", str(bad), "--skip-invalid"]) == 1
    assert data_cli(["validate", str(tmp_path / "missing.jsonl")]) == 1
    assert "file not found" in capsys.readouterr().err


# ---------------------------------------------------------------- 8. your own data from a config
def test_own_dataset_from_a_mapping_next_to_catalog_names(mirror, tmp_path):
    _jsonl(mirror / "train" / "en-trecqa" / "train.jsonl.gz", [{"query": f"who {i}", "pos": [f"ans {i}"],
                                                               "neg": [f"wrong {i}", "x"]} for i in range(3)], gz=True)
    cfg_dir = tmp_path / "configs"
    _jsonl(cfg_dir / "data" / "mine.jsonl", [{"sentence1": f"s {i}", "sentence2": f"t {i}", "score": 5} for i in range(4)])
    decl = {"name": "my-sts", "path": "data/mine.jsonl", "format": "sts", "task_type": "sts",
            "instruction": "Retrieve semantically similar text", "symmetric": True, "min_score": 4}
    entry = entry_from_mapping(decl, where="stage.yaml: data.datasets[1]", base_dir=cfg_dir)
    assert entry.path == str(cfg_dir / "data" / "mine.jsonl") and entry.stages == ("pretrain", "finetune", "distill")
    ds = build_training_set(["en-trecqa", entry], "finetune", data_dir=mirror, num_negatives=2)
    assert ds.tasks.count("en-trecqa") == 3 and ds.tasks.count("my-sts") == 4
    item = ds[ds.tasks.index("my-sts")]
    prefix = "Instruct: Retrieve semantically similar text \n Query: "
    assert item["query"].startswith(prefix) and item["pos"].startswith(prefix)  # symmetric: both sides
    # a plain dict in the list works too (relative to the data folder), and load_with_report takes one
    _jsonl(mirror / "own" / "pairs.jsonl", _pairs(3))
    ds = build_training_set(["en-trecqa", _user("own/pairs.jsonl")], "pretrain", data_dir=mirror)
    assert ds.tasks.count("my-set") == 3 and not ds[ds.tasks.index("my-set")]["pos"].startswith("Instruct")
    assert len(load_with_report(_user("own/pairs.jsonl"), data_dir=mirror)[0]) == 3


@pytest.mark.parametrize("change,field,problem", [
    ({"instruction": None}, "instruction", "missing"),
    ({"format": "csv"}, "format", "'csv' not in"),
    ({"symmetric": "yes"}, "symmetric", "expected true or false, got 'yes'"),
    ({"instructions": "typo"}, "instructions", "unknown catalog field"),
    ({"name": "en-scifact"}, "name", "already a catalog dataset"),
    ({"name": "a/b"}, "name", "not a usable name"),
    ({"stages": ["pretraining"]}, "stages", "unknown stage"),
    ({"path": None}, "path", "needs a local path or a hub source"),
    ({"min_score": "4"}, "min_score", "expected a number"),
    ({"task_type": "search"}, "task_type", "'search' not in"),
])
def test_bad_declaration_names_source_and_field(change, field, problem):
    decl = {k: v for k, v in dict(_user("x.jsonl"), **change).items() if v is not None}
    with pytest.raises(EntryError) as exc:
        entry_from_mapping(decl, where="configs/mine.yaml: data.datasets[2]")
    assert exc.value.field == field and problem in str(exc.value)
    assert str(exc.value).startswith("configs/mine.yaml: data.datasets[2]")


def test_declaration_errors_in_build_training_set(mirror):
    with pytest.raises(EntryError, match=r"datasets\[1\] \(my-set\): field 'symmetric'"):
        build_training_set(["en-trecqa", _user("x.jsonl", symmetric="no")], "pretrain", data_dir=mirror)
    with pytest.raises(EntryError, match=r"datasets\[1\]: field 'name': dataset 'my-set' is listed twice"):
        build_training_set([_user("x.jsonl"), _user("y.jsonl")], "pretrain", data_dir=mirror)
    with pytest.raises(EntryError, match="field '<entry>': expected a mapping"):
        entry_from_mapping(["not", "a", "mapping"])
    assert get_entry(_user("x.jsonl")).name == "my-set"
