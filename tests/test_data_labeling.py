"""Example-based multi-class labeling: p⁺ = another example of the same class, p⁻ = other classes."""
from collections import Counter

from kalm_lib.data import LoadReport, example_based_labeling, load_with_report


def _check(out, label_of):
    for r in out:
        c = r["label"]
        assert label_of[r["query"]] == {c}
        assert r["pos"] and all(c in label_of[p] and p != r["query"] for p in r["pos"])
        assert len(set(r["pos"])) == len(r["pos"])
        assert all(c not in label_of[n] for n in r["neg"])
        assert len(set(r["neg"])) == len(r["neg"])


def test_labeling_on_hand_made_classes():
    data = {"fruit": ["apple", "pear", "plum"], "tool": ["hammer", "saw"], "animal": ["cat", "dog", "cow", "owl"],
            "lonely": ["singleton"]}
    recs = [{"query": t, "label": c} for c, ts in data.items() for t in ts]
    label_of = {t: {c} for c, ts in data.items() for t in ts}
    rep = LoadReport("unit")
    out = example_based_labeling(recs, num_pos=4, num_neg=5, seed=0, report=rep)
    assert [r["query"] for r in out] == [r["query"] for r in recs if r["label"] != "lonely"]
    assert rep.dropped["class has no other example (no positive)"] == 1
    _check(out, label_of)
    by_q = {r["query"]: r for r in out}
    assert set(by_q["hammer"]["pos"]) == {"saw"}                       # the only other tool
    assert set(by_q["apple"]["pos"]) == {"pear", "plum"}               # all other fruits (num_pos=4 > 2)
    assert len(by_q["apple"]["neg"]) == 5
    # negatives spread over classes: with 3 other classes and 5 negatives, every other class is used
    classes = {c for t in by_q["apple"]["neg"] for c in label_of[t]}
    assert classes == {"tool", "animal", "lonely"}
    assert example_based_labeling(recs, num_pos=4, num_neg=5, seed=0) == out       # deterministic
    assert example_based_labeling(recs, num_pos=4, num_neg=5, seed=1) != out


def test_text_with_two_labels_is_never_a_negative_for_either():
    recs = [{"query": "ambiguous", "label": "a"}, {"query": "ambiguous", "label": "b"},
            {"query": "a1", "label": "a"}, {"query": "b1", "label": "b"}, {"query": "c1", "label": "c"},
            {"query": "c2", "label": "c"}]
    out = example_based_labeling(recs, num_pos=2, num_neg=4, seed=0)
    for r in out:
        if r["label"] in ("a", "b"):
            assert "ambiguous" not in r["neg"]


def test_labeling_on_real_classification_sets(data_dir):
    for name in ("en-banking77-train", "zh-tnews-train", "zh-thucnews-train", "zh-chnsenticorp-train"):
        recs, rep = load_with_report(name, data_dir=data_dir, max_rows=200, seed=3)
        assert len(recs) == 200, name
        # reference labels straight from the file
        import json
        from kalm_lib.data import get_entry
        label_of = {}
        for line in (data_dir / get_entry(name).path).open(encoding="utf-8"):
            r = json.loads(line)
            label_of.setdefault(r["text"], set()).add(r["label"])
        _check(recs, label_of)
        assert all(len(r["neg"]) == 16 for r in recs), name
        if name == "en-banking77-train":
            assert len(Counter(r["label"] for r in recs)) > 50  # the subset spans the classes


def test_labeling_example_table(data_dir):
    from kalm_lib.data import labeling_example

    t = labeling_example("zh-tnews-train", data_dir=data_dir, max_rows=50, seed=0)
    assert list(t["role"][:2]) == ["query q", "positive p⁺"] and len(t) == 2 + 5
    assert t["class"][1] == t["class"][0] and not (t["class"][2:] == t["class"][0]).any()
