"""Example-based multi-class labeling (PAPER.md §3.3, credited to NV-Embed).

For a classification or clustering example (x, c) the label text is *not* the positive. Instead

    p⁺  ~ Uniform{ x' : label(x') = c, x' ≠ x }           (another example of the same class)
    p⁻_k ~ Uniform{ x'' : label(x'') ≠ c }                 (examples of other classes)

turning label data into (q, p⁺, p⁻) triples. The paper does not give the number of positives kept
per example or how classes are sampled for negatives; here each example keeps up to ``num_pos``
candidate positives and ``num_neg`` negatives drawn from as many *different* classes as possible
(round-robin over a shuffled class list), so a batch sees many classes. The training set then draws
one positive and M negatives from these lists, varying with the epoch.
"""
from __future__ import annotations

from collections import defaultdict

import random

from .errors import LoadReport


def example_based_labeling(records: list[dict], num_pos: int = 4, num_neg: int = 16, seed: int = 0,
                           report: LoadReport | None = None, indices=None) -> list[dict]:
    """``[{"query": x, "label": c}, ...]`` -> ``[{"query": x, "pos": [...], "neg": [...], "label": c}, ...]``.

    A text that carries several labels (label noise in the source) is never used as a negative for any
    of its classes. An example whose class has no other distinct text cannot get a positive and is
    dropped (counted in ``report.dropped``). ``indices``: label only these records (a subset), still
    drawing positives and negatives from all of them."""
    rng = random.Random(seed)  # per-example draws are tiny: the stdlib RNG avoids numpy's call overhead
    by_class: dict[str, list[str]] = defaultdict(list)
    labels_of: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], int] = {}  # (class, text) -> position in by_class[class]
    for r in records:
        if r["label"] not in labels_of[r["query"]]:
            where[(r["label"], r["query"])] = len(by_class[r["label"]])
            by_class[r["label"]].append(r["query"])
        labels_of[r["query"]].add(r["label"])
    classes = sorted(by_class)
    others_of = {c: [k for k in classes if k != c] for c in classes}
    out = []
    for r in (records if indices is None else (records[int(i)] for i in indices)):
        x, c = r["query"], r["label"]
        pool, me = by_class[c], where[(c, x)]
        if len(pool) < 2:
            if report is not None:
                report.dropped["class has no other example (no positive)"] += 1
            continue
        # draw from the class without x: positions 0..n-2, shifted past x's own position
        pick = rng.sample(range(len(pool) - 1), min(num_pos, len(pool) - 1))
        pos = [pool[i + (i >= me)] for i in pick]
        others = others_of[c]
        neg: list[str] = []
        seen: set[str] = set()
        # rounds over distinct random classes: one example per class per round, so negatives span classes
        attempts = 0
        while others and len(neg) < num_neg and attempts < 4 * num_neg:
            for k in rng.sample(others, min(len(others), num_neg - len(neg))):
                attempts += 1
                cpool = by_class[k]
                t = cpool[rng.randrange(len(cpool))]
                if t not in seen and c not in labels_of[t]:
                    seen.add(t)
                    neg.append(t)
        out.append({"query": x, "pos": pos, "neg": neg, "label": c})
    return out
