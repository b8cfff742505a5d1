"""Training configuration: one YAML file per stage and profile, plain values, every paper choice a field.

A profile is a folder ``configs/<profile>/`` with ``pretrain.yaml``, ``finetune.yaml`` and
``distill.yaml``. Strings may use ``{run_dir}`` (the profile's run folder) and ``{data_dir}``
(``$KALM_DATA_DIR``), so stage 2 can start from ``{run_dir}/pretrain/final``. Overrides come as
dotted keys (``optim.lr=1e-4``) from notebooks and the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kalm_lib.recipe import STAGES  # noqa: F401 (re-exported)


def _config_root() -> Path:
    """The profiles folder: ``kalm_lib/configs`` in an installed wheel (pyproject.toml maps the repository's
    ``configs/`` there), else ``configs/`` of the checkout this module lies in."""
    here = Path(__file__).resolve().parent
    for root in (here / "configs", here.parent / "configs"):
        if (root / "smoke" / "profile.yaml").is_file():
            return root
    return here.parent / "configs"        # neither: the lookups that use it name the missing file


CONFIG_ROOT = _config_root()


def _f(default=dataclasses.MISSING, *, lo=None, hi=None, lo_open=False, hi_open=False, choices=None,
       from_bool=None, default_factory=dataclasses.MISSING):
    """A dataclass field with its allowed range (``lo``/``hi``, open or closed) or its ``choices``,
    checked by :func:`check_fields` when a config is built. ``from_bool`` = (value for true, value for
    false) lets a choice field take YAML's booleans (a bare ``yes`` is ``True`` in YAML 1.1)."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices, "from_bool": from_bool}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    init: str = "tiny"                 # "tiny" | a local folder | a Hub id | a .gguf file | "smollm2"
    tiny: dict = field(default_factory=dict)   # Qwen2Config overrides for init="tiny"
    seed: int = 0                      # weights seed for init="tiny"
    causal: bool = False               # True keeps the decoder's causal mask (the paper's ablation)
    attn_implementation: str | None = None
    num_layers: int | None = _f(None, lo=1)   # keep only the first N decoder layers (a fast CPU model)


@dataclass
class DataConfig:
    # catalog names (kalm_lib/data/catalog.yaml) or your own datasets declared in the YAML as mappings:
    #   - {name: my-set, path: my_pairs.jsonl, format: train, task_type: retrieval, instruction: "...", symmetric: false}
    # (a relative path is read from the YAML file's folder; kalm_lib.data.catalog.entry_from_mapping checks each field)
    datasets: list = field(default_factory=list)
    # read instead of `datasets` when there is no data mirror (KALM_DATA_DIR unset): Hub catalog entries (`hub-*`).
    # Empty: `datasets` either way (the gpu/paper profiles name Hub entries there already)
    hub_datasets: list = field(default_factory=list)
    num_negatives: int = _f(7, lo=0)   # M, hard negatives per query (PAPER.md §3.1)
    max_rows_per_dataset: int | None = _f(None, lo=1)
    mined_dir: str | None = None       # mined hard negatives (stage 2), from `kalm_lib.data.mine_hard_negatives`
    teacher_scores_path: str | None = None     # teacher scores cache (stage 3)
    homogeneous_ratio: float = _f(1.0, lo=0.0, hi=1.0)  # fraction of each global batch drawn from one task
    group_by_length: bool = True       # length-grouped batches cut padding
    query_max_len: int = _f(64, lo=1)
    passage_max_len: int = _f(128, lo=1)
    skip_invalid: bool = True          # malformed records are skipped, counted and logged (file:line:field); False raises
    decontaminate: bool = True         # drop evaluation test texts from training; False is logged and shown in the book
    use_instructions: bool = True      # prepend each dataset's task instruction to its queries (PAPER.md §3.2); False: raw
    allow_empty: bool = False          # a dataset that yields no example is an error; True: a counted WARNING
    # task types whose queries see only their own positive and hard negatives (no in-batch negatives): labelled
    # classification / clustering data, where other queries' texts are often of the same class (PAPER.md §9)
    own_negatives_only: list = field(default_factory=lambda: ["classification", "clustering"])
    # streaming (gpu / paper profiles): read the Hub's parquet subsets lazily, one task per batch
    # (kalm_lib/data/stream.py, TaskStream) instead of building a map-style training set in memory
    streaming: bool = False
    shuffle_buffer: int = _f(10000, lo=0)   # rows per shuffled block of each subset reader (0: the files' order)
    stream_workers: int = _f(0, lo=0)       # DataLoader workers that decode and transform rows (0: the main process)
    # Hub datasets with one task per subset (kalm_lib/data/hub.py): subset i is drawn with p_i ∝ n_i^(1/T), n_i its rows;
    # T = 1 proportional to size, larger flattens towards uniform; a row cap is split by the same p_i (every subset kept)
    subset_temperature: float = _f(1.0, lo=0.0, lo_open=True)


