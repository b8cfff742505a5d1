"""One device choice for everything that encodes (issue 13 item 2): the accelerator when there is one, each
process of a launch its own, ``$KALM_DEVICE`` to override; stage models are moved there when loaded."""

import torch

from kalm_lib import stages
from kalm_lib.device import compute_device


def test_the_choice(monkeypatch):
    monkeypatch.delenv("KALM_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compute_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert compute_device() == torch.device("cuda", 1)  # rank 1 of a launch encodes on its own GPU
    monkeypatch.setenv("KALM_DEVICE", "cpu")
    assert compute_device() == torch.device("cpu")
    assert compute_device("cuda:0") == torch.device("cuda", 0)


def test_stage_models_are_moved_to_the_chosen_device(tmp_path, monkeypatch):
    from kalm_lib.model import KaLMEmbedder

    KaLMEmbedder.tiny(seed=0, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                      num_hidden_layers=1).save(tmp_path / "pretrain" / "final")
    moved = []
    real_to = KaLMEmbedder.to

    def spy(self, *a, **k):
        moved.append(a[0] if a else k.get("device"))
        return real_to(self, *a, **k)

    monkeypatch.setattr(KaLMEmbedder, "to", spy)
    monkeypatch.setattr(stages, "compute_device", lambda: torch.device("cpu"))
    stages.load_stage_model(tmp_path, "pretrain")
    assert moved == [torch.device("cpu")]
