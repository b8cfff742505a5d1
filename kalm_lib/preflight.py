"""Before any notebook runs (``make reproduce``): one clear line for each thing that would stop the run later, with
the command that fixes it (issue 15 item 2). Errors stop the run before its first notebook; warnings are printed
and the run goes on (the book's MathJax and browser check are optional: ``kalm_lib.book.book_deps``).

    data      the data mirror (``KALM_DATA_DIR``): evaluation sets, training pairs, the Qwen2 tokenizer
    Hub       gpu / paper profiles: the Hub is reachable, or ``KALM_HUB_DIR`` holds the repositories they name
    disk      free space where the run writes (the smoke run takes about 1.3 GB; larger profiles more)
    tools     the Jupyter kernel papermill runs the notebooks in, jupyter-book for the book (npm, Chromium and
              a CJK font are optional: ``make book-deps`` warns about each)
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# Free space a run needs, by profile (the smoke run measured 1.3 GB on 2026-12-03; the others are estimates:
# SmolLM2-135M stage models and checkpoints; Qwen2-0.5B fp32 checkpoints with AdamW moments, and mined data)
NEEDED_GB = {"smoke": 2.0, "ci": 2.0, "cpu": 8.0, "gpu": 40.0, "paper": 200.0}
DATA_PARTS = {"en": "English evaluation sets", "zh": "Chinese evaluation sets", "train": "training pairs",
              "tokenizers/qwen2/tokenizer.json": "the Qwen2 tokenizer"}


@dataclass
class Preflight:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        return [f"[preflight] ERROR: {e}" for e in self.errors] + [f"[preflight] warning: {w}" for w in self.warnings]


def _hub_ids(profile: str) -> list[tuple[str, str]]:
    """(Hub id, "model" | "dataset") that the profile's stages and teacher read."""
    from kalm_lib.config import load_profile, stage_config
    from kalm_lib.data.catalog import get_entry
    from kalm_lib.paths import is_hub_id
    from kalm_lib.recipe import STAGES

    ids = []
    prof = load_profile(profile)
    teacher = {"minilm": None, "mpnet": "sentence-transformers/all-mpnet-base-v2"}.get(prof.teacher, prof.teacher)
    if teacher and is_hub_id(teacher):
        ids.append((teacher, "model"))
    for stage in STAGES:
        cfg = stage_config(profile, stage, "runs/preflight")
        if is_hub_id(cfg.model.init):
            ids.append((cfg.model.init, "model"))
        for name in cfg.data.datasets:
            entry = get_entry(name)
            if entry.hub is not None and entry.path is None:
                ids.append((entry.hub.repo, "dataset"))
    return list(dict.fromkeys(ids))


def check(profile: str, build_dir: str | os.PathLike) -> Preflight:
    """What would stop ``make reproduce PROFILE=<profile>`` (errors) or weaken it (warnings)."""
    out = Preflight()
    data = os.environ.get("KALM_DATA_DIR")
    if not data or not Path(data).is_dir():
        out.errors.append(f"data: no data mirror (KALM_DATA_DIR={data or 'unset'}): set KALM_DATA_DIR to the mirror "
                          "(the Makefile's default is ../shared/data; its README says how it is laid out)")
    else:
        for part, what in DATA_PARTS.items():
            if not (Path(data) / part).exists():
                out.errors.append(f"data: {Path(data) / part} is missing ({what}): the mirror at KALM_DATA_DIR={data} "
                                  "is incomplete; copy it again from its source")
    if profile in ("gpu", "paper"):
        hub_dir = os.environ.get("KALM_HUB_DIR")
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        for repo, kind in _hub_ids(profile):
            if hub_dir:
                if not (Path(hub_dir) / repo).is_dir():
                    flag = "" if kind == "model" else " --repo-type dataset"
                    out.errors.append(f"Hub: KALM_HUB_DIR={hub_dir} has no {repo}: huggingface-cli download {repo}{flag} "
                                      f"--local-dir {Path(hub_dir) / repo}")
            elif offline:
                out.errors.append(f"Hub: HF_HUB_OFFLINE is set and KALM_HUB_DIR is not, so {repo} cannot be read: "
                                  "unset HF_HUB_OFFLINE, or mirror it and set KALM_HUB_DIR (README, 'Where data comes from')")
    where = Path(build_dir).resolve()
    probe = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
    free_gb = shutil.disk_usage(probe).free / 1e9
    need = NEEDED_GB.get(profile, 2.0)
    if free_gb < need:
        out.errors.append(f"disk: {free_gb:.1f} GB free at {probe}, the {profile} run needs about {need:g} GB: free "
                          f"space there or pass BUILD=<a folder on a larger disk> (make reproduce BUILD=...)")
    for module, fix in (("papermill", "make venv"), ("ipykernel", "make venv"), ("jupyter_book", "make venv")):
        if importlib.util.find_spec(module) is None:
            out.errors.append(f"tools: the Python package {module} is missing: {fix} (installs requirements.txt)")
    if importlib.util.find_spec("jupyter_client") is not None:
        from jupyter_client.kernelspec import KernelSpecManager

        if "python3" not in KernelSpecManager().find_kernel_specs():
            out.errors.append("tools: no 'python3' Jupyter kernel for papermill: .venv/bin/python -m ipykernel install "
                              "--user --name python3")
    return out