@dataclass
class OptimConfig:
    lr: float = _f(1e-5, lo=0.0, lo_open=True)  # V1 script lr (PAPER.md §3); stage 1 uses more
    weight_decay: float = _f(0.01, lo=0.0)
    warmup_ratio: float = _f(0.1, lo=0.0, hi=1.0)  # linear warm-up then linear decay to 0
    batch_size: int = _f(32, lo=1)    # GLOBAL batch (split evenly over processes)
    max_steps: int | None = _f(None, lo=1)  # else epochs × batches per epoch
    epochs: float = _f(1.0, lo=0.0, lo_open=True)
    grad_clip: float = _f(1.0, lo=0.0)  # max gradient norm; 0 = no clipping
    gradcache_chunk_size: int | None = _f(None, lo=1)  # None: plain backward; else GradCache with this sub-batch size
    sub_batch_size: int | None = _f(None, lo=1)  # plain step: embed each side in length-sorted sub-batches (less padding, same gradients)
    packing: bool = False              # padding-free packed forward (kalm_lib/packing.py): same gradients, no pad tokens
    # GradCache's re-forward takes every sub-batch's token embeddings from one lookup: one dense |V|×h embedding
    # gradient per step instead of one per sub-batch (1.03× → 1.31× the peer on CPU), but it holds the input
    # embeddings of the whole batch and their gradients (2 × tokens × h × 4 B) until the last sub-batch
    gradcache_lookup_once: bool = True
    bf16: str = _f("auto", choices=("auto", "yes", "no"), from_bool=("yes", "no"))  # "auto" = bf16 autocast on GPU only
    gradient_checkpointing: bool = False
    compile: bool = False              # regional torch.compile of each decoder layer (model.compile_layers)
    adam_betas: tuple = (0.9, 0.999)
    adam_eps: float = _f(1e-8, lo=0.0, lo_open=True)
    max_nonfinite_skips: int = _f(5, lo=1)  # a step whose loss or gradient norm is not finite is skipped; this many in a row stop the run


@dataclass
class TrainConfig:
    stage: str = _f("finetune", choices=STAGES)
    output_dir: str = "runs/default"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: Any = None              # a kalm_lib.losses.ObjectiveConfig, built and checked once (from YAML's mapping)
    optim: OptimConfig = field(default_factory=OptimConfig)
    log_every: int = _f(1, lo=1)
    save_every: int = _f(0, lo=0)     # checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = _f(2, lo=1)  # the newest N checkpoints are kept (latest included)
    # What a rerun in a used output_dir does (kalm_lib/train.py, StageTrainer.run):
    #   auto             continue from checkpoints/latest, or skip a finished stage; refuse when the config or the
    #                    data differ from the run's (the differing fields are named)
    #   fresh            delete the folder's checkpoints, metrics, final model and records, and train from scratch
    #   restart_schedule keep the latest checkpoint's weights and optimizer moments, start the new config's lr
    #                    schedule and data order at step 0 (the old metrics are kept as metrics.before_restart-*.jsonl)
    # (true/false read as auto/fresh)
    resume: str = _f("auto", choices=("auto", "fresh", "restart_schedule"), from_bool=("auto", "fresh"))
    progress_bar: bool = True
    source: str = "<dict>"             # where this config came from (for error messages)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig}


class ConfigError(ValueError):
    """A config value of the wrong type or outside its range; the message names the file and field."""


