"""`make reproduce`: execute every stage notebook for a profile with papermill, then build the book.

Executed copies go to ``<build_dir>/notebooks/`` (never into ``notebooks/``); the run's models, logs and
results to ``<build_dir>/run/``. The first failing notebook stops the run, is named, and its executed
copy (with the traceback in the failing cell) is kept. ``run_info.json`` records the profile, date,
machine, commit and each notebook's wall time, for the book's "which run made these numbers" note.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from kalm_lib.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_data", "02_pretrain", "03_finetune", "04_distill", "05_evaluate", "06_ablations"]


def _machine() -> str:
    import torch

    cpu = f"{os.cpu_count()} CPU cores"
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}× {torch.cuda.get_device_name(0)}, {cpu}"
    return f"{platform.machine()} {cpu}, no GPU"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_source() -> str:
    """Where this run's data comes from, as the book says it: the mirror, or the Hub (a local copy of it)."""
    from kalm_lib.paths import uses_hub

    if not uses_hub():
        return "the local data mirror (KALM_DATA_DIR)"
    return ("the Hugging Face Hub, read from a local copy (KALM_HUB_DIR)" if os.environ.get("KALM_HUB_DIR")
            else "the Hugging Face Hub")


def notebook_parameters(name: str, profile: str, run_dir: Path) -> dict:
    """Papermill parameters for one notebook: ``profile`` and ``run_dir`` where its parameters cell has
    them, ``output_dir`` under the run, then the profile's ``notebooks.<name>`` overrides."""
    import papermill as pm

    from kalm_lib.config import load_profile

    known = set(pm.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb")))
    overrides = load_profile(profile).notebooks.get(name) or {}
    # relative to the project folder (the notebooks' working directory) when the run is inside it: the executed
    # notebooks, and so the book, show no machine paths
    root = Path(os.environ.get("KALM_PROJECT_ROOT", ROOT)).resolve()
    run = Path(run_dir).resolve()
    shown = run.relative_to(root) if run.is_relative_to(root) else run
    params = {"profile": profile, "run_dir": str(shown), "output_dir": str(shown / name), **overrides}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"configs/{profile}/profile.yaml: notebooks.{name} sets {unknown}, "
                         f"which are not parameters of notebooks/{name}.ipynb ({sorted(known)})")
    return {k: v for k, v in params.items() if k in known}


def run_notebooks(profile: str, build_dir: str | os.PathLike, notebooks: list[str] | None = None,
                  kernel: str = "python3", start: str | None = None) -> dict:
    """Execute the notebooks in order; raise SystemExit naming the first that fails.

    ``start`` re-runs from that notebook on (e.g. after fixing it), on the outputs the earlier notebooks
    left in ``build_dir``; their entries in run_info.json are kept, marked as from the earlier run.
    """
    import papermill as pm

    from kalm_lib.config import load_profile

    load_profile(profile)  # fail early on an unknown profile
    notebooks = list(notebooks or NOTEBOOKS)
    if start is not None:
        if start not in notebooks:
            raise SystemExit(f"[reproduce] --from {start!r}: no such notebook (choose from {notebooks})")
        notebooks = notebooks[notebooks.index(start):]
    build = Path(build_dir).resolve()
    out_dir, run_dir = build / "notebooks", build / "run"
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"profile": profile, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": _machine(), "commit": _commit(), "python": sys.version.split()[0], "data": data_source(),
            "notebooks": {}}
    previous = build / "run_info.json"
    if start is not None and previous.is_file():
        old = json.loads(previous.read_text())
        if old.get("profile") != profile:
            raise SystemExit(f"[reproduce] --from {start}: {previous} is a {old.get('profile')!r} run, not {profile!r}")
        for name, rec in old.get("notebooks", {}).items():
            if name not in notebooks:
                # a record that already came from an even earlier run keeps that run's start and commit
                info["notebooks"][name] = {"earlier_run": old.get("started"), "commit": old.get("commit"), **rec}
    env_root = os.environ.setdefault("KALM_PROJECT_ROOT", str(ROOT))
    # Headless runs log instead of drawing progress bars, which would fill the executed notebooks.
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in notebooks or NOTEBOOKS:
        src = ROOT / "notebooks" / f"{name}.ipynb"
        dst = out_dir / f"{name}.ipynb"
        print(f"[reproduce] {name} ({profile}) ...", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(src), str(dst), parameters=notebook_parameters(name, profile, run_dir),
                                kernel_name=kernel, cwd=env_root, progress_bar=False, log_output=False)
        except Exception as err:  # papermill raises PapermillExecutionError with the cell's traceback
            info["notebooks"][name] = {"status": "failed", "seconds": round(time.perf_counter() - t0, 1)}
            info["failed"] = name
            atomic_write_json(build / "run_info.json", info, indent=2)
            raise SystemExit(f"[reproduce] notebook {name} FAILED after {time.perf_counter() - t0:.0f}s; "
                             f"its executed copy is kept at {dst}\n{type(err).__name__}: {err}") from None
        secs = round(time.perf_counter() - t0, 1)
        info["notebooks"][name] = {"status": "ok", "seconds": secs}
        print(f"[reproduce] {name} done in {secs:.0f}s", flush=True)
        atomic_write_json(build / "run_info.json", info, indent=2)
    info["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(build / "run_info.json", info, indent=2)
    return info


def reproduce(profile: str, build_dir: str | os.PathLike, build_book: bool = True, start: str | None = None) -> None:
    from kalm_lib.preflight import check

    pre = check(profile, build_dir)  # missing data, Hub copies, disk or tools: said now, not after an hour
    for line in pre.lines():
        print(line, flush=True)
    if not pre.ok:
        raise SystemExit(f"[reproduce] {len(pre.errors)} problem(s) above; nothing was run")
    info = run_notebooks(profile, build_dir, start=start)
    total = sum(v["seconds"] for v in info["notebooks"].values())
    print(f"[reproduce] all notebooks ran in {total / 60:.1f} min: "
          + ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in info["notebooks"].items()))
    if build_book:
        from kalm_lib.book import build_book as _build

        index = _build(build_dir)
        print(f"[reproduce] book: open {index}")
