"""No evaluation test text enters training: checked against a reference built here, independently."""
import csv
import json
import unicodedata

import pytest

from kalm_lib.data import CATALOG, LoadReport, decontaminate, load_with_report


# training files that are part of an MTEB test split themselves (MTEB's SICK-R test = every SICK pair)
# training sets that are a scored split (kalm_lib/data/eval_sets.py): SICK-R's test is all SICK pairs; MTEB scores
# ATEC's and BQ's validation splits as well as their test splits
WHOLLY_EVALUATED = {"en-sickr-train", "zh-atec-validation", "zh-bq-validation"}


def _norm(t):
    if t.isascii():  # NFKC is the identity on ASCII, casefold equals lower
        return " ".join(t.lower().split())
    return " ".join(unicodedata.normalize("NFKC", t).casefold().split())


def _reference_test_texts(root):
    """Every text of every evaluated split, read the plain way."""
    texts = set()
    for folder in sorted(p for lang in ("en", "zh") for p in (root / lang).iterdir() if p.is_dir()):
        qrels = folder / "qrels" / "test.tsv"
        if qrels.is_file():
            rows = list(csv.DictReader(qrels.open(encoding="utf-8"), delimiter="\t"))
            qids, dids = {r["query-id"] for r in rows}, {r["corpus-id"] for r in rows}
            for line in (folder / "queries.jsonl").open(encoding="utf-8"):
                q = json.loads(line)
                if q["_id"] in qids:
                    texts.add(q["text"])
            for line in (folder / "corpus.jsonl").open(encoding="utf-8"):
                d = json.loads(line)
                if d["_id"] in dids:
                    texts |= {d["text"], (d["title"] + " " + d["text"]).strip()}
            continue
        # C-MTEB scores validation and test where both exist (ATEC, BQ, STSB), validation alone for AFQMC, OCNLI;
        # a copy without test or validation scores nothing we forbid. LCQMC / PAWSX score test only.
        splits = [folder / "test.jsonl"] if (folder / "test.jsonl").is_file() else []
        if (folder / "validation.jsonl").is_file() and folder.name not in ("sts-lcqmc", "sts-pawsx"):
            splits.append(folder / "validation.jsonl")
        splits += [folder / "train.jsonl"] if folder.name == "sts-sickr" else []  # MTEB's SICK-R test
        for line in (line for s in splits for line in s.open(encoding="utf-8")):
            r = json.loads(line)
            texts |= {r[k] for k in ("sentence1", "sentence2", "text", "query") if k in r}
            texts |= set(r.get("positive", [])) | set(r.get("negative", []))
    return {_norm(t) for t in texts}


@pytest.mark.slow
def test_no_training_text_is_an_evaluation_test_text(data_dir):
    forbidden = _reference_test_texts(data_dir)
    assert len(forbidden) > 100_000
    total_removed = 0
    for entry in CATALOG.values():
        if not entry.path:
            continue
        recs, rep = load_with_report(entry, data_dir=data_dir, skip_invalid=True)
        assert recs or entry.name in WHOLLY_EVALUATED, entry.name
        texts = {t for r in recs for t in (r["query"], *r["pos"], *r["neg"])}
        leaked = [t for t in texts if _norm(t) in forbidden]
        assert not leaked, (entry.name, leaked[:3])
        total_removed += sum(rep.dropped.values()) + sum(rep.removed_texts.values())
    assert total_removed > 0  # the mirror has real overlaps (STS-B train vs STS12-16 test, SciFact docs, ...)


def test_known_overlaps_are_removed_and_counted(data_dir):
    # SciFact: train claims citing a document that a test claim cites lose that document
    recs, rep = load_with_report("en-scifact", data_dir=data_dir)
    assert rep.read == 809 and rep.dropped["every positive is an evaluation test text"] > 0
    assert rep.kept + sum(rep.dropped.values()) == rep.read
    # WordNet glosses are the OnWN sentences of STS12-14 test
    _, rep = load_with_report("en-wordnet-gloss", data_dir=data_dir, max_rows=10)
    assert rep.dropped["query is an evaluation test text"] + rep.dropped["every positive is an evaluation test text"] > 0


def test_decontaminate_unit():
    forbidden = frozenset({"a test sentence."})
    recs = [{"query": "A  Test sentence.", "pos": ["x"], "neg": []},             # query: normalised match
            {"query": "q1", "pos": ["a test sentence."], "neg": ["n"]},           # only positive is test
            {"query": "q2", "pos": ["p", "A test sentence."], "neg": ["a test sentence.", "n"],
             "neg_scores": [0.9, 0.1], "pos_scores": [0.5, 0.6]},
            {"query": "q3", "label": "c"}]                                        # before labeling
    rep = LoadReport("unit")
    out = decontaminate(recs, forbidden, rep)
    assert [r["query"] for r in out] == ["q2", "q3"]
    assert out[0]["pos"] == ["p"] and out[0]["neg"] == ["n"]
    assert out[0]["pos_scores"] == [0.5] and out[0]["neg_scores"] == [0.1]
    assert rep.dropped == {"query is an evaluation test text": 1, "every positive is an evaluation test text": 1}
    assert rep.removed_texts["evaluation test text in pos/neg"] == 1 + 2
