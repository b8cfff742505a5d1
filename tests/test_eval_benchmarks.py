"""The paper's benchmark lists: MTEB(eng, v1) with 56 tasks and the paper's 31-task C-MTEB."""

from collections import Counter

import pytest

mteb = pytest.importorskip("mteb")

from kalm_lib.evaluation.benchmarks import (  # noqa: E402
    BENCHMARKS,
    CMTEB_EXCLUDED_BY_PAPER,
    MTEB_CMN_V1,
    MTEB_ENG_V1,
    benchmark_tasks,
)


def _type_counts(names):
    return Counter(mteb.get_task(n).metadata.type for n in names)


def test_eng_v1_is_56_tasks_in_the_papers_types():
    assert len(MTEB_ENG_V1) == len(set(MTEB_ENG_V1)) == 56
    assert _type_counts(MTEB_ENG_V1) == {"Classification": 12, "Clustering": 11, "PairClassification": 3,
                                         "Reranking": 4, "Retrieval": 15, "STS": 10, "Summarization": 1}


def test_cmn_v1_is_the_papers_31_tasks():
    assert len(MTEB_CMN_V1) == len(set(MTEB_CMN_V1)) == 31
    assert _type_counts(MTEB_CMN_V1) == {"Classification": 6, "Clustering": 4, "PairClassification": 2,
                                         "Reranking": 4, "Retrieval": 8, "STS": 7}
    for excluded in CMTEB_EXCLUDED_BY_PAPER:  # multilingual tasks' zh subsets are not in the paper's list
        assert excluded.split(" ")[0] not in MTEB_CMN_V1


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_lists_match_mtebs_benchmarks(name):
    tasks = benchmark_tasks(name)  # metadata only: no data is downloaded
    assert sorted(t.metadata.name for t in tasks) == sorted(BENCHMARKS[name])
    if name == "MTEB(eng, v1)":
        subsets = {t.metadata.name: t.hf_subsets for t in tasks}
        assert subsets["STS17"] == ["en-en"] and subsets["AmazonReviewsClassification"] == ["en"]
