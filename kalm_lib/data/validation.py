"""Record validation: every field of every record is checked against the schema of its source format.

A schema lists required fields, optional fields, and informational fields (kept or ignored, but known).
Any other field is an error too, so a typo such as ``"negs"`` cannot make negatives vanish silently.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from .errors import DataFileError, LoadReport, RecordError


_SURROGATE = re.compile("[\ud800-\udfff]")


def _nonempty_str(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"expected a string, got {type(v).__name__}"
    if not v.strip():
        return "empty string"
    if not v.isascii():
        m = _SURROGATE.search(v)
        if m:  # valid JSON ("\\ud83d" escaped), but no UTF-8 text: the tokenizer would fail far from here
            return f"lone surrogate {m.group()!a} at character {m.start() + 1} (not encodable as UTF-8)"
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(v: Any) -> str | None:
    return None if _is_number(v) else f"expected a finite number, got {v!r}"


def _str_list(nonempty_list: bool) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not isinstance(v, list):
            return f"expected a list of strings, got {type(v).__name__}"
        if nonempty_list and not v:
            return "empty list (at least one positive is required)"
        for i, s in enumerate(v):
            err = _nonempty_str(s)
            if err:
                return f"item {i}: {err}"
        return None
    return check


def _number_list(v: Any) -> str | None:
    if not isinstance(v, list):
        return f"expected a list of numbers, got {type(v).__name__}"
    for i, x in enumerate(v):
        if not _is_number(x):
            return f"item {i}: expected a finite number, got {x!r}"
    return None


def _int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) else f"expected an integer, got {v!r}"


def _binary(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v in (0, 1) else f"expected 0 or 1, got {v!r}"


def _label(v: Any) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return None
    return _nonempty_str(v)


def _any_str(v: Any) -> str | None:
    return None if isinstance(v, str) else f"expected a string, got {type(v).__name__}"


def _any_str_list(v: Any) -> str | None:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        return f"expected a list of strings, got {v!r:.60}"
    return None


# format -> (required, optional, informational); each maps field -> checker
SCHEMAS: dict[str, tuple[dict, dict, dict]] = {
    # train/*.jsonl.gz, mined files and teacher-scored files
    "train": ({"query": _nonempty_str, "pos": _str_list(nonempty_list=True)},
              {"neg": _str_list(nonempty_list=False), "pos_scores": _number_list, "neg_scores": _number_list,
               "teacher_scores": _number_list, "pos_rank": _int, "label": _label, "instruction": _nonempty_str},
              {"package": _any_str, "examples": _any_str_list, "pos_tag": _any_str}),
    "sts": ({"sentence1": _nonempty_str, "sentence2": _nonempty_str, "score": _number},
            {},
            {"genre": _any_str, "subset": _any_str, "entailment": _any_str}),
    "pair": ({"sentence1": _nonempty_str, "sentence2": _nonempty_str, "label": _binary},
             {},
             {"nli_label": _any_str}),
    "cls": ({"text": _nonempty_str, "label": _label}, {}, {}),
}
SCHEMAS["hub"] = SCHEMAS["train"]  # Hub rows are mapped onto the train layout first (hub.py)


def validate_record(obj: dict, fmt: str, source: str, line: int) -> dict:
    """Return ``obj`` if it fits ``fmt``; else raise :class:`RecordError` naming ``source:line`` and the field."""
    if fmt not in SCHEMAS:
        raise ValueError(f"unknown record format {fmt!r}; known: {sorted(SCHEMAS)}")
    required, optional, info = SCHEMAS[fmt]
    for name, check in required.items():
        if name not in obj:
            raise RecordError(source, line, name, "missing")
        err = check(obj[name])
        if err:
            raise RecordError(source, line, name, err)
    for name, value in obj.items():
        if name in required:
            continue
        check = optional.get(name) or info.get(name)
        if check is None:
            known = sorted({*required, *optional, *info})
            raise RecordError(source, line, name, f"unknown field (known for format {fmt!r}: {known})")
        err = check(value)
        if err:
            raise RecordError(source, line, name, err)
    # score lists must line up with the texts they score
    if fmt in ("train", "hub"):
        n_pos, n_neg = len(obj["pos"]), len(obj.get("neg", []))
        for name, n in (("pos_scores", n_pos), ("neg_scores", n_neg), ("teacher_scores", n_pos + n_neg)):
            if name in obj and len(obj[name]) != n:
                raise RecordError(source, line, name, f"has {len(obj[name])} values for {n} texts")
    return obj


def validate_file(path, fmt: str = "train", skip_invalid: bool = False, keep: int = 50) -> LoadReport:
    """Check every record of a JSON Lines file (plain or .gz) against ``fmt``; the report counts them.

    A malformed record raises :class:`RecordError` (``skip_invalid``: counted in the report instead, first
    ``keep`` messages kept). A file with no record at all (0 bytes, an empty gzip, only blank lines
    skipped) raises :class:`DataFileError`: an empty file is never a valid dataset."""
    from .jsonl import iter_jsonl

    if fmt not in SCHEMAS:
        raise ValueError(f"unknown record format {fmt!r}; known: {sorted(SCHEMAS)}")
    report = LoadReport(str(path), source=str(path))

    def on_error(err: RecordError) -> None:
        report.read += 1
        report.add_invalid(err, keep=keep)

    for line, obj in iter_jsonl(path, on_error=on_error if skip_invalid else None):
        report.read += 1
        try:
            validate_record(obj, fmt, str(path), line)
        except RecordError as err:
            if not skip_invalid:
                raise
            report.add_invalid(err, keep=keep)
    report.kept = report.read - report.invalid
    if report.read == 0:
        raise DataFileError(path, "no records (empty file): a dataset needs at least one record")
    return report
