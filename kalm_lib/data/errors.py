"""Errors and reports for loading: a bad record names its file, line and field; nothing is dropped silently."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("kalm_lib.data")


class RecordError(ValueError):
    """A malformed record: ``str(err)`` is ``"<file>:<line>: field '<field>': <problem>"``."""

    def __init__(self, source: str, line: int, field_name: str, problem: str):
        self.source, self.line, self.field, self.problem = str(source), int(line), field_name, problem
        super().__init__(f"{self.source}:{self.line}: field '{field_name}': {problem}")


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

    def add_invalid(self, err: RecordError, keep: int = 5) -> None:
        self.invalid += 1
        if len(self.invalid_examples) < keep:
            self.invalid_examples.append(str(err))

    def summary(self) -> str:
        parts = [f"{self.name}: read {self.read}, kept {self.kept}"]
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
        level = logging.WARNING if (self.invalid or self.dropped or self.removed_texts) else logging.INFO
        log.log(level, self.summary())
