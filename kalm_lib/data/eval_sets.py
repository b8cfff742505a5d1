"""The evaluation sets of the local mirror, declared once (issue: "one registry of evaluation sets").

Each :class:`LocalTaskSpec` says which files of ``$KALM_DATA_DIR/<folder>`` make each split and which splits are
scored. Two users read this one declaration:

* kalm_lib/evaluation/local_tasks.py turns each spec into an mteb task (the scored splits are what it evaluates);
* kalm_lib/data/overlap.py forbids every text of every scored split's files to training (decontamination).

So a file that is scored is a file that is forbidden: SICK-R's scored "test" split is the local test AND train
files (MTEB's SICK-R test is all 9,927 SICK pairs), and both are kept out of training. The declaration is plain
data: no mteb here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

@dataclass(frozen=True)
class LocalTaskSpec:
    """One local dataset and the MTEB task it is evaluated as.

    ``splits`` maps an MTEB split name to the local files whose rows make it (concatenated).
    """

    name: str
    folder: str  # relative to $KALM_DATA_DIR, e.g. "en/sts-stsbenchmark"
    base: str  # the built-in mteb task subclassed (metric, main score, evaluator)
    kind: str  # sts | pair | classification | clustering | reranking | retrieval
    splits: dict[str, tuple[str, ...]]
    language: str  # "en" | "zh"
    complete: bool  # same rows as MTEB's copy of ``base``: scores comparable with public results
    note: str = ""
    eval_splits: tuple[str, ...] | None = None  # default: the splits in ``splits`` minus "train"
    row_filter: tuple[str, tuple[Any, ...]] | None = None  # (field, values to drop)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mteb_name(self) -> str | None:
        """The MTEB task whose public scores this copy reproduces (None when it cannot)."""
        return self.base if self.complete else None

    @property
    def evaluated_splits(self) -> tuple[str, ...]:
        return self.eval_splits or tuple(s for s in self.splits if s != "train")


_S = LocalTaskSpec
LOCAL_TASK_SPECS: tuple[LocalTaskSpec, ...] = (
    # ---------------------------------------------------------------- English
    _S("STSBenchmark", "en/sts-stsbenchmark", "STSBenchmark", "sts", {"test": ("test.jsonl",)}, "en", True),
    _S("SICK-R", "en/sts-sickr", "SICK-R", "sts", {"test": ("test.jsonl", "train.jsonl")}, "en", True,
       "MTEB's SICK-R 'test' is all 9,927 SICK pairs = local test (4,927) + train/trial (5,000)"),
    _S("STS12-noMSRvid", "en/sts-sts12", "STS12", "sts", {"test": ("test.jsonl",)}, "en", False,
       "lacks the 750 MSRvid pairs (2,358 of MTEB's 3,108)"),
    _S("STS13", "en/sts-sts13", "STS13", "sts", {"test": ("test.jsonl",)}, "en", True,
       "same 1,500 pairs; whitespace differs slightly from MTEB's copy"),
    _S("STS14", "en/sts-sts14", "STS14", "sts", {"test": ("test.jsonl",)}, "en", True,
       "same 3,750 pairs; whitespace differs slightly from MTEB's copy"),
    _S("STS15", "en/sts-sts15", "STS15", "sts", {"test": ("test.jsonl",)}, "en", True,
       "same 3,000 pairs; whitespace differs slightly from MTEB's copy"),
    _S("STS16", "en/sts-sts16", "STS16", "sts", {"test": ("test.jsonl",)}, "en", True,
       "same 1,186 pairs; whitespace differs slightly from MTEB's copy"),
    _S("MRPC-local", "en/pair-mrpc", "TwitterSemEval2015", "pair", {"test": ("test.jsonl",)}, "en", False,
       "MSR paraphrase corpus; not an MTEB task (scored like TwitterSemEval2015: max AP)"),
    _S("Banking77Classification", "en/cls-banking77", "Banking77Classification", "classification",
       {"train": ("train.jsonl",), "test": ("test.jsonl",)}, "en", True),
    _S("Banking77Clustering-local", "en/cls-banking77", "TwentyNewsgroupsClustering.v2", "clustering",
       {"test": ("test.jsonl",)}, "en", False,
       "Banking77 test as a 77-cluster set; not an MTEB task (no MTEB clustering corpus is mirrored)"),
    _S("TrecQA-local", "en/rerank-trecqa", "AskUbuntuDupQuestions", "reranking", {"test": ("test.jsonl",)}, "en",
       False, "TrecQA answer selection (clean test, 68 queries); not an MTEB task (scored like AskUbuntu: MAP)"),
    _S("SciFact", "en/retr-scifact", "SciFact", "retrieval", {"test": ("qrels/test.tsv",)}, "en", True),
    # ---------------------------------------------------------------- Chinese
    _S("ChnSentiCorp-local", "zh/cls-chnsenticorp", "OnlineShopping", "classification",
       {"train": ("train.jsonl",), "test": ("test.jsonl",)}, "zh", False,
       "ChnSentiCorp (dev as train); not a C-MTEB task (scored like OnlineShopping: accuracy)"),
    _S("THUCNews-local", "zh/cls-thucnews", "TNews", "classification",
       {"train": ("train.jsonl",), "test": ("test.jsonl",)}, "zh", False,
       "THUCNews titles (dev as train); not a C-MTEB task (scored like TNews: accuracy)"),
    _S("TNews-devhalf", "zh/cls-tnews", "TNews", "classification",
       {"train": ("train.jsonl",), "validation": ("test.jsonl",)}, "zh", False,
       "4,928 rows of CLUE TNEWS dev split 50/50 (C-MTEB: 53,360 train / 10,000 validation)"),
    _S("CLSClusteringS2S-9k", "zh/clu-csl-s2s", "CLSClusteringS2S.v2", "clustering", {"test": ("test.jsonl",)},
       "zh", False, "9,000 CSL titles, 13 disciplines (C-MTEB: 100,000 titles)"),
    _S("Ocnli", "zh/pair-ocnli", "Ocnli", "pair", {"validation": ("validation.jsonl",)}, "zh", True,
       "neutral pairs dropped, as C-MTEB does (1,847 of 2,950)", row_filter=("nli_label", ("neutral",))),
    _S("CMRC2018Retrieval-local", "zh/retr-cmrc2018", "T2Retrieval", "retrieval", {"test": ("qrels/test.tsv",)},
       "zh", False, "CMRC 2018 dev questions → their paragraph (848 docs); not a C-MTEB task"),
    _S("AFQMC", "zh/sts-afqmc", "AFQMC", "sts", {"validation": ("validation.jsonl",)}, "zh", True),
    _S("ATEC", "zh/sts-atec", "ATEC", "sts", {"validation": ("validation.jsonl",), "test": ("test.jsonl",)}, "zh",
       True),
    _S("BQ", "zh/sts-bq", "BQ", "sts", {"validation": ("validation.jsonl",), "test": ("test.jsonl",)}, "zh", True),
    _S("LCQMC", "zh/sts-lcqmc", "LCQMC", "sts", {"test": ("test.jsonl",)}, "zh", True),
    _S("PAWSX", "zh/sts-pawsx", "PAWSX", "sts", {"test": ("test.jsonl",)}, "zh", True),
    _S("STSB", "zh/sts-stsb", "STSB", "sts", {"validation": ("validation.jsonl",), "test": ("test.jsonl",)}, "zh",
       True),
)


SPECS: dict[str, LocalTaskSpec] = {s.name: s for s in LOCAL_TASK_SPECS}
"""Each declared local task by name."""


def spec_for_folder(folder: str) -> LocalTaskSpec | None:
    """The first spec declared for ``folder`` (``"en/sts-sickr"``); None for an undeclared folder."""
    return next((s for s in LOCAL_TASK_SPECS if s.folder == folder), None)


def scored_files(folder: str) -> tuple[str, ...] | None:
    """The files (relative to the folder) of every scored split of every spec declared for ``folder``."""
    specs = [s for s in LOCAL_TASK_SPECS if s.folder == folder]
    if not specs:
        return None
    files: list[str] = []
    for s in specs:
        for split in s.evaluated_splits:
            files += [f for f in s.splits[split] if f not in files]
    return tuple(files)
