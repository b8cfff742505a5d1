"""Labelled classification / clustering data: no in-batch negatives (issue 19 item 9; PAPER.md §9).

With one task per batch, other queries' positives and hard negatives in a classification batch are often of the
query's own class (false negatives). Their queries see only their own positive, hard negatives and mixes; retrieval
data keeps the whole batch in Z_i."""

import math

import pytest
import torch

import reference as R
from kalm_lib.losses import KaLMObjective, ObjectiveConfig, focal_info_nce_loss, info_nce_loss
from kalm_lib.losses.infonce import infonce_logits
from kalm_lib.train import Batch


@pytest.mark.parametrize("expanded", [False, True])
def test_own_only_rows_equal_the_naive_loss(expanded):
    B, M, K, d = 5, 3, 2, 8
    q, p, n, mixed = R.unit(B, d, seed=1), R.unit(B, d, seed=2), R.unit(B, M, d, seed=3), R.unit(B, K, d, seed=4)
    own = torch.tensor([True, False, True, True, False])
    R.assert_same_value_and_grad(
        lambda q, p, n, x: info_nce_loss(q, p, n, tau=0.05, mixed_neg=x, expanded_negatives=expanded, own_only=own),
        lambda q, p, n, x: R.ref_infonce(q, p, n, tau=0.05, mixed=x, expanded=expanded, own_only=own.tolist()),
        [q, p, n, mixed])
    R.assert_same_value_and_grad(
        lambda q, p, n: focal_info_nce_loss(q, p, n, gamma=1.0, tau=0.05, own_only=own),
        lambda q, p, n: R.ref_focal(q, p, n, gamma=1.0, tau=0.05, own_only=own.tolist()),
        [q, p, n])
    # all False = no mask at all
    torch.testing.assert_close(info_nce_loss(q, p, n, tau=0.05, own_only=torch.zeros(B, dtype=torch.bool)),
                               info_nce_loss(q, p, n, tau=0.05))


def _classification_batch():
    """Two classes per batch (the case of one task per batch): each query's positive is another text of its
    class, its negatives texts of the other class, so every OTHER query's positive or negative of the same
    class as query i is a false negative for i."""
    label = ["sport", "sport", "finance", "finance", "sport", "finance"]
    ex = []
    for i, c in enumerate(label):
        other = "finance" if c == "sport" else "sport"
        ex.append({"query": f"{c} news {i}", "pos": f"{c} news {i + 10}", "neg": [f"{other} news {i + 20}",
                   f"{other} news {i + 30}"], "task": "tnews", "own_negatives_only": True})
    return ex


def test_no_same_class_text_enters_any_classification_query_z():
    ex = _classification_batch()
    batch = Batch.from_examples(ex, 2)
    assert batch.own_only.tolist() == [True] * 6
    B, M = 6, 2
    texts = batch.positives + batch.negatives  # the column order of infonce_logits: p⁺_j, then p⁻_{j,k} j-major
    emb = R.unit(B + B * M + B, 16, seed=0, requires_grad=False)
    q, p, n = emb[:B], emb[B:2 * B], emb[2 * B:2 * B + B * M].view(B, M, 16)
    logits = infonce_logits(q, p, n, tau=0.05, own_only=batch.own_only)
    for i, e in enumerate(ex):
        in_z = [texts[c] for c in range(B + B * M) if math.isfinite(float(logits[i, c]))]
        cls = e["query"].split()[0]
        assert in_z[0] == e["pos"] and sorted(in_z[1:]) == sorted(e["neg"])
        assert [t for t in in_z if t.split()[0] == cls] == [e["pos"]], "a same-class text other than p⁺ in Z_i"


def test_retrieval_queries_keep_their_in_batch_negatives():
    ex = [dict(e, own_negatives_only=False, task="scifact") for e in _classification_batch()]
    ex[0]["own_negatives_only"] = True  # a mixed batch is masked row by row
    batch = Batch.from_examples(ex, 2)
    obj = KaLMObjective(ObjectiveConfig(tau=0.05, gamma=0.5))
    q, p, n = R.unit(6, 16, seed=5), R.unit(6, 16, seed=6), R.unit(6, 2, 16, seed=7)
    logits = infonce_logits(q, p, n, tau=0.05, own_only=batch.own_only)
    assert bool(torch.isfinite(logits[1:]).all()) and int(torch.isfinite(logits[0]).sum()) == 3
    # the trainer's objective applies the same mask (equal to the naive focal loss)
    out = obj(q, p, n, own_only=batch.own_only)
    ref = R.ref_focal(q, p, n, gamma=0.5, tau=0.05, own_only=batch.own_only.tolist())
    torch.testing.assert_close(out["loss"], ref)
    assert Batch.from_examples([dict(e, own_negatives_only=False) for e in ex], 2).own_only is None


def test_the_training_step_passes_the_rows_to_the_objective():
    from kalm_lib.config import config_from_dict
    from kalm_lib.model import KaLMEmbedder
    from kalm_lib.train import StepRunner

    cfg = config_from_dict({"model": {"tiny": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                               "num_attention_heads": 4, "num_key_value_heads": 2}},
                            "data": {"num_negatives": 2, "query_max_len": 8, "passage_max_len": 8},
                            "objective": {"tau": 0.05}})
    model = KaLMEmbedder.tiny(seed=0, **cfg.model.tiny)
    seen = []

    class Recording(KaLMObjective):
        def forward(self, *a, own_only=None, **k):
            seen.append(own_only)
            return super().forward(*a, own_only=own_only, **k)

    runner = StepRunner(model, model, Recording(cfg.objective), cfg)
    masked, _, _ = runner(Batch.from_examples(_classification_batch(), 2))
    plain, _, _ = runner(Batch.from_examples([dict(e, own_negatives_only=False) for e in _classification_batch()], 2))
    assert seen[0].tolist() == [True] * 6 and seen[1] is None
    assert masked["loss"] < plain["loss"]  # fewer candidates in every Z_i
