"""``examples.jsonl``: what the model (and the teacher) really saw, written by every stage into its output folder.

One JSON line per example, the first ``n`` of the stage (the first batches on rank 0)::

    {"task", "instruction", "symmetric", "query", "pos", "neg", ...}

``query`` / ``pos`` / ``neg`` are the exact strings handed to the tokenizer, instructions applied. Mining and teacher
scoring write the miner's and the teacher's strings the same way, one file per dataset
(``<mined_dir>/examples/<dataset>.jsonl``, ``<teacher_scores_path>/examples/<dataset>.jsonl``). A reader checks
there that no string carries two instructions (:func:`instruction_count`) and that every subset is its own task.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from kalm_lib.atomic import atomic_write_text

EXAMPLES_FILE = "examples.jsonl"
DEFAULT_N = 64
_INSTRUCT = re.compile(r"Instruct:")


def instruction_count(text: str) -> int:
    """How many ``Instruct:`` prefixes a string carries (a string given to a model must carry at most one)."""
    return len(_INSTRUCT.findall(text))


def example_record(item: dict, symmetric: bool | None = None) -> dict:
    """The fields of one trainer item worth showing (the strings exactly as given to the model)."""
    rec = {"task": item.get("task"), "instruction": item.get("instruction"),
           "symmetric": item.get("symmetric", symmetric), "query": item["query"], "pos": item["pos"],
           "neg": list(item.get("neg") or [])}
    for k in ("teacher_scores", "own_negatives_only"):
        if item.get(k) is not None:
            rec[k] = item[k]
    return rec


def write_examples(folder: str | os.PathLike, records: Iterable[dict], n: int = DEFAULT_N,
                   name: str = EXAMPLES_FILE) -> Path:
    """Write the first ``n`` records to ``folder/examples.jsonl`` atomically (an earlier file is replaced)."""
    lines = []
    for rec in records:
        if len(lines) >= n:
            break
        lines.append(json.dumps(rec, ensure_ascii=False))
    return atomic_write_text(Path(folder) / name, "\n".join(lines) + ("\n" if lines else ""))


def read_examples(folder: str | os.PathLike, name: str = EXAMPLES_FILE) -> list[dict]:
    path = Path(folder) / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
