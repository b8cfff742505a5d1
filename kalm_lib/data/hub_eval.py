"""Evaluation sets from the Hub, through mteb itself: what a run reads when there is no data mirror.

With ``KALM_DATA_DIR`` unset, every evaluation task is MTEB's own task, loaded by mteb's own ``load_data`` from
the MTEB / C-MTEB dataset repository its metadata pins (path and revision). A local task name (``STSBenchmark``,
``CMRC2018Retrieval-local``, see eval_sets.py) stands for the MTEB task it is scored as (``spec.base``): a copy with
the same rows is the same task, a derived set is replaced by that task (``CMRC2018Retrieval-local`` by
``T2Retrieval``), and the result row says so. Row caps follow the mirror's rule (kalm_lib/data/caps.py).

``KALM_HUB_DIR`` set: the repository is read from ``$KALM_HUB_DIR/<owner>/<name>`` (what ``huggingface-cli
download --repo-type dataset --local-dir`` writes), never from the network; that is also how the tests run this
path offline (tests/hub_fixture.py).

Decontamination without a mirror forbids the texts of the same tasks (:func:`hub_eval_texts`): every evaluated
split of the MTEB task behind every declared local task, as the mirror's rule forbids every scored split.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from kalm_lib.paths import hub_path

from .caps import CORPUS_PER_QUERY, cap_indices
from .errors import DataError
from .eval_sets import LOCAL_TASK_SPECS, SPECS

log = logging.getLogger(__name__)


class HubDataError(DataError):
    """An evaluation set could not be read from the Hub (or from ``KALM_HUB_DIR``); the message names the task, the
    dataset repository and revision, and the command that mirrors it."""


def hub_twin(name: str) -> str:
    """The MTEB task a name is evaluated as without the mirror: a local task's ``base``, else the name itself."""
    return SPECS[name].base if name in SPECS else name


def hub_task(name: str, max_rows: int | None = None):
    """MTEB's own task ``hub_twin(name)``, its data read by mteb from the Hub (or ``$KALM_HUB_DIR``), capped at
    ``max_rows`` rows per split (retrieval: queries) by the mirror's rule."""
    if max_rows is not None and int(max_rows) < 1:
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    import mteb

    task = as_hub_task(mteb.get_task(hub_twin(name)), max_rows)
    task.stands_for = name if name in SPECS and SPECS[name].base != name else None
    return task


def as_hub_task(task, max_rows: int | None = None):
    """An mteb task object (e.g. one of a benchmark's, with the subsets and splits the benchmark chose) that reads
    its data as :func:`hub_task` does: ``KALM_HUB_DIR`` when set, a clear error naming the fix, the row cap."""
    if not getattr(task, "hub_task", False):
        task.__class__ = _hub_class(type(task))  # a subclass that only adds loading: the instance's state is kept
    task.max_rows = int(max_rows) if max_rows is not None else None
    return task


@lru_cache(maxsize=None)
def _hub_class(base_cls: type):
    mteb_name = base_cls.metadata.name

    def load_data(self, num_proc=None, **kwargs):  # noqa: ARG001 - mteb's signature
        if self.data_loaded:
            return
        meta = self.metadata
        repo, revision = meta.dataset["path"], meta.dataset.get("revision")
        local = hub_path(repo, "dataset")  # KALM_HUB_DIR/<repo>, or a FileNotFoundError naming it; else the id
        if local != repo:
            # A local copy is one revision already; datasets would read `revision` as a git ref of the folder.
            self.metadata = meta.model_copy(update={"dataset": {**meta.dataset, "path": local, "revision": None}})
        try:
            base_cls.load_data(self, num_proc=num_proc)
        except Exception as err:  # noqa: BLE001 - any loader failure becomes one message naming the fix
            where = f"{local}" if local != repo else f"the Hub dataset {repo}@{revision}"
            raise HubDataError(
                f"MTEB task {mteb_name}: could not read {where} ({type(err).__name__}: {str(err)[:300]}). Check the "
                f"network or the dataset name, or mirror it: huggingface-cli download {repo} --repo-type dataset "
                f"--revision {revision} --local-dir $KALM_HUB_DIR/{repo}") from err
        finally:
            self.metadata = meta
        if self.max_rows is not None:
            self.dataset = cap_dataset(self.dataset, self.max_rows)
        self.data_loaded = True

    def dataset_transform(self, *args, **kwargs):
        # Decontamination reads the split as stored (raw=True): a task's transform may subsample it (the v2
        # clustering tasks keep 2,048 documents), and every stored text is forbidden, not only those scored.
        if not self.raw:
            base_cls.dataset_transform(self, *args, **kwargs)

    attrs: dict[str, Any] = {"load_data": load_data, "dataset_transform": dataset_transform, "max_rows": None,
                             "stands_for": None, "raw": False, "hub_task": True, "__module__": __name__}
    return type("Hub_" + "".join(c if c.isalnum() else "_" for c in mteb_name), (base_cls,), attrs)


# ---------------------------------------------------------------------- caps on mteb's own structures
def _flat(ds):
    """A split stored the old MTEB way (one row whose columns are lists, e.g. pair classification) as one row per
    item; anything else unchanged."""
    from datasets import Dataset

    if len(ds) == 1 and ds.column_names and all(isinstance(ds[0][c], list) for c in ds.column_names):
        return Dataset.from_dict(ds[0])
    return ds


