"""The full KaLM-Embedding-V2 training objective used by the trainer (composition of this package's losses).

    L = Σ_{d ∈ D} w_d · [ α_cl · L_focal^{(d)}(q, p⁺, p⁻ ∪ h̃⁻; τ, γ)  +  α_kd · L_KL^{(d)}(q, p⁺, p⁻; z_t, τ_kd) ]

    h̃⁻       mixed hard negatives, built ONCE per step from the full-dim L2-normalised q, p⁻ (hard_negative_mixing.py)
              and then truncated/re-normalised per dim like every other embedding (PAPER.md §8: mix before MRL)
    L_focal   focal.py over the Z_i of infonce.py (γ = 0 → plain InfoNCE); PAPER.md §2.1–2.2
    L_KL      distillation.py, KL(P_t ‖ P_s) over each query's own [p⁺, p⁻₁..M]; PAPER.md §2.4 (MRL applied to
              the KL too, as the paper note says)
    D, w_d    matryoshka.py; None → the full dimension only, weight 1
    α_cl, α_kd  contrastive_weight, distill_weight (the paper's ratio is unknown; 1:1 is the prior)

Inputs are RAW (un-normalised) embeddings, already gathered across devices by the caller (distributed.py):
q (B, d), p_pos (B, d), p_neg (B, M, d) or None, teacher_scores (B, 1+M), teacher_mask (B, 1+M) bool,
own_only (B,) bool or None: queries whose Z_i holds only their own candidates (infonce.py; labelled data).
The returned loss is the unscaled global loss; a DDP trainer multiplies it by world_size before backward.
`generator` drives the pairwise mixes: under DDP seed it identically on every rank (e.g. from the step, never from
the rank), so that every rank builds the same mixes and computes the same global loss.

Returned dict (all tensors; only "loss" carries a graph):
    loss               the scalar L above
    contrastive        Σ_d w_d · L_focal^{(d)}                                  (when contrastive_weight > 0)
    focal_weight_mean  mean_i w_i at the largest dim (1 when γ = 0)             (when contrastive_weight > 0)
    p_pos_mean         mean_i p_i at the largest dim (probability of the positive over Z_i; same condition)
    distill            Σ_d w_d · L_KL^{(d)}                                     (when distill_weight > 0)
    n_mixed            number of synthetic negatives per query
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from kalm_lib.losses._checks import check_embeddings
from kalm_lib.losses.distillation import DEFAULT_TAU_KD, distill_kl_loss
from kalm_lib.losses.focal import focal_from_logits, focal_info_nce_loss
from kalm_lib.losses.hard_negative_mixing import DEFAULT_MIX_TAU, mix_hard_negatives
from kalm_lib.losses.infonce import DEFAULT_TAU, infonce_logits
from kalm_lib.losses.matryoshka import check_matryoshka, matryoshka_loss, truncate_normalize

_FILE = "kalm_lib/losses/objective.py"


@dataclass
class ObjectiveConfig:
    tau: float = DEFAULT_TAU          # τ
    use_hard_negatives: bool = True
    expanded_negatives: bool = False
    gamma: float = 0.0                # γ of the focal weight (1 − p_i)^γ; 0 = plain InfoNCE; the one default
    focal_detach: bool = False
    mix_pairwise: int = 0
    mix_listwise: bool = False
    mix_alpha: float = 2.0
    tau_mix: float = DEFAULT_MIX_TAU  # τ_mix of the list-wise mixes
    mix_detach: bool = False
    contrastive_weight: float = 1.0
    distill_weight: float = 0.0
    tau_kd: float = DEFAULT_TAU_KD    # τ_kd
    matryoshka_dims: tuple[int, ...] | None = None
    matryoshka_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        def bad(field: str, msg: str) -> ValueError:
            return ValueError(f"{_FILE}: ObjectiveConfig field '{field}': {msg} (got {getattr(self, field)!r})")

        for f in ("use_hard_negatives", "expanded_negatives", "focal_detach", "mix_listwise", "mix_detach"):
            if not isinstance(getattr(self, f), bool):
                raise bad(f, "must be a bool")
        for f in ("tau", "mix_alpha", "tau_mix", "tau_kd"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise bad(f, "must be a finite number > 0")
        for f in ("gamma", "contrastive_weight", "distill_weight"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise bad(f, "must be a finite number >= 0")
        if isinstance(self.mix_pairwise, bool) or not isinstance(self.mix_pairwise, int) or self.mix_pairwise < 0:
            raise bad("mix_pairwise", "must be an int >= 0 (K, pairwise mixes per query)")
        if self.contrastive_weight == 0 and self.distill_weight == 0:
            raise bad("contrastive_weight", "and distill_weight are both 0: the loss would be empty")
        if (self.mix_pairwise > 0 or self.mix_listwise) and not self.use_hard_negatives:
            raise bad("use_hard_negatives", "must be True when mixing is on (mixes are built from hard negatives)")
        if self.matryoshka_dims is None:
            if self.matryoshka_weights is not None:
                raise bad("matryoshka_weights", "given without matryoshka_dims")
        else:
            try:
                dims, weights = check_matryoshka(self.matryoshka_dims, self.matryoshka_weights)
            except ValueError as e:
                raise bad("matryoshka_dims", str(e)) from None
            self.matryoshka_dims, self.matryoshka_weights = dims, weights  # lists from YAML → tuples

    @classmethod
    def from_dict(cls, d: dict) -> "ObjectiveConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{_FILE}: ObjectiveConfig.from_dict: unknown key(s) {unknown}; "
                             f"allowed keys are {sorted(known)}")
        return cls(**d)


class KaLMObjective(torch.nn.Module):
    """Focal InfoNCE (+ hard-negative mixing) + contrastive distillation, under Matryoshka. See module docstring."""

    def __init__(self, cfg: ObjectiveConfig):
        super().__init__()
        if not isinstance(cfg, ObjectiveConfig):
            raise TypeError(f"{_FILE}: KaLMObjective needs an ObjectiveConfig, got {type(cfg).__name__}")
        self.cfg = cfg

    def forward(
        self,
        q: Tensor,
        p_pos: Tensor,
        p_neg: Tensor | None = None,
        teacher_scores: Tensor | None = None,
        teacher_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        own_only: Tensor | None = None,
    ) -> dict[str, Tensor]:
        cfg = self.cfg
        _, m, d = check_embeddings("objective.py", q, p_pos, p_neg)
        use_kd = cfg.distill_weight > 0
        if use_kd and teacher_scores is None:
            raise ValueError(f"{_FILE}: argument 'teacher_scores': required because distill_weight = "
                             f"{cfg.distill_weight} > 0 (pass a (B, 1+M) tensor, with teacher_mask for missing ones)")
        mixing = cfg.mix_pairwise > 0 or cfg.mix_listwise
        if mixing and (p_neg is None or m == 0):
            raise ValueError(f"{_FILE}: argument 'p_neg': hard-negative mixing is on (mix_pairwise="
                             f"{cfg.mix_pairwise}, mix_listwise={cfg.mix_listwise}) but no hard negatives were given")
        if cfg.matryoshka_dims is None:
            dims, weights = (d,), (1.0,)
        else:
            dims, weights = check_matryoshka(cfg.matryoshka_dims, cfg.matryoshka_weights, d)

        mixed = None
        if mixing:
            # full-dim unit vectors in float32 (or float64): mixing comes before any Matryoshka truncation
            mixed = mix_hard_negatives(truncate_normalize(q, d), truncate_normalize(p_neg, d), k_pairwise=cfg.mix_pairwise, listwise=cfg.mix_listwise,
                                       alpha=cfg.mix_alpha, tau_mix=cfg.tau_mix, generator=generator,
                                       detach=cfg.mix_detach)

        # The tested public losses, under the tested Matryoshka wrapper (each dim: truncate, re-normalise, weight)
        contrastive = distill = None
        if cfg.contrastive_weight > 0:
            contrastive = matryoshka_loss(
                focal_info_nce_loss, q, p_pos, p_neg, mixed, dims=dims, weights=weights, gamma=cfg.gamma,
                tau=cfg.tau, detach_weight=cfg.focal_detach, use_hard_negatives=cfg.use_hard_negatives,
                expanded_negatives=cfg.expanded_negatives, own_only=own_only)
            with torch.no_grad():  # what the log shows: mean w_i and p_i at the largest dim (one extra (B, C) logits)
                top = max(dims)
                cut = [truncate_normalize(x, top) if x is not None else None for x in (q, p_pos, p_neg, mixed)]
                logits = infonce_logits(*cut[:3], tau=cfg.tau, use_hard_negatives=cfg.use_hard_negatives,
                                        expanded_negatives=cfg.expanded_negatives, mixed_neg=cut[3], own_only=own_only)
                _, w, p = focal_from_logits(logits, gamma=cfg.gamma)
                w_mean, p_mean = w.mean(), p.mean()
        if use_kd:
            distill = matryoshka_loss(distill_kl_loss, q, p_pos, p_neg, dims=dims, weights=weights,
                                      teacher_scores=teacher_scores, teacher_mask=teacher_mask, tau_kd=cfg.tau_kd)

        loss = 0.0
        out: dict[str, Tensor] = {}
        if contrastive is not None:
            loss = loss + cfg.contrastive_weight * contrastive
            out["contrastive"] = contrastive.detach()
            out["focal_weight_mean"] = w_mean
            out["p_pos_mean"] = p_mean
        if distill is not None:
            loss = loss + cfg.distill_weight * distill
            out["distill"] = distill.detach()
        out["loss"] = loss
        out["n_mixed"] = torch.tensor(0 if mixed is None else mixed.shape[1])
        return out
