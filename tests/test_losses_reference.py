"""Naive, loop-based references for kalm_lib.losses (written from PAPER.md §2, independently of the package).

Every reference works on python loops over queries and candidates with scalar torch ops (float64), so autograd
gives reference gradients too. The tests at the bottom pin the references themselves to hand-computed values.
Other test_losses_*.py files import this module as `R` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import math

import torch

DT = torch.float64


# ---------------------------------------------------------------------------------------------- inputs
def unit(*shape, seed: int, dtype=DT, requires_grad=True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    x = x / x.norm(dim=-1, keepdim=True)
    return x.requires_grad_(requires_grad)


def raw(*shape, seed: int, dtype=DT, requires_grad=True) -> torch.Tensor:
    """Un-normalised embeddings with very different norms per row (so a forgotten normalisation shows)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype) * (0.3 + 3 * torch.rand(*shape[:-1], 1, generator=g, dtype=dtype))
    return x.requires_grad_(requires_grad)


def dot(a, b):
    return (a * b).sum()


def normalise(v):
    return v / torch.sqrt((v * v).sum())


def assert_same_value_and_grad(f_impl, f_ref, inputs, atol=1e-6):
    """f(*inputs) → scalar; compare values and d/d(inputs) of the implementation and the reference."""
    leaves_a = [x.detach().clone().requires_grad_(True) if x is not None else None for x in inputs]
    leaves_b = [x.detach().clone().requires_grad_(True) if x is not None else None for x in inputs]
    va, vb = f_impl(*leaves_a), f_ref(*leaves_b)
    torch.testing.assert_close(va.detach().to(DT), vb.detach().to(DT), atol=atol, rtol=0)
    present_a = [x for x in leaves_a if x is not None]
    present_b = [x for x in leaves_b if x is not None]
    ga = torch.autograd.grad(va, present_a, allow_unused=True)
    gb = torch.autograd.grad(vb, present_b, allow_unused=True)
    for x, a, b in zip(present_a, ga, gb):
        a = torch.zeros_like(x) if a is None else a
        b = torch.zeros_like(x) if b is None else b
        torch.testing.assert_close(a.to(DT), b.to(DT), atol=atol, rtol=0)
    return va, vb


# ---------------------------------------------------------------------------------------------- references
def candidate_logits(q, p_pos, p_neg, tau, hard=True, expanded=False, mixed=None):
    """Per query i: (logit of the positive, list of all logits in Z_i) — PAPER.md §2.1 Z_i."""
    B = q.shape[0]
    rows = []
    for i in range(B):
        terms = [dot(q[i], p_pos[j]) / tau for j in range(B)]  # j = i is the positive
        if hard and p_neg is not None:
            for j in range(B):
                for k in range(p_neg.shape[1]):
                    terms.append(dot(q[i], p_neg[j, k]) / tau)
        if mixed is not None:
            for r in range(mixed.shape[1]):
                terms.append(dot(q[i], mixed[i, r]) / tau)
        if expanded:
            terms += [dot(q[i], q[j]) / tau for j in range(B) if j != i]
            terms += [dot(p_pos[i], p_pos[j]) / tau for j in range(B) if j != i]
        rows.append((dot(q[i], p_pos[i]) / tau, terms))
    return rows


def ref_infonce(q, p_pos, p_neg=None, tau=0.01, hard=True, expanded=False, mixed=None):
    total = 0
    rows = candidate_logits(q, p_pos, p_neg, tau, hard, expanded, mixed)
    for pos, terms in rows:
        z = sum(torch.exp(t) for t in terms)
        total = total - torch.log(torch.exp(pos) / z)
    return total / len(rows)


def ref_focal(q, p_pos, p_neg=None, gamma=0.5, tau=0.01, hard=True, expanded=False, mixed=None, detach=False):
    total = 0
    rows = candidate_logits(q, p_pos, p_neg, tau, hard, expanded, mixed)
    for pos, terms in rows:
        p = torch.exp(pos) / sum(torch.exp(t) for t in terms)
        w = (1 - p) ** gamma
        if detach:
            w = w.detach()
        total = total + w * (-torch.log(p))
    return total / len(rows)


