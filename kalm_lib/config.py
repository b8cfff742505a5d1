"""Training configuration: one YAML file per stage and profile, plain values, every paper choice a field.

A profile is a folder ``configs/<profile>/`` with ``pretrain.yaml``, ``finetune.yaml`` and
``distill.yaml``. Strings may use ``{run_dir}`` (the profile's run folder) and ``{data_dir}``
(``$KALM_DATA_DIR``), so stage 2 can start from ``{run_dir}/pretrain/final``. Overrides come as
dotted keys (``optim.lr=1e-4``) from notebooks and the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"
STAGES = ("pretrain", "finetune", "distill")


@dataclass
class ModelConfig:
    init: str = "tiny"                 # "tiny" | a local folder | a Hub id | a .gguf file | "smollm2"
    tiny: dict = field(default_factory=dict)   # Qwen2Config overrides for init="tiny"
    seed: int = 0                      # weights seed for init="tiny"
    causal: bool = False               # True keeps the decoder's causal mask (the paper's ablation)
    attn_implementation: str | None = None
    num_layers: int | None = None      # keep only the first N decoder layers (a fast CPU model)


@dataclass
class DataConfig:
    datasets: list = field(default_factory=list)
    num_negatives: int = 7             # M, hard negatives per query (PAPER.md §3.1)
    max_rows_per_dataset: int | None = None
    mined_dir: str | None = None       # mined hard negatives (stage 2), from `kalm_lib.data.mine_hard_negatives`
    teacher_scores_path: str | None = None     # teacher scores cache (stage 3)
    homogeneous_ratio: float = 1.0     # fraction of each global batch drawn from one task
    group_by_length: bool = True       # length-grouped batches cut padding
    query_max_len: int = 64
    passage_max_len: int = 128
    skip_invalid: bool = True          # malformed records are skipped, counted and logged (file:line:field); False raises


@dataclass
class OptimConfig:
    lr: float = 1e-5                   # V1 script lr (PAPER.md §3); stage 1 uses more
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1          # linear warm-up then linear decay to 0
    batch_size: int = 32               # GLOBAL batch (split evenly over processes)
    max_steps: int | None = None       # else epochs × batches per epoch
    epochs: float = 1.0
    grad_clip: float = 1.0
    gradcache_chunk_size: int | None = None    # None: plain backward; else GradCache with this sub-batch size
    sub_batch_size: int | None = None  # plain step: embed each side in length-sorted sub-batches (less padding, same gradients)
    bf16: str = "auto"                 # "auto" = bf16 autocast on GPU only; "yes" / "no"
    gradient_checkpointing: bool = False
    compile: bool = False              # regional torch.compile of each decoder layer (model.compile_layers)
    adam_betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-8


@dataclass
class TrainConfig:
    stage: str = "finetune"
    output_dir: str = "runs/default"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: dict = field(default_factory=dict)      # kalm_lib.losses.ObjectiveConfig fields
    optim: OptimConfig = field(default_factory=OptimConfig)
    log_every: int = 1
    save_every: int = 0                # checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 2
    resume: bool = True                # continue from output_dir/checkpoints/latest when present
    progress_bar: bool = True
    source: str = "<dict>"             # where this config came from (for error messages)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig}


def _build(cls, values: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    return cls(**values)


def config_from_dict(d: dict, source: str = "<dict>") -> TrainConfig:
    """Validate the keys of every section and build a :class:`TrainConfig`."""
    d = copy.deepcopy(d)
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"{source}: section '{key}' must be a mapping")
            kwargs[key] = _build(_SECTIONS[key], value, f"{source}: section '{key}'")
        else:
            kwargs[key] = value
    kwargs["source"] = source
    cfg = _build(TrainConfig, kwargs, source)
    if cfg.stage not in STAGES:
        raise ValueError(f"{source}: field 'stage' must be one of {STAGES}, got {cfg.stage!r}")
    from kalm_lib.losses import ObjectiveConfig
    try:
        ObjectiveConfig.from_dict(cfg.objective)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: section 'objective': {err}") from err
    return cfg


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-4"`` → ``("optim.lr", 0.0001)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def _substitute(obj, mapping: dict):
    if isinstance(obj, str):
        for k, v in mapping.items():
            obj = obj.replace("{" + k + "}", str(v))
        return obj
    if isinstance(obj, dict):
        return {k: _substitute(v, mapping) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, mapping) for v in obj]
    return obj


def available_profiles() -> list[str]:
    return sorted(p.name for p in CONFIG_ROOT.iterdir() if (p / "profile.yaml").is_file())


def _deep_update(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_profile(profile: str) -> dict:
    """``configs/<profile>/profile.yaml`` (teacher, mining, evaluation settings), following ``extends``."""
    path = CONFIG_ROOT / profile / "profile.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"unknown profile {profile!r}: {path} missing (profiles: {available_profiles()})")
    raw = yaml.safe_load(path.read_text()) or {}
    raw["name"] = profile
    parent = raw.get("extends")
    if parent:
        base = load_profile(parent)
        base.pop("stage_overrides", None)
        raw = _deep_update(base, {k: v for k, v in raw.items()})
    return raw


def profile_config_path(profile: str, stage: str) -> Path:
    """The stage YAML of a profile, or of the profile it ``extends`` when it has none of its own."""
    path = CONFIG_ROOT / profile / f"{stage}.yaml"
    if path.is_file():
        return path
    parent = (yaml.safe_load((CONFIG_ROOT / profile / "profile.yaml").read_text()) or {}).get("extends") \
        if (CONFIG_ROOT / profile / "profile.yaml").is_file() else None
    if parent:
        return profile_config_path(parent, stage)
    raise FileNotFoundError(f"no config {path} (profiles: {available_profiles()}; stages: {STAGES})")


def stage_config(profile: str, stage: str, run_dir: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """A profile's config for one stage: its YAML, the profile's ``stage_overrides``, then ``overrides``."""
    prof = load_profile(profile)
    merged: dict = {}
    so = prof.get("stage_overrides") or {}
    merged.update(so.get("all") or {})
    merged.update(so.get(stage) or {})
    merged.update(overrides or {})
    return load_config(profile_config_path(profile, stage), overrides=merged, run_dir=run_dir)


def load_config(path_or_profile: str | os.PathLike, stage: str | None = None, overrides: dict | None = None,
                run_dir: str | os.PathLike | None = None) -> TrainConfig:
    """Load a stage config from a YAML file, or from a profile name plus a stage.

    ``overrides`` maps dotted keys to values and is applied after the file; ``run_dir`` fills
    ``{run_dir}`` (default ``runs/<profile>``).
    """
    path = Path(path_or_profile)
    if stage is not None and not path.suffix:
        path = profile_config_path(str(path_or_profile), stage)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML: {err}") from err
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    profile = path.parent.name
    mapping = {"run_dir": str(run_dir or Path("runs") / profile),
               "data_dir": os.environ.get("KALM_DATA_DIR", "")}
    return config_from_dict(_substitute(raw, mapping), source=str(path))
