"""Fuzz config parsing (hypothesis): whatever overrides a notebook or ``--set`` passes, and whatever a stage YAML
holds, building a config either succeeds with values of the declared types or raises the project's own
``ConfigError`` (or a ``DataError`` for a malformed dataset declaration) — never a bare TypeError/KeyError/YAMLError.
Derandomized; a few seconds. A longer random hunt: ``KALM_FUZZ_SCALE=20 KALM_FUZZ_RANDOM=1``."""
import dataclasses
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kalm_lib.config import (ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig,  # noqa: E402
                             config_from_dict, parse_override, stage_config)
from kalm_lib.data import DataError  # noqa: E402
from kalm_lib.losses import ObjectiveConfig  # noqa: E402

SCALE = float(os.environ.get("KALM_FUZZ_SCALE", "1"))
SETTINGS = dict(derandomize=os.environ.get("KALM_FUZZ_RANDOM") != "1", database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow], max_examples=int(150 * SCALE))
OWN = (ConfigError, DataError)

KEYS = ([f"model.{f.name}" for f in dataclasses.fields(ModelConfig)] +
        [f"data.{f.name}" for f in dataclasses.fields(DataConfig)] +
        [f"optim.{f.name}" for f in dataclasses.fields(OptimConfig)] +
        [f"objective.{f.name}" for f in dataclasses.fields(ObjectiveConfig)] +
        [f.name for f in dataclasses.fields(TrainConfig)] + ["model.tiny.hidden_size", "optim.lr.x", "nope", ""])
RAW = st.one_of(st.sampled_from(["1e-4", "1.0e-4", "-5", "0", "3", "2.5", "yes", "no", "true", "null", "~", "[]",
                                 "[1, 2]", "[0.9, 1.5]", "{a: 1}", "{", "'", "nan", ".inf", "-.inf", "auto", "fresh",
                                 "tiny", "[en-scifact]", "[{name: x}]", "1e400", "0x10", "- a", ": :"]),
                st.text(max_size=6))


def _typed(cfg: TrainConfig):
    """Every built config holds values of the declared kinds (what the trainer relies on)."""
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr > 0
    assert isinstance(cfg.optim.batch_size, int) and not isinstance(cfg.optim.batch_size, bool)
    assert cfg.optim.bf16 in ("auto", "yes", "no") and cfg.resume in ("auto", "fresh", "restart_schedule")
    assert isinstance(cfg.objective, ObjectiveConfig) and isinstance(cfg.model.tiny, dict)
    assert cfg.log_every >= 1 and cfg.keep_checkpoints >= 1


@settings(**SETTINGS)
@given(st.lists(st.tuples(st.sampled_from(KEYS), RAW), max_size=3))
def test_overrides_give_a_typed_config_or_a_config_error(tmp_path_factory, pairs):
    try:
        overrides = dict(parse_override(f"{k}={v}") for k, v in pairs)
        cfg = stage_config("ci", "finetune", tmp_path_factory.getbasetemp(), overrides)
    except OWN:
        return
    _typed(cfg)


values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2, 5), st.floats(allow_nan=True),
                                st.text(max_size=5)),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                      max_leaves=6)
sections = st.fixed_dictionaries({}, optional={
    "stage": st.sampled_from(["pretrain", "finetune", "distill", "x"]) | values,
    "model": st.dictionaries(st.sampled_from(["init", "tiny", "seed", "causal", "num_layers", "bogus"]), values, max_size=3)
    | values,
    "data": st.dictionaries(st.sampled_from(["datasets", "num_negatives", "query_max_len", "homogeneous_ratio",
                                             "own_negatives_only", "decontaminate"]), values, max_size=3) | values,
    "objective": st.dictionaries(st.sampled_from(["tau", "gamma", "mix_pairwise", "matryoshka_dims",
                                                  "matryoshka_weights", "tau_kd"]), values, max_size=3) | values,
    "optim": st.dictionaries(st.sampled_from(["lr", "batch_size", "bf16", "adam_betas", "max_steps"]), values,
                             max_size=3) | values,
    "log_every": values, "resume": values})


@settings(**SETTINGS)
@given(sections)
def test_any_mapping_gives_a_typed_config_or_a_config_error(d):
    try:
        cfg = config_from_dict(d, source="fuzz.yaml")
    except OWN:
        return
    _typed(cfg)
