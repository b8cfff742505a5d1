"""kalm_lib/losses/matryoshka.py against a naive truncate-normalise-weight-sum loop (PAPER.md §1 MRL mechanics)."""

import pytest
import torch

from kalm_lib.losses import (DEFAULT_MATRYOSHKA_DIMS, DEFAULT_MATRYOSHKA_WEIGHTS, distill_kl_loss,
                             focal_info_nce_loss, info_nce_loss, matryoshka_loss, truncate_normalize)


# The naive loop references, all in tests/reference.py (pytest puts tests/ on sys.path).
import reference as R  # noqa: E402

B, M, D = 3, 2, 12
DIMS, WEIGHTS = (12, 8, 4, 2), (1.0, 0.3, 0.2, 0.1)


def test_defaults_are_the_papers():
    assert DEFAULT_MATRYOSHKA_DIMS == (896, 512, 256, 128, 64)
    assert DEFAULT_MATRYOSHKA_WEIGHTS == (1.0, 0.3, 0.2, 0.1, 0.1)


def test_infonce_under_matryoshka_matches_naive_loop():
    q, p, n = R.raw(B, D, seed=1), R.raw(B, D, seed=2), R.raw(B, M, D, seed=3)

    def ref(q, p, n):
        return sum(w * R.ref_infonce(R.trunc(q, d), R.trunc(p, d), R.trunc(n, d), 0.2) for d, w in zip(DIMS, WEIGHTS))

    R.assert_same_value_and_grad(
        lambda q, p, n: matryoshka_loss(info_nce_loss, q, p, n, dims=DIMS, weights=WEIGHTS, tau=0.2), ref, [q, p, n])


def test_focal_with_mixed_negatives_under_matryoshka_matches_naive_loop():
    q, p, n, mx = R.raw(B, D, seed=4), R.raw(B, D, seed=5), R.raw(B, M, D, seed=6), R.raw(B, 2, D, seed=7)

    def impl(q, p, n, mx):
        return matryoshka_loss(lambda q, p, n, mx: focal_info_nce_loss(q, p, n, gamma=2.0, tau=0.3, mixed_neg=mx),
                               q, p, n, mx, dims=DIMS, weights=WEIGHTS)

    def ref(q, p, n, mx):
        return sum(w * R.ref_focal(R.trunc(q, d), R.trunc(p, d), R.trunc(n, d), gamma=2.0, tau=0.3,
                                   mixed=R.trunc(mx, d)) for d, w in zip(DIMS, WEIGHTS))

    R.assert_same_value_and_grad(impl, ref, [q, p, n, mx])


def test_kl_under_matryoshka_matches_naive_loop():
    q, p, n = R.raw(B, D, seed=8), R.raw(B, D, seed=9), R.raw(B, M, D, seed=10)
    t = torch.rand(B, 1 + M, generator=torch.Generator().manual_seed(0), dtype=R.DT)

    def ref(q, p, n):
        return sum(w * R.ref_kl(R.trunc(q, d), R.trunc(p, d), R.trunc(n, d), t, tau_kd=0.1)
                   for d, w in zip(DIMS, WEIGHTS))

    R.assert_same_value_and_grad(
        lambda q, p, n: matryoshka_loss(lambda q, p, n: distill_kl_loss(q, p, n, t, tau_kd=0.1), q, p, n,
                                        dims=DIMS, weights=WEIGHTS), ref, [q, p, n])


def test_one_full_dim_with_weight_one_is_the_plain_loss():
    # raw inputs: the plain loss sees them L2-normalised, as the model path does
    q, p, n = R.raw(B, D, seed=11), R.raw(B, D, seed=12), R.raw(B, M, D, seed=13)
    a = matryoshka_loss(info_nce_loss, q, p, n, dims=(D,), weights=(1.0,), tau=0.05)
    b = info_nce_loss(*(x / x.norm(dim=-1, keepdim=True) for x in (q, p, n)), tau=0.05)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    for ga, gb in zip(torch.autograd.grad(a, [q, p, n]), torch.autograd.grad(b, [q, p, n])):
        torch.testing.assert_close(ga, gb, atol=1e-10, rtol=0)


def test_weights_default_to_one_when_only_dims_are_given():
    q, p = R.unit(B, D, seed=14), R.unit(B, D, seed=15)
    a = matryoshka_loss(info_nce_loss, q, p, None, dims=(12, 4), weights=None, tau=0.1)
    b = sum(info_nce_loss(truncate_normalize(q, d), truncate_normalize(p, d), tau=0.1) for d in (12, 4))
    torch.testing.assert_close(a, b)


def test_truncate_normalize_is_scale_invariant_and_unit_norm():
    x = R.raw(5, D, seed=16, requires_grad=False)
    y = truncate_normalize(x, 4)
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(5, dtype=R.DT))
    torch.testing.assert_close(truncate_normalize(x / x.norm(dim=-1, keepdim=True), 4), y)
    assert truncate_normalize(x.to(torch.bfloat16), 4).dtype == torch.float32


@pytest.mark.parametrize(
    "dims, weights, match",
    [
        ((13, 4), (1.0, 1.0), "13 is larger than the embedding size 12"),
        ((), (), "at least one"),
        ((8, 4), (1.0,), "one weight per dim"),
        ((8, 0), (1.0, 1.0), "positive ints"),
        ((8, 8), (1.0, 1.0), "distinct"),
        ((8, 4.5), (1.0, 1.0), "positive ints"),
        ((8, 4), (1.0, -1.0), ">= 0"),
    ],
)
def test_dim_and_weight_errors_are_clear(dims, weights, match):
    q, p = R.unit(B, D, seed=17), R.unit(B, D, seed=18)
    with pytest.raises(ValueError, match=match) as e:
        matryoshka_loss(info_nce_loss, q, p, dims=dims, weights=weights)
    assert "matryoshka.py" in str(e.value)


def test_embeddings_with_different_sizes_are_rejected():
    with pytest.raises(ValueError, match="share the last dim"):
        matryoshka_loss(info_nce_loss, torch.zeros(2, 8), torch.zeros(2, 6), dims=(4,))
