"""The naive references every test compares the library against, in one place (not a test file: pytest does not
collect it). Test files import it as ``import reference as R``: pytest puts tests/ on sys.path (rootdir-relative
"prepend" import mode, tests/ has no __init__.py), and tests/two_process_step.py does the same by hand.

* Losses (PAPER.md §2): python loops over queries and candidates with scalar torch ops (float64), so autograd gives
  reference gradients too; written from the paper, independently of kalm_lib.losses. ``naive_objective`` composes
  them the way kalm_lib/losses/objective.py must: α_cl · Σ_d w_d focal + α_kd · Σ_d w_d KL.
* Mining (PAPER.md §3.1): ``ref_mining`` scores every candidate by brute force and ranks by sorting.
* Teacher scores: ``finite_teacher_mask`` says which candidates may be distillation targets.

tests/test_losses_reference.py pins these references themselves to hand-computed values.
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
def candidate_logits(q, p_pos, p_neg, tau, hard=True, expanded=False, mixed=None, own_only=None):
    """Per query i: (logit of the positive, list of all logits in Z_i) — PAPER.md §2.1 Z_i. A query with
    ``own_only[i]`` (labelled classification/clustering data) sees only its own positive, hard negatives, mixes."""
    B = q.shape[0]
    rows = []
    for i in range(B):
        own = bool(own_only[i]) if own_only is not None else False
        others = [i] if own else range(B)
        terms = [dot(q[i], p_pos[j]) / tau for j in others]  # j = i is the positive
        if hard and p_neg is not None:
            for j in others:
                for k in range(p_neg.shape[1]):
                    terms.append(dot(q[i], p_neg[j, k]) / tau)
        if mixed is not None:
            for r in range(mixed.shape[1]):
                terms.append(dot(q[i], mixed[i, r]) / tau)
        if expanded and not own:
            terms += [dot(q[i], q[j]) / tau for j in range(B) if j != i]
            terms += [dot(p_pos[i], p_pos[j]) / tau for j in range(B) if j != i]
        rows.append((dot(q[i], p_pos[i]) / tau, terms))
    return rows


def ref_infonce(q, p_pos, p_neg=None, tau=0.01, hard=True, expanded=False, mixed=None, own_only=None):
    total = 0
    rows = candidate_logits(q, p_pos, p_neg, tau, hard, expanded, mixed, own_only)
    for pos, terms in rows:
        z = sum(torch.exp(t) for t in terms)
        total = total - torch.log(torch.exp(pos) / z)
    return total / len(rows)


def ref_focal(q, p_pos, p_neg=None, gamma=0.5, tau=0.01, hard=True, expanded=False, mixed=None, detach=False,
              own_only=None):
    total = 0
    rows = candidate_logits(q, p_pos, p_neg, tau, hard, expanded, mixed, own_only)
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


def naive_objective(q, p, n, t, mask, j, k, lam, c):
    """objective.py's L from the loops above; ``c`` holds the ObjectiveConfig fields (mixing on, expanded negatives,
    Matryoshka dims and weights), ``j, k, lam`` the pairwise mixes. Returns (L, Σ_d w_d focal, Σ_d w_d KL) with
    L = α_cl · Σ_d w_d focal + α_kd · Σ_d w_d KL (α_cl = contrastive_weight, α_kd = distill_weight)."""
    full = q.shape[-1]
    qn, nn = trunc(q, full), trunc(n, full)  # mixing on full-dim unit vectors, before truncation
    mixed = torch.cat([ref_pairwise_mix(nn, j, k, lam), ref_listwise_mix(qn, nn, c["tau_mix"])], dim=1)
    cl = kd = 0
    for d, w in zip(c["matryoshka_dims"], c["matryoshka_weights"]):
        qd, pd, nd, md = trunc(q, d), trunc(p, d), trunc(n, d), trunc(mixed, d)
        cl = cl + w * ref_focal(qd, pd, nd, gamma=c["gamma"], tau=c["tau"], expanded=True, mixed=md)
        kd = kd + w * ref_kl(qd, pd, nd, t, mask, tau_kd=c["tau_kd"])
    return c["contrastive_weight"] * cl + c["distill_weight"] * kd, cl, kd


def finite_teacher_mask(rows, width):
    """Which (query, candidate) teacher scores may be a distillation target: given and finite (math.isfinite)."""
    return torch.tensor([[s is not None and c < len(s) and math.isfinite(float(s[c])) for c in range(width)]
                         for s in rows], dtype=torch.bool)


# ---------------------------------------------------------------------------------------------- mining
def ref_mining(records, docs, enc, a, b):
    """Brute force (PAPER.md §3.1): score every candidate (records' pos/neg, then ``docs``), sort by (−s, first
    appearance), drop the query's positives and the query text itself. Per record: the pool = ranks [a, b) of the
    others, rank = 1 + #{others scoring strictly above s⁺}, s⁺ = max over the record's positives, and every score."""
    cand = list(dict.fromkeys([t for r in records for t in r["pos"] + r.get("neg", [])] + docs))
    C = enc(cand)
    out = []
    for r in records:
        q = enc([r["query"]])[0]
        s = C @ q
        order = sorted(range(len(cand)), key=lambda i: (-s[i], i))
        others = [i for i in order if cand[i] not in r["pos"] and cand[i] != r["query"]]
        s_plus = max(s[cand.index(p)] for p in r["pos"])
        rank = 1 + sum(s[i] > s_plus for i in others)
        out.append({"pool": [cand[i] for i in others[a:b]], "rank": rank, "s_plus": float(s_plus),
                    "score": {t: float(s[i]) for i, t in enumerate(cand)}})
    return out
