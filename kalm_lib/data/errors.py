"""Errors and reports for loading: a bad record names its file, line and field; nothing is dropped silently.

Every bad input raises a :class:`DataError` (a ``ValueError``): :class:`RecordError` for one record
(file, line, field), :class:`DataFileError` for a file or folder as a whole (missing, empty, unusable),
:class:`EmptyDatasetError` for a dataset that yields no example, :class:`EntryError` for a bad
dataset declaration. ``except DataError`` catches them all.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("kalm_lib.data")


class DataError(ValueError):
    """Base of the project's data errors: bad input (records, files, datasets), never a bug."""


class RecordError(DataError):
    """A malformed record: ``str(err)`` is ``"<file>:<line>: field '<field>': <problem>"``."""

    def __init__(self, source: str, line: int, field_name: str, problem: str):
        self.source, self.line, self.field, self.problem = str(source), int(line), field_name, problem
        super().__init__(f"{self.source}:{self.line}: field '{field_name}': {problem}")

    def __reduce__(self):  # picklable (DataLoader workers, multiprocessing) despite the 4-argument __init__
        return type(self), (self.source, self.line, self.field, self.problem)


class DataFileError(DataError):
    """A file or folder unusable as a whole (missing, empty, no usable row): ``"<file>: <problem>"``."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = str(source), problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self):
        return type(self), (self.source, self.problem)


class EntryError(DataError):
    """A bad dataset declaration (catalog.yaml or a user's own): ``"<where>: field '<field>': <problem>"``."""

    def __init__(self, where: str, field_name: str, problem: str):
        self.source, self.field, self.problem = str(where), field_name, problem
        super().__init__(f"{self.source}: field '{field_name}': {problem}")

    def __reduce__(self):
        return type(self), (self.source, self.field, self.problem)


class EmptyDatasetError(DataFileError):
    """A dataset that contributes no example: ``"<file>: dataset '<name>': <problem>"``."""

    def __init__(self, dataset: str, source: str, problem: str):
        self.dataset = dataset
        super().__init__(source, f"dataset '{dataset}': {problem}")
        self.problem = problem

    def __reduce__(self):
        return type(self), (self.dataset, self.source, self.problem)


@dataclass
class LoadReport:
    """What happened to every record of one dataset load. ``summary()`` is one readable line."""

    name: str
    read: int = 0                      # records (lines / rows) read from the source
    invalid: int = 0                   # malformed records skipped (only with skip_invalid=True)
    invalid_examples: list[str] = field(default_factory=list)  # first few error messages
    dropped: Counter = field(default_factory=Counter)          # reason -> records dropped on purpose
    removed_texts: Counter = field(default_factory=Counter)    # reason -> single texts removed from a record
    ignored_fields: Counter = field(default_factory=Counter)   # Hub columns not used
    subsampled: int = 0                # records not taken because of max_rows (by design, not an error)
    random_negatives: int = 0          # examples given random in-dataset negatives (no mined file)
    kept: int = 0
    decontaminated: bool = True        # False: evaluation test texts were NOT removed (asked explicitly)
    source: str = ""                   # the file (or hf:// source) the records came from
    empty: bool = False                # contributed no example and was let through (allow_empty=True)

    def why_empty(self) -> str:
        """Why no record was kept, from the counts (for :class:`EmptyDatasetError`)."""
        if self.read == 0:
            return "no records (empty file)"
        why = [f"{self.read} records read, none kept"]
        if self.invalid:
            why.append(f"{self.invalid} malformed (first: {self.invalid_examples[0]})")
        why += [f"{n} dropped ({reason})" for reason, n in sorted(self.dropped.items())]
        return "; ".join(why)

    def add_invalid(self, err: RecordError, keep: int = 5) -> None:
        self.invalid += 1
        if len(self.invalid_examples) < keep:
            self.invalid_examples.append(str(err))

    def summary(self) -> str:
        parts = [f"{self.name}: read {self.read}, kept {self.kept}"]
        if self.empty:
            parts.append("EMPTY: contributes no example (allowed by allow_empty)")
        if not self.decontaminated:
            parts.append("decontamination OFF (evaluation test texts not removed)")
        if self.subsampled:
            parts.append(f"{self.subsampled} not sampled (max_rows)")
        if self.invalid:
            parts.append(f"skipped {self.invalid} malformed (first: {self.invalid_examples[0]})")
        for reason, n in sorted(self.dropped.items()):
            parts.append(f"dropped {n} ({reason})")
        for reason, n in sorted(self.removed_texts.items()):
            parts.append(f"removed {n} texts ({reason})")
        if self.random_negatives:
            parts.append(f"RANDOM negatives for {self.random_negatives} examples")
        if self.ignored_fields:
            parts.append(f"ignored columns {dict(self.ignored_fields)}")
        return "; ".join(parts)

    def log(self) -> None:
        level = logging.WARNING if (self.invalid or self.dropped or self.removed_texts or self.empty
                                    or not self.decontaminated) else logging.INFO
        log.log(level, self.summary())
