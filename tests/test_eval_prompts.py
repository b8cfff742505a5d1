"""KaLM-V2 evaluation prompts: which side of which task type gets which instruction.

Expected strings are written out by hand from mteb's KaLM_v2_task_prompts and the paper's rule
(queries instructed, documents raw, both sides of symmetric tasks instructed).
"""

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")
from mteb.types import PromptType  # noqa: E402

from kalm_lib.evaluation import KaLMEncoder, get_local_task  # noqa: E402
from kalm_lib.evaluation.encoder import KaLM_v2_task_prompts  # noqa: E402

Q, D, NONE = PromptType.query, PromptType.document, None


class RecordingST:
    """Stands in for a SentenceTransformer: records what it is asked to encode."""

    embedding_dim = 8

    def __init__(self):
        self.calls = []

    def encode(self, texts, prompt=None, batch_size=32, convert_to_numpy=True, show_progress_bar=False):
        self.calls.append([(prompt or "") + t for t in texts])
        rng = np.random.default_rng(len(self.calls))
        e = rng.normal(size=(len(texts), self.embedding_dim)).astype(np.float32)
        return e / np.linalg.norm(e, axis=1, keepdims=True)


def meta(name):
    return get_local_task(name).metadata


def kalm_encoder(**kw):
    return KaLMEncoder(RecordingST(), model_name="test/kalm", use_instructions=True, **kw)


def test_dict_is_mteb_reference_object():
    from mteb.models.model_implementations import kalm_models

    assert KaLM_v2_task_prompts is kalm_models.KaLM_v2_task_prompts  # imported, not copied


@pytest.mark.parametrize("task,side,expected", [
    # retrieval: query instructed, document raw
    ("SciFact", Q, "Instruct: Given a query, retrieve documents that answer the query \n Query: x"),
    ("SciFact", D, "x"),
    # a local-only retrieval task borrows its base task's instruction (T2Retrieval)
    ("CMRC2018Retrieval-local", Q, "Instruct: Given a query, retrieve documents that answer the query \n Query: x"),
    ("CMRC2018Retrieval-local", D, "x"),
    # reranking: the dict's "-query" entry on the query side, the candidates raw
    ("TrecQA-local", Q, "Instruct: Retrieve semantically similar questions \n Query: x"),
    ("TrecQA-local", D, "x"),
    # STS (symmetric, prompt_type None on both sides): instructed
    ("STSBenchmark", NONE, "Instruct: Retrieve semantically similar text \n Query: x"),
    ("STS12-noMSRvid", NONE, "Instruct: Retrieve semantically similar text \n Query: x"),
    ("ATEC", NONE, "Instruct: Retrieve semantically similar text \n Query: x"),
    # pair classification (symmetric)
    ("Ocnli", NONE, "Instruct: Retrieve semantically similar text \n Query: x"),
    # classification and clustering: the task description
    ("Banking77Classification", NONE,
     "Instruct: Given an online banking query, find the corresponding intents \n Query: x"),
    ("TNews-devhalf", NONE, "Instruct: Categorizing the given news title \n Query: x"),
    ("CLSClusteringS2S-9k", NONE,
     "Instruct: Identify the main category of scholar papers based on the titles \n Query: x"),
])
def test_kalm_prompt_per_task_type_and_side(task, side, expected):
    assert kalm_encoder().format_texts(["x"], meta(task), side) == [expected]


def test_mteb_strict_lookup_ignores_compound_keys():
    # mteb 2.26's InstructSentenceTransformerModel: STS falls back to the abstract task's prompt.
    enc = kalm_encoder(compound_keys=False)
    assert enc.format_texts(["x"], meta("STSBenchmark"), NONE) == [
        "Instruct: Retrieve semantically similar text. \n Query: x"]
    assert enc.format_texts(["x"], meta("SciFact"), D) == ["x"]


def test_documents_instructed_only_on_request():
    enc = kalm_encoder(apply_instruction_to_passages=True)
    assert enc.format_texts(["x"], meta("SciFact"), D) == [
        "Instruct: Given a query, retrieve documents that answer the query \n Query: x"]


def test_plain_sentence_transformer_gets_no_instruction():
    enc = KaLMEncoder(RecordingST(), model_name="sentence-transformers/all-MiniLM-L6-v2")
    assert not enc.use_instructions
    for task, side in [("SciFact", Q), ("STSBenchmark", NONE), ("Banking77Classification", NONE)]:
        assert enc.format_texts(["x"], meta(task), side) == ["x"]


def test_mteb_calls_encoder_with_the_right_sides():
    """End to end through mteb: STS encodes both sides instructed; retrieval instructs queries only."""
    from kalm_lib.evaluation import evaluate_model

    st = RecordingST()
    enc = KaLMEncoder(st, model_name="test/kalm", use_instructions=True)
    evaluate_model(enc, tasks={"STSBenchmark": 5, "SciFact": 3})
    sts_calls, retr_calls = st.calls[:2], st.calls[2:]
    sts_prefix = "Instruct: Retrieve semantically similar text \n Query: "
    assert len(sts_calls) == 2 and all(t.startswith(sts_prefix) for c in sts_calls for t in c)
    queries = [c for c in retr_calls if all(t.startswith("Instruct: ") for t in c)]
    docs = [c for c in retr_calls if not any(t.startswith("Instruct: ") for t in c)]
    assert len(queries) == 1 and len(queries[0]) == 3
    assert len(docs) >= 1 and sum(map(len, docs)) >= 3
    assert len(queries) + len(docs) == len(retr_calls)


def test_matryoshka_dim_truncates_and_renormalises():
    enc = KaLMEncoder(RecordingST(), model_name="test/kalm", dim=4)
    e = enc.encode_texts(["a", "b", "c"])
    assert e.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="dim=9"):
        KaLMEncoder(RecordingST(), model_name="test/kalm", dim=9)
