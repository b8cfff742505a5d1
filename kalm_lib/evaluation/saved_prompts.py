"""The ``prompts`` a saved model carries (issue 15 item 5): the harness's instruction for every task and side, in
sentence-transformers' form, so that plain ``SentenceTransformer(path)`` and ``mteb.evaluate`` read texts as the
project's harness (:class:`~kalm_lib.evaluation.encoder.KaLMEncoder`) does. ``KaLMEmbedder.save(path,
prompts=saved_model_prompts())`` writes them (the trainer does for every stage's final model).

Its own room: it reads both the harness (encoder.py) and the local task registry (local_tasks.py), and the model
(model.py, a floor below) takes the prompts as data instead of importing the evaluation package.
"""
from __future__ import annotations

from mteb.types import PromptType

from kalm_lib.prompts import GENERIC_QUERY_INSTRUCTION, KALM_QUERY_TEMPLATE

from .encoder import KaLMEncoder



def _task_sides(task) -> list[PromptType | None]:
    """The prompt types mteb 2.x encodes ``task``'s texts with: queries and documents for retrieval and
    reranking; ``input1/2_prompt_type`` for STS and pair classification (None, the symmetric side, by
    default); None for every other type (classification, clustering, summarization, bitext mining)."""
    from mteb.abstasks import AbsTaskRetrieval

    if isinstance(task, AbsTaskRetrieval):
        return [PromptType.query, PromptType.document]
    if hasattr(task, "input1_prompt_type") or hasattr(task, "input2_prompt_type"):
        return list(dict.fromkeys([getattr(task, "input1_prompt_type", None), getattr(task, "input2_prompt_type", None)]))
    return [None]


def project_task_names() -> list[str]:
    """Every task the project evaluates under a name mteb knows: MTEB(eng, v1), MTEB(cmn, v1) and the local
    copies that keep MTEB's name. (A renamed local copy such as ``STS12-noMSRvid`` cannot have its own entry:
    mteb's ``SentenceTransformerEncoderWrapper`` drops prompt keys that are not registered task names.)"""
    import mteb

    from .benchmarks import MTEB_CMN_V1, MTEB_ENG_V1
    from .local_tasks import SPECS

    names = []
    for name in dict.fromkeys([*MTEB_ENG_V1, *MTEB_CMN_V1, *SPECS]):
        try:
            mteb.get_task(name)
        except KeyError:
            continue
        names.append(name)
    return names


def saved_model_prompts(task_names: list[str] | None = None, *,
                        prompts_dict: dict[str, str] | None = None) -> dict[str, str]:
    """The ``prompts`` of a saved model: the project harness's instructions in sentence-transformers' form.

    For each task, the exact prompt string (``"Instruct: {I} \\n Query: "``) that :class:`KaLMEncoder`
    applies to each side, under the key mteb 2.x's ``get_prompt_name`` tries first for that side:

    * a side encoded with ``prompt_type=None`` (the symmetric tasks: STS, pair classification; and
      classification, clustering, summarization) → ``"{task}"``;
    * a query side → ``"{task}-query"``; a document side → nothing (documents are raw), or ``""`` where a
      ``"{task}"`` key exists that mteb would otherwise fall back to;

    plus ``"query"`` (the KaLM template with :data:`GENERIC_QUERY_INSTRUCTION`: what
    ``SentenceTransformer.encode_query`` adds by default and mteb uses for an unlisted task's queries) and
    ``"document": ""``. Then ``SentenceTransformer(path).encode(q, prompt_name="SciFact-query")`` adds the
    instruction, and plain ``mteb.evaluate(SentenceTransformer(path), tasks)`` reads every text exactly as the
    project's harness does. ``task_names`` defaults to :func:`project_task_names`.
    """
    import mteb
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    from .local_tasks import SPECS, get_local_task

    lookup = KaLMEncoder.prompt_lookup(prompts_dict)
    prompts: dict[str, str] = {
        PromptType.query.value: KALM_QUERY_TEMPLATE.format(instruction=GENERIC_QUERY_INSTRUCTION),
        PromptType.document.value: "",
    }
    tasks = [get_local_task(n) if n in SPECS else mteb.get_task(n)  # no data is read
             for n in (task_names if task_names is not None else project_task_names())]
    while any(isinstance(t, AbsTaskAggregate) for t in tasks):  # CQADupstackRetrieval: mteb runs its parts
        tasks = [s for t in tasks for s in (t.metadata.tasks if isinstance(t, AbsTaskAggregate) else [t])]
    for task in tasks:
        name = task.metadata.name
        for side in _task_sides(task):
            instruction = lookup.instruction_for(task.metadata, side)
            prompt = KALM_QUERY_TEMPLATE.format(instruction=instruction) if instruction else ""
            if side is None:
                if prompt:
                    prompts[name] = prompt
            elif prompt or side == PromptType.query or name in prompts:
                # an empty query prompt must be written too, or mteb would fall back to "query"
                prompts[f"{name}-{side.value}"] = prompt
    return prompts
