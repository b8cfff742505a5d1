"""Every Hub repository a profile reads, and ``make data``: an offline copy of them (``KALM_HUB_DIR``).

Without the data mirror (``KALM_DATA_DIR`` unset) a run reads the Hub: the MTEB / C-MTEB datasets of its
evaluation suites and of decontamination (kalm_lib/data/hub_eval.py), its stages' and mining's Hub datasets
(``data.hub_datasets``), its models (the initial checkpoint, the teacher, Qwen2's tokenizer for a tiny model).
:func:`profile_repos` lists them once, for the preflight (is each one there?) and for :func:`fetch`, which
downloads each into ``$KALM_HUB_DIR/<owner>/<name>`` (``huggingface_hub.snapshot_download``, at the revision mteb
pins for an evaluation set). A repository is complete when its ``.kalm-complete`` marker is written: a rerun
skips those and resumes the others (huggingface_hub resumes a half-downloaded file), so an interrupted
``make data`` loses nothing. A repository that is missing or renamed on the Hub stops the fetch with its name,
who reads it, and what to do; the repositories already fetched stay.

A training dataset with one task per subset is fetched whole: for the capped smoke / cpu profiles that is more
than they read (they take the first rows of each subset), said in the log.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
COMPLETE = ".kalm-complete"


@dataclass(frozen=True)
class HubRepo:
    repo: str
    kind: str                 # "dataset" | "model"
    why: str                  # who reads it, for messages: "evaluation: STSBenchmark", "pretrain: hub-pretrain-paq"
    revision: str | None = None
    subsets: tuple[str, ...] = ()   # the subfolders a training dataset is read from (empty: all of it)


def _task_names(tasks, default) -> list[tuple[str, bool]]:
    """(task name, read from the Hub even with a mirror): a benchmark's tasks are MTEB's own."""
    from kalm_lib.evaluation.benchmarks import BENCHMARKS
    from kalm_lib.evaluation.local_tasks import SUITES

    if tasks is None:
        tasks = default
    if isinstance(tasks, str):
        tasks = SUITES.get(tasks, [tasks])
    out = []
    for t in tasks:
        out += [(n, True) for n in BENCHMARKS[t]] if t in BENCHMARKS else [(t, False)]
    return out


def eval_task_names(profile: str) -> list[tuple[str, bool]]:
    """The tasks a profile evaluates (quick suite, final suite, ablations), each once, with whether it is read from
    the Hub even where there is a mirror (a benchmark's task, or any name that is not a local task)."""
    from kalm_lib.config import load_profile
    from kalm_lib.evaluation.local_tasks import LOCAL_SUITE, SMOKE_SUITE, SPECS

    prof = load_profile(profile)
    out: dict[str, bool] = {}
    for name, bench in (_task_names(prof.eval.tasks, SMOKE_SUITE) + _task_names(prof.eval.final_tasks, LOCAL_SUITE)
                        + _task_names(prof.ablations.tasks, [])):
        out[name] = out.get(name, False) or bench or name not in SPECS
    return list(out.items())


def profile_repos(profile: str, run_dir: str | os.PathLike = "runs/preflight") -> list[HubRepo]:
    """Every Hub repository ``profile`` reads when there is no data mirror (and, for the gpu / paper profiles,
    with one: their models and training data are on the Hub either way), each once."""
    import mteb

    from kalm_lib.config import load_profile, stage_config
    from kalm_lib.data.catalog import get_entry
    from kalm_lib.data.eval_sets import SPECS
    from kalm_lib.data.hub_eval import hub_twin
    from kalm_lib.paths import is_hub_id, uses_hub
    from kalm_lib.recipe import STAGES

    out: dict[str, HubRepo] = {}

    def add(r: HubRepo):  # one entry per repository; a reader of the whole repository wins over subsets
        old = out.get(r.repo)
        if old is None:
            out[r.repo] = r
            return
        subsets = () if not old.subsets or not r.subsets else tuple(dict.fromkeys(old.subsets + r.subsets))
        out[r.repo] = HubRepo(r.repo, old.kind, old.why, old.revision or r.revision, subsets)

    prof = load_profile(profile)
    teacher = {"minilm": None, "mpnet": "sentence-transformers/all-mpnet-base-v2"}.get(prof.teacher, prof.teacher)
    if teacher and is_hub_id(teacher):
        add(HubRepo(teacher, "model", "teacher"))
    hub = uses_hub()
    datasets_by = {}
    for stage in STAGES:
        cfg = stage_config(profile, stage, run_dir)
        if is_hub_id(cfg.model.init):
            add(HubRepo(cfg.model.init, "model", f"{stage}: model.init"))
        elif cfg.model.init == "tiny" and hub:
            add(HubRepo("Qwen/Qwen2-0.5B", "model", f"{stage}: the tiny model's Qwen2 tokenizer"))
        datasets_by[stage] = cfg.data.datasets
    datasets_by["mining"] = prof.mining.datasets
    for who, names in datasets_by.items():
        for name in names:
            entry = get_entry(name)
            if entry.hub is not None and (entry.path is None or hub):
                sub = () if entry.hub.data_dir in (None, "*") else (entry.hub.data_dir,)
                add(HubRepo(entry.hub.repo, "dataset", f"{who}: {entry.name}", subsets=sub))
    # MTEB tasks that are not local copies come from the Hub either way; without a mirror every evaluated task
    # does, and decontamination reads every declared set's MTEB task
    evaluated = [n for n, always in eval_task_names(profile) if hub or always]
    forbidden = [s.base for s in SPECS.values()] if hub else []
    for name in dict.fromkeys([*evaluated, *forbidden]):
        meta = mteb.get_task(hub_twin(name)).metadata
        why = f"evaluation: {name}" if name in evaluated else f"decontamination: {name}"
        add(HubRepo(meta.dataset["path"], "dataset", why, revision=meta.dataset.get("revision")))
    return list(out.values())


def missing(repos: list[HubRepo], hub_dir: str | os.PathLike) -> list[HubRepo]:
    """The repositories without a folder under ``hub_dir``."""
    return [r for r in repos if not (Path(hub_dir) / r.repo).is_dir()]


def problem(r: HubRepo, hub_dir: str | os.PathLike) -> str | None:
    """What is wrong with the copy of ``r`` under ``hub_dir`` (None: nothing seen): a download left half-written
    (huggingface_hub's ``.incomplete`` files), or a copy ``make data`` fetched at another revision than the run reads
    (mteb pins each evaluation set's revision; an older copy may have another layout)."""
    folder = Path(hub_dir) / r.repo
    if not folder.is_dir():
        return None
    partial = next(iter((folder / ".cache" / "huggingface").rglob("*.incomplete")), None) \
        if (folder / ".cache" / "huggingface").is_dir() else None
    if partial is not None:
        return f"half-written ({partial.relative_to(folder)} is an interrupted download)"
    marker = folder / COMPLETE
    if r.revision and marker.is_file():
        got = marker.read_text(encoding="utf-8").strip()
        if got != r.revision:
            return f"fetched at revision {got}, but the run reads {r.revision}"
    return None


def fetch(profile: str, hub_dir: str | os.PathLike, download=None) -> list[Path]:
    """Download every repository of :func:`profile_repos` into ``hub_dir/<owner>/<name>``; returns their folders.
    ``download`` is ``huggingface_hub.snapshot_download`` (a stand-in in tests)."""
    from tqdm.auto import tqdm

    if download is None:
        from huggingface_hub import snapshot_download as download
    hub_dir = Path(hub_dir)
    repos = profile_repos(profile)
    done = []
    for r in tqdm(repos, desc=f"make data ({profile})", unit="repo"):
        folder = hub_dir / r.repo
        if (folder / COMPLETE).is_file() and problem(r, hub_dir) is None:
            log.info("%s: already complete (%s)", r.repo, folder)
            done.append(folder)
            continue
        patterns = None
        if r.subsets:
            patterns = ["README.md", *[f"{s}/*" for s in r.subsets]]
        elif r.kind == "dataset" and r.why.split(":")[0] in ("pretrain", "finetune", "distill", "mining"):
            log.warning("%s: every subset is read (%s), so the whole dataset is fetched", r.repo, r.why)
        try:
            download(repo_id=r.repo, repo_type=r.kind, revision=r.revision, local_dir=str(folder),
                     allow_patterns=patterns)
        except Exception as err:  # noqa: BLE001 - named, with the fix; what is fetched stays
            name = type(err).__name__
            hint = ("it is missing or renamed on the Hub, or gated (log in: huggingface-cli login)"
                    if "NotFound" in name or "Gated" in name or "Repository" in name else "see the error")
            raise RuntimeError(f"make data: {r.kind} {r.repo}{'@' + r.revision if r.revision else ''} (read by "
                               f"{r.why}) could not be fetched: {name}: {str(err)[:200]}; {hint}. The "
                               f"{len(done)} repositories fetched so far are kept; `make data` again resumes") from err
        (folder / COMPLETE).write_text(f"{r.revision or 'main'}\n", encoding="utf-8")
        done.append(folder)
    return done