def ref_pairwise_mix(p_neg, j, k, lam):
    B, K = j.shape
    out = []
    for i in range(B):
        row = []
        for r in range(K):
            l = lam[i, r]
            row.append(normalise(l * p_neg[i, int(j[i, r])] + (1 - l) * p_neg[i, int(k[i, r])]))
        out.append(torch.stack(row) if row else p_neg.new_zeros(0, p_neg.shape[2]))
    return torch.stack(out)


def ref_listwise_mix(q, p_neg, tau_mix):
    out = []
    for i in range(q.shape[0]):
        e = [torch.exp(dot(q[i], p_neg[i, m]) / tau_mix) for m in range(p_neg.shape[1])]
        z = sum(e)
        v = sum((e[m] / z) * p_neg[i, m] for m in range(p_neg.shape[1]))
        out.append(normalise(v)[None])
    return torch.stack(out)


def ref_kl(q, p_pos, p_neg, teacher, mask=None, tau_kd=0.05):
    """mean over queries with ≥1 score of Σ_c P_t (log P_t − log P_s), over the valid own candidates."""
    B = q.shape[0]
    cands = lambda i: [p_pos[i]] + ([p_neg[i, m] for m in range(p_neg.shape[1])] if p_neg is not None else [])
    total, n = 0, 0
    for i in range(B):
        valid = [c for c in range(teacher.shape[1]) if mask is None or bool(mask[i, c])]
        if not valid:
            continue
        cs = cands(i)
        et = {c: math.exp(float(teacher[i, c]) / tau_kd) for c in valid}
        es = {c: torch.exp(dot(q[i], cs[c]) / tau_kd) for c in valid}
        zt, zs = sum(et.values()), sum(es.values())
        for c in valid:
            pt, ps = et[c] / zt, es[c] / zs
            if pt > 0:
                total = total + pt * (math.log(pt) - torch.log(ps))
        n += 1
    return total / n if n else torch.zeros((), dtype=DT)


def trunc(x, d):
    """x[..., :d] normalised, written as a loop over the leading axes."""
    flat = x.reshape(-1, x.shape[-1])
    rows = [normalise(flat[r, :d]) for r in range(flat.shape[0])]
    return torch.stack(rows).reshape(*x.shape[:-1], d)


# ---------------------------------------------------------------------------------------------- the references themselves
def test_ref_infonce_hand_value():
    # B = 2, d = 2, no hard negatives: q0·p0 = 1, q0·p1 = 0, q1·p1 = 1, q1·p0 = 0 → each −log(e^{1/τ}/(e^{1/τ}+1))
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT)
    tau = 0.5
    expect = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert abs(float(ref_infonce(q, q.clone(), None, tau)) - expect) < 1e-12
    # with γ = 1: weight 1 − p
    p = math.exp(2) / (math.exp(2) + 1)
    assert abs(float(ref_focal(q, q.clone(), None, gamma=1.0, tau=tau)) - (1 - p) * -math.log(p)) < 1e-12


def test_ref_kl_hand_value():
    q = torch.tensor([[1.0, 0.0]], dtype=DT)
    p_pos = torch.tensor([[1.0, 0.0]], dtype=DT)
    p_neg = torch.tensor([[[0.0, 1.0]]], dtype=DT)
    teacher = torch.tensor([[0.5, 0.5]], dtype=DT)  # uniform teacher
    tau = 1.0
    ps = math.exp(1) / (math.exp(1) + 1)
    expect = 0.5 * (math.log(0.5) - math.log(ps)) + 0.5 * (math.log(0.5) - math.log(1 - ps))
    assert abs(float(ref_kl(q, p_pos, p_neg, teacher, tau_kd=tau)) - expect) < 1e-12
