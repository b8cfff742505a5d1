"""An mteb 2.x encoder for KaLMEmbedder and for any sentence-transformers model.

KaLM-V2 evaluation prompts (the paper's §1; mteb's reference loader for
``HIT-TMG/KaLM-embedding-multilingual-mini-instruct-v2`` and ``…-v2.5``, which is
``InstructSentenceTransformerModel(instruction_template=KaLM_INSTRUCTION,
apply_instruction_to_passages=False, prompts_dict=KaLM_v2_task_prompts)``):

* the instruction I of a task is looked up in ``KaLM_v2_task_prompts`` (imported from mteb): first
  ``"{task}-{side}"`` (mteb's compound key), then ``"{task}"``, then — for a symmetric side, which
  mteb encodes with ``prompt_type=None`` — ``"{task}-query"``; failing these, mteb's own
  ``AbsEncoder.get_instruction`` (task type, prompt type, the task's metadata prompt, the abstract
  task's default prompt);
* a query q is encoded as ``"Instruct: {I} \\n Query: {q}"``;
* a document (``prompt_type == document``: retrieval corpora, reranking candidates) is encoded raw;
* symmetric tasks (STS, pair classification) encode both sides with ``prompt_type=None``, so both
  sides carry the instruction — the paper's "symmetric-task rule".

Why the compound keys: in mteb 2.26, ``InstructSentenceTransformerModel`` looks only at the plain task
name, so the dict's ``"STSBenchmark-query"``, ``"SciDocsRR-query"`` … entries go unused and those tasks
fall back to generic prompts (``"Retrieve semantically similar text."`` with a period, or the task's
metadata prompt). The dict (and the paper, PAPER.md §1) means them to be used; ``compound_keys=False``
restores mteb 2.26's exact lookup.

A local task (``kalm_lib.evaluation.local_tasks``) is looked up under the MTEB task it copies, so
``STS12-noMSRvid`` gets STS12's instruction. Plain sentence-transformers models (teachers, baselines
such as all-MiniLM-L6-v2) are encoded without instructions by default, exactly as mteb's
``SentenceTransformerEncoderWrapper`` encodes them for the public leaderboard.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

from kalm_lib.device import compute_device
from kalm_lib.prompts import KALM_QUERY_TEMPLATE

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata

logger = logging.getLogger(__name__)

try:  # reuse mteb's dict (not a copy) so a fix upstream reaches us
    from mteb.models.model_implementations.kalm_models import KaLM_INSTRUCTION as _MTEB_KALM_TEMPLATE
    from mteb.models.model_implementations.kalm_models import KaLM_v2_task_prompts
except ImportError:  # pragma: no cover - only if mteb moves the module
    KaLM_v2_task_prompts: dict[str, str] = {}
    _MTEB_KALM_TEMPLATE = None
    logger.warning("mteb's KaLM_v2_task_prompts is not importable; falling back to task metadata prompts")

assert _MTEB_KALM_TEMPLATE in (None, KALM_QUERY_TEMPLATE), "the KaLM template drifted from mteb's reference loader"

# local task name -> the MTEB task whose prompt it uses (filled by local_tasks when a task is built)
_PROMPT_ALIASES: dict[str, str] = {}


def register_prompt_alias(local_name: str, mteb_name: str) -> None:
    """Make ``local_name`` use the instruction of the MTEB task ``mteb_name``."""
    _PROMPT_ALIASES[local_name] = mteb_name


def prompt_task_name(name: str) -> str:
    """The MTEB task name under which ``name``'s instruction is looked up."""
    return _PROMPT_ALIASES.get(name, name)


