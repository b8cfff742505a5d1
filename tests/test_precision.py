"""fp32 master weights whatever dtype a checkpoint is stored in (issue 13 item 1; DESIGN.md "The GPU path").

Qwen2-0.5B is stored in bf16 on the Hub. AdamW on bf16 weights rounds a step of size ~lr away: at the
fine-tuning lr 1e-5 one step moved 15.5% of the decoder weights. Loaded in fp32, every weight moves."""

import torch
from safetensors.torch import load_file

from kalm_lib.config import config_from_dict
from kalm_lib.model import KaLMEmbedder, build_model
from kalm_lib.train import train_stage
from tests.test_train import ToyDataset

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2}


def _bf16_checkpoint(path):
    m = KaLMEmbedder.tiny(seed=0, **TINY)
    m.backbone.to(torch.bfloat16)
    m.save(path)
    stored = load_file(str(path / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.bfloat16}  # stored the way the Hub stores Qwen2
    return stored


def _cfg(tmp_path, init, out):
    return config_from_dict({"stage": "finetune", "output_dir": str(out), "model": {"init": str(init)},
                             "data": {"num_negatives": 3, "query_max_len": 16, "passage_max_len": 16},
                             "objective": {"tau": 0.05}, "progress_bar": False,
                             "optim": {"lr": 1e-5, "batch_size": 8, "max_steps": 3, "warmup_ratio": 0.0}})


def test_a_bf16_checkpoint_trains_on_fp32_master_weights(tmp_path):
    stored = _bf16_checkpoint(tmp_path / "init")
    cfg = _cfg(tmp_path, tmp_path / "init", tmp_path / "run")
    model = build_model(cfg)
    assert {p.dtype for p in model.backbone.parameters()} == {torch.float32}
    final = train_stage(cfg, dataset=ToyDataset())
    after = load_file(str(final / "model.safetensors"))
    assert {v.dtype for v in after.values()} == {torch.float32}  # the next stage starts from exactly this
    decoder = [k for k in stored if k.startswith("layers.")]
    changed = sum(int((after[k] != stored[k].float()).sum()) for k in decoder)
    total = sum(stored[k].numel() for k in decoder)
    print(f"fp32 master weights: {changed / total:.2%} of decoder weights changed")
    assert changed / total >= 0.99, f"only {changed / total:.1%} of decoder weights changed"


def test_training_on_bf16_weights_would_lose_the_updates(tmp_path):
    """The reference the fix is measured against: the same 3 steps on bf16 weights move far fewer of them."""
    stored = _bf16_checkpoint(tmp_path / "init")
    cfg = _cfg(tmp_path, tmp_path / "init", tmp_path / "run")
    kept_bf16 = KaLMEmbedder.load(tmp_path / "init")
    assert next(kept_bf16.backbone.parameters()).dtype == torch.bfloat16  # load keeps the stored dtype
    final = train_stage(cfg, dataset=ToyDataset(), model=kept_bf16)
    after = load_file(str(final / "model.safetensors"))
    decoder = [k for k in stored if k.startswith("layers.")]
    share = sum(int((after[k] != stored[k]).sum()) for k in decoder) / sum(stored[k].numel() for k in decoder)
    print(f"bf16 weights: {share:.2%} of decoder weights changed")
    assert share < 0.9, share


def test_release_export_casts_a_copy(tmp_path):
    m = KaLMEmbedder.tiny(seed=0, **TINY)
    m.save(tmp_path / "bf16", dtype=torch.bfloat16)
    assert {v.dtype for v in load_file(str(tmp_path / "bf16" / "model.safetensors")).values()} == {torch.bfloat16}
    assert next(m.backbone.parameters()).dtype == torch.float32  # the model itself is untouched
