"""KaLM-Embedding-V2 losses, one per file; each file's docstring gives its equation (PAPER.md §2)."""

from kalm_lib.losses.distillation import DEFAULT_TAU_KD, distill_kl_loss, student_candidate_scores
from kalm_lib.losses.distributed import gather_with_grad, world_size
from kalm_lib.losses.focal import focal_from_logits, focal_info_nce_loss
from kalm_lib.losses.hard_negative_mixing import (
    DEFAULT_MIX_ALPHA,
    DEFAULT_MIX_TAU,
    listwise_mix,
    mix_hard_negatives,
    pairwise_mix,
    sample_pairwise_mix,
)
from kalm_lib.losses.infonce import info_nce_loss, infonce_logits, nll_from_logits
from kalm_lib.losses.matryoshka import (
    DEFAULT_MATRYOSHKA_DIMS,
    DEFAULT_MATRYOSHKA_WEIGHTS,
    check_matryoshka,
    matryoshka_loss,
    truncate_normalize,
)
from kalm_lib.losses.objective import KaLMObjective, ObjectiveConfig

__all__ = [
    "DEFAULT_MATRYOSHKA_DIMS", "DEFAULT_MATRYOSHKA_WEIGHTS", "DEFAULT_MIX_ALPHA", "DEFAULT_MIX_TAU", "DEFAULT_TAU_KD",
    "KaLMObjective", "ObjectiveConfig", "check_matryoshka", "distill_kl_loss", "focal_from_logits",
    "focal_info_nce_loss", "gather_with_grad", "info_nce_loss", "infonce_logits", "listwise_mix",
    "matryoshka_loss", "mix_hard_negatives", "nll_from_logits", "pairwise_mix", "sample_pairwise_mix",
    "student_candidate_scores", "truncate_normalize", "world_size",
]
