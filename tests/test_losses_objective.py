"""kalm_lib/losses/objective.py (the trainer's composite loss) against a naive composition of the loop references."""

import pytest
import torch

from kalm_lib.losses import KaLMObjective, ObjectiveConfig, info_nce_loss, sample_pairwise_mix


# The naive loop references, all in tests/reference.py (pytest puts tests/ on sys.path).
import reference as R  # noqa: E402

B, M, D = 3, 3, 12


def gen(seed):
    return torch.Generator().manual_seed(seed)


FULL = dict(tau=0.2, expanded_negatives=True, gamma=1.5, mix_pairwise=2, mix_listwise=True, tau_mix=0.3,
            contrastive_weight=1.0, distill_weight=0.7, tau_kd=0.1, matryoshka_dims=(12, 8, 4),
            matryoshka_weights=(1.0, 0.3, 0.2))


def _objective_against_naive(c, seed, mask):
    """KaLMObjective(c) against the naive composition: loss value and gradient, and the logged (unweighted) terms."""
    q, p, n = R.raw(B, D, seed=seed), R.raw(B, D, seed=seed + 1), R.raw(B, M, D, seed=seed + 2)
    t = torch.rand(B, 1 + M, generator=gen(seed + 3), dtype=R.DT)
    j, k, lam = sample_pairwise_mix(B, M, 2, alpha=2.0, generator=gen(seed + 4), dtype=R.DT)
    obj = KaLMObjective(ObjectiveConfig(**c))
    R.assert_same_value_and_grad(lambda q, p, n: obj(q, p, n, t, mask, generator=gen(seed + 4))["loss"],
                                 lambda q, p, n: R.naive_objective(q, p, n, t, mask, j, k, lam, c)[0], [q, p, n])
    out = obj(q, p, n, t, mask, generator=gen(seed + 4))
    _, cl, kd = R.naive_objective(q, p, n, t, mask, j, k, lam, c)
    torch.testing.assert_close(out["contrastive"], cl.detach())
    torch.testing.assert_close(out["distill"], kd.detach())
    return out, cl.detach(), kd.detach()


def test_full_objective_matches_naive_composition():
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    out, _, _ = _objective_against_naive(FULL, 1, mask)
    assert int(out["n_mixed"]) == 3
    assert not out["contrastive"].requires_grad and out["loss"].requires_grad


@pytest.mark.parametrize("alpha_cl, alpha_kd", [(0.4, 1.7), (2.5, 0.3)])
def test_loss_weights_alpha_cl_and_alpha_kd_are_both_applied(alpha_cl, alpha_kd):
    """L = α_cl · Σ_d w_d focal + α_kd · Σ_d w_d KL with neither weight 1 (every profile uses 1:1, which would hide a
    dropped α_cl); the logged terms stay unweighted by α."""
    c = {**FULL, "contrastive_weight": alpha_cl, "distill_weight": alpha_kd}
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 1]], dtype=torch.bool)
    out, cl, kd = _objective_against_naive(c, 31, mask)
    torch.testing.assert_close(out["loss"].detach(), alpha_cl * cl + alpha_kd * kd)


def test_distillation_temperature_default_is_the_papers_005():
    """PAPER.md §2.4: τ_kd = 0.05 ("Mid" of the ablation) is the objective's default, and it is what the loss uses."""
    assert ObjectiveConfig().tau_kd == 0.05
    q, p, n = R.raw(B, D, seed=36), R.raw(B, D, seed=37), R.raw(B, M, D, seed=38)
    t = torch.rand(B, 1 + M, generator=gen(39), dtype=R.DT)
    out = KaLMObjective(ObjectiveConfig(distill_weight=1.0))(q, p, n, t)
    unit = [R.trunc(x, D) for x in (q, p, n)]
    torch.testing.assert_close(out["distill"], R.ref_kl(*unit, t, tau_kd=0.05).detach())


def test_logged_focal_weight_and_positive_probability_at_full_dim():
    q, p, n = R.raw(B, D, seed=6), R.raw(B, D, seed=7), R.raw(B, M, D, seed=8)
    cfg = ObjectiveConfig(tau=0.3, gamma=2.0, matryoshka_dims=(8, 12, 4), matryoshka_weights=(1, 1, 1))
    out = KaLMObjective(cfg)(q, p, n)
    probs = []
    for pos, terms in R.candidate_logits(R.trunc(q, D), R.trunc(p, D), R.trunc(n, D), 0.3):
        probs.append(torch.exp(pos) / sum(torch.exp(x) for x in terms))
    probs = torch.stack(probs)
    torch.testing.assert_close(out["p_pos_mean"], probs.mean().detach())
    torch.testing.assert_close(out["focal_weight_mean"], ((1 - probs) ** 2).mean().detach())
    assert "distill" not in out


