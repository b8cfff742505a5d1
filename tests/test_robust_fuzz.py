"""Fuzz the JSONL / TSV readers (hypothesis): whatever bytes a file holds, the only exceptions that escape
are the project's own (``kalm_lib.data.DataError``: RecordError, DataFileError, EmptyDatasetError,
LocalDataError), never a bare KeyError / JSONDecodeError / UnicodeDecodeError / TypeError.

Inputs mix valid records of every format, records with wrong types, unknown or missing fields, truncated
lines, random bytes, blank lines, gzip (whole, empty, cut). Derandomized (the same examples every run) so
``make test`` stays deterministic; about 20 s on one core. A longer, random hunt:
``KALM_FUZZ_SCALE=20 KALM_FUZZ_RANDOM=1 pytest tests/test_robust_fuzz.py``.
"""
import gzip
import itertools
import json
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kalm_lib.data import (DataError, entry_from_mapping, iter_jsonl, iter_tsv, load_with_report,  # noqa: E402
                           validate_file)
from kalm_lib.data import overlap  # noqa: E402
from kalm_lib.evaluation import local_tasks  # noqa: E402

FIELDS = ["query", "pos", "neg", "pos_scores", "neg_scores", "teacher_scores", "pos_rank", "label", "instruction",
          "sentence1", "sentence2", "score", "text", "positive", "negative", "_id", "title", "package", "negs"]
SCALE = float(os.environ.get("KALM_FUZZ_SCALE", "1"))
SETTINGS = dict(derandomize=os.environ.get("KALM_FUZZ_RANDOM") != "1", database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

texts = st.one_of(st.sampled_from(["a", "b", "cat", "dog", "  ", "", "A test sentence.", "é", "中文", "\ud83d"]),
                  st.text(max_size=8))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
                    texts)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=3),
                      max_leaves=8)
records = st.dictionaries(st.sampled_from(FIELDS) | texts, values, max_size=6)
GOOD = {  # valid records of each format (texts may still be empty, test texts, lone surrogates ...)
    "train": st.builds(lambda q, p, n: {"query": q, "pos": p, "neg": n}, texts, st.lists(texts, min_size=1, max_size=3),
                       st.lists(texts, max_size=3)),
    "sts": st.builds(lambda a, b, s: {"sentence1": a, "sentence2": b, "score": s}, texts, texts,
                     st.floats(0, 5) | st.integers(0, 5)),
    "pair": st.builds(lambda a, b, lab: {"sentence1": a, "sentence2": b, "label": lab}, texts, texts,
                      st.integers(-1, 2)),
    "cls": st.builds(lambda t, lab: {"text": t, "label": lab}, texts, st.sampled_from(["x", "y", "z", 1, 2])),
}
good = st.one_of(*GOOD.values())