def _coerce(value, hint: str, name: str, where: str):
    """``value`` checked against the annotation ``hint`` (a string: this module uses postponed
    annotations). YAML 1.1 reads ``1e-4`` (no dot) as a string, so a number field takes a string that
    parses as one; nothing else is converted."""
    def bad(expected: str):
        return ConfigError(f"{where}: field '{name}' must be {expected}, got {value!r} ({type(value).__name__})")

    options = [h.strip() for h in hint.split("|")]
    if options[0] == "Any":
        return value
    if value is None:
        if "None" in options:
            return None
        raise bad(hint)
    kind = options[0]
    if kind in ("float", "int"):
        expected = "a finite number" if kind == "float" else "an integer"
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad("a number" if kind == "float" else expected) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                kind == "int" and not float(value).is_integer()):
            raise bad(expected)
        return float(value) if kind == "float" else int(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind in ("list", "tuple"):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        return list(value) if kind == "list" else tuple(value)
    if kind == "dict":
        if not isinstance(value, dict):
            raise bad("a mapping")
        return value
    return value


def check_fields(obj, source: str, prefix: str = ""):
    """Type-check and range-check every field of a config dataclass in place (see :func:`_f`); errors name
    ``source`` (the YAML file) and the dotted field."""
    where = source  # every message starts with the file the config came from
    for f in dataclasses.fields(obj):
        name = prefix + f.name
        value = getattr(obj, f.name)
        meta = f.metadata
        choices = meta.get("choices")
        if meta.get("from_bool") and isinstance(value, bool):
            value = meta["from_bool"][0 if value else 1]
        value = _coerce(value, str(f.type), name, where)
        if choices and value not in choices:
            raise ConfigError(f"{where}: field '{name}' must be one of {list(choices)}, got {value!r}")
        if value is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta.get("lo"), meta.get("hi")
            if lo is not None and (value <= lo if meta.get("lo_open") else value < lo) or \
                    hi is not None and (value >= hi if meta.get("hi_open") else value > hi):
                rng = (("(" if meta.get("lo_open") else "[") + (str(lo) if lo is not None else "-inf") + ", "
                       + (str(hi) if hi is not None else "inf") + (")" if meta.get("hi_open") or hi is None else "]"))
                raise ConfigError(f"{where}: field '{name}' = {value!r} is outside its range {rng}")
        if f.name == "adam_betas" and (len(value) != 2 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in value)):
            raise ConfigError(f"{where}: field '{name}' must be two numbers in [0, 1), got {value!r}")
        setattr(obj, f.name, value)
    return obj


def _build(cls, values: dict, source: str, section: str = ""):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{source}: section '{section}'" if section else source
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    return check_fields(cls(**values), source, f"{section}." if section else "")


def _check_tiny(tiny: dict, where: str) -> None:
    """``model.tiny`` holds Qwen2Config fields; Qwen2Config takes any keyword, so a typo would pass."""
    if not tiny:
        return
    from transformers import Qwen2Config
    known = set(Qwen2Config().to_dict()) | {"attn_implementation"}
    unknown = sorted(set(tiny) - known)
    if unknown:
        raise ConfigError(f"{where}: field 'model.tiny' has unknown Qwen2Config key(s) {unknown}")


def _coerce_objective(obj: dict, where: str) -> dict:
    """Numbers of the objective section read like every other section's (``tau: 1e-2`` is a number);
    ranges and the rest are checked by ObjectiveConfig itself."""
    from kalm_lib.losses import ObjectiveConfig
    hints = {f.name: str(f.type) for f in dataclasses.fields(ObjectiveConfig)}
    out = dict(obj)
    for k, v in obj.items():
        h = hints.get(k, "")
        if h.split("|")[0].strip() in ("float", "int") and isinstance(v, str):
            out[k] = _coerce(v, h, f"objective.{k}", where)
    return out


def _datasets(datasets: list, source: str) -> list:
    """Catalog names stay names; a mapping declares a user's own dataset and becomes a checked CatalogEntry (its
    relative ``path`` read from the YAML file's folder)."""
    from kalm_lib.data.catalog import CatalogEntry, entry_from_mapping
    base = Path(source).parent if Path(source).is_file() else None
    out = []
    for i, d in enumerate(datasets):
        if isinstance(d, dict):
            d = entry_from_mapping(d, where=f"{source}: data.datasets[{i}]", base_dir=base)
        elif not isinstance(d, (str, CatalogEntry)):
            raise ConfigError(f"{source}: field 'data.datasets[{i}]' must be a catalog name or a mapping, got {d!r}")
        out.append(d)
    return out


