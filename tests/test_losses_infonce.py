"""kalm_lib/losses/infonce.py against the naive loop reference (PAPER.md §2.1)."""

import pytest
import torch

from kalm_lib.losses import info_nce_loss, infonce_logits


# The naive loop references, all in tests/reference.py (pytest puts tests/ on sys.path).
import reference as R  # noqa: E402

B, M, K, D = 4, 3, 2, 8


@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("expanded", [False, True])
@pytest.mark.parametrize("with_mixed", [False, True])
def test_infonce_matches_naive_loop(hard, expanded, with_mixed):
    q, p, n, mx = R.unit(B, D, seed=1), R.unit(B, D, seed=2), R.unit(B, M, D, seed=3), R.unit(B, K, D, seed=4)
    tau = 0.2
    mixed = mx if with_mixed else None
    R.assert_same_value_and_grad(
        lambda q, p, n, m: info_nce_loss(q, p, n, tau=tau, use_hard_negatives=hard, expanded_negatives=expanded,
                                         mixed_neg=m),
        lambda q, p, n, m: R.ref_infonce(q, p, n, tau, hard=hard, expanded=expanded, mixed=m),
        [q, p, n, mixed],
    )


def test_infonce_no_hard_negatives_given():
    q, p = R.unit(B, D, seed=5), R.unit(B, D, seed=6)
    R.assert_same_value_and_grad(lambda q, p: info_nce_loss(q, p, None, tau=0.1),
                                 lambda q, p: R.ref_infonce(q, p, None, 0.1), [q, p])


def test_hard_negatives_of_other_queries_are_in_z_i():
    # moving query 1's hard negative onto query 0 must change query 0's loss (batch-wide negatives, not own-only)
    q, p = R.unit(2, D, seed=7, requires_grad=False), R.unit(2, D, seed=8, requires_grad=False)
    n = R.unit(2, 1, D, seed=9, requires_grad=False)
    n2 = n.clone()
    n2[1, 0] = q[0]
    logits_a = infonce_logits(q, p, n, tau=0.1)
    logits_b = infonce_logits(q, p, n2, tau=0.1)
    assert logits_a.shape == (2, 2 + 2)
    assert torch.allclose(logits_b[0, 3], torch.tensor(10.0, dtype=R.DT))  # s(q_0, q_0)/τ = 1/0.1


def test_logits_layout_positive_on_diagonal_and_expanded_diagonal_masked():
    q, p, n = R.unit(B, D, seed=10), R.unit(B, D, seed=11), R.unit(B, M, D, seed=12)
    lg = infonce_logits(q, p, n, tau=0.5, expanded_negatives=True)
    assert lg.shape == (B, B + B * M + 2 * B)
    torch.testing.assert_close(lg.diagonal()[:B], (q * p).sum(-1) / 0.5)
    qq = lg[:, B + B * M: 2 * B + B * M]
    pp = lg[:, 2 * B + B * M:]
    assert torch.isneginf(qq.diagonal()).all() and torch.isneginf(pp.diagonal()).all()
    assert torch.isfinite(qq.fill_diagonal_(0)).all()


def test_gathered_inputs_build_the_global_loss_and_local_slot_keeps_gradient():
    # pretend to be rank 1 of 2: gather_with_grad's result is rank 0's (gradient-free) tensors, then this rank's
    q, p, n = R.unit(2 * B, D, seed=13), R.unit(2 * B, D, seed=14), R.unit(2 * B, M, D, seed=15)
    global_loss = R.ref_infonce(q, p, n, 0.2)
    g_q, g_p, g_n = torch.autograd.grad(global_loss, [q, p, n])
    lq, lp, ln = (t[B:].detach().clone().requires_grad_(True) for t in (q, p, n))
    gathered = [torch.cat([t[:B].detach(), local]) for t, local in ((q, lq), (p, lp), (n, ln))]
    loss = info_nce_loss(*gathered, tau=0.2)
    torch.testing.assert_close(loss, global_loss.detach(), atol=1e-10, rtol=0)
    a, b, c = torch.autograd.grad(loss, [lq, lp, ln])
    # the local slot's gradient is the global-loss gradient restricted to this rank's rows
    torch.testing.assert_close(a, g_q[B:]), torch.testing.assert_close(b, g_p[B:]), torch.testing.assert_close(c, g_n[B:])


def test_tau_001_cosine_inputs_finite_values_and_gradients():
    q = R.unit(B, D, seed=16)
    p = (q.detach() + 0.01 * R.unit(B, D, seed=17, requires_grad=False))  # near-duplicates: p_i ≈ 1
    p = (p / p.norm(dim=-1, keepdim=True)).float().requires_grad_(True)
    q32 = q.detach().float().requires_grad_(True)
    n = R.unit(B, M, D, seed=18, dtype=torch.float32)
    loss = info_nce_loss(q32, p, n, tau=0.01, expanded_negatives=True)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(t.grad).all() for t in (q32, p, n))


def test_bfloat16_inputs_compute_logits_in_float32():
    q, p, n = (R.unit(*s, seed=19 + i, requires_grad=False) for i, s in enumerate([(B, D), (B, D), (B, M, D)]))
    qb, pb, nb = (t.to(torch.bfloat16).requires_grad_(True) for t in (q, p, n))
    lg = infonce_logits(qb, pb, nb, tau=0.01)
    assert lg.dtype == torch.float32
    # same as float32 maths on the bf16-rounded values (a bf16 matmul would be off by ~0.5 at logit 100)
    expect = infonce_logits(qb.detach().float(), pb.detach().float(), nb.detach().float(), tau=0.01)
    torch.testing.assert_close(lg.detach(), expect, atol=1e-4, rtol=0)
    loss = info_nce_loss(qb, pb, nb, tau=0.01)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert qb.grad.dtype == torch.bfloat16 and torch.isfinite(qb.grad.float()).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(q=torch.zeros(4, 8), p_pos=torch.zeros(3, 8)), "p_pos"),
        (dict(q=torch.zeros(4, 8), p_pos=torch.zeros(4, 8), p_neg=torch.zeros(4, 8)), "p_neg"),
        (dict(q=torch.zeros(4, 8), p_pos=torch.zeros(4, 8), p_neg=torch.zeros(4, 2, 7)), "p_neg"),
        (dict(q=torch.zeros(4, 8, 1), p_pos=torch.zeros(4, 8)), "'q'"),
        (dict(q=torch.zeros(4, 8, dtype=torch.long), p_pos=torch.zeros(4, 8)), "floating"),
        (dict(q=torch.zeros(4, 8), p_pos=torch.zeros(4, 8), tau=0.0), "tau"),
        (dict(q=torch.zeros(4, 8), p_pos=torch.zeros(4, 8), tau=float("nan")), "tau"),
        (dict(q=torch.zeros(4, 8), p_pos=torch.zeros(4, 8), mixed_neg=torch.zeros(3, 1, 8)), "mixed_neg"),
        (dict(q=torch.zeros(1, 8), p_pos=torch.zeros(1, 8)), "B = 1"),
    ],
)
def test_shape_and_argument_errors_are_clear(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        info_nce_loss(**kwargs)
    assert "infonce.py" in str(e.value)
