"""A saved KaLMEmbedder folder read by the ecosystem (issue 15, item 5).

Plain ``SentenceTransformer(path)`` and plain ``mteb.evaluate(SentenceTransformer(path), tasks)`` must read
texts exactly as the project's harness (``kalm_lib.evaluation.evaluate_model``) does: the saved ``prompts``
carry the harness's instruction per task and side; pooling, normalisation, max length and padding side are
the project's. Loading refuses a backbone that ignores ``is_causal=False``.
"""

import copy
import json
import warnings

import mteb
import numpy as np
import pytest
import torch
from mteb.models.abs_encoder import AbsEncoder, get_prompt_name
from mteb.types import PromptType

from kalm_lib.evaluation import evaluate_model, get_local_task
from kalm_lib.evaluation.encoder import KaLMEncoder
from kalm_lib.evaluation.saved_prompts import _task_sides, project_task_names, saved_model_prompts
from kalm_lib.model import KaLMEmbedder, check_bidirectional
from kalm_lib.prompts import GENERIC_QUERY_INSTRUCTION, KALM_QUERY_TEMPLATE

CAPS = {"STSBenchmark": 200, "SciFact": 20}  # one STS, one retrieval task from the local mirror
SEED = 2  # a random tiny model whose capped SciFact nDCG@10 is not 0 (seed 0 scores 0 there: a weak check)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("eco") / "model"
    KaLMEmbedder.tiny(seed=SEED).save(path, scores={"STSBenchmark": 0.5, "SciFact": 0.25}, prompts=saved_model_prompts())
    return path


@pytest.fixture(scope="module")
def plain(saved):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(saved), device="cpu")


def test_plain_mteb_scores_equal_the_harness(saved, plain, data_dir):
    ours = evaluate_model(saved, tasks=CAPS)
    ours = dict(zip(ours.task, ours.main_score))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mteb.evaluate(plain, [get_local_task(t, max_rows=c) for t, c in CAPS.items()], cache=None,
                            co2_tracker=False, show_progress_bar=False)
    theirs = {r.task_name: float(r.get_score()) for r in res.task_results}
    print("harness", ours, "plain mteb", theirs)
    assert ours["SciFact"] > 0.01 and ours["STSBenchmark"] != 0  # not a degenerate agreement
    for task in CAPS:
        assert abs(ours[task] - theirs[task]) < 1e-4, (task, ours[task], theirs[task])


def test_prompt_names_add_the_instruction(saved, plain):
    kalm = KaLMEmbedder.load(saved)
    q = ["what is the capital of France", "a cat sat on the mat"]
    generic = KALM_QUERY_TEMPLATE.format(instruction=GENERIC_QUERY_INSTRUCTION)
    assert plain.prompts["query"] == generic
    np.testing.assert_allclose(plain.encode(q, prompt_name="query"), kalm.encode(q, instruction=GENERIC_QUERY_INSTRUCTION),
                               atol=1e-5)
    np.testing.assert_allclose(plain.encode_query(q), kalm.encode(q, instruction=GENERIC_QUERY_INSTRUCTION), atol=1e-5)
    np.testing.assert_allclose(plain.encode_document(q), kalm.encode(q), atol=1e-5)  # documents raw
    sts = KaLMEncoder.prompt_lookup().instruction_for(get_local_task("STSBenchmark").metadata, None)
    np.testing.assert_allclose(plain.encode(q, prompt_name="STSBenchmark"), kalm.encode(q, instruction=sts), atol=1e-5)
    assert plain.max_seq_length == kalm.max_length == 128 and plain[0].tokenizer.padding_side == "right"


