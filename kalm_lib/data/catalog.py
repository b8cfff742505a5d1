"""The dataset catalog: each training dataset named once (``catalog.yaml``), as typed entries.

An entry says what a dataset *is* (task type, language, stages, instruction, symmetric or not) and where
it lives: a file under ``$KALM_DATA_DIR`` (the local mirror used by the smoke/cpu profiles and by tests)
and/or a Hugging Face Hub source (the gpu/paper profiles stream the paper's public sets,
``HIT-TMG/KaLM-embedding-pretrain-data`` and ``KaLM-Embedding/KaLM-embedding-finetuning-data``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")
STAGES = ("pretrain", "finetune", "distill")
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
        return resolve_data_dir(data_dir) / self.path


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` or ``$KALM_DATA_DIR``; a clear error when neither points at a folder."""
    d = data_dir if data_dir is not None else os.environ.get("KALM_DATA_DIR")
    if not d:
        raise FileNotFoundError("no data folder: pass data_dir= or set KALM_DATA_DIR (e.g. /work/shared/data)")
    p = Path(d)
    if not p.is_dir():
        raise FileNotFoundError(f"data folder {p} does not exist (data_dir / KALM_DATA_DIR)")
    return p


def _entry(raw: dict, where: str) -> CatalogEntry:
    known = {"name", "task_type", "language", "stages", "instruction", "symmetric", "format", "path", "hub",
             "default", "min_score", "mining_corpus", "note"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown catalog field(s) {sorted(unknown)}")
    for key in ("name", "task_type", "language", "stages", "instruction", "symmetric", "format"):
        if key not in raw:
            raise ValueError(f"{where}: catalog entry lacks field {key!r}")
    name = raw["name"]
    if raw["format"] not in FORMATS:
        raise ValueError(f"{where} ({name}): format {raw['format']!r} not in {FORMATS}")
    if raw["task_type"] not in TASK_TYPES:
        raise ValueError(f"{where} ({name}): task_type {raw['task_type']!r} not in {TASK_TYPES}")
    bad = [s for s in raw["stages"] if s not in STAGES]
    if bad:
        raise ValueError(f"{where} ({name}): unknown stage(s) {bad}")
    if not isinstance(raw["instruction"], str) or not raw["instruction"].strip():
        raise ValueError(f"{where} ({name}): instruction must be a non-empty string")
    if raw.get("path") is None and raw.get("hub") is None:
        raise ValueError(f"{where} ({name}): needs a local path or a hub source")
    hub = HubSource(**raw["hub"]) if raw.get("hub") else None
    return CatalogEntry(name=name, task_type=raw["task_type"], language=raw["language"],
                        stages=tuple(raw["stages"]), instruction=raw["instruction"].strip(),
                        symmetric=bool(raw["symmetric"]), format=raw["format"], path=raw.get("path"), hub=hub,
                        default=bool(raw.get("default", True)), min_score=raw.get("min_score"),
                        mining_corpus=raw.get("mining_corpus"), note=raw.get("note", ""))


def load_catalog(path: str | os.PathLike = CATALOG_FILE) -> dict[str, CatalogEntry]:
    """Parse and check ``catalog.yaml``; names must be unique."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    out: dict[str, CatalogEntry] = {}
    for i, item in enumerate(raw["datasets"]):
        e = _entry(item, f"{path}: datasets[{i}]")
        if e.name in out:
            raise ValueError(f"{path}: dataset {e.name!r} is named twice")
        out[e.name] = e
    return out


CATALOG: dict[str, CatalogEntry] = load_catalog()


def get_entry(name_or_entry: str | CatalogEntry) -> CatalogEntry:
    if isinstance(name_or_entry, CatalogEntry):
        return name_or_entry
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