class KaLMEncoder(AbsEncoder):
    """Wraps a ``KaLMEmbedder`` or a ``SentenceTransformer`` as an mteb ``AbsEncoder``.

    Args:
        model: a ``KaLMEmbedder``, a ``SentenceTransformer``, or a path / Hub id (see :func:`load_model`).
        model_name: the label in result tables (mteb's metadata gets ``local/`` prefixed if it has no slash).
        dim: Matryoshka dimension: embeddings are truncated to ``dim`` and re-normalised (None = full).
        use_instructions: apply the KaLM-V2 prompts. Default: True for KaLMEmbedder and for models whose
            name contains "KaLM", False for other sentence-transformers models.
        prompts_dict: task → instruction (default mteb's ``KaLM_v2_task_prompts``).
        apply_instruction_to_passages: instruct documents too (False in the reference loader).
        max_length: token cap at encode time (None = the model's own; mteb's loader uses 512).
        compound_keys: use the dict's ``"{task}-query"`` / ``"{task}-document"`` entries (see module doc).
        bf16: bf16 autocast at encode time for a KaLMEmbedder (``KaLMEmbedder.encode``; None: on a GPU only).
    """

    instruction_template = KALM_QUERY_TEMPLATE

    def __init__(self, model: Any, *, model_name: str | None = None, revision: str | None = None,
                 dim: int | None = None, use_instructions: bool | None = None,
                 prompts_dict: dict[str, str] | None = None, apply_instruction_to_passages: bool = False,
                 max_length: int | None = None, compound_keys: bool = True, bf16: bool | None = None) -> None:
        if isinstance(model, (str, Path)):
            model = load_model(model)
        self.model = model
        self.is_kalm = _is_kalm_embedder(model)
        name = model_name or _default_name(model)
        self.display_name = name  # the label in result tables
        if "/" not in name:  # mteb's ModelMeta wants "org/name"
            name = f"local/{name}"
        if use_instructions is None:
            use_instructions = self.is_kalm or "kalm" in name.lower()
        self.use_instructions = bool(use_instructions)
        self.prompts_dict = dict(KaLM_v2_task_prompts if prompts_dict is None else prompts_dict)
        self.apply_instruction_to_passages = apply_instruction_to_passages
        self.compound_keys = compound_keys
        self.max_length = max_length
        self.bf16 = bf16
        full = _embedding_dim(model)
        if dim is not None and not 0 < int(dim) <= full:
            raise ValueError(f"dim={dim} must be in [1, {full}] (the embedding size of {name})")
        self.dim = int(dim) if dim is not None else None
        self.mteb_model_meta = ModelMeta(
            loader=None, name=name, revision=revision or "local", release_date=None, languages=None,
            n_parameters=_n_params(model), memory_usage_mb=None,
            max_tokens=max_length or _max_tokens(model), embed_dim=self.dim or full, license=None,
            open_weights=True, public_training_code=None, public_training_data=None,
            framework=["PyTorch", "Sentence Transformers"], similarity_fn_name="cosine",
            use_instructions=self.use_instructions, training_datasets=None)

    # ------------------------------------------------------------------ prompts
    @classmethod
    def prompt_lookup(cls, prompts_dict: dict[str, str] | None = None, *, compound_keys: bool = True) -> "KaLMEncoder":
        """An encoder with no model, for :meth:`instruction_for` only (as a KaLM model would be evaluated)."""
        self = cls.__new__(cls)
        self.model, self.is_kalm, self.use_instructions = None, True, True
        self.prompts_dict = dict(KaLM_v2_task_prompts if prompts_dict is None else prompts_dict)
        self.apply_instruction_to_passages, self.compound_keys = False, compound_keys
        return self

    def instruction_for(self, task_metadata: TaskMetadata, prompt_type: PromptType | None) -> str | None:
        """The raw instruction I for this task and side, or None when the side is encoded raw.

        Mirrors ``InstructSentenceTransformerModel.encode``: documents get none unless
        ``apply_instruction_to_passages``; queries and symmetric sides (``prompt_type=None``) get
        ``AbsEncoder.get_instruction`` under the task's MTEB name.
        """
        if not self.use_instructions:
            return None
        if prompt_type == PromptType.document and not self.apply_instruction_to_passages:
            return None
        base = prompt_task_name(task_metadata.name)
        if self.compound_keys:
            keys = [f"{base}-{prompt_type.value}"] if prompt_type is not None else []
            keys.append(base)
            if prompt_type is None:  # a symmetric side: both sides get the query instruction
                keys.append(f"{base}-{PromptType.query.value}")
            for key in keys:
                if self.prompts_dict.get(key):
                    return self.prompts_dict[key]
        meta = task_metadata if base == task_metadata.name else task_metadata.model_copy(update={"name": base})
        return self.get_instruction(meta, prompt_type) or None

    def format_texts(self, texts: list[str], task_metadata: TaskMetadata,
                     prompt_type: PromptType | None) -> list[str]:
        """The exact strings the model reads for this task and side (for tests and inspection)."""
        instruction = self.instruction_for(task_metadata, prompt_type)
        if not instruction:
            return list(texts)
        prefix = KALM_QUERY_TEMPLATE.format(instruction=instruction)
        return [prefix + t for t in texts]

    # ------------------------------------------------------------------ encoding
    def encode(self, inputs, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        return self.encode_texts(texts, task_metadata=task_metadata, prompt_type=prompt_type, **kwargs)

    def encode_texts(self, texts: list[str], *, task_metadata: TaskMetadata | None = None,
                     prompt_type: PromptType | None = None, batch_size: int = 32,
                     show_progress_bar: bool = False, **_: Any) -> np.ndarray:
        """Encode ``texts`` for a task side: (N, dim) float32, L2-normalised."""
        instruction = self.instruction_for(task_metadata, prompt_type) if task_metadata is not None else None
        if self.is_kalm:
            return self.model.encode(texts, batch_size=batch_size, max_length=self.max_length, dim=self.dim,
                                     instruction=instruction, show_progress_bar=show_progress_bar,
                                     bf16=getattr(self, "bf16", None))
        prompt = KALM_QUERY_TEMPLATE.format(instruction=instruction) if instruction else None
        if self.max_length is not None:
            self.model.max_seq_length = self.max_length
        emb = self.model.encode(texts, prompt=prompt, batch_size=batch_size, convert_to_numpy=True,
                                show_progress_bar=show_progress_bar)
        emb = np.asarray(emb, dtype=np.float32)
        if self.dim is not None:
            emb = emb[:, : self.dim]
            emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
        return emb


# ---------------------------------------------------------------------- loading helpers
def load_model(path_or_name: str | Path, *, max_length: int | None = None, trust_remote_code: bool = False):
    """Load a model for evaluation.

    * a folder written by ``KaLMEmbedder.save`` (its ``config_sentence_transformers.json`` has a
      ``kalm`` entry) → ``KaLMEmbedder.load`` (bidirectional as saved);
    * any other sentence-transformers folder or Hub id (e.g. the released
      ``KaLM-Embedding/KaLM-embedding-multilingual-mini-instruct-v2.5``) → ``SentenceTransformer``,
      the way mteb's reference loader does.
    """
    p = Path(path_or_name)
    st_cfg = p / "config_sentence_transformers.json"
    if st_cfg.is_file() and "kalm" in json.loads(st_cfg.read_text(encoding="utf-8")):
        from kalm_lib.model import KaLMEmbedder

        kw = {"max_length": max_length} if max_length else {}
        return KaLMEmbedder.load(p, **kw).to(compute_device())
    if (p.is_absolute() or str(path_or_name).startswith(".")) and not p.exists():
        raise FileNotFoundError(f"model not found: {p}")
    from sentence_transformers import SentenceTransformer

    from kalm_lib.paths import hub_path

    # a Hub id (a released model to compare with) is read from $KALM_HUB_DIR/<owner>/<name> when that is set
    model = SentenceTransformer(hub_path(str(path_or_name), "model"), trust_remote_code=trust_remote_code,
                                device=str(compute_device()))
    if max_length:
        model.max_seq_length = max_length
    return model


def _is_kalm_embedder(model: Any) -> bool:
    try:
        from kalm_lib.model import KaLMEmbedder
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, KaLMEmbedder)


def _default_name(model: Any) -> str:
    name = getattr(model, "name", None) if _is_kalm_embedder(model) else None
    if not name:
        card = getattr(getattr(model, "model_card_data", None), "base_model", None)
        name = card or getattr(model, "name_or_path", None) or type(model).__name__
    name = str(name)
    if Path(name).is_absolute():  # a local folder: keep the last two parts, readable in tables
        name = "/".join(Path(name).parts[-2:])
    return name


def _embedding_dim(model: Any) -> int:
    if hasattr(model, "embedding_dim"):
        return int(model.embedding_dim)
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def _max_tokens(model: Any) -> int | None:
    v = getattr(model, "max_length", None) or getattr(model, "max_seq_length", None)
    return int(v) if v else None


def _n_params(model: Any) -> int | None:
    try:
        return int(sum(p.numel() for p in model.parameters()))
    except (AttributeError, TypeError):  # pragma: no cover
        return None