def test_every_task_and_side_gets_the_harness_prompt_through_mteb(plain):
    """mteb's own lookup (``get_prompt_name`` over the saved prompts) against the harness's instruction, for every
    side of every task the project evaluates under an MTEB name; and mteb keeps every key (none invalid)."""
    prompts = {k: v for k, v in plain.prompts.items() if v is not None}
    kept, invalid = AbsEncoder.validate_task_to_prompt_name(prompts, raise_for_invalid_keys=False)
    assert not invalid and kept == prompts
    lookup = KaLMEncoder.prompt_lookup()
    tasks = [get_local_task(n) if n in CAPS else mteb.get_task(n) for n in project_task_names()]
    tasks = [s for t in tasks for s in (getattr(t.metadata, "tasks", None) or [t])]
    checked = 0
    for task in tasks:
        for side in _task_sides(task):
            want = lookup.instruction_for(task.metadata, side)
            want = KALM_QUERY_TEMPLATE.format(instruction=want) if want else ""
            got = prompts.get(get_prompt_name(prompts, task.metadata, side)) or ""
            assert got == want, (task.metadata.name, side, got, want)
            checked += 1
    assert checked > 100
    assert prompts.get(get_prompt_name(prompts, get_local_task("SciFact").metadata, PromptType.document)) == ""


def test_saved_folder_is_sentence_transformers_own_with_card_and_versions(saved):
    import sentence_transformers
    import transformers

    cfg = json.loads((saved / "config_sentence_transformers.json").read_text())
    assert cfg["__version__"]["sentence_transformers"] == sentence_transformers.__version__
    assert cfg["kalm"]["versions"]["transformers"] == transformers.__version__
    assert cfg["kalm"]["scores"] == [{"task": "STSBenchmark", "main_score": 0.5}, {"task": "SciFact", "main_score": 0.25}]
    assert json.loads((saved / "config.json").read_text())["is_causal"] is False
    card = (saved / "README.md").read_text()
    assert f"transformers {transformers.__version__}" in card and "| SciFact | 0.2500 |" in card
    assert "Framework Versions" in card  # sentence-transformers' own card
    assert json.loads((saved / "sentence_bert_config.json").read_text())["modality_config"].keys() == {"text"}


def _causal_mask_only(monkeypatch):
    """Simulate a transformers that ignores ``is_causal=False``: Qwen2 always gets an explicit causal mask."""
    from transformers.models.qwen2 import modeling_qwen2

    original = modeling_qwen2.create_causal_mask

    def causal(**kw):
        cfg = copy.copy(kw.pop("config"))
        cfg.is_causal = True
        return original(config=cfg, allow_is_causal_skip=False, **kw)

    monkeypatch.setattr(modeling_qwen2, "create_causal_mask", causal)


def test_load_refuses_a_backbone_that_stays_causal(saved, monkeypatch):
    import transformers

    assert check_bidirectional(KaLMEmbedder.load(saved)) > 1e-4  # the real thing passes
    _causal_mask_only(monkeypatch)
    with pytest.raises(RuntimeError, match=rf"transformers {transformers.__version__} ignores config.is_causal") as err:
        KaLMEmbedder.load(saved)
    assert "transformers>=5.2" in str(err.value) and "causal=True" in str(err.value)
    m = KaLMEmbedder.load(saved, causal=True)  # asked for causal: no check, no error
    with torch.inference_mode():
        h = m.backbone(input_ids=torch.tensor([[1, 2, 3, 4], [1, 2, 3, 5]])).last_hidden_state[:, 0]
    torch.testing.assert_close(h[0], h[1], atol=1e-6, rtol=0)


def test_saved_model_prompts_cover_the_project_tasks():
    prompts = saved_model_prompts()
    for name in ("STSBenchmark", "Banking77Classification", "ATEC", "SummEval"):
        assert prompts[name].startswith("Instruct: ") and prompts[name].endswith(" \n Query: ")
    for name in ("SciFact-query", "T2Reranking-query", "CQADupstackAndroidRetrieval-query", "MSMARCO-query"):
        assert prompts[name].startswith("Instruct: ")
    assert "SciFact" not in prompts and "SciFact-document" not in prompts  # documents stay raw
