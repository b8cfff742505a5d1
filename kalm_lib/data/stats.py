"""Tables for the data chapter (notebooks/01_data.ipynb): sizes, token lengths, examples."""
from __future__ import annotations

import os

import pandas as pd

from .catalog import get_entry, resolve_data_dir
from .instructions import apply_instruction
from .loader import load_with_report


def dataset_table(names: list[str], data_dir=None, max_rows: int | None = None, seed: int = 0,
                  skip_invalid: bool = True) -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """One row per dataset (language, task type, stages, usable size and what was left out, and why) and
    the records loaded (a ``max_rows`` sample of each)."""
    rows, records = [], {}
    for name in names:
        e = get_entry(name)
        recs, rep = load_with_report(e, data_dir=data_dir, max_rows=max_rows, seed=seed, skip_invalid=skip_invalid)
        records[name] = recs  # keyed as given (a name, or an expanded Hub entry), which get_entry reads back
        rows.append({"dataset": e.name, "language": e.language, "task_type": e.task_type, "stages": ",".join(e.stages),
                     "symmetric": e.symmetric, "read": rep.read, "usable": rep.kept + rep.subsampled,
                     "malformed": rep.invalid, "not_positive": sum(v for k, v in rep.dropped.items() if "<" in k),
                     "test_overlap": sum(v for k, v in rep.dropped.items() if "evaluation test" in k),
                     "other_dropped": sum(v for k, v in rep.dropped.items()
                                          if "<" not in k and "evaluation test" not in k),
                     "sampled": rep.kept,
                     "avg_pos": round(sum(len(r["pos"]) for r in recs) / max(len(recs), 1), 2),
                     "avg_neg": round(sum(len(r["neg"]) for r in recs) / max(len(recs), 1), 2)})
    return pd.DataFrame(rows), records


def load_qwen2_tokenizer(data_dir=None):
    """The Qwen2 tokenizer via AutoTokenizer: the mirror's (``<data_dir>/tokenizers/qwen2``), else
    :func:`kalm_lib.paths.qwen2_tokenizer_source` (``$KALM_DATA_DIR``'s, or Qwen/Qwen2-0.5B from the Hub)."""
    from transformers import AutoTokenizer

    from kalm_lib.paths import qwen2_tokenizer_source

    src = os.fspath(resolve_data_dir(data_dir) / "tokenizers" / "qwen2") if data_dir else qwen2_tokenizer_source()
    return AutoTokenizer.from_pretrained(src)


def token_lengths(records: dict[str, list[dict]], tokenizer, instructions: bool = True) -> pd.DataFrame:
    """Long table: dataset, language, side (query / positive), tokens — as the model will see them
    (instruction template applied when ``instructions``; no special tokens)."""
    rows = []
    for name, recs in records.items():
        e = get_entry(name)
        q, p = [], []
        for r in recs:
            qq, pp = apply_instruction(r["query"], [r["pos"][0]], e) if instructions else (r["query"], [r["pos"][0]])
            q.append(qq)
            p.append(pp[0])
        for side, texts in (("query", q), ("positive", p)):
            if not texts:
                continue
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            rows += [{"dataset": e.name, "language": e.language, "side": side, "tokens": len(x)} for x in ids]
    return pd.DataFrame(rows)


def instruction_examples(records: dict[str, list[dict]], per_dataset: int = 1, width: int = 110) -> pd.DataFrame:
    """The first example(s) of each dataset with its instruction applied, as the trainer receives them."""
    rows = []
    for name, recs in records.items():
        e = get_entry(name)
        for r in recs[:per_dataset]:
            q, ps = apply_instruction(r["query"], [r["pos"][0]], e)
            rows.append({"dataset": e.name, "symmetric": e.symmetric, "query (model input)": q[:width],
                         "positive (model input)": ps[0][:width]})
    return pd.DataFrame(rows)


def labeling_example(name: str, data_dir=None, index: int = 0, n_neg: int = 5, max_rows: int | None = None,
                     seed: int = 0, width: int = 80) -> pd.DataFrame:
    """One example-based labeling triple of a classification/clustering dataset, with every text's class
    looked up in the source file itself (an independent check of the labeling)."""
    from .jsonl import iter_jsonl
    from .loader import load_records

    entry = get_entry(name)
    if not entry.labeled:
        raise ValueError(f"{name} is not a classification/clustering dataset (format {entry.format!r})")
    label_of: dict[str, set[str]] = {}
    for _, obj in iter_jsonl(entry.local_path(data_dir)):
        label_of.setdefault(obj["text"], set()).add(str(obj["label"]))
    r = load_records(entry, data_dir=data_dir, max_rows=max_rows, seed=seed)[index]
    cls = lambda t: "/".join(sorted(label_of.get(t, {"?"})))  # noqa: E731
    rows = [{"role": "query q", "class": cls(r["query"]), "text": r["query"][:width]}]
    rows += [{"role": "positive p⁺", "class": cls(p), "text": p[:width]} for p in r["pos"][:1]]
    rows += [{"role": f"negative p⁻_{k + 1}", "class": cls(t), "text": t[:width]} for k, t in enumerate(r["neg"][:n_neg])]
    return pd.DataFrame(rows)