def _cap_retrieval(split: dict, cap: int, salt: str) -> dict:
    qrels, top = split["relevant_docs"], split.get("top_ranked")
    # The mirror's rule: retrieval draws from the sorted query ids, reranking from the queries in file order.
    qids = [q for q in split["queries"]["id"] if q in qrels] if top else sorted(qrels)
    if cap >= len(qids):
        return split
    keep_q = [qids[i] for i in cap_indices(len(qids), cap, salt)]
    if top:  # reranking: each query's own candidates are its corpus
        keep_d = {d for q in keep_q for d in top.get(q, [])} | {d for q in keep_q for d in qrels[q]}
    else:
        relevant = {d for q in keep_q for d in qrels[q]}
        ids = split["corpus"]["id"]
        others = [i for i, d in enumerate(ids) if d not in relevant]
        extra = {ids[others[i]] for i in cap_indices(len(others), CORPUS_PER_QUERY * cap, salt + "/corpus")}
        keep_d = relevant | extra
    corpus, queries = split["corpus"], split["queries"]
    q_set = set(keep_q)
    out = dict(split)
    out["corpus"] = corpus.select([i for i, d in enumerate(corpus["id"]) if d in keep_d])
    out["queries"] = queries.select([i for i, q in enumerate(queries["id"]) if q in q_set])
    out["relevant_docs"] = {q: dict(qrels[q]) for q in keep_q}
    if top:
        out["top_ranked"] = {q: list(top[q]) for q in keep_q if q in top}
    return out


def cap_dataset(dataset, cap: int):
    """``dataset`` as mteb's ``load_data`` leaves it, capped: every split of a DatasetDict keeps ``cap`` rows; every
    retrieval / reranking split (``{subset: {split: {corpus, queries, relevant_docs, top_ranked}}}``) ``cap``
    queries (kalm_lib/data/caps.py)."""
    from datasets import Dataset, DatasetDict

    if isinstance(dataset, dict) and dataset and all(isinstance(v, dict) for v in dataset.values()) and \
            any(isinstance(s, dict) and "relevant_docs" in s for v in dataset.values() for s in v.values()):
        return {sub: {sp: _cap_retrieval(d, cap, sp) for sp, d in splits.items()} for sub, splits in dataset.items()}
    out = DatasetDict() if isinstance(dataset, DatasetDict) else {}
    for split, ds in dataset.items():
        if isinstance(ds, Dataset):
            ds = _flat(ds)
            out[split] = ds.select(cap_indices(len(ds), cap, split))
        else:
            out[split] = cap_dataset(ds, cap)  # a multilingual task: {subset: DatasetDict}
    return out


# ---------------------------------------------------------------------- decontamination
def task_texts(task) -> set[str]:
    """Every text of the task's evaluated splits (its data loaded, best with ``raw``): STS / pair sentences, classification and
    clustering texts, retrieval queries with their relevant documents (and "title text"), reranking queries with
    every candidate."""
    from datasets import Dataset

    texts: set[str] = set()
    splits = set(task.metadata.eval_splits)

    def from_dataset(ds):
        ds = _flat(ds)
        for col in ("sentence1", "sentence2", "sent1", "sent2", "text", "sentences"):
            if col in ds.column_names:
                for v in ds[col]:
                    texts.update(v if isinstance(v, list) else [v])

    def walk(node, split=None):
        if isinstance(node, Dataset):
            if split in splits:
                from_dataset(node)
            return
        if isinstance(node, dict) and "relevant_docs" in node:
            if split not in splits:
                return
            qrels, top = node["relevant_docs"], node.get("top_ranked") or {}
            wanted_d = {d for q in qrels for d in qrels[q]} | {d for q in qrels for d in top.get(q, [])}
            texts.update(t for q, t in zip(node["queries"]["id"], node["queries"]["text"]) if q in qrels)
            corpus = node["corpus"]
            titles = corpus["title"] if "title" in corpus.column_names else [""] * len(corpus)
            for d, t, title in zip(corpus["id"], corpus["text"], titles):
                if d in wanted_d:
                    texts.add(t)
                    if title:
                        texts.add(f"{title} {t}")
            return
        for key, child in node.items():  # {subset: {split: ...}} or {split: ...}
            walk(child, key if key in splits else split)

    walk(task.dataset)
    texts.discard("")
    return texts


def hub_eval_texts():
    """Every text of the evaluated splits of every MTEB task behind the declared local tasks, read from the Hub (or
    ``KALM_HUB_DIR``) as stored (``raw``), task by task; overlap.eval_test_texts normalises and caches them."""
    twins = list(dict.fromkeys(s.base for s in LOCAL_TASK_SPECS))
    for i, name in enumerate(twins, 1):
        task = hub_task(name)
        task.raw = True
        task.load_data()
        found = task_texts(task)
        log.info("decontamination (Hub): %d/%d %s: %d texts", i, len(twins), name, len(found))
        yield from found
        if hasattr(task, "unload_data"):
            task.unload_data()
