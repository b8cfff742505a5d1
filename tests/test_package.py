"""A package that installs (issue 15, item 6): pyproject.toml's ranges hold requirements.txt's pins, and the
wheel, installed into a fresh venv outside the checkout, trains a stage with the configs it carries.

The fresh venv does not reinstall torch & co.: a ``.pth`` file appends this checkout venv's site-packages to its
path (like ``--system-site-packages``, but for the project venv, which is not the system Python). Only that
directory is added, not the ``.pth`` files in it, so the checkout's editable kalm_lib stays invisible there; the
test checks kalm_lib and its configs are imported from the fresh venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out


def test_declared_ranges_hold_the_pins():
    project = _pyproject()["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = _pins()
    seen = set()
    for text in declared:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"pyproject.toml declares {text!r}, which requirements.txt does not pin"
        assert req.specifier.contains(pins[name]), f"{text!r} excludes the pinned {name}=={pins[name]}"
        assert any(s.operator in ("<", "<=", "~=", "==") for s in req.specifier), f"{text!r} has no upper bound"
        seen.add(name)
    assert seen == set(pins), f"pinned but not declared: {sorted(set(pins) - seen)}"
    torch = next(Requirement(r) for r in project["dependencies"] if r.startswith("torch"))
    assert not torch.specifier.contains("2.14.0"), "torch must stay at the pinned minor release (DESIGN.md)"


def test_licence_matches_the_license_file():
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0" in text


def test_every_package_folder_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kalm_lib").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    found |= {"kalm_lib.configs"} | {f"kalm_lib.configs.{p.parent.name}" for p in (ROOT / "configs").glob("*/*.yaml")}
    assert found == listed, f"pyproject.toml [tool.setuptools] packages: missing {sorted(found - listed)}, " \
                            f"extra {sorted(listed - found)}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_installs_and_trains_outside_the_checkout(tmp_path, data_dir):
    # build from a copy of what the wheel is made of: the checkout gets no build/ or egg-info from this test
    src = tmp_path / "src"
    src.mkdir()
    for name in ["kalm_lib", "configs"]:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ["pyproject.toml", "README.md", "LICENSE"]:
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip"]
    run = dict(check=True, capture_output=True, text=True, timeout=240)
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(tmp_path / "dist")],
                   **run)
    (wheel,) = (tmp_path / "dist").glob("kalm_lib-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    yamls = {f"kalm_lib/configs/{p.relative_to(ROOT / 'configs').as_posix()}" for p in (ROOT / "configs").rglob("*.yaml")}
    assert yamls <= names, f"configs missing from the wheel: {sorted(yamls - names)}"
    assert "kalm_lib/data/catalog.yaml" in names and any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Dist: torch<2.14,>=2.13" in metadata

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], **run)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  **run).stdout.strip())
    (purelib / "kalm-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip from the project venv installs into the fresh one (--python), without touching an index
    subprocess.run(pip + ["--python", str(py), "install", "-q", "--no-index", "--no-deps", str(wheel)], **run)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KALM_PROJECT_ROOT", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               KALM_DATA_DIR=str(data_dir))
    where = subprocess.run([str(py), "-c", "import kalm_lib, kalm_lib.config as c; print(kalm_lib.__file__); "
                            "print(c.CONFIG_ROOT); print(' '.join(c.available_profiles()))"],
                           cwd=outside, env=env, **run).stdout.split("\n")
    assert Path(where[0]).is_relative_to(venv) and Path(where[1]) == Path(where[0]).parent / "configs", where
    assert "smoke" in where[2].split() and "ci" in where[2].split()

    run_dir = tmp_path / "run"
    r = subprocess.run([str(py), "-m", "kalm_lib", "train", "--profile", "ci", "--stage", "pretrain",
                        "--set", "optim.max_steps=2", "--run-dir", str(run_dir)],
                       cwd=outside, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (run_dir / "pretrain" / "DONE").is_file() and (run_dir / "pretrain" / "final").is_dir()
    steps = [line for line in (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()
             if re.search(r'"step": *\d', line)]
    assert steps, "metrics.jsonl has no training step"
