"""Where the local data mirror is: the one owner of that lookup (``data_dir=`` or ``$KALM_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``data_dir`` or ``$KALM_DATA_DIR`` when it names a folder, else None (callers with a fallback)."""
    d = data_dir if data_dir is not None else os.environ.get("KALM_DATA_DIR")
    return Path(d) if d and Path(d).is_dir() else None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` or ``$KALM_DATA_DIR``; a FileNotFoundError saying what to set when neither names a folder."""
    d = data_dir if data_dir is not None else os.environ.get("KALM_DATA_DIR")
    if not d:
        raise FileNotFoundError("no data folder: pass data_dir= or set KALM_DATA_DIR (e.g. ../shared/data)")
    p = Path(d)
    if not p.is_dir():
        raise FileNotFoundError(f"data folder {p} does not exist (data_dir / KALM_DATA_DIR)")
    return p


def mirror_dir() -> Path | None:
    """The data mirror (``$KALM_DATA_DIR``), or None when it is unset: then the data comes from the Hub.
    Set to something that is not a folder is an error (a typo must not quietly switch a run to the Hub)."""
    d = os.environ.get("KALM_DATA_DIR")
    if not d:
        return None
    if not Path(d).is_dir():
        raise FileNotFoundError(f"KALM_DATA_DIR={d} is not a folder: point it at the data mirror, or unset it to read "
                                f"every dataset from the Hub (`make data` makes an offline copy of that: KALM_HUB_DIR)")
    return Path(d)


def uses_hub() -> bool:
    """True when there is no data mirror: evaluation sets and training pairs come from the Hub."""
    return mirror_dir() is None


# ---------------------------------------------------------------------------- the local Hub mirror
HUB_ID_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*"


def is_hub_id(name: str) -> bool:
    """``<owner>/<name>`` with no other slash and not an existing local path."""
    import re

    return bool(re.fullmatch(HUB_ID_RE, str(name))) and not Path(name).exists()


def hub_path(repo_id: str, repo_type: str = "dataset") -> str:
    """Where a Hub repository is read from: ``$KALM_HUB_DIR/<owner>/<name>`` when ``KALM_HUB_DIR`` is set, else
    the Hub id itself (``datasets`` / ``transformers`` / ``sentence-transformers`` then fetch from the Hub).

    ``$KALM_HUB_DIR/<owner>/<name>`` holds the repository's own layout, what
    ``huggingface-cli download <owner>/<name> --repo-type <type> --local-dir $KALM_HUB_DIR/<owner>/<name>`` makes:
    the air-gapped cluster's mirror, and how the tests exercise the Hub path here. With ``KALM_HUB_DIR`` set, a
    repository missing from it is an error naming the folder and the download command (never a silent fall back
    to the network). Anything that is not a Hub id (a local folder, "tiny", "minilm") is returned unchanged."""
    if not is_hub_id(repo_id):
        return str(repo_id)
    root = os.environ.get("KALM_HUB_DIR")
    if not root:
        return str(repo_id)
    local = Path(root).expanduser() / repo_id
    if not local.is_dir():
        flag = "" if repo_type == "model" else f" --repo-type {repo_type}"
        raise FileNotFoundError(f"KALM_HUB_DIR={root} has no copy of the Hub {repo_type} {repo_id} (expected the folder "
                                f"{local}); make it with `huggingface-cli download {repo_id}{flag} --local-dir {local}`, "
                                f"or unset KALM_HUB_DIR to read from the Hub")
    return str(local)


def qwen2_tokenizer_source() -> str:
    """The Qwen2 tokenizer: ``$KALM_DATA_DIR/tokenizers/qwen2`` when present, else the Hub's copy (Qwen/Qwen2-0.5B,
    from ``$KALM_HUB_DIR`` when set)."""
    data = find_data_dir()
    if data is not None and (data / "tokenizers" / "qwen2" / "tokenizer.json").is_file():
        return str(data / "tokenizers" / "qwen2")
    return hub_path("Qwen/Qwen2-0.5B", "model")


# ---------------------------------------------------------------------------- paths as a reader sees them
def display_path(text: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """Machine paths in ``text`` written as a reader of the book should see them, not as this machine has them:
    the data mirror as ``$KALM_DATA_DIR/…``, the Hub mirror as ``$KALM_HUB_DIR/…``, anything under the project
    (``root``, default the working directory: notebooks run from the project folder) relative to it, the home
    folder as ``~``. Longer prefixes first, so a run folder inside the project stays relative."""
    s = str(text)
    subs = []
    for var in ("KALM_DATA_DIR", "KALM_HUB_DIR"):
        d = os.environ.get(var)
        if d and os.path.isabs(d):
            subs.append((os.path.realpath(d), f"${var}"))
            subs.append((os.path.abspath(d), f"${var}"))
    base = os.path.abspath(root if root is not None else os.getcwd())
    subs += [(os.path.realpath(base), "."), (base, ".")]
    home = os.path.expanduser("~")
    if home not in ("/", "~"):
        subs.append((home, "~"))
    import re

    for prefix, name in sorted(set(subs), key=lambda x: -len(x[0])):
        if len(prefix) <= 1:
            continue
        s = s.replace(prefix + os.sep, "" if name == "." else name + os.sep)
        s = re.sub(re.escape(prefix) + r"(?![\w.-])", name, s)  # the folder itself, not a sibling named alike
    return s


class DisplayPathFilter:
    """A logging filter that writes the message's machine paths as :func:`display_path` does (the book's logs)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = root

    def filter(self, record) -> bool:
        msg = record.getMessage()
        shown = display_path(msg, self.root)
        if shown != msg:
            record.msg, record.args = shown, None
        return True
