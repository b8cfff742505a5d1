"""The naive references of tests/reference.py pinned to hand-computed values (so a wrong reference cannot hide a
wrong implementation)."""

import math

import torch

from reference import DT, ref_focal, ref_infonce, ref_kl


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
