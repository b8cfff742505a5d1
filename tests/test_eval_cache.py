"""The content-addressed evaluation cache (kalm_lib/evaluation/cache.py): the same weights under another label are
read back, not encoded again, with the same scores and predictions; a model whose weights, attention mode or
evaluation settings changed misses the cache and is scored afresh."""

import pytest

pytest.importorskip("mteb")

import torch  # noqa: E402

from kalm_lib.evaluation import cache, evaluate_model  # noqa: E402
from kalm_lib.evaluation.per_example import predictions_path  # noqa: E402
from kalm_lib.model import KaLMEmbedder  # noqa: E402

CAPS = {"STSBenchmark": 40, "SciFact": 8, "Banking77Classification": 60}


def _count_encodes(model, monkeypatch):
    calls = []
    real = type(model).encode

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(type(model), "encode", counting)
    return calls


def test_fingerprint_tracks_weights_and_attention_mode():
    a, b = KaLMEmbedder.tiny(seed=0), KaLMEmbedder.tiny(seed=0)
    assert cache.model_fingerprint(a) == cache.model_fingerprint(b)
    assert cache.model_fingerprint(a) != cache.model_fingerprint(KaLMEmbedder.tiny(seed=1))
    with torch.no_grad():  # one weight nudged by the smallest bf16-visible step: a different model
        next(b.parameters()).view(-1)[0] += 1e-3
    assert cache.model_fingerprint(a) != cache.model_fingerprint(b)
    assert cache.model_fingerprint(a) != cache.model_fingerprint(KaLMEmbedder.tiny(seed=0, causal=True))


def test_same_weights_under_another_label_are_read_back(tmp_path, data_dir, monkeypatch):
    model = KaLMEmbedder.tiny(seed=0)
    first = evaluate_model(model, tasks=CAPS, output_dir=tmp_path / "out", model_name="after pre-training",
                           save_predictions=True, cache_dir=tmp_path / "cache")
    calls = _count_encodes(model, monkeypatch)
    again = evaluate_model(KaLMEmbedder.tiny(seed=0), tasks=CAPS, output_dir=tmp_path / "out", model_name="pretrain",
                           save_predictions=True, cache_dir=tmp_path / "cache")
    assert calls == []  # nothing encoded
    assert list(again.model.unique()) == ["pretrain"]
    cols = ["task", "split", "subset", "main_split", "metric", "main_score", "max_rows", "comparable"]
    assert again[cols].reset_index(drop=True).equals(first[cols].reset_index(drop=True))
    for task in ("STSBenchmark", "SciFact"):  # the predictions the stage-gain intervals read are there too
        a = predictions_path(tmp_path / "out" / "after_pre-training" / "predictions", task).read_bytes()
        b = predictions_path(tmp_path / "out" / "pretrain" / "predictions", task).read_bytes()
        assert a == b


def test_changed_model_or_settings_miss(tmp_path, data_dir, monkeypatch):
    tasks = {"STSBenchmark": 40}
    base = evaluate_model(KaLMEmbedder.tiny(seed=0), tasks=tasks, cache_dir=tmp_path / "c")
    other = KaLMEmbedder.tiny(seed=1)
    calls = _count_encodes(other, monkeypatch)
    changed = evaluate_model(other, tasks=tasks, cache_dir=tmp_path / "c")
    assert calls  # encoded afresh
    assert changed.main_score.iloc[0] != base.main_score.iloc[0]
    calls.clear()
    evaluate_model(KaLMEmbedder.tiny(seed=1), tasks={"STSBenchmark": 30}, cache_dir=tmp_path / "c")
    assert calls  # another row cap
    calls.clear()
    evaluate_model(KaLMEmbedder.tiny(seed=1), tasks=tasks, cache_dir=tmp_path / "c", use_instructions=False)
    assert calls  # another prompt setting
    calls.clear()
    evaluate_model(KaLMEmbedder.tiny(seed=1), tasks=tasks, cache_dir=tmp_path / "c", dim=32)
    assert calls  # another Matryoshka dim


def test_an_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    import pandas as pd

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        cache.store(tmp_path, "ab" * 32, pd.DataFrame({"x": [1]}), {})
    monkeypatch.undo()
    assert cache.load(tmp_path, "ab" * 32) is None
    assert not any(p.name.startswith(".") for p in (tmp_path / "ab").iterdir())
