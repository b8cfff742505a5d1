"""kalm_lib/losses/distillation.py against the naive loop reference (PAPER.md §2.4)."""

import pytest
import torch
import torch.nn.functional as F

from kalm_lib.losses import distill_kl_loss


# The naive loop references, all in tests/reference.py (pytest puts tests/ on sys.path).
import reference as R  # noqa: E402

B, M, D = 4, 3, 8


def teacher(seed, b=B, m=M):
    return torch.rand(b, 1 + m, generator=torch.Generator().manual_seed(seed), dtype=R.DT) * 0.6 + 0.2


@pytest.mark.parametrize("tau_kd", [0.05, 0.3])
def test_kl_matches_naive_loop(tau_kd):
    q, p, n, t = R.unit(B, D, seed=1), R.unit(B, D, seed=2), R.unit(B, M, D, seed=3), teacher(4)
    R.assert_same_value_and_grad(lambda q, p, n: distill_kl_loss(q, p, n, t, tau_kd=tau_kd),
                                 lambda q, p, n: R.ref_kl(q, p, n, t, tau_kd=tau_kd), [q, p, n])


def test_default_temperature_is_the_papers_005():
    """PAPER.md §2.4 (ablation "Mid = 0.05 best"): distill_kl_loss without tau_kd is KL at τ_kd = 0.05."""
    import inspect

    assert inspect.signature(distill_kl_loss).parameters["tau_kd"].default == 0.05
    q, p, n, t = R.unit(B, D, seed=41), R.unit(B, D, seed=42), R.unit(B, M, D, seed=43), teacher(44)
    R.assert_same_value_and_grad(lambda q, p, n: distill_kl_loss(q, p, n, t),
                                 lambda q, p, n: R.ref_kl(q, p, n, t, tau_kd=0.05), [q, p, n])


def test_kl_with_partial_and_empty_rows_matches_naive_loop():
    q, p, n, t = R.unit(B, D, seed=5), R.unit(B, D, seed=6), R.unit(B, M, D, seed=7), teacher(8)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    t = t.masked_fill(~mask, float("nan"))  # missing scores may be NaN: the mask, not the value, decides
    R.assert_same_value_and_grad(lambda q, p, n: distill_kl_loss(q, p, n, t, mask, tau_kd=0.1),
                                 lambda q, p, n: R.ref_kl(q, p, n, t, mask, tau_kd=0.1), [q, p, n])


def test_empty_rows_do_not_count_in_the_mean():
    q, p, n, t = R.unit(B, D, seed=9), R.unit(B, D, seed=10), R.unit(B, M, D, seed=11), teacher(12)
    full = distill_kl_loss(q[:2], p[:2], n[:2], t[:2])
    mask = torch.zeros(B, 1 + M, dtype=torch.bool)
    mask[:2] = True
    torch.testing.assert_close(distill_kl_loss(q, p, n, t, mask), full)


def test_no_scores_at_all_gives_zero_with_zero_gradient():
    q, p, n, t = R.unit(B, D, seed=13), R.unit(B, D, seed=14), R.unit(B, M, D, seed=15), teacher(16)
    loss = distill_kl_loss(q, p, n, t, torch.zeros(B, 1 + M, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert q.grad is not None and (q.grad == 0).all()


def test_one_hot_teacher_reduces_kl_to_cross_entropy_on_the_positive():
    q, p, n = R.unit(B, D, seed=17), R.unit(B, D, seed=18), R.unit(B, M, D, seed=19)
    sharp = torch.zeros(B, 1 + M, dtype=R.DT)
    sharp[:, 0] = 100.0  # e^{-100/0.05} = 0 in float64: P_t is exactly one-hot
    kl = distill_kl_loss(q, p, n, sharp, tau_kd=0.05)
    student = torch.cat([(q * p).sum(-1, keepdim=True), torch.einsum("bd,bmd->bm", q, n)], dim=1) / 0.05
    ce = F.cross_entropy(student, torch.zeros(B, dtype=torch.long))
    torch.testing.assert_close(kl, ce, atol=1e-10, rtol=0)
    for a, b in zip(torch.autograd.grad(kl, [q, p, n]), torch.autograd.grad(ce, [q, p, n])):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


def test_direction_is_teacher_to_student():
    # a sharp teacher and a flat student: KL(P_t‖P_s) and KL(P_s‖P_t) differ a lot
    q = torch.tensor([[1.0, 0.0]], dtype=R.DT)
    p = torch.tensor([[0.0, 1.0]], dtype=R.DT)
    n = torch.tensor([[[0.0, -1.0], [0.0, 1.0]]], dtype=R.DT)  # all student scores 0 → P_s uniform
    t = torch.tensor([[1.0, 0.0, 0.0]], dtype=R.DT)
    pt = torch.softmax(t / 0.5, dim=1)
    forward = (pt * (pt.log() - torch.log(torch.full_like(pt, 1 / 3)))).sum()
    reverse = (torch.full_like(pt, 1 / 3) * (torch.log(torch.full_like(pt, 1 / 3)) - pt.log())).sum()
    got = distill_kl_loss(q, p, n, t, tau_kd=0.5)
    torch.testing.assert_close(got, forward, atol=1e-12, rtol=0)
    assert abs(got.item() - reverse.item()) > 1e-2


def test_teacher_equal_to_student_gives_zero():
    q, p, n = R.unit(B, D, seed=20), R.unit(B, D, seed=21), R.unit(B, M, D, seed=22)
    t = torch.cat([(q * p).sum(-1, keepdim=True), torch.einsum("bd,bmd->bm", q, n)], dim=1).detach()
    assert abs(distill_kl_loss(q, p, n, t).item()) < 1e-12


def test_bfloat16_and_tau_kd_stability():
    q, p, n = (R.unit(*s, seed=23 + i, dtype=torch.bfloat16) for i, s in enumerate([(B, D), (B, D), (B, M, D)]))
    t = teacher(26).to(torch.bfloat16)
    loss = distill_kl_loss(q, p, n, t, tau_kd=0.01)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(x.grad.float()).all() for x in (q, p, n))


def test_no_hard_negatives_means_a_single_candidate_and_zero_kl():
    q, p = R.unit(B, D, seed=27), R.unit(B, D, seed=28)
    assert distill_kl_loss(q, p, None, teacher(29, m=0)).item() == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(t=torch.zeros(4, 3)), "teacher_scores.*\\(4, 4\\)"),
        (dict(t=torch.zeros(4, 4, dtype=torch.long)), "teacher_scores"),
        (dict(t=torch.full((4, 4), float("nan"))), "non-finite.*query 0, candidate 0"),
        (dict(mask=torch.ones(4, 4, dtype=torch.bool), t=torch.tensor([[0.0] * 4] * 3 + [[0, 0, float("inf"), 0]])),
         "query 3, candidate 2"),
        (dict(mask=torch.ones(4, 4)), "teacher_mask.*bool"),
        (dict(mask=torch.ones(4, 3, dtype=torch.bool)), "teacher_mask.*shape"),
        (dict(tau_kd=0.0), "tau_kd"),
    ],
)
def test_argument_errors_are_clear(kwargs, match):
    t = kwargs.pop("t", torch.zeros(4, 4))
    mask = kwargs.pop("mask", None)
    with pytest.raises(ValueError, match=match) as e:
        distill_kl_loss(torch.zeros(4, 8), torch.zeros(4, 8), torch.zeros(4, 3, 8), t, mask, **kwargs)
    assert "distillation.py" in str(e.value)
