"""The dataset catalog: each training dataset named once (``catalog.yaml``), as typed entries.

An entry says what a dataset *is* (task type, language, stages, instruction, symmetric or not) and where
it lives: a file under ``$KALM_DATA_DIR`` (the local mirror used by the smoke/cpu profiles and by tests)
and/or a Hugging Face Hub source (the gpu/paper profiles stream the paper's public sets,
``HIT-TMG/KaLM-embedding-pretrain-data`` and ``KaLM-Embedding/KaLM-embedding-finetuning-data``).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from kalm_lib.recipe import STAGES  # the one owner of the stage names
from kalm_lib.paths import resolve_data_dir  # noqa: F401 (re-exported: kalm_lib.data.resolve_data_dir)

from .errors import EntryError

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")
FORMATS = ("train", "sts", "pair", "cls", "hub")
TASK_TYPES = ("retrieval", "reranking", "sts", "pair_classification", "nli", "classification",
              "clustering", "title_body", "bitext", "qa", "web")
LABELED_TASK_TYPES = ("classification", "clustering")  # get example-based multi-class labeling


@dataclass(frozen=True)
class HubSource:
    repo: str
    data_dir: str | None = None
    split: str = "train"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    task_type: str
    language: str
    stages: tuple[str, ...]
    instruction: str
    symmetric: bool
    format: str
    path: str | None = None
    hub: HubSource | None = None
    default: bool = True
    min_score: float | None = None
    mining_corpus: str | None = None
    note: str = ""

    @property
    def labeled(self) -> bool:
        """Classification/clustering data: positives and negatives come from example-based labeling."""
        return self.format == "cls"

    def local_path(self, data_dir: str | os.PathLike | None = None) -> Path | None:
        if self.path is None:
            return None
        if os.path.isabs(self.path):  # a user's own dataset outside the data folder
            return Path(self.path)
        return resolve_data_dir(data_dir) / self.path


FIELDS = ("name", "task_type", "language", "stages", "instruction", "symmetric", "format", "path", "hub",
          "default", "min_score", "mining_corpus", "note")
CATALOG_REQUIRED = ("name", "task_type", "language", "stages", "instruction", "symmetric", "format")
USER_REQUIRED = ("name", "task_type", "instruction", "symmetric", "format")  # language, stages: defaults
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _entry(raw, where: str, user: bool = False, base_dir: str | os.PathLike | None = None) -> CatalogEntry:
    """One entry from a mapping; every problem is a :class:`EntryError` naming ``where`` and the field."""
    if not isinstance(raw, Mapping):
        raise EntryError(where, "<entry>", f"expected a mapping of dataset fields, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if unknown:
        raise EntryError(where, unknown[0], f"unknown catalog field(s) {unknown} (known: {list(FIELDS)})")
    for key in (USER_REQUIRED if user else CATALOG_REQUIRED):
        if key not in raw or raw[key] is None:
            raise EntryError(where, key, "missing (a dataset needs " + ", ".join(USER_REQUIRED if user else CATALOG_REQUIRED)
                             + " and a path or hub)")
    name = raw["name"]
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise EntryError(where, "name", f"{name!r} is not a usable name (letters, digits, '.', '_', '+', '-'; it "
                                        f"names files such as <mined_dir>/<name>.jsonl)")
    where = f"{where} ({name})"

    def choice(key, allowed):
        if raw[key] not in allowed:
            raise EntryError(where, key, f"{raw[key]!r} not in {allowed}")
        return raw[key]

    def opt_str(key, default=None):
        v = raw.get(key, default)
        if v is not None and (not isinstance(v, (str, os.PathLike)) or not str(v).strip()):
            raise EntryError(where, key, f"expected a non-empty string, got {v!r:.60}")
        return str(v) if v is not None else None

    def boolean(key, default=None):
        v = raw.get(key, default)
        if not isinstance(v, bool):
            raise EntryError(where, key, f"expected true or false, got {v!r:.60}")
        return v

    fmt = choice("format", FORMATS)
    task_type = choice("task_type", TASK_TYPES)
    stages = raw.get("stages", list(STAGES))
    if isinstance(stages, str):
        stages = [stages]
    if not isinstance(stages, (list, tuple)) or not stages:
        raise EntryError(where, "stages", f"expected a non-empty list of {STAGES}, got {stages!r:.60}")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise EntryError(where, "stages", f"unknown stage(s) {bad} (known: {STAGES})")
    instruction = opt_str("instruction")
    language = opt_str("language", "multi")
    path = opt_str("path")
    if path is not None:
        path = os.path.expanduser(path)
        if base_dir is not None and not os.path.isabs(path):
            path = str(Path(base_dir) / path)
    hub = raw.get("hub")
    if hub is not None:
        if not isinstance(hub, Mapping) or not isinstance(hub.get("repo"), str):
            raise EntryError(where, "hub", f"expected {{repo, data_dir, split}} with a repo string, got {hub!r:.60}")
        bad_hub = sorted(set(hub) - {"repo", "data_dir", "split"})
        if bad_hub:
            raise EntryError(where, "hub", f"unknown field(s) {bad_hub} (known: repo, data_dir, split)")
        hub = HubSource(**hub)
    if path is None and hub is None:
        raise EntryError(where, "path", "missing: a dataset needs a local path or a hub source")
    if fmt == "hub" and hub is None:
        raise EntryError(where, "format", "format 'hub' needs a hub source")
    min_score = raw.get("min_score")
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
        raise EntryError(where, "min_score", f"expected a number, got {min_score!r:.60}")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise EntryError(where, "note", f"expected a string, got {type(note).__name__}")
    return CatalogEntry(name=name, task_type=task_type, language=language, stages=tuple(stages),
                        instruction=instruction.strip(), symmetric=boolean("symmetric"), format=fmt, path=path,
                        hub=hub, default=boolean("default", True), min_score=min_score,
                        mining_corpus=opt_str("mining_corpus"), note=note)


def entry_from_mapping(raw: Mapping, where: str = "dataset declaration",
                       base_dir: str | os.PathLike | None = None) -> CatalogEntry:
    """A :class:`CatalogEntry` for a user's own dataset, declared as a plain mapping (e.g. from a profile or
    stage YAML) without touching ``catalog.yaml``.

    Required: ``name``, ``format`` (train | sts | pair | cls | hub), ``task_type``, ``instruction``,
    ``symmetric`` (true/false), and ``path`` (or ``hub``). Optional: ``language`` (default "multi"),
    ``stages`` (default all), ``min_score``, ``mining_corpus``, ``note``, ``default``.
    ``path``: absolute, ``~``-relative, relative to ``base_dir`` when given (e.g. the YAML file's folder),
    else relative to the data folder (as catalog paths are). A name the catalog already uses is refused.
    Every problem is an :class:`EntryError` ``"<where> (<name>): field '<field>': <problem>"``."""
    entry = _entry(raw, where, user=True, base_dir=base_dir)
    if entry.name in CATALOG and CATALOG[entry.name] != entry:
        raise EntryError(f"{where} ({entry.name})", "name", "already a catalog dataset; choose another name "
                                                            "(or use the catalog name alone)")
    return entry


def load_catalog(path: str | os.PathLike = CATALOG_FILE) -> dict[str, CatalogEntry]:
    """Parse and check ``catalog.yaml``; names must be unique."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    out: dict[str, CatalogEntry] = {}
    for i, item in enumerate(raw["datasets"]):
        e = _entry(item, f"{path}: datasets[{i}]")
        if e.name in out:
            raise EntryError(f"{path}: datasets[{i}]", "name", f"dataset {e.name!r} is named twice")
        out[e.name] = e
    return out


CATALOG: dict[str, CatalogEntry] = load_catalog()


def get_entry(name_or_entry: str | CatalogEntry | Mapping) -> CatalogEntry:
    """The entry of a catalog name; an entry is returned as is; a mapping declares a dataset
    (:func:`entry_from_mapping`)."""
    if isinstance(name_or_entry, CatalogEntry):
        return name_or_entry
    if isinstance(name_or_entry, Mapping):
        return entry_from_mapping(name_or_entry)
    if not isinstance(name_or_entry, str):
        raise TypeError(f"a dataset is a catalog name, a CatalogEntry or a mapping, got {type(name_or_entry).__name__}")
    try:
        return CATALOG[name_or_entry]
    except KeyError:
        raise KeyError(f"unknown dataset {name_or_entry!r}; known: {sorted(CATALOG)}") from None


def names_for_stage(stage: str, source: str = "local", include_non_default: bool = False) -> list[str]:
    """Catalog names usable in ``stage``: ``source`` = "local" (mirror), "hub", or "all"."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} not in {STAGES}")
    if source not in ("local", "hub", "all"):
        raise ValueError(f"source {source!r} not in ('local', 'hub', 'all')")
    out = []
    for e in CATALOG.values():
        if stage not in e.stages or not (e.default or include_non_default):
            continue
        if source == "local" and e.path is None or source == "hub" and e.hub is None:
            continue
        out.append(e.name)
    return out