def config_from_dict(d: dict, source: str = "<dict>") -> TrainConfig:
    """Validate the keys, types and ranges of every section and build a :class:`TrainConfig`."""
    d = copy.deepcopy(d)
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section '{key}' must be a mapping")
            kwargs[key] = _build(_SECTIONS[key], value, source, key)
        else:
            kwargs[key] = value
    kwargs["source"] = source
    objective = kwargs.pop("objective", None) or {}
    if not isinstance(objective, dict):
        raise ConfigError(f"{source}: section 'objective' must be a mapping")
    cfg = _build(TrainConfig, kwargs, source)
    _check_tiny(cfg.model.tiny, source)
    cfg.data.datasets = _datasets(cfg.data.datasets, source)
    cfg.data.hub_datasets = _datasets(cfg.data.hub_datasets, source)
    from kalm_lib.losses import ObjectiveConfig
    try:
        cfg.objective = ObjectiveConfig.from_dict(_coerce_objective(objective, source))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: section 'objective': {err}") from err
    return cfg


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"override key {dotted!r}: empty part (keys look like optim.lr)")
    for depth, k in enumerate(keys[:-1]):
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override key {dotted!r}: {'.'.join(keys[:depth + 1])} holds {d!r}, not a section")
    d[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-4"`` → ``("optim.lr", "1e-4")``; the value is parsed as YAML (numbers are checked, and
    ``1e-4`` read as one, when the config is built)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None


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


# ---------------------------------------------------------------------------- the profile
@dataclass
class MiningConfig:
    """Stage 2's hard negatives, mined with the stage-1 model (PAPER.md §3.1; kalm_lib.data.mining)."""
    datasets: list = field(default_factory=list)
    hub_datasets: list = field(default_factory=list)   # mined instead when there is no data mirror (as data.hub_datasets)
    max_rows: int | None = _f(None, lo=1)
    corpus_limit: int | None = _f(None, lo=1)
    num_negatives: int | None = _f(None, lo=0)      # None: the fine-tuning config's data.num_negatives
    sample_range: list = field(default_factory=lambda: [50, 100])   # negatives drawn from these ranks
    filter_topk: int | None = _f(50, lo=1)          # ranking-consistency filter (None: off)


@dataclass
class EvalConfig:
    tasks: Any = None                  # the quick before/after score of notebooks 02-04 (None: SMOKE_SUITE)
    max_rows: int | None = _f(None, lo=1)
    final_tasks: Any = None            # notebook 05 (kalm_lib.evaluation.final_suite)
    final_max_rows: int | None = _f(None, lo=1)
    max_length: int | None = _f(None, lo=1)  # token cap at encode time for both suites (None: the model's own)
    bf16: bool | None = None           # bf16 autocast when encoding the student (None: on a GPU only; KaLMEmbedder.encode)


@dataclass
class AblationsConfig:
    """Notebook 06 (kalm_lib/ablations.py): which arms, how long each trains, and where it is scored."""
    arms: list | None = None           # arm names of kalm_lib.ablations.ARMS (None: every arm)
    steps: int = _f(40, lo=1)          # optimizer steps of every arm (a schedule splits them over its segments)
    tasks: Any = None                  # the arms' suite (None: the profile's eval.tasks)
    max_rows: int | None = _f(None, lo=1)
    max_length: int | None = _f(None, lo=1)  # None: eval.max_length
    n_resamples: int = _f(2000, lo=100)     # paired-bootstrap resamples per interval


@dataclass
class ProfileConfig:
    """``configs/<profile>/profile.yaml``: what is not one stage's: teacher, mining, evaluation, notebooks."""
    name: str = ""
    description: str = ""
    extends: str | None = None
    teacher: str = "minilm"            # minilm | mpnet | a sentence-transformers folder | a Hub id
    teacher_query_prompt: str | None = None
    mining: MiningConfig = field(default_factory=MiningConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ablations: AblationsConfig = field(default_factory=AblationsConfig)
    notebooks: dict = field(default_factory=dict)   # papermill parameter overrides per notebook


_PROFILE_SECTIONS = {"mining": MiningConfig, "eval": EvalConfig, "ablations": AblationsConfig}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (profiles: {available_profiles()}; stages: {STAGES})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of config keys, got {type(raw).__name__}")
    return raw


def merge(parent: dict, child: dict) -> dict:
    """THE merge rule of ``extends`` (profiles and stage files): a child's section (a mapping such as ``optim:``)
    replaces only the keys it names and keeps the parent's others; every other value, lists and ``model.tiny``
    included, replaces the parent's whole. An override (``optim.lr=1e-4``) replaces the one value it names."""
    out = dict(parent)
    for k, v in child.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) and \
            k in ("model", "data", "objective", "optim", "mining", "eval", "ablations", "notebooks") else v
    return out


def _extended(path: Path, parent_path) -> dict:
    """A YAML file with its ``extends: <profile>`` chain resolved (parent first, then the child)."""
    raw = _read_yaml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not (CONFIG_ROOT / parent / "profile.yaml").is_file():
        raise ConfigError(f"{path}: extends {parent!r}, which is not a profile ({available_profiles()})")
    return merge(_extended(parent_path(parent), parent_path), raw)


