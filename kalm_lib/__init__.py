"""kalm_lib: an executable, tested reproduction of KaLM-Embedding-V2 (Zhao et al., ICLR 2026).

Modules: ``model`` (the bidirectional mean-pooled embedder), ``losses`` (InfoNCE, focal
reweighting, hard-negative mixing, distillation, Matryoshka), ``data`` (catalog, validation,
mining, sampling), ``train`` (one training stage), ``evaluation`` (MTEB), ``plots``.
Imports are lazy so ``import kalm_lib`` stays cheap.
"""

__version__ = "0.1.0"
