"""Trustworthy runs (issue 16): a non-finite step is never applied, a rerun never silently changes a run,
nothing in a run folder is executed, nothing already computed is lost, and nonsense config values are refused."""

import json
import logging
import pickle
from pathlib import Path

import pytest
import torch

from kalm_lib.config import ConfigError, config_from_dict, parse_override, stage_config
from kalm_lib.model import KaLMEmbedder
from kalm_lib.train import RunFolderError, StageTrainer, TrainingDiverged, read_metrics, train_stage
from tests.test_train import ToyDataset, _final_weights, toy_config


def _metrics(cfg):
    return [json.loads(l) for l in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]


class _NaNGradient:
    """Makes one parameter's gradient NaN on the steps where ``on(step)`` (a stand-in for lr=1000 or a bf16
    overflow). The plain step back-propagates once per step, so the n-th backward is step n."""

    def __init__(self, model, on):
        self.calls = 0

        def hook(g):
            self.calls += 1
            return g * float("nan") if on(self.calls) else g

        model.backbone.norm.weight.register_hook(hook)


# --------------------------------------------------------------------------- non-finite steps
def test_nonfinite_gradient_step_is_skipped_counted_and_never_written(tmp_path):
    cfg = toy_config(tmp_path, optim={"max_steps": 4}, log_every=2)
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)
    nan = _NaNGradient(model, on=lambda step: step == 2)
    final = train_stage(cfg, dataset=ToyDataset(), model=model, callbacks=[])
    recs = _metrics(cfg)
    assert [r["step"] for r in recs] == [2, 4]  # a skipped step is logged even off the log_every grid
    assert recs[0]["skipped"] is True and recs[0]["skipped_steps"] == 1
    assert recs[1]["skipped"] is False and recs[1]["skipped_steps"] == 1
    assert recs[0]["grad_norm"] != recs[0]["grad_norm"]  # NaN is recorded as it was
    w = _final_weights(final)
    assert all(torch.isfinite(v).all() for v in w.values())
    assert json.loads((Path(cfg.output_dir) / "DONE").read_text())["skipped"] == 1


def test_skipped_step_changes_no_weight(tmp_path):
    cfg = toy_config(tmp_path, optim={"max_steps": 3})
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)
    nan = _NaNGradient(model, on=lambda step: step == 2)
    snap = {}
    train_stage(cfg, dataset=ToyDataset(), model=model,
                callbacks=[lambda s, r: snap.__setitem__(s, {k: v.clone() for k, v in model.state_dict().items()})])
    assert all(torch.equal(snap[1][k], snap[2][k]) for k in snap[1])          # step 2 skipped: nothing moved
    assert not all(torch.equal(snap[2][k], snap[3][k]) for k in snap[2])      # step 3 applied


def test_consecutive_nonfinite_steps_stop_without_writing(tmp_path):
    cfg = toy_config(tmp_path, save_every=2, optim={"max_steps": 8, "max_nonfinite_skips": 2})
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)
    nan = _NaNGradient(model, on=lambda step: step >= 3)
    with pytest.raises(TrainingDiverged, match="2 steps in a row"):
        train_stage(cfg, dataset=ToyDataset(), model=model, callbacks=[])
    out = Path(cfg.output_dir)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_0000002"
    assert not (out / "final").exists() and not (out / "DONE").exists()


def test_final_model_is_never_written_with_a_nonfinite_weight(tmp_path):
    cfg = toy_config(tmp_path, optim={"max_steps": 2})
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)

    def poison_last(step, rec):  # after the last step, before the final save
        if step == 2:
            with torch.no_grad():
                model.backbone.norm.weight[0] = float("inf")

    with pytest.raises(TrainingDiverged, match=r"not writing .*final: parameter .*norm.weight is not finite"):
        train_stage(cfg, dataset=ToyDataset(), model=model, callbacks=[poison_last])
    assert not (Path(cfg.output_dir) / "final").exists() and not (Path(cfg.output_dir) / "DONE").exists()


