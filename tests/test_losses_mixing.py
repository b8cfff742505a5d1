"""kalm_lib/losses/hard_negative_mixing.py against naive loops and distribution checks (PAPER.md §2.3)."""

import pytest
import torch

from kalm_lib.losses import (focal_info_nce_loss, info_nce_loss, listwise_mix, mix_hard_negatives, pairwise_mix,
                             sample_pairwise_mix)


# The naive loop references, all in tests/reference.py (pytest puts tests/ on sys.path).
import reference as R  # noqa: E402

B, M, D = 4, 5, 8


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("k, listwise", [(3, False), (0, True), (2, True)])
def test_mixing_matches_naive_loop(k, listwise):
    q, n = R.unit(B, D, seed=1), R.unit(B, M, D, seed=2)
    j, kk, lam = sample_pairwise_mix(B, M, k, alpha=2.0, generator=gen(7), dtype=R.DT) if k else (None,) * 3
    w = torch.randn(B, k + listwise, D, generator=gen(3), dtype=R.DT)  # a generic scalar of the mixes

    def impl(q, n):
        return (mix_hard_negatives(q, n, k_pairwise=k, listwise=listwise, generator=gen(7), tau_mix=0.3) * w).sum()

    def ref(q, n):
        parts = []
        if k:
            parts.append(R.ref_pairwise_mix(n, j, kk, lam))
        if listwise:
            parts.append(R.ref_listwise_mix(q, n, 0.3))
        return (torch.cat(parts, dim=1) * w).sum()

    R.assert_same_value_and_grad(impl, ref, [q, n])


def test_mixed_negatives_in_the_loss_match_naive_loop():
    q, p, n = R.unit(B, D, seed=4), R.unit(B, D, seed=5), R.unit(B, M, D, seed=6)
    j, kk, lam = sample_pairwise_mix(B, M, 2, generator=gen(11), dtype=R.DT)

    def impl(q, p, n):
        mixed = mix_hard_negatives(q, n, k_pairwise=2, listwise=True, generator=gen(11))
        return focal_info_nce_loss(q, p, n, gamma=1.0, tau=0.2, mixed_neg=mixed)

    def ref(q, p, n):
        mixed = torch.cat([R.ref_pairwise_mix(n, j, kk, lam), R.ref_listwise_mix(q, n, 0.05)], dim=1)
        return R.ref_focal(q, p, n, gamma=1.0, tau=0.2, mixed=mixed)

    R.assert_same_value_and_grad(impl, ref, [q, p, n])


def test_mixes_are_unit_norm_and_use_only_the_querys_own_negatives():
    q, n = R.unit(B, D, seed=8, requires_grad=False), R.unit(B, M, D, seed=9, requires_grad=False)
    mixed = mix_hard_negatives(q, n, k_pairwise=4, listwise=True, generator=gen(1))
    assert mixed.shape == (B, 5, D)
    torch.testing.assert_close(mixed.norm(dim=-1), torch.ones(B, 5, dtype=R.DT))
    # mix_i lies in the span of query i's negatives: the least-squares residual is 0
    for i in range(B):
        basis = n[i].T  # (D, M)
        coef = torch.linalg.lstsq(basis, mixed[i].T).solution
        assert torch.allclose(basis @ coef, mixed[i].T, atol=1e-10)
        other = n[(i + 1) % B].T
        assert not torch.allclose(other @ torch.linalg.lstsq(other, mixed[i].T).solution, mixed[i].T, atol=1e-3)


def test_pair_sampling_is_distinct_uniform_and_lambda_is_beta_2_2():
    j, k, lam = sample_pairwise_mix(200, 4, 100, alpha=2.0, generator=gen(0), dtype=R.DT)
    assert (j != k).all() and j.min() == 0 and k.max() == 3
    counts = torch.bincount((j * 4 + k).flatten(), minlength=16).reshape(4, 4)
    assert counts.diagonal().sum() == 0
    off = counts[~torch.eye(4, dtype=torch.bool)].double()
    assert (off / off.mean() - 1).abs().max() < 0.05  # 12 ordered pairs, ~1667 each
    assert (lam > 0).all() and (lam < 1).all()
    # Beta(2,2): mean 1/2, var 1/20 (uniform would give 1/12, Beta(1/2,1/2) 1/8)
    assert abs(lam.mean().item() - 0.5) < 0.01 and abs(lam.var().item() - 0.05) < 0.003
    _, _, lam5 = sample_pairwise_mix(200, 4, 100, alpha=5.0, generator=gen(0), dtype=R.DT)
    assert abs(lam5.var().item() - 1 / 44) < 0.002  # Beta(5,5): var = 25/(100·11)


