"""Source formats -> one normalised record ``{"query": str, "pos": [str, ...], "neg": [str, ...], ...}``.

Conversions that leave a record out on purpose (an STS pair below ``min_score``, an MRPC pair labelled
"not a paraphrase") return a reason string instead of a record; the loader counts the reasons.
"""
from __future__ import annotations

from .catalog import CatalogEntry

# optional fields of the train layout that survive normalisation (mined / teacher-scored files)
PASSTHROUGH = ("pos_scores", "neg_scores", "teacher_scores", "pos_rank", "label", "instruction")


def normalise(raw: dict, entry: CatalogEntry, fmt: str | None = None) -> dict | str:
    """A validated raw record -> normalised record, or a reason string when it is left out by design.

    ``cls`` records become ``{"query": text, "label": label}``; their ``pos``/``neg`` come later from
    example-based labeling, which needs the whole dataset."""
    fmt = fmt or entry.format
    if fmt in ("train", "hub"):
        rec = {"query": raw["query"], "pos": list(raw["pos"]), "neg": list(raw.get("neg", []))}
        for k in PASSTHROUGH:
            if k in raw:
                rec[k] = raw[k]
        return rec
    if fmt in ("sts", "pair"):
        value = raw["score"] if fmt == "sts" else raw["label"]
        threshold = entry.min_score if entry.min_score is not None else (4.0 if fmt == "sts" else 1)
        if value < threshold:
            return f"{'score' if fmt == 'sts' else 'label'} < {threshold:g} (not a positive pair)"
        return {"query": raw["sentence1"], "pos": [raw["sentence2"]], "neg": [], "score": float(value)}
    if fmt == "cls":
        return {"query": raw["text"], "label": str(raw["label"])}
    raise ValueError(f"{entry.name}: no conversion for format {fmt!r}")
