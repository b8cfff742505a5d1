"""kalm_lib/losses/focal.py against the naive loop reference (PAPER.md §2.2)."""

import pytest
import torch

from kalm_lib.losses import focal_from_logits, focal_info_nce_loss, info_nce_loss, infonce_logits


# The naive loop references, all in tests/reference.py (pytest puts tests/ on sys.path).
import reference as R  # noqa: E402

B, M, K, D = 4, 3, 2, 8


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("with_mixed", [False, True])
def test_focal_matches_naive_loop(gamma, detach, with_mixed):
    q, p, n, mx = R.unit(B, D, seed=1), R.unit(B, D, seed=2), R.unit(B, M, D, seed=3), R.unit(B, K, D, seed=4)
    tau = 0.5  # moderate p_i, so that (1 − p)^γ is far from both 0 and 1
    mixed = mx if with_mixed else None
    R.assert_same_value_and_grad(
        lambda q, p, n, m: focal_info_nce_loss(q, p, n, gamma=gamma, tau=tau, detach_weight=detach, mixed_neg=m),
        lambda q, p, n, m: R.ref_focal(q, p, n, gamma=gamma, tau=tau, mixed=m, detach=detach),
        [q, p, n, mixed],
    )


def test_focal_expanded_and_pretraining_options():
    q, p, n = R.unit(B, D, seed=5), R.unit(B, D, seed=6), R.unit(B, M, D, seed=7)
    R.assert_same_value_and_grad(
        lambda q, p, n: focal_info_nce_loss(q, p, n, gamma=1.5, tau=0.3, expanded_negatives=True,
                                            use_hard_negatives=False),
        lambda q, p, n: R.ref_focal(q, p, n, gamma=1.5, tau=0.3, hard=False, expanded=True),
        [q, p, n],
    )


def test_detach_changes_the_gradient_but_not_the_value():
    q, p, n = R.unit(B, D, seed=8), R.unit(B, D, seed=9), R.unit(B, M, D, seed=10)
    a = focal_info_nce_loss(q, p, n, gamma=2.0, tau=0.5)
    b = focal_info_nce_loss(q, p, n, gamma=2.0, tau=0.5, detach_weight=True)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(torch.autograd.grad(a, q)[0], torch.autograd.grad(b, q)[0])


@pytest.mark.parametrize("expanded", [False, True])
def test_gamma_zero_is_infonce_exactly(expanded):
    q, p, n, mx = R.unit(B, D, seed=11), R.unit(B, D, seed=12), R.unit(B, M, D, seed=13), R.unit(B, K, D, seed=14)
    a = focal_info_nce_loss(q, p, n, gamma=0.0, tau=0.05, mixed_neg=mx, expanded_negatives=expanded)
    b = info_nce_loss(q, p, n, tau=0.05, mixed_neg=mx, expanded_negatives=expanded)
    assert torch.equal(a, b)
    for ga, gb in zip(torch.autograd.grad(a, [q, p, n, mx]), torch.autograd.grad(b, [q, p, n, mx])):
        assert torch.equal(ga, gb)


def test_weights_and_probabilities_are_reported():
    q, p, n = R.unit(B, D, seed=15), R.unit(B, D, seed=16), R.unit(B, M, D, seed=17)
    loss, w, prob = focal_from_logits(infonce_logits(q, p, n, tau=0.5), gamma=2.0)
    rows = R.candidate_logits(q, p, n, 0.5)
    for i, (pos, terms) in enumerate(rows):
        pi = torch.exp(pos) / sum(torch.exp(t) for t in terms)
        torch.testing.assert_close(prob[i], pi)
        torch.testing.assert_close(w[i], (1 - pi) ** 2)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tau_001_positive_probability_near_one_stays_finite(gamma, dtype):
    # q_i = p_i exactly: at τ = 0.01 p_i rounds to 1 in float32, where d(1−p)^γ/dp is infinite for γ < 1
    q = R.unit(B, D, seed=18, requires_grad=False)
    q = q.to(dtype).requires_grad_(True)
    p = q.detach().clone().requires_grad_(True)
    n = R.unit(B, M, D, seed=19, dtype=dtype)
    loss = focal_info_nce_loss(q, p, n, gamma=gamma, tau=0.01)
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and all(torch.isfinite(t.grad.float()).all() for t in (q, p, n))


@pytest.mark.parametrize("gamma", [-0.5, float("nan"), True, "1"])
def test_bad_gamma_is_rejected(gamma):
    with pytest.raises(ValueError, match="gamma") as e:
        focal_info_nce_loss(torch.zeros(2, 4), torch.zeros(2, 4), gamma=gamma)
    assert "focal.py" in str(e.value)
