"""The ablation arms of notebook 06: one thing varied at a time, everything else held (issue 18, PAPER.md §5.3).

Every arm starts from the same stage-1 checkpoint (``{run_dir}/pretrain/final``), trains the same number of
optimizer steps (``ablations.steps`` of the profile) with the same seed, so the same data order wherever the data
are the same, and is scored on the same suite. An arm is a **schedule** of segments (stage, share of the steps)
run one after another, each starting from the previous segment's final model, plus config **overrides** (dotted
keys, exactly what ``--set`` takes) applied to every segment; an arm may also be scored under more than one
instruction setting (``evals``). Each segment is an ordinary ``StageTrainer`` run in
``{run_dir}/ablations/<arm>/<k>_<stage>``, so a finished arm is skipped, an interrupted one resumes, and one whose
config changed is refused with the differing fields named (``resume: auto``); ``fresh=True`` retrains it.

Scores go through the run's evaluation cache (``kalm_lib.evaluation.cache``): rebuilding the book or rerunning
finished arms encodes nothing, and adding an arm trains and scores only that arm. The arm-vs-reference
differences and their intervals are the paired bootstrap of ``kalm_lib.evaluation.paired`` (one place).

Each segment's lr schedule is the stage's own (warm-up then linear decay) over that segment's steps: the
interleaved arm warms up four times. Said in the chapter; it is the price of reusing the stage trainer unchanged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

log = logging.getLogger(__name__)

GENERIC_INSTRUCTION = "Represent this text for finding related texts"
"""The one instruction of the "generic" evaluation (every task's queries get it)."""

EVALS = ("task", "none", "generic")
"""Instruction settings at evaluation: each task's own KaLM instruction, none, one generic for every task."""


@dataclass(frozen=True)
class Arm:
    name: str
    group: str                           # the question it answers (one table per group)
    schedule: tuple[tuple[str, float], ...]  # (stage, share of ablations.steps), run in order
    overrides: dict = field(default_factory=dict)  # dotted config keys applied to every segment
    evals: tuple[str, ...] = ("task",)   # instruction settings it is scored under (EVALS)
    label: str = ""                      # what the table calls it
    paper: str | None = None             # the paper's configuration it corresponds to (PAPER_ABLATIONS)


FT = (("finetune", 1.0),)
KD = (("distill", 1.0),)

_ARM_LIST = [
    # focal-style reweighting w_i = (1 − p_i)^γ (PAPER.md §2.2): γ sweep, and the weight detached (a pure reweighting)
    Arm("focal-g0", "focal", FT, {"objective.gamma": 0.0}, label="γ = 0 (plain InfoNCE)", paper="w/o focal"),
    Arm("ft", "focal", FT, {}, label="γ = 0.5 (the recipe)", paper="full"),
    Arm("focal-g1", "focal", FT, {"objective.gamma": 1.0}, label="γ = 1"),
    Arm("focal-g2", "focal", FT, {"objective.gamma": 2.0}, label="γ = 2"),
    Arm("focal-detached", "focal", FT, {"objective.focal_detach": True}, label="γ = 0.5, w_i detached"),
    # online hard-negative mixing (PAPER.md §2.3)
    Arm("mix-none", "mixing", FT, {"objective.mix_pairwise": 0, "objective.mix_listwise": False},
        label="none", paper="w/o mixing"),
    Arm("mix-pairwise", "mixing", FT, {"objective.mix_listwise": False}, label="pairwise only"),
    Arm("mix-listwise", "mixing", FT, {"objective.mix_pairwise": 0}, label="list-wise only"),
    # ("ft" is "both")
    # distillation objective and temperature (PAPER.md §2.4), each from stage 1 for the arm's steps
    Arm("kd", "distillation", KD, {}, label="CL + KL, τ_kd = 0.05 (the recipe)", paper="CL+KL"),
    Arm("kd-kl", "distillation", KD, {"objective.contrastive_weight": 0.0}, label="KL only", paper="KL only"),
    Arm("kd-cl", "distillation", KD, {"objective.distill_weight": 0.0}, label="CL only", paper="CL only"),
    Arm("kd-tau0.02", "distillation", KD, {"objective.tau_kd": 0.02}, label="τ_kd = 0.02 (low)"),
    Arm("kd-tau0.2", "distillation", KD, {"objective.tau_kd": 0.2}, label="τ_kd = 0.2 (high)"),
    # the causal mask kept in training and evaluation (the saved model says is_causal)
    Arm("causal", "attention", FT, {"model.causal": True}, label="causal (mask kept)", paper="w/o bidirectional"),
    # instructions: trained with (ft) or without; each scored with the task's instruction, none, a generic one
    Arm("no-instructions", "instructions", FT, {"data.use_instructions": False}, evals=EVALS,
        label="trained without instructions"),
    # where distillation goes: after fine-tuning (the paper), interleaved with it, instead of it ("kd")
    Arm("kd-after-ft", "placement", (("finetune", 0.5), ("distill", 0.5)), {}, label="fine-tune, then distil",
        paper="full"),
    Arm("kd-interleaved", "placement", (("finetune", 0.25), ("distill", 0.25), ("finetune", 0.25), ("distill", 0.25)),
        {}, label="interleaved (FT, KD, FT, KD)"),
]
ARMS: dict[str, Arm] = {a.name: a for a in _ARM_LIST}
"""Every arm, by name. The reference arm of each group (the paper's choice) is ``REFERENCE[group]``."""

# arms that also belong to another group's table (the same trained model, not trained twice)
ALSO_IN = {"mixing": ["ft"], "attention": ["ft"], "instructions": ["ft"], "placement": ["kd"]}
REFERENCE = {"focal": "ft", "mixing": "ft", "distillation": "kd", "attention": "ft", "instructions": "ft",
             "placement": "kd-after-ft"}
LABEL_IN = {("mixing", "ft"): "pairwise + list-wise (the recipe)", ("attention", "ft"): "bidirectional (the recipe)",
            ("instructions", "ft"): "trained with instructions (the recipe)",
            ("placement", "kd"): "instead of fine-tuning"}
ARM_EVALS = {"ft": EVALS}  # the recipe's model is scored under every instruction setting too

PAPER_ABLATIONS = {  # PAPER.md §5.3 ([S] paper note, V2.5 setting): cmn MTK, eng MTK
    "full": (70.93, 69.33), "w/o focal": (69.41, 68.70), "w/o mixing": (70.54, 68.91),
    "w/o bidirectional": (70.50, 68.94), "CL+KL": (70.93, None), "KL only": (70.72, None),
    "CL only": (68.31, None),
}


class AblationError(ValueError):
    """An unknown arm, or a stage-1 checkpoint that is missing or from another profile."""


def resolve_arms(names: Sequence[str] | None) -> list[Arm]:
    """Arms by name (None: all), each once, in the registry's order; the references they are compared with are
    added (an arm's gain needs its group's reference)."""
    if names is None:
        return list(_ARM_LIST)
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise AblationError(f"unknown ablation arm(s) {', '.join(map(repr, unknown))}; known: {', '.join(ARMS)}")
    wanted = set(names) | {REFERENCE[ARMS[n].group] for n in names}
    return [a for a in _ARM_LIST if a.name in wanted]


def stage1_checkpoint(profile: str, run_dir: str | os.PathLike) -> Path:
    """``{run_dir}/pretrain/final``, checked: it exists and was trained from this profile's stage-1 config."""
    import json

    final = Path(run_dir) / "pretrain" / "final"
    if not (final / "modules.json").is_file():
        raise AblationError(f"{final}: no stage-1 checkpoint; run notebook 02 (or `python -m kalm_lib train "
                            f"--profile {profile} --stage pretrain --run-dir {run_dir}`) first")
    rec = Path(run_dir) / "pretrain" / "config.json"
    if rec.is_file():
        src = json.loads(rec.read_text(encoding="utf-8")).get("source", "")
        if Path(src).parent.name and Path(src).parent.name != profile:
            raise AblationError(f"{final}: trained from {src}, not from profile {profile!r}; point run_dir at a "
                                f"{profile} run or pass profile={Path(src).parent.name!r}")
    return final


def segment_configs(arm: Arm, profile: str, run_dir: str | os.PathLike, steps: int,
                    extra: dict | None = None) -> list:
    """The arm's segments as stage configs: output folders, starting models and step counts filled in."""
    from kalm_lib.config import stage_config

    init = stage1_checkpoint(profile, run_dir)
    root = Path(run_dir) / "ablations" / arm.name
    out, left = [], steps
    for k, (stage, share) in enumerate(arm.schedule):
        n = left if k == len(arm.schedule) - 1 else max(1, round(share * steps))
        left -= n
        if n < 1:
            raise AblationError(f"arm {arm.name!r}: {steps} steps leave segment {k} ({stage}) none; raise "
                                "ablations.steps")
        over = {**(extra or {}), **arm.overrides, "output_dir": str(root / f"{k}_{stage}"), "model.init": str(init),
                "optim.max_steps": n}
        cfg = stage_config(profile, stage, run_dir, over)
        out.append(cfg)
        init = Path(cfg.output_dir) / "final"
    return out


def train_arm(arm: Arm, profile: str, run_dir: str | os.PathLike, steps: int, *, fresh: bool = False,
              extra: dict | None = None) -> Path:
    """Train (or resume, or skip when finished) every segment of ``arm``; returns its final model folder."""
    from kalm_lib.train import StageTrainer

    final = None
    for cfg in segment_configs(arm, profile, run_dir, steps, {**(extra or {}), **({"resume": "fresh"} if fresh else {})}):
        final = Path(cfg.output_dir) / "final"
        if (final / "modules.json").is_file() and (Path(cfg.output_dir) / "DONE").is_file() and not fresh:
            # StageTrainer would skip it too (StageTrainer._prepare_folder), but only after building the model and the
            # training set; this cheap check compares the config alone, not the training set's example count
            from kalm_lib.train import config_differences
            import json

            old = json.loads((Path(cfg.output_dir) / "config.json").read_text(encoding="utf-8"))
            diff = config_differences(old, cfg.to_dict())
            if not diff:
                log.info("%s: %s finished earlier: kept", arm.name, cfg.output_dir)
                continue
        final = Path(StageTrainer(cfg).run())
    return final


def _prompts(setting: str) -> dict | None:
    if setting == "generic":
        from kalm_lib.evaluation.encoder import KaLM_v2_task_prompts

        return {k: GENERIC_INSTRUCTION for k in KaLM_v2_task_prompts}
    return None


def score_arm(arm_name: str, model, tasks: Any, run_dir: str | os.PathLike, *, max_rows: int | None = None,
              max_length: int | None = None, bf16: bool | None = None, setting: str = "task") -> pd.DataFrame:
    """The arm's model scored on ``tasks`` under one instruction setting, with predictions kept (for the
    intervals), through the run's evaluation cache. Rows are labelled ``<arm>`` or ``<arm>@<setting>``."""
    from kalm_lib.evaluation import evaluate_model
    from kalm_lib.evaluation.cache import run_cache_dir
    from kalm_lib.evaluation.encoder import KaLMEncoder

    if setting not in EVALS:
        raise AblationError(f"unknown instruction setting {setting!r}; known: {', '.join(EVALS)}")
    label = arm_name if setting == "task" else f"{arm_name}@{setting}"
    enc = KaLMEncoder(model, model_name=label, use_instructions=setting != "none", prompts_dict=_prompts(setting),
                      max_length=max_length, bf16=bf16)
    return evaluate_model(enc, tasks=tasks, max_rows=max_rows, output_dir=Path(run_dir) / "eval" / "ablations",
                          save_predictions=True, cache_dir=run_cache_dir(run_dir))


def run_arms(arms: Sequence[Arm], profile: str, run_dir: str | os.PathLike, *, steps: int, tasks: Any,
             max_rows: int | None = None, max_length: int | None = None, bf16: bool | None = None,
             fresh: Sequence[str] = ()) -> pd.DataFrame:
    """Train and score every arm (finished ones cost a config check and a weights hash); one row per arm ×
    instruction setting × task × split, as ``evaluate_model`` returns them."""
    from tqdm.auto import tqdm

    from kalm_lib.evaluation.encoder import load_model

    frames = []
    for arm in tqdm(list(arms), desc="ablation arms", unit="arm"):
        final = train_arm(arm, profile, run_dir, steps, fresh=arm.name in set(fresh))
        model = load_model(final)
        for setting in ARM_EVALS.get(arm.name, arm.evals):
            frames.append(score_arm(arm.name, model, tasks, run_dir, max_rows=max_rows, max_length=max_length,
                                    bf16=bf16, setting=setting))
        del model
    return pd.concat(frames, ignore_index=True)


def comparisons(arms: Sequence[Arm]) -> list[tuple[str, str, str, str]]:
    """(group, row label, model label, reference model label) for every table row, in table order."""
    names = {a.name for a in arms}
    rows = []
    for group in dict.fromkeys(a.group for a in _ARM_LIST):
        members = [a.name for a in _ARM_LIST if a.name in names and (a.group == group)]
        members += [n for n in ALSO_IN.get(group, []) if n in names]
        if not members:
            continue
        ref = REFERENCE[group]
        for n in sorted(members, key=lambda n: [a.name for a in _ARM_LIST].index(n)):
            label = LABEL_IN.get((group, n), ARMS[n].label)
            settings = ARM_EVALS.get(n, ARMS[n].evals) if group == "instructions" else ("task",)
            for s in settings:
                model = n if s == "task" else f"{n}@{s}"
                rows.append((group, label if s == "task" else f"{label}, evaluated with {_SETTING[s]}", model, ref))
    return rows


_SETTING = {"task": "the task's instruction", "none": "no instruction", "generic": "one generic instruction"}


def ablation_table(df: pd.DataFrame, arms: Sequence[Arm], run_dir: str | os.PathLike, *, n_resamples: int = 2000,
                   seed: int = 0) -> pd.DataFrame:
    """One row per (group, arm, instruction setting, task) for the suite's STS and retrieval tasks (the ones with a
    per-example score): the arm's main score ×100 with its 95% bootstrap interval over the task's examples, and its
    gain over the group's reference arm with the paired 95% interval (the same examples resampled on both sides)."""
    from kalm_lib.evaluation.paired import score_interval
    from kalm_lib.evaluation.per_example import gain, per_example_scores, predictions_path
    from kalm_lib.evaluation.runner import slug
    from kalm_lib.evaluation.suite import per_example_tasks

    out_dir = Path(run_dir) / "eval" / "ablations"
    main = df[df["main_split"]]
    present = set(main.model)
    kw = dict(n_resamples=n_resamples, seed=seed)
    rows, cache = [], {}

    def scores(model: str, task: str):
        if (model, task) not in cache:
            cache[model, task] = per_example_scores(tasks[task], predictions_path(out_dir / slug(model) / "predictions",
                                                                                  task))
        return cache[model, task]

    tasks = per_example_tasks(main)
    for group, label, model, ref in comparisons(arms):
        if model not in present or ref not in present:
            continue
        for task in tasks:
            a = scores(model, task)
            own = score_interval(a.metric, a.values, vectorized=a.vectorized, **kw)
            row = {"group": group, "arm": label, "model": model, "reference": ref, "task": task,
                   "score": 100 * own.estimate, "score_low": 100 * own.low, "score_high": 100 * own.high,
                   "gain": None, "gain_low": None, "gain_high": None, "excludes_zero": None, "n": own.n}
            if model != ref:
                d = gain(a, scores(ref, task), **kw)
                row.update(gain=100 * d.estimate, gain_low=100 * d.low, gain_high=100 * d.high,
                           excludes_zero=d.excludes_zero)
            rows.append(row)
    return pd.DataFrame(rows, columns=["group", "arm", "model", "reference", "task", "score", "score_low",
                                       "score_high", "gain", "gain_low", "gain_high", "excludes_zero", "n"])


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (group, arm): the mean score and mean gain over the tasks (×100), how many per-task gains have an
    interval that excludes 0 (and of those, how many are positive), and the paper's number for the same
    configuration where PAPER.md §5.3 has one."""
    rows = []
    for (group, arm, model), g in table.groupby(["group", "arm", "model"], sort=False):
        has = g.excludes_zero.notna()
        sig = g[has & g.excludes_zero.astype(bool)]
        paper = _paper_key(group, model)
        cmn, eng = PAPER_ABLATIONS.get(paper, (None, None)) if paper else (None, None)
        rows.append({"group": group, "arm": arm, "mean score": g.score.mean(),
                     "mean gain": g.gain.astype(float).mean() if has.any() else None,
                     "gains ≠ 0 (+/−)": f"{len(sig)} of {int(has.sum())} ({int((sig.gain > 0).sum())}/"
                                        f"{int((sig.gain < 0).sum())})" if has.any() else "reference",
                     "paper cmn MTK": cmn, "paper eng MTK": eng})
    return pd.DataFrame(rows)


def _paper_key(group: str, model: str) -> str | None:
    """The paper's configuration a row corresponds to: the reference of the focal, mixing, attention and
    instructions tables is the paper's full model; an arm's own ``paper`` otherwise."""
    if "@" in model:
        return None
    if (group, model) in LABEL_IN:
        return "full" if group != "placement" else None
    return ARMS[model].paper


def verdicts(table: pd.DataFrame) -> list[str]:
    """One sentence per compared arm, read off the paired intervals: better / worse on the tasks whose interval
    excludes 0, unresolved on the rest. Nothing here is written by hand, so the text cannot outrun the evidence."""
    lines = []
    ref_label = {(g, m): a for g, a, m in table[["group", "arm", "model"]].itertuples(index=False)}
    for (group, arm, model, ref), g in table[table.gain.notna()].groupby(["group", "arm", "model", "reference"],
                                                                          sort=False):
        up = g[g.excludes_zero.astype(bool) & (g.gain > 0)]
        down = g[g.excludes_zero.astype(bool) & (g.gain < 0)]
        rest = g[~g.excludes_zero.astype(bool)]

        def fmt(d):
            return ", ".join(f"{r.task} {r.gain:+.2f} [{r.gain_low:+.2f}, {r.gain_high:+.2f}]" for r in d.itertuples())

        parts = []
        if len(up):
            parts.append(f"better on {fmt(up)}")
        if len(down):
            parts.append(f"worse on {fmt(down)}")
        if len(rest):
            parts.append(f"not resolved on {', '.join(rest.task)} (intervals include 0)")
        lines.append(f"{group}: '{arm}' against '{ref_label.get((group, ref), ref)}': " + "; ".join(parts) + ".")
    return lines
