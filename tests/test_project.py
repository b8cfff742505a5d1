"""Project plumbing: pins agree, the layout exists, the Makefile and CI wire the README's commands."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    return {l.strip() for l in lines if l.strip() and not l.strip().startswith("#")}


def test_environment_yml_mirrors_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip_section) == req
    assert "torch==2.13.0" in req
    assert all("==" in r for r in req), "every requirement must be pinned exactly"


def test_layout():
    for p in ["kalm_lib", "notebooks", "book", "tests", "configs", "environment.yml", "Makefile",
              "pyproject.toml", "requirements.txt", ".gitignore", "README.md", ".ci/run"]:
        assert (ROOT / p).exists(), p


def test_ci_runs_the_readme_test_command_offline():
    ci = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme
    for var in ["KALM_DATA_DIR", "HF_HUB_OFFLINE=1", "HF_DATASETS_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"]:
        assert var in ci, var


def test_makefile_builds_venv_from_pins():
    mk = (ROOT / "Makefile").read_text()
    assert "$(STAMP): requirements.txt" in mk
    for target in ["help:", "test:", "reproduce:", "book:", "bench:"]:
        assert target in mk