def load_profile(profile: str) -> ProfileConfig:
    """``configs/<profile>/profile.yaml``, following ``extends``, as a typed :class:`ProfileConfig`."""
    path = CONFIG_ROOT / profile / "profile.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"unknown profile {profile!r}: {path} missing (profiles: {available_profiles()})")
    raw = _extended(path, lambda name: CONFIG_ROOT / name / "profile.yaml")
    raw["name"], raw["extends"] = profile, _read_yaml(path).get("extends")
    kwargs = {}
    for key, value in raw.items():
        if key in _PROFILE_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: section '{key}' must be a mapping")
            kwargs[key] = _build(_PROFILE_SECTIONS[key], value, str(path), key)
        else:
            kwargs[key] = value
    prof = _build(ProfileConfig, kwargs, str(path))
    prof.mining.datasets = without_mirror(prof.mining.datasets, prof.mining.hub_datasets, f"{path}: mining")
    arms = prof.ablations.arms
    if arms is not None:
        from kalm_lib.ablations import ARMS

        unknown = [a for a in (arms if isinstance(arms, list) else [arms]) if a not in ARMS]
        if unknown or not isinstance(arms, list):
            raise ConfigError(f"{path}: field 'ablations.arms' must be a list of arm names; unknown "
                              f"{unknown or arms!r} (known: {', '.join(ARMS)})")
    sr = prof.mining.sample_range
    if len(sr) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in sr) or not 0 <= sr[0] < sr[1]:
        raise ConfigError(f"{path}: field 'mining.sample_range' must be two integers 0 <= lo < hi, got {sr!r}")
    return prof


# ---------------------------------------------------------------------------- the stage config
def profile_config_path(profile: str, stage: str) -> Path:
    """``configs/<profile>/<stage>.yaml``: every profile has its own file for every stage (one that
    ``extends`` another profile says so in its first lines)."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {STAGES}")
    path = CONFIG_ROOT / profile / f"{stage}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no config {path} (profiles: {available_profiles()}; stages: {STAGES})")
    return path


def load_config(path_or_profile: str | os.PathLike, stage: str | None = None, overrides: dict | None = None,
                run_dir: str | os.PathLike | None = None) -> TrainConfig:
    """THE entry point for a stage config: a YAML file, or a profile name plus a stage (the same file).

    The file's ``extends: <profile>`` chain is merged first (:func:`merge`), then ``overrides`` (dotted keys
    → values, from notebooks and the command line), then ``{run_dir}`` (default ``runs/<profile>``) and
    ``{data_dir}`` (``$KALM_DATA_DIR``) are filled in, and every field is type- and range-checked.
    """
    path = Path(path_or_profile)
    if stage is not None and not path.suffix:
        path = profile_config_path(str(path_or_profile), stage)
    stage_name = stage or path.stem
    raw = _extended(path, lambda name: profile_config_path(name, stage_name))
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    mapping = {"run_dir": str(run_dir or Path("runs") / path.parent.name),
               "data_dir": os.environ.get("KALM_DATA_DIR", "")}
    cfg = config_from_dict(_substitute(raw, mapping), source=str(path))
    cfg.data.datasets = without_mirror(cfg.data.datasets, cfg.data.hub_datasets, f"{path}: data")
    return cfg


_SAID: set[str] = set()


def without_mirror(datasets: list, hub_datasets: list, where: str) -> list:
    """The datasets a run reads: ``datasets``, or ``hub_datasets`` when there is no data mirror (``KALM_DATA_DIR``
    unset; kalm_lib/data/hub_eval.py) and the config names some. Logged, so the run's log says where its data came
    from; the saved config holds the list actually read."""
    from kalm_lib.paths import uses_hub

    if hub_datasets and uses_hub() and list(datasets) != list(hub_datasets):
        if where not in _SAID:  # once per file and process: profiles are loaded many times
            _SAID.add(where)
            import logging

            logging.getLogger(__name__).info("%s: no data mirror (KALM_DATA_DIR unset), so the Hub datasets "
                                             "(hub_datasets) %s are read instead of %s", where, hub_datasets, datasets)
        return list(hub_datasets)
    return datasets


def stage_config(profile: str, stage: str, run_dir: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """A profile's config for one stage (``load_config(profile, stage, overrides, run_dir)``)."""
    return load_config(profile, stage, overrides=overrides, run_dir=run_dir)
