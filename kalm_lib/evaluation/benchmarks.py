"""The paper's benchmarks as task lists: MTEB(eng, v1) (56 tasks) and MTEB(cmn, v1) (31 tasks).

The paper's C-MTEB is the 35-task C-MTEB *without* AmazonReviewsClassification (zh),
MassiveIntentClassification (zh), MassiveScenarioClassification (zh) and STS22 (zh): a 31-task
average reproduces its numbers (PAPER.md §5). mteb's own "MTEB(cmn, v1)" is exactly that list, so
``benchmark_tasks`` takes the task objects (with their language subsets and splits) from mteb and
checks them against the lists written out here. Their data come from the Hugging Face Hub.

Averages use one split per task: ``test`` where the task has it, else its only split (MSMARCO and
C-MTEB retrieval/reranking: ``dev``; Ocnli, Cmnli, TNews, IFlyTek, AFQMC: ``validation``).
"""

from __future__ import annotations

from collections.abc import Sequence

MTEB_ENG_V1: tuple[str, ...] = (
    # Classification (12)
    "AmazonCounterfactualClassification", "AmazonPolarityClassification", "AmazonReviewsClassification",
    "Banking77Classification", "EmotionClassification", "ImdbClassification", "MassiveIntentClassification",
    "MassiveScenarioClassification", "MTOPDomainClassification", "MTOPIntentClassification",
    "ToxicConversationsClassification", "TweetSentimentExtractionClassification",
    # Clustering (11)
    "ArxivClusteringP2P", "ArxivClusteringS2S", "BiorxivClusteringP2P", "BiorxivClusteringS2S",
    "MedrxivClusteringP2P", "MedrxivClusteringS2S", "RedditClustering", "RedditClusteringP2P",
    "StackExchangeClustering", "StackExchangeClusteringP2P", "TwentyNewsgroupsClustering",
    # PairClassification (3)
    "SprintDuplicateQuestions", "TwitterSemEval2015", "TwitterURLCorpus",
    # Reranking (4)
    "AskUbuntuDupQuestions", "MindSmallReranking", "SciDocsRR", "StackOverflowDupQuestions",
    # Retrieval (15)
    "ArguAna", "ClimateFEVER", "CQADupstackRetrieval", "DBPedia", "FEVER", "FiQA2018", "HotpotQA", "MSMARCO",
    "NFCorpus", "NQ", "QuoraRetrieval", "SCIDOCS", "SciFact", "Touche2020", "TRECCOVID",
    # STS (10)
    "BIOSSES", "SICK-R", "STS12", "STS13", "STS14", "STS15", "STS16", "STS17", "STS22", "STSBenchmark",
    # Summarization (1)
    "SummEval",
)

MTEB_CMN_V1: tuple[str, ...] = (
    # Classification (6)
    "TNews", "IFlyTek", "Waimai", "OnlineShopping", "JDReview", "MultilingualSentiment",
    # Clustering (4)
    "CLSClusteringS2S", "CLSClusteringP2P", "ThuNewsClusteringS2S", "ThuNewsClusteringP2P",
    # PairClassification (2)
    "Ocnli", "Cmnli",
    # Reranking (4)
    "T2Reranking", "MMarcoReranking", "CMedQAv1-reranking", "CMedQAv2-reranking",
    # Retrieval (8)
    "T2Retrieval", "MMarcoRetrieval", "DuRetrieval", "CovidRetrieval", "CmedqaRetrieval", "EcomRetrieval",
    "MedicalRetrieval", "VideoRetrieval",
    # STS (7)
    "LCQMC", "PAWSX", "AFQMC", "QBQTC", "ATEC", "BQ", "STSB",
)

CMTEB_EXCLUDED_BY_PAPER: tuple[str, ...] = (
    "AmazonReviewsClassification (zh)", "MassiveIntentClassification (zh)",
    "MassiveScenarioClassification (zh)", "STS22 (zh)",
)

BENCHMARKS: dict[str, tuple[str, ...]] = {"MTEB(eng, v1)": MTEB_ENG_V1, "MTEB(cmn, v1)": MTEB_CMN_V1}


def benchmark_tasks(name: str) -> list:
    """mteb task objects of a paper benchmark (subsets and splits as the benchmark defines them)."""
    import mteb

    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    tasks = list(mteb.get_benchmark(name).tasks)
    got, want = sorted(t.metadata.name for t in tasks), sorted(BENCHMARKS[name])
    if got != want:
        raise RuntimeError(f"mteb's {name} no longer matches the paper's list: "
                           f"extra {sorted(set(got) - set(want))}, missing {sorted(set(want) - set(got))}")
    return tasks


def main_split(splits: Sequence[str]) -> str:
    """The split that enters averages: ``test`` if present, else the first one."""
    splits = list(splits)
    if not splits:
        raise ValueError("a task result with no splits")
    return "test" if "test" in splits else splits[0]
