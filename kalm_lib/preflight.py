"""Before any notebook runs (``make reproduce``): one clear line for each thing that would stop the run later, with
the command that fixes it (issue 15 item 2). Errors stop the run before its first notebook; warnings are printed
and the run goes on (the book's MathJax and browser check are optional: ``kalm_lib.book.book_deps``).

    data      the data mirror (``KALM_DATA_DIR``) is complete; unset, the data comes from the Hub (a warning)
    Hub       without a mirror, and always for gpu / paper: the Hub is reachable, or ``KALM_HUB_DIR`` holds every
              repository the profile reads (kalm_lib.fetch.profile_repos; ``make data`` fetches them)
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
SHOWN = 5  # missing repositories named one per line with their command; the rest on one line
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


def check(profile: str, build_dir: str | os.PathLike) -> Preflight:
    """What would stop ``make reproduce PROFILE=<profile>`` (errors) or weaken it (warnings)."""
    out = Preflight()
    data = os.environ.get("KALM_DATA_DIR")
    if data and not Path(data).is_dir():
        out.errors.append(f"data: KALM_DATA_DIR={data} is not a folder: point it at the data mirror, or unset it to "
                          "read every dataset from the Hub (README, 'Where data comes from')")
        return _rest(out, profile, build_dir)
    if data:
        for part, what in DATA_PARTS.items():
            if not (Path(data) / part).exists():
                out.errors.append(f"data: {Path(data) / part} is missing ({what}): the mirror at KALM_DATA_DIR={data} "
                                  "is incomplete; copy it again from its source, or unset KALM_DATA_DIR to read the Hub")
    else:
        out.warnings.append("data: no data mirror (KALM_DATA_DIR unset), so the evaluation sets, the training pairs "
                            "and the tokenizer come from the Hub (README, 'Where data comes from')")
    if not data or profile in ("gpu", "paper"):
        from kalm_lib.fetch import missing, problem, profile_repos

        hub_dir = os.environ.get("KALM_HUB_DIR")
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        repos = profile_repos(profile)
        if hub_dir:
            for r in repos:
                bad = problem(r, hub_dir)
                if bad:
                    out.errors.append(f"Hub: {Path(hub_dir) / r.repo} (read by {r.why}) is {bad}: `make data "
                                      f"PROFILE={profile} KALM_HUB_DIR={hub_dir}` fetches it again (and resumes)")
            gone = missing(repos, hub_dir)
            for r in gone[:SHOWN]:
                flag = "" if r.kind == "model" else " --repo-type dataset"
                rev = f" --revision {r.revision}" if r.revision else ""
                out.errors.append(f"Hub: KALM_HUB_DIR={hub_dir} has no {r.repo} (read by {r.why}): huggingface-cli "
                                  f"download {r.repo}{flag}{rev} --local-dir {Path(hub_dir) / r.repo}, or "
                                  f"`make data PROFILE={profile} KALM_HUB_DIR={hub_dir}` for all of them")
            if len(gone) > SHOWN:
                out.errors.append(f"Hub: and {len(gone) - SHOWN} more repositories missing from KALM_HUB_DIR={hub_dir} "
                                  f"({', '.join(r.repo for r in gone[SHOWN:])}): `make data PROFILE={profile} "
                                  f"KALM_HUB_DIR={hub_dir}`")
        elif offline:
            out.errors.append(f"Hub: HF_HUB_OFFLINE is set and KALM_HUB_DIR is not, so the {len(repos)} repositories the "
                              f"{profile} profile reads ({', '.join(r.repo for r in repos[:4])}, ...) cannot be read: "
                              f"unset HF_HUB_OFFLINE, or fetch them where there is a network with `make data "
                              f"PROFILE={profile} KALM_HUB_DIR=<folder>` and set KALM_HUB_DIR")
    return _rest(out, profile, build_dir)


def _rest(out: Preflight, profile: str, build_dir) -> Preflight:
    """The checks that do not depend on where the data comes from: disk and tools."""
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