def test_seeded_generator_reproduces_and_other_seed_differs():
    q, n = R.unit(B, D, seed=10, requires_grad=False), R.unit(B, M, D, seed=11, requires_grad=False)
    a = mix_hard_negatives(q, n, k_pairwise=3, generator=gen(5))
    b = mix_hard_negatives(q, n, k_pairwise=3, generator=gen(5))
    c = mix_hard_negatives(q, n, k_pairwise=3, generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_k_zero_is_no_mixing_exactly():
    q, p, n = R.unit(B, D, seed=12), R.unit(B, D, seed=13), R.unit(B, M, D, seed=14)
    mixed = mix_hard_negatives(q, n, k_pairwise=0, listwise=False, generator=gen(0))
    assert mixed.shape == (B, 0, D)
    a = info_nce_loss(q, p, n, tau=0.05, mixed_neg=mixed)
    b = info_nce_loss(q, p, n, tau=0.05)
    assert torch.equal(a, b)
    for ga, gb in zip(torch.autograd.grad(a, [q, p, n]), torch.autograd.grad(b, [q, p, n])):
        assert torch.equal(ga, gb)


def test_mixing_adds_harder_negatives_so_the_loss_grows():
    q, p, n = R.unit(B, D, seed=15), R.unit(B, D, seed=16), R.unit(B, M, D, seed=17)
    mixed = mix_hard_negatives(q, n, k_pairwise=2, listwise=True, generator=gen(0))
    assert info_nce_loss(q, p, n, tau=0.05, mixed_neg=mixed) > info_nce_loss(q, p, n, tau=0.05)


def test_detach_stops_gradient_into_mixes():
    q, n = R.unit(B, D, seed=18), R.unit(B, M, D, seed=19)
    assert mix_hard_negatives(q, n, k_pairwise=2, listwise=True, generator=gen(0)).requires_grad
    assert not mix_hard_negatives(q, n, k_pairwise=2, listwise=True, generator=gen(0), detach=True).requires_grad


def test_listwise_weights_follow_similarity():
    # a very small τ_mix makes the list-wise mix the query's most similar negative
    q, n = R.unit(B, D, seed=20, requires_grad=False), R.unit(B, M, D, seed=21, requires_grad=False)
    mix = listwise_mix(q, n, tau_mix=1e-4)[:, 0]
    best = torch.einsum("bd,bmd->bm", q, n).argmax(dim=1)
    torch.testing.assert_close(mix, n[torch.arange(B), best])
    # and pairwise_mix with λ = 1 returns n_j itself
    j = torch.zeros(B, 1, dtype=torch.long)
    torch.testing.assert_close(pairwise_mix(n, j, j + 1, torch.ones(B, 1, dtype=R.DT))[:, 0], n[:, 0])


def test_bfloat16_mixing_is_float32_and_finite():
    q, n = R.unit(B, D, seed=22, dtype=torch.bfloat16), R.unit(B, M, D, seed=23, dtype=torch.bfloat16)
    mixed = mix_hard_negatives(q, n, k_pairwise=2, listwise=True, generator=gen(0))
    assert mixed.dtype == torch.float32
    mixed.sum().backward()
    assert torch.isfinite(q.grad.float()).all() and torch.isfinite(n.grad.float()).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k_pairwise=2, n=torch.zeros(4, 1, 8)), "at least 2"),
        (dict(k_pairwise=-1), "k_pairwise"),
        (dict(k_pairwise=1.5), "k_pairwise"),
        (dict(k_pairwise=1, alpha=0.0), "alpha"),
        (dict(listwise=True, tau_mix=-1.0), "tau_mix"),
        (dict(listwise=True, n=torch.zeros(4, 0, 8)), "at least 1"),
        (dict(n=torch.zeros(4, 8)), "p_neg"),
        (dict(n=torch.zeros(3, 2, 8)), "p_neg"),
    ],
)
def test_argument_errors_are_clear(kwargs, match):
    n = kwargs.pop("n", torch.zeros(4, 3, 8))
    with pytest.raises(ValueError, match=match) as e:
        mix_hard_negatives(torch.zeros(4, 8), n, **kwargs)
    assert "hard_negative_mixing.py" in str(e.value)
