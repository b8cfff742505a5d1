"""The training set of one stage: catalog datasets -> instructed (q, p⁺, p⁻_1..M) items for the trainer.

Stage rules (PAPER.md §3):
  pretrain : (q, p⁺) only, in-batch negatives; ``neg`` is empty.
  finetune : (q, p⁺, M hard negatives). Negatives come from, in order of preference,
             1. ``mined_dir/<name>.jsonl`` written by :func:`mine_hard_negatives` with the stage-1 model
                (ranking-consistency filtered, so it may hold fewer examples than the source),
             2. the dataset's own negatives (SNLI/OCNLI contradictions, TrecQA wrong answers,
                example-based labeling for classification/clustering),
             3. random positives of other examples of the same dataset (a weak fallback: it is logged
                as a WARNING with the count, never silent).
  distill  : as finetune, read from ``teacher_scores_path/<name>.jsonl`` (written by
             :func:`score_datasets`), whose records carry ``teacher_scores`` aligned with ``pos + neg``.

Nothing is silently empty: a dataset (source, mined or teacher file) that yields no example is an
:class:`EmptyDatasetError` naming it and its file, unless ``allow_empty=True`` (then a WARNING, counted in
``ds.empty_datasets`` and the summary). Decontamination is on unless ``decontaminate=False`` (a WARNING,
``ds.decontaminated`` is False and every report says so).

Each item draws one positive and M negatives from the example's lists with an RNG seeded by
(seed, epoch, index): deterministic for a given seed, different each epoch after ``set_epoch``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .catalog import STAGES, CatalogEntry, get_entry
from .errors import DataError, DataFileError, EmptyDatasetError, EntryError, LoadReport, log
from .instructions import format_query
from .loader import load_with_report

OWN_NEGATIVES_ONLY = ("classification", "clustering")  # task types without in-batch negatives
RANDOM_NEG_POOL = 2  # random fallback keeps RANDOM_NEG_POOL * M candidates so epochs can differ


def _add_random_negatives(records: list[dict], num_negatives: int, seed: int, report: LoadReport) -> None:
    """Top up records with fewer than M negatives with positives of other examples (in place).

    No negatives at all: a pool of ``RANDOM_NEG_POOL * M`` random ones (the item draws M of them per
    epoch). Some but fewer than M (e.g. one SNLI contradiction): the real ones are kept and the rest is
    filled once with random ones, so a real hard negative is never crowded out by a duplicate."""
    short = [i for i, r in enumerate(records) if len(r["neg"]) < num_negatives]
    if not short or num_negatives == 0:
        return
    pool = [r["pos"][0] for r in records]
    if len(set(pool)) < 2:
        raise DataFileError(report.source or "<unknown source>", f"dataset '{report.name}': cannot draw random "
                            f"negatives from a dataset with one distinct positive")
    rng = np.random.default_rng([seed, 7])
    n_empty = 0
    for i in short:
        rec = records[i]
        want = RANDOM_NEG_POOL * num_negatives if not rec["neg"] else num_negatives - len(rec["neg"])
        n_empty += not rec["neg"]
        own = {rec["query"], *rec["pos"], *rec["neg"]}
        negs, tries = [], 0
        while len(negs) < want and tries < want * 20:
            t = pool[int(rng.integers(len(pool)))]
            tries += 1
            if t not in own:
                negs.append(t)
                own.add(t)
        records[i] = dict(rec, neg=list(rec["neg"]) + negs)
    report.random_negatives = len(short)
    log.warning("%s: %d of %d examples have fewer than M=%d hard negatives and no mined file (%d have none); "
                "they get RANDOM in-dataset negatives (weak; run mine_hard_negatives to fix)",
                report.name, len(short), len(records), num_negatives, n_empty)


_EMPTY_HINT = {
    "source": "",
    "mined": " (the mined file holds no example: mine again, e.g. with a looser filter_topk, or delete it "
             "to fall back to the source's own negatives)",
    "teacher": " (the teacher-score file holds no example: run score_datasets again)",
}


def _check_not_empty(records: list[dict], report: LoadReport, entry: CatalogEntry, origin: str,
                     allow_empty: bool) -> None:
    """A dataset that contributes nothing is an error (``allow_empty``: a counted WARNING)."""
    if records:
        return
    kind = origin.split("+")[0]
    problem = f"contributes no example: {report.why_empty()}{_EMPTY_HINT.get(kind, '')}"
    if not allow_empty:
        raise EmptyDatasetError(entry.name, report.source or "<unknown source>",
                                problem + " (allow_empty=True lets the run go on without it)")
    report.empty = True
    log.warning("%s: %s: %s (allowed: allow_empty=True)", report.source, entry.name, problem)


def stage_records(name: str | CatalogEntry, stage: str, data_dir=None, num_negatives: int = 7,
                  max_rows: int | None = None, seed: int = 0, mined_dir=None, teacher_scores_path=None,
                  skip_invalid: bool = True, require_teacher_scores: bool = True, decontaminate: bool = True,
                  allow_empty: bool = False) -> tuple[list[dict], LoadReport, str]:
    """Records of one dataset as the stage uses them, the load report, and where they came from:
    "source", "mined", "teacher", or "source+random-negatives".

    ``name``: a catalog name, a :class:`CatalogEntry`, or a mapping declaring a dataset
    (:func:`~kalm_lib.data.catalog.entry_from_mapping`). No example at all is an
    :class:`EmptyDatasetError` naming the dataset and its file unless ``allow_empty``."""
    entry = get_entry(name)
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} not in {STAGES}")
    if stage not in entry.stages:
        log.warning("%s is not catalogued for stage %r (its stages: %s); using it anyway", entry.name, stage, entry.stages)
    kw = dict(data_dir=data_dir, max_rows=max_rows, seed=seed, skip_invalid=skip_invalid, decontaminate=decontaminate)
    if stage == "distill" and teacher_scores_path is not None:
        path = Path(teacher_scores_path) / f"{entry.name}.jsonl"
        if path.is_file():
            records, report = load_with_report(entry, path=path, **kw)
            missing = sum("teacher_scores" not in r for r in records)
            if missing:
                raise ValueError(f"{path}: {missing} records lack teacher_scores")
            _check_not_empty(records, report, entry, "teacher", allow_empty)
            return records, report, "teacher"
        if require_teacher_scores:
            raise FileNotFoundError(f"distill stage: no teacher scores for {entry.name} at {path} "
                                    f"(run kalm_lib.data.score_datasets first, or require_teacher_scores=False)")
        log.warning("%s: no teacher scores at %s; its items get teacher_scores=None", entry.name, path)
    if stage == "pretrain":
        records, report = load_with_report(entry, **kw)
        _check_not_empty(records, report, entry, "source", allow_empty)
        return [dict(r, neg=[]) for r in records], report, "source"
    if mined_dir is not None and (Path(mined_dir) / f"{entry.name}.jsonl").is_file():
        records, report = load_with_report(entry, path=Path(mined_dir) / f"{entry.name}.jsonl", **kw)
        origin = "mined"
    else:
        records, report = load_with_report(entry, **kw)
        origin = "source"
    _check_not_empty(records, report, entry, origin, allow_empty)
    if any(len(r["neg"]) < num_negatives for r in records):
        _add_random_negatives(records, num_negatives, seed, report)
        origin += "+random-negatives"
    return records, report, origin


class KaLMTrainingDataset(torch.utils.data.Dataset):
    """Item i: ``{"query", "pos", "neg", "task", "teacher_scores"}`` with instructions applied.

    ``query``: "Instruct: {I} \\n Query: {q}"; ``pos`` and each ``neg``: instructed too if the task is
    symmetric. ``neg`` has exactly ``num_negatives`` texts (sampled with replacement when an example has
    fewer, as the V1 code does), or is empty in pre-training. ``teacher_scores`` are the teacher's cosine
    similarities of the query with [pos] + neg (length 1 + M), or None.
    """

    def __init__(self, examples: list[dict], tasks: list[str], symmetric: dict[str, bool], num_negatives: int,
                 stage: str, seed: int = 0, lengths: list[int] | None = None):
        self.examples, self.tasks, self.symmetric = examples, tasks, symmetric
        self.num_negatives = num_negatives if stage != "pretrain" else 0
        self.stage, self.seed, self.epoch = stage, seed, 0
        self.lengths = lengths if lengths is not None else [
            max(len(e["query"]), len(e["pos"][0])) for e in examples]
        self.reports: dict[str, LoadReport] = {}
        self.origins: dict[str, str] = {}
        self.decontaminated: bool = True       # False: built with decontaminate=False
        self.empty_datasets: list[str] = []    # datasets that contributed nothing (allowed by allow_empty)
        self.own_only: dict[str, bool] = {}    # task -> its queries see only their own candidates (labelled data)

    def __len__(self) -> int:
        return len(self.examples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict:
        e = self.examples[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        pi = int(rng.integers(len(e["pos"])))
        ni: list[int] = []
        if self.num_negatives and e["neg"]:
            n = len(e["neg"])
            ni = rng.choice(n, size=self.num_negatives, replace=n < self.num_negatives).tolist()
        elif self.num_negatives:
            raise RuntimeError(f"example {i} of {self.tasks[i]} has no negatives in stage {self.stage}")
        ts = e.get("teacher_scores")
        if ts is not None:
            ts = [float(ts[pi])] + [float(ts[len(e["pos"]) + j]) for j in ni]
        return {"query": e["query"], "pos": e["pos"][pi], "neg": [e["neg"][j] for j in ni],
                "task": self.tasks[i], "teacher_scores": ts,
                "own_negatives_only": self.own_only.get(self.tasks[i], False),
                "instruction": e.get("instruction"), "symmetric": self.symmetric.get(self.tasks[i])}

    def summary(self):
        """Per-task table: examples, origin of negatives, what the loader left out."""
        import pandas as pd

        counts = pd.Series(self.tasks).value_counts()
        rows = []
        for t, rep in self.reports.items():
            rows.append({"dataset": t, "examples": int(counts.get(t, 0)), "origin": self.origins.get(t, ""),
                         "read": rep.read, "malformed_skipped": rep.invalid,
                         "left_out": int(sum(rep.dropped.values())), "not_sampled": rep.subsampled,
                         "random_neg_examples": rep.random_negatives, "empty": rep.empty,
                         "decontaminated": rep.decontaminated,
                         "negatives": "own only" if self.own_only.get(t) else "in-batch + hard"})
        return pd.DataFrame(rows)


def build_training_set(names: list[str | CatalogEntry | dict], stage: str, data_dir: str | os.PathLike | None = None,
                       num_negatives: int = 7, max_rows_per_dataset: int | None = None, seed: int = 0,
                       mined_dir: str | os.PathLike | None = None,
                       teacher_scores_path: str | os.PathLike | None = None, skip_invalid: bool = True,
                       use_instructions: bool = True, tokenizer=None,
                       require_teacher_scores: bool = True, decontaminate: bool = True,
                       allow_empty: bool = False,
                       own_negatives_only: Sequence[str] = OWN_NEGATIVES_ONLY,
                       subset_temperature: float = 1.0) -> KaLMTrainingDataset:
    """Concatenate the named datasets for ``stage`` (see module doc) into one map-style dataset.

    ``names``: catalog names, :class:`CatalogEntry` objects, or mappings declaring a user's own dataset
    (``{"name", "path", "format", "task_type", "instruction", "symmetric", ...}``, see
    :func:`~kalm_lib.data.catalog.entry_from_mapping`), mixed freely; a name may appear once.
    ``skip_invalid`` defaults to True here because the local mirror has a few malformed records (empty
    queries); each skipped one is counted and logged with its file:line:field. ``tokenizer`` (optional,
    e.g. the Qwen2 tokenizer) makes ``.lengths`` token counts instead of character counts.
    ``decontaminate=False`` keeps evaluation test texts (WARNING; ``ds.decontaminated`` is False).
    ``allow_empty=True`` lets a dataset that yields no example through (WARNING; ``ds.empty_datasets``).
    ``own_negatives_only``: task types (catalog ``task_type``) whose queries see only their own positive and hard
    negatives in Z_i, no in-batch negatives (default: classification and clustering, labelled data, where another
    query's texts are often of the same class: false negatives; kalm_lib/losses/infonce.py, ``own_only``).
    A Hub entry with one task per subset (``hub.data_dir: "*"``) is expanded into its subsets, each its own task;
    ``max_rows_per_dataset`` is then the entry's total, split over its subsets with p_i ∝ n_i^(1/T),
    T = ``subset_temperature`` (:func:`kalm_lib.data.hub.expand_datasets`), so every subset keeps rows."""
    from .catalog import entry_from_mapping

    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} not in {STAGES}")
    if not names:
        raise ValueError("no dataset names given")
    if isinstance(names, (str, Mapping, CatalogEntry)):
        raise TypeError(f"names must be a list of datasets, got a single {type(names).__name__}")
    from .hub import expand_datasets

    entries, caps = [], {}
    for i, name in enumerate(names):
        entry = entry_from_mapping(name, where=f"datasets[{i}]") if isinstance(name, Mapping) else get_entry(name)
        for sub, cap in expand_datasets([entry], max_rows_per_dataset, subset_temperature):
            if sub.name in caps:
                raise EntryError(f"datasets[{i}]", "name", f"dataset {sub.name!r} is listed twice")
            entries.append(sub)
            caps[sub.name] = cap
    if not decontaminate:
        log.warning("%s training set: decontamination is OFF (decontaminate=False): evaluation test texts are "
                    "NOT removed from training, so scores on those tasks may be inflated", stage)
    examples, tasks, symmetric = [], [], {}
    reports, origins = {}, {}
    for entry in entries:
        records, report, origin = stage_records(entry, stage, data_dir, num_negatives, caps[entry.name], seed,
                                                mined_dir, teacher_scores_path, skip_invalid, require_teacher_scores,
                                                decontaminate=decontaminate, allow_empty=allow_empty)
        report.log()
        reports[entry.name], origins[entry.name] = report, origin
        symmetric[entry.name] = entry.symmetric
        for r in records:
            instr = (r.get("instruction") or entry.instruction) if use_instructions else None
            fmt_p = (lambda t, _i=instr: format_query(t, _i)) if entry.symmetric else (lambda t: t)
            ex = {"query": format_query(r["query"], instr), "pos": [fmt_p(p) for p in r["pos"]],
                  "neg": [fmt_p(n) for n in r["neg"]]}
            if instr:
                ex["instruction"] = instr  # shown in examples.jsonl (kalm_lib/data/examples.py)
            if "teacher_scores" in r:
                ex["teacher_scores"] = r["teacher_scores"]
            examples.append(ex)
            tasks.append(entry.name)
    lengths = None
    if tokenizer is not None:
        q = tokenizer([e["query"] for e in examples], add_special_tokens=False)["input_ids"]
        p = tokenizer([e["pos"][0] for e in examples], add_special_tokens=False)["input_ids"]
        lengths = [max(len(a), len(b)) for a, b in zip(q, p)]
    empty = [n for n, r in reports.items() if r.empty]
    if not examples:
        raise DataError(f"{stage} training set: none of the {len(entries)} datasets contributed an example "
                        f"({', '.join(f'{n}: {r.source}' for n, r in reports.items())})")
    ds = KaLMTrainingDataset(examples, tasks, symmetric, num_negatives, stage, seed, lengths)
    ds.reports, ds.origins = reports, origins
    ds.decontaminated, ds.empty_datasets = decontaminate, empty
    ds.own_only = {e.name: e.task_type in set(own_negatives_only) for e in entries}
    contributed = len(reports) - len(empty)
    log.info("%s training set: %d examples from %d datasets%s%s", stage, len(ds), contributed,
             f" ({len(empty)} empty, left out: {', '.join(empty)})" if empty else "",
             "" if decontaminate else "; decontamination OFF")
    return ds