def test_default_config_is_plain_infonce_on_normalised_inputs():
    q, p, n = R.raw(B, D, seed=9), R.raw(B, D, seed=10), R.raw(B, M, D, seed=11)
    out = KaLMObjective(ObjectiveConfig())(q, p, n)
    expect = info_nce_loss(*(x / x.norm(dim=-1, keepdim=True) for x in (q, p, n)), tau=0.01)
    torch.testing.assert_close(out["loss"], expect, atol=1e-12, rtol=0)
    assert out["focal_weight_mean"].item() == 1.0


def test_pretraining_config_ignores_hard_negatives():
    q, p, n = R.raw(B, D, seed=12), R.raw(B, D, seed=13), R.raw(B, M, D, seed=14)
    obj = KaLMObjective(ObjectiveConfig(use_hard_negatives=False, tau=0.1))
    torch.testing.assert_close(obj(q, p, n)["loss"], obj(q, p, None)["loss"])


def test_k_zero_equals_no_mixing_in_the_objective():
    q, p, n = R.raw(B, D, seed=15), R.raw(B, D, seed=16), R.raw(B, M, D, seed=17)
    a = KaLMObjective(ObjectiveConfig(mix_pairwise=0, gamma=0.5))(q, p, n, generator=gen(0))["loss"]
    b = KaLMObjective(ObjectiveConfig(gamma=0.5))(q, p, n)["loss"]
    assert torch.equal(a, b)


def test_bfloat16_inputs_tau_001_full_recipe_is_finite():
    q, p, n = (R.raw(*s, seed=18 + i, dtype=torch.bfloat16) for i, s in enumerate([(B, D), (B, D), (B, M, D)]))
    t = torch.rand(B, 1 + M, generator=gen(21)).to(torch.bfloat16)
    cfg = ObjectiveConfig(**{**FULL, "tau": 0.01, "tau_kd": 0.05})
    out = KaLMObjective(cfg)(q, p, n, t, generator=gen(0))
    out["loss"].backward()
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert all(torch.isfinite(x.grad.float()).all() for x in (q, p, n))


def test_from_dict_accepts_yaml_lists_and_rejects_unknown_keys():
    cfg = ObjectiveConfig.from_dict({"gamma": 0.5, "matryoshka_dims": [896, 64], "matryoshka_weights": [1, 0.1]})
    assert cfg.matryoshka_dims == (896, 64) and cfg.matryoshka_weights == (1.0, 0.1)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['focal_gama'\]"):
        ObjectiveConfig.from_dict({"focal_gama": 0.5})


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(tau=0.0), "tau"),
        (dict(gamma=-1.0), "gamma"),
        (dict(mix_pairwise=-1), "mix_pairwise"),
        (dict(mix_pairwise=2.0), "mix_pairwise"),
        (dict(mix_alpha=0.0), "mix_alpha"),
        (dict(use_hard_negatives="yes"), "use_hard_negatives"),
        (dict(mix_listwise=True, use_hard_negatives=False), "use_hard_negatives"),
        (dict(contrastive_weight=0.0), "contrastive_weight"),
        (dict(matryoshka_dims=(8, 4), matryoshka_weights=(1.0,)), "matryoshka_dims"),
        (dict(matryoshka_weights=(1.0,)), "matryoshka_weights"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        ObjectiveConfig(**kwargs)


def test_forward_errors_are_clear():
    q, p, n = R.raw(B, D, seed=22), R.raw(B, D, seed=23), R.raw(B, M, D, seed=24)
    with pytest.raises(ValueError, match="teacher_scores.*distill_weight"):
        KaLMObjective(ObjectiveConfig(distill_weight=1.0))(q, p, n)
    with pytest.raises(ValueError, match="p_neg.*mixing"):
        KaLMObjective(ObjectiveConfig(mix_pairwise=1))(q, p, None)
    with pytest.raises(ValueError, match="16 is larger than the embedding size 12"):
        KaLMObjective(ObjectiveConfig(matryoshka_dims=(16, 8)))(q, p, n)
    with pytest.raises(ValueError, match="p_neg"):
        KaLMObjective(ObjectiveConfig())(q, p, n[:2])
    with pytest.raises(TypeError, match="ObjectiveConfig"):
        KaLMObjective({"tau": 0.01})