# --------------------------------------------------------------------------- reruns
def test_finished_stage_is_skipped_and_a_changed_config_refused(tmp_path, caplog):
    ds = ToyDataset()
    cfg = toy_config(tmp_path, optim={"max_steps": 2})
    final = train_stage(cfg, dataset=ds)
    out = Path(cfg.output_dir)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "metrics.jsonl", out / "config.json", out / "DONE")}
    with caplog.at_level(logging.INFO, logger="kalm_lib.train"):
        assert train_stage(cfg, dataset=ds) == final
    assert "already finished" in caplog.text
    assert {p: (out / p).stat().st_mtime_ns for p in before} == before  # nothing rewritten
    # another lr: refused, naming the field, and the finished run's records are untouched
    with pytest.raises(RunFolderError, match=r"optim\.lr: 0\.001 \(run\) -> 0\.0001 \(now\)"):
        train_stage(toy_config(tmp_path, optim={"max_steps": 2, "lr": 1e-4}), dataset=ds)
    # the same config on other data: refused too
    with pytest.raises(RunFolderError, match="other data"):
        train_stage(cfg, dataset=ToyDataset(n=40))
    assert {p: (out / p).stat().st_mtime_ns for p in before} == before
    # resume=fresh retrains (log_every is free to change: it alters neither schedule, data nor model)
    train_stage(toy_config(tmp_path, optim={"max_steps": 3}, resume="fresh", log_every=1), dataset=ds)
    assert [r["step"] for r in _metrics(cfg)] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["optim"]["max_steps"] == 3


class Killed(Exception):
    pass


def _kill_at(n):
    def cb(step, rec):
        if step == n:
            raise Killed()
    return cb


def test_resume_with_changed_schedule_is_refused_or_restarted(tmp_path):
    ds = ToyDataset()
    cfg = toy_config(tmp_path, save_every=2)
    with pytest.raises(Killed):
        train_stage(cfg, dataset=ds, callbacks=[_kill_at(3)])
    new = toy_config(tmp_path, save_every=2, optim={"lr": 1e-4, "max_steps": 4})
    with pytest.raises(RunFolderError) as err:
        train_stage(new, dataset=ds)
    assert "optim.lr" in str(err.value) and "optim.max_steps" in str(err.value) and "--restart-schedule" in str(err.value)
    out = Path(cfg.output_dir)
    assert json.loads((out / "config.json").read_text())["optim"]["lr"] == 1e-3  # the run's own config is kept
    restarted = toy_config(tmp_path, save_every=2, optim={"lr": 1e-4, "max_steps": 4}, resume="restart_schedule")
    final = train_stage(restarted, dataset=ds)
    recs = _metrics(restarted)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["lr"] == pytest.approx(1e-4)  # the new schedule (no warm-up in the toy config)
    assert list(out.glob("metrics.before_restart-*.jsonl")), "the first schedule's metrics are kept"
    assert json.loads((out / "config.json").read_text())["optim"]["lr"] == 1e-4
    # it started from the checkpoint's weights, not from scratch
    scratch = train_stage(toy_config(tmp_path / "s", optim={"lr": 1e-4, "max_steps": 4}), dataset=ds)
    a, b = _final_weights(final), _final_weights(scratch)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_on_other_data_is_refused(tmp_path):
    cfg = toy_config(tmp_path, save_every=2)
    with pytest.raises(Killed):
        train_stage(cfg, dataset=ToyDataset(), callbacks=[_kill_at(3)])
    with pytest.raises(RunFolderError, match=r"data or schedule changed.*examples: 48 \(run\) -> 40 \(now\)"):
        train_stage(cfg, dataset=ToyDataset(n=40))


# --------------------------------------------------------------------------- the run folder is data, never code
def _killed_run(tmp_path, at=5):
    ds = ToyDataset()
    cfg = toy_config(tmp_path, save_every=2)
    with pytest.raises(Killed):
        train_stage(cfg, dataset=ds, callbacks=[_kill_at(at)])
    return cfg, ds, Path(cfg.output_dir) / "checkpoints"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


@pytest.mark.parametrize("pointer", ["/etc", "../../elsewhere", "step_0000002/../../x", "step_1"])
def test_checkpoint_pointer_outside_the_run_is_refused(tmp_path, pointer):
    cfg, ds, ckpt = _killed_run(tmp_path, at=3)
    (ckpt / "latest").write_text(pointer + "\n")
    with pytest.raises(RunFolderError, match="not the name of a checkpoint folder"):
        train_stage(cfg, dataset=ds)


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "random_states_0.pkl"])
def test_pickles_in_a_checkpoint_are_never_executed(tmp_path, name):
    """Our trainer state is JSON; accelerate loads its own files with weights_only=True and refuses a custom
    pickle it did not write (then the folder cannot be resumed: an error, never code)."""
    cfg, ds, ckpt = _killed_run(tmp_path, at=3)
    marker = tmp_path / "pwned"
    (ckpt / "step_0000002" / name).write_bytes(pickle.dumps(_Evil(marker)))
    if name.startswith("custom"):
        with pytest.raises(RunFolderError, match="no readable checkpoint"):
            train_stage(cfg, dataset=ds)
    else:
        train_stage(cfg, dataset=ds)
    assert not marker.exists()