def _line(kind, obj, junk):
    if kind == "json":
        return json.dumps(obj, ensure_ascii=bool(junk and junk[0] % 2)).encode("utf-8", "surrogatepass")
    if kind == "cut":
        raw = json.dumps(obj).encode()
        return raw[: max(1, len(raw) // 2)]
    if kind == "blank":
        return b"  "
    return junk  # raw bytes


lines = st.tuples(st.sampled_from(["json", "json", "json", "cut", "blank", "bytes"]), good | records,
                  st.binary(max_size=12)).map(lambda t: _line(*t))
files = st.tuples(st.lists(lines, max_size=8), st.sampled_from(["plain", "plain", "gz", "gz-cut"]),
                  st.booleans())


def _bytes(body: list[bytes], final_newline: bool) -> bytes:
    return b"\n".join(body) + (b"\n" if final_newline and body else b"")


_counter = itertools.count()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    """A tiny mirror (one evaluation set per language) and a folder for the fuzzed files."""
    root = tmp_path_factory.mktemp("fuzz")
    for lang in ("en", "zh"):
        (root / lang / "sts-fake").mkdir(parents=True)
        (root / lang / "sts-fake" / "test.jsonl").write_text(
            json.dumps({"sentence1": "A test sentence.", "sentence2": "b", "score": 1.0}) + "\n")
    (root / "files").mkdir()
    return root


def _write(root, body, mode, final_newline, suffix=".jsonl"):
    """A new file each time: the loader caches by (path, size, mtime)."""
    raw = _bytes(body, final_newline)
    n = next(_counter)
    if mode == "plain":
        path = root / "files" / f"f{n}{suffix}"
        path.write_bytes(raw)
    else:
        path = root / "files" / f"f{n}{suffix}.gz"
        z = gzip.compress(raw)
        path.write_bytes(z if mode == "gz" else z[: max(1, len(z) - 1 - len(z) // 3)])
    return path


def _only_project_errors(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except DataError:
        return None
    # anything else propagates and fails the test with the example that caused it


@settings(max_examples=int(250 * SCALE), **SETTINGS)
@given(f=files)
def test_jsonl_readers_raise_only_project_errors(fuzz_dir, f):
    body, mode, nl = f
    path = _write(fuzz_dir, body, mode, nl)
    out = _only_project_errors(lambda: list(iter_jsonl(path)))
    if out is not None:
        assert all(isinstance(n, int) and isinstance(o, dict) for n, o in out)
    skipped = []
    _only_project_errors(lambda: list(iter_jsonl(path, on_error=skipped.append, allow_blank=True)))
    for fmt in ("train", "sts", "pair", "cls"):
        for skip in (False, True):
            rep = _only_project_errors(validate_file, path, fmt, skip_invalid=skip)
            if rep is not None:
                assert rep.read >= 1 and rep.kept == rep.read - rep.invalid
    if mode == "plain":
        got = _only_project_errors(overlap._file_texts, path)
        assert got is None or all(isinstance(t, str) for t in got)
        for required in ({"sentence1": str, "sentence2": str, "score": (int, float)}, {"text": str, "label": (str, int)},
                         {"query": str, "positive": list, "negative": list}):
            _only_project_errors(local_tasks.read_jsonl, path, required)
        _only_project_errors(local_tasks.read_jsonl, path, {"sentence1": str, "label": int}, {"label": (0, 1)})


def _loader_file(fmt):
    """Mostly valid records of ``fmt`` (so the loader gets past reading), some broken lines."""
    line = st.tuples(st.sampled_from(["json"] * 8 + ["cut", "bytes"]), GOOD[fmt] | records,
                     st.binary(max_size=12)).map(lambda t: _line(*t))
    return st.tuples(st.lists(line, max_size=10), st.sampled_from(["plain", "plain", "plain", "gz", "gz-cut"]),
                     st.booleans())


@settings(max_examples=int(160 * SCALE), **SETTINGS)
@given(data=st.data(), fmt=st.sampled_from(["train", "sts", "pair", "cls"]), skip=st.booleans(),
       max_rows=st.sampled_from([None, 1, 3]))
def test_loader_raises_only_project_errors(fuzz_dir, data, fmt, skip, max_rows):
    body, mode, nl = data.draw(_loader_file(fmt), label="file")
    path = _write(fuzz_dir, body, mode, nl)
    task = {"train": "retrieval", "sts": "sts", "pair": "pair_classification", "cls": "classification"}[fmt]
    entry = entry_from_mapping({"name": "fuzz", "path": str(path), "format": fmt, "task_type": task,
                                "instruction": "Do it", "symmetric": fmt != "train"})
    res = _only_project_errors(load_with_report, entry, data_dir=fuzz_dir, skip_invalid=skip, max_rows=max_rows)
    if res is not None:
        recs, rep = res
        assert rep.kept == len(recs)
        for r in recs:
            assert isinstance(r["query"], str) and r["query"].strip()
            for t in [r["query"], *r["pos"], *r["neg"]]:
                assert isinstance(t, str) and t.strip()
                t.encode("utf-8")  # a lone surrogate ("\ud800" in the JSON) would crash the tokenizer later


tsv_cells = st.one_of(st.sampled_from(["q1", "q2", "d1", "d2", "1", "0", "x", "", "inf", "nan", "1e999"]),
                      st.text(alphabet=st.characters(blacklist_characters="\t\n\r"), max_size=5))
ids = st.sampled_from(["q1", "q2", "d1", "d2", "q3", "d9", ""])
scores = st.sampled_from(["1", "0", "2.0", "x", "", "inf", "nan", "1e999", "-1"])
tsv_rows = st.one_of(st.tuples(ids, ids, scores).map(lambda c: "\t".join(c).encode()),
                     st.tuples(st.sampled_from(["q1", "q2"]), st.sampled_from(["d1", "d2"]), st.just("1")).map(
                         lambda c: "\t".join(c).encode()),
                     st.lists(tsv_cells, min_size=0, max_size=4).map(
                         lambda c: "\t".join(c).encode("utf-8", "surrogatepass")),
                     st.binary(max_size=10))
tsv_files = st.tuples(st.sampled_from([b"query-id\tcorpus-id\tscore", b"query-id\tcorpus-id", b"qid\tdid\tscore",
                                       b"\xef\xbb\xbfquery-id\tcorpus-id\tscore", b""]),
                      st.lists(tsv_rows, max_size=6), st.booleans())


@settings(max_examples=int(250 * SCALE), **SETTINGS)
@given(t=tsv_files)
def test_qrels_readers_raise_only_project_errors(fuzz_dir, t):
    header, rows, nl = t
    n = next(_counter)
    folder = fuzz_dir / "files" / f"retr{n}"
    (folder / "qrels").mkdir(parents=True)
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "query one"}\n{"_id": "q2", "text": "two"}\n')
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "doc one"}\n{"_id": "d2", "text": "x"}\n')
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_bytes(_bytes([header, *rows] if header or rows else [], nl))
    out = _only_project_errors(lambda: list(iter_tsv(qrels, overlap.QRELS_HEADER)))
    if out is not None:
        assert all(set(r) == set(overlap.QRELS_HEADER) for _, r in out)
    texts = _only_project_errors(overlap._file_texts, qrels)
    if texts is not None:
        assert texts <= {"query one", "two", "doc one", "T doc one", "x"}
    _only_project_errors(local_tasks.read_qrels, qrels)
