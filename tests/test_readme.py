"""The README names only what exists (issue 15, item 4): every `make` target, every `python -m kalm_lib`
subcommand and flag, every config file and repository path in its commands and code spans."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Paths under these are made by running something (never in a fresh checkout), or are data-mirror / Hub paths.
GENERATED = {"build", "runs", "results", ".venv"}


def code_text(md: str) -> list[str]:
    """The README's commands and names: fenced code blocks (line by line) and inline code spans."""
    out = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", md, flags=re.M | re.S):
        # a line ending in a backslash continues on the next one
        out += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", md, flags=re.M | re.S)
    out += re.findall(r"`([^`\n]+)`", prose)
    return out


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", (ROOT / "Makefile").read_text(), flags=re.M))


def make_variables() -> set[str]:
    """The variables the Makefile sets or reads (``PROFILE ?= smoke``, ``$(KALM_HUB_DIR)``)."""
    mk = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:+]?=", mk, flags=re.M)) | set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", mk))


def _help(argv: list[str]) -> str:
    from kalm_lib.__main__ import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(argv + ["--help"])
    return buf.getvalue()


def cli() -> dict[str, set[str]]:
    """``{subcommand: its flags}`` from ``python -m kalm_lib --help`` and each subcommand's ``--help``."""
    usage = _help([])
    subs = re.search(r"\{([\w,-]+)\}", usage).group(1).split(",")
    return {s: set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", _help([s]))) for s in subs}


def problems(md: str) -> list[str]:
    targets, variables, commands = make_targets(), make_variables(), cli()
    out = []
    for text in code_text(md):
        for target in re.findall(r"(?:^|[\s;&|(])make\s+([a-z][\w-]*)", text):
            if target not in targets:
                out.append(f"`make {target}`: no such Makefile target (in {text!r})")
        for args in re.findall(r"(?:^|[\s;&|(])make\s+([^#;&|]*)", text):
            for var in re.findall(r"(?<![\w-])([A-Z][A-Z0-9_]*)=", args):
                if var not in variables:
                    out.append(f"`make ... {var}=`: the Makefile has no variable {var} (in {text!r})")
        for m in re.finditer(r"-m kalm_lib(?:\s+(.*))?", text.split(" #")[0]):
            words = (m.group(1) or "").split()
            if not words or words[0].startswith("-"):
                continue                      # `python -m kalm_lib --help`
            sub, rest = words[0], words[1:]
            if sub not in commands:
                out.append(f"`python -m kalm_lib {sub}`: no such subcommand (in {text!r})")
                continue
            for flag in (w.split("=")[0] for w in rest if w.startswith("-")):
                if flag not in commands[sub]:
                    out.append(f"`python -m kalm_lib {sub} {flag}`: no such flag (in {text!r})")
        for word in re.split(r"[\s,;()=]+", text):
            word = word.strip("'\"").rstrip(".:")
            if "/" not in word or re.search(r"[<>{}*$…]", word) or "://" in word or word.startswith("-"):
                continue                      # a bare name, a placeholder, a URL, a flag
            first = word.split("/")[0]
            if first in GENERATED or first == ".." or not (ROOT / first).exists():
                continue                      # generated, outside the checkout, or a Hub id / mirror folder
            if not (ROOT / word).exists():
                out.append(f"{word}: no such file or folder in the repository (in {text!r})")
    return list(dict.fromkeys(out))


def test_readme_names_only_what_exists():
    md = (ROOT / "README.md").read_text()
    assert not problems(md)


def test_readme_names_the_cli_subcommands():
    md = (ROOT / "README.md").read_text()
    commands = cli()
    for sub in ["train", "mine", "teacher", "evaluate", "pipeline"]:
        assert sub in commands, sub
    said = " ".join(code_text(md))
    assert "-m kalm_lib train" in said and "-m kalm_lib pipeline" in said


def test_the_check_finds_what_does_not_exist():
    md = (ROOT / "README.md").read_text() + (
        "\n```bash\nmake nosuchtarget\n.venv/bin/python -m kalm_lib nosuchcommand --profile smoke\n"
        ".venv/bin/python -m kalm_lib train --no-such-flag --profile smoke\nmake test NO_SUCH_VAR=1\n```\n"
        "Read `kalm_lib/no_such_module.py` and `configs/smoke/no_such_stage.yaml`.\n")
    found = problems(md)
    assert any("`make nosuchtarget`: no such Makefile target" in p for p in found), found
    assert any("`python -m kalm_lib nosuchcommand`: no such subcommand" in p for p in found), found
    assert any("`python -m kalm_lib train --no-such-flag`: no such flag" in p for p in found), found
    assert any(p.startswith("kalm_lib/no_such_module.py: no such file") for p in found), found
    assert any(p.startswith("configs/smoke/no_such_stage.yaml: no such file") for p in found), found
    assert any("the Makefile has no variable NO_SUCH_VAR" in p for p in found), found
    assert len(found) == 6, found


def test_the_readme_mentions_real_paths():
    """The path check is not vacuous: it sees the README's config files and repository paths."""
    words = " ".join(code_text((ROOT / "README.md").read_text()))
    for path in ["configs/smoke/finetune.yaml", "configs/accelerate/ddp.yaml", "kalm_lib/book.py",
                 "tests/test_gpu_path.py", "benchmarks/gpu_check.sh"]:
        assert path in words, path


def test_the_readme_jupyter_commands_are_installed():
    """`jupyter lab` / `jupyter notebook` (README, "Opening the notebooks") come from requirements.txt."""
    import importlib.util

    md = (ROOT / "README.md").read_text()
    req = (ROOT / "requirements.txt").read_text()
    for app, module in [("jupyter lab", "jupyterlab"), ("jupyter notebook", "notebook")]:
        if app in md:
            assert re.search(rf"^{module}==", req, flags=re.M), f"README runs `{app}`; requirements.txt lacks {module}"
            assert importlib.util.find_spec(module) is not None, f"{module} is not installed: run `make venv`"