def test_truncated_latest_checkpoint_falls_back_and_torn_metrics_line_is_dropped(tmp_path, caplog):
    straight = train_stage(toy_config(tmp_path / "a", save_every=2), dataset=ToyDataset())
    cfg, ds, ckpt = _killed_run(tmp_path / "b", at=5)
    out = Path(cfg.output_dir)
    model_file = ckpt / "step_0000004" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:100])
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "lo')  # a full disk mid-write
    (out / ".final.tmp-dead").mkdir()  # a kill during a final save
    (ckpt / ".tmp_step_0000006").mkdir()
    with caplog.at_level(logging.WARNING, logger="kalm_lib.train"):
        resumed = train_stage(cfg, dataset=ds)
    assert "step_0000004 is unreadable" in caplog.text and "falling back to" in caplog.text
    assert "step_0000002" in caplog.text
    assert "torn last line dropped" in caplog.text
    a, b = _final_weights(straight), _final_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed from step 2: still bitwise the straight run
    assert [r["step"] for r in _metrics(cfg)] == [1, 2, 3, 4, 5, 6]
    assert not (out / ".final.tmp-dead").exists() and not (ckpt / ".tmp_step_0000006").exists()


def test_torn_line_in_the_middle_of_metrics_names_file_and_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(RunFolderError, match=r"metrics.jsonl:2"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert list(read_metrics(tmp_path)["step"]) == [1, 2]


# --------------------------------------------------------------------------- typed config values
@pytest.mark.parametrize("override, message", [
    ("optim.max_steps=-5", r"'optim.max_steps' = -5 is outside its range \[1, inf\)"),
    ("keep_checkpoints=0", r"'keep_checkpoints' = 0 is outside"),
    ("optim.epochs=-1", r"'optim.epochs' = -1.0 is outside its range \(0.0, inf\)"),
    ("data.query_max_len=0", r"'data.query_max_len' = 0"),
    ("log_every=0", r"'log_every' = 0"),
    ("optim.batch_size=0", r"'optim.batch_size' = 0"),
    ("optim.lr=0", r"'optim.lr' = 0.0 is outside its range \(0.0"),
    ("optim.lr=fast", r"'optim.lr' must be a number, got 'fast'"),
    ("optim.bf16=maybe", r"'optim.bf16' must be one of \['auto', 'yes', 'no'\]"),
    ("optim.batch_size=2.5", r"'optim.batch_size' must be an integer"),
    ("data.homogeneous_ratio=1.5", r"'data.homogeneous_ratio' = 1.5 is outside its range \[0.0, 1.0\]"),
    ("model.tiny.hiden_size=32", r"'model.tiny' has unknown Qwen2Config key\(s\) \['hiden_size'\]"),
    ("optim.adam_betas=[0.9, 1.5]", r"'optim.adam_betas' must be two numbers in \[0, 1\)"),
    ("resume=maybe", r"'resume' must be one of"),
    ("data.group_by_length=3", r"'data.group_by_length' must be true or false"),
])
def test_nonsense_config_values_are_refused(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message) as err:
        stage_config("smoke", "finetune", tmp_path, dict([parse_override(override)]))
    assert "configs/smoke/finetune.yaml" in str(err.value)


def test_config_values_read_as_meant(tmp_path):
    cfg = stage_config("smoke", "finetune", tmp_path, dict(parse_override(o) for o in (
        "optim.lr=1e-4", "optim.bf16=yes", "objective.tau=2e-2", "optim.max_steps=1e3", "resume=false")))
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)  # YAML 1.1 reads 1e-4 as a string
    assert cfg.optim.bf16 == "yes"                                   # and a bare yes as True
    assert cfg.objective.tau == 0.02 and cfg.optim.max_steps == 1000 and cfg.resume == "fresh"
    assert config_from_dict({"optim": {"bf16": False}}).optim.bf16 == "no"
