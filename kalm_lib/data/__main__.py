"""Command line for hand checks.

  python -m kalm_lib.data catalog
  python -m kalm_lib.data validate FILE [--format train|sts|pair|cls] [--skip-invalid]
  python -m kalm_lib.data mine DATASET --out DIR [--embedder all-MiniLM-L6-v2] [--max-rows N]
                                [--corpus-limit N] [--max-seq-length N] [--topk 50] [--range 50 100] [-M 7]
"""
from __future__ import annotations

import argparse
import logging
import sys

from .catalog import CATALOG
from .errors import DataError
from .validation import validate_file


def _validate(path: str, fmt: str, skip_invalid: bool) -> int:
    """0: every record valid; 1: a malformed record, a file with no record, or none valid."""
    try:
        report = validate_file(path, fmt, skip_invalid=skip_invalid)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for msg in report.invalid_examples:
        print(f"skipped: {msg}", file=sys.stderr)
    print(report.summary())
    if report.kept == 0:
        print(f"error: {path}: no valid record", file=sys.stderr)
    return 1 if report.invalid else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalm_lib.data")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("catalog")
    v = sub.add_parser("validate")
    v.add_argument("file")
    v.add_argument("--format", default="train", choices=["train", "sts", "pair", "cls"])
    v.add_argument("--skip-invalid", action="store_true")
    m = sub.add_parser("mine")
    m.add_argument("dataset")
    m.add_argument("--out", required=True)
    m.add_argument("--embedder", default="all-MiniLM-L6-v2")
    m.add_argument("--max-rows", type=int)
    m.add_argument("--corpus-limit", type=int)
    m.add_argument("--max-seq-length", type=int)
    m.add_argument("--topk", type=int, default=50)
    m.add_argument("--range", type=int, nargs=2, default=(50, 100))
    m.add_argument("-M", "--num-negatives", type=int, default=7)
    m.add_argument("--no-scale", action="store_true", help="use the ranks as given even for a small pool")
    m.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if a.cmd == "catalog":
        for e in CATALOG.values():
            where = e.path or f"hf://{e.hub.repo}/{e.hub.data_dir or ''}"
            print(f"{e.name:36s} {e.language:5s} {e.task_type:20s} {','.join(e.stages):26s} "
                  f"{'sym' if e.symmetric else 'asym':4s} {where}")
        return 0
    if a.cmd == "validate":
        return _validate(a.file, a.format, a.skip_invalid)
    from .encoders import load_sentence_transformer
    from .mining import mine_dataset

    model = load_sentence_transformer(a.embedder, max_seq_length=a.max_seq_length)
    _, rep = mine_dataset(a.dataset, model, a.out, max_rows=a.max_rows, corpus_limit=a.corpus_limit, seed=a.seed,
                          sample_range=tuple(a.range), filter_topk=a.topk, num_negatives=a.num_negatives,
                          scale_to_corpus=not a.no_scale, show_progress_bar=True)
    print(rep.summary())
    print(f"wrote {rep.output_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
