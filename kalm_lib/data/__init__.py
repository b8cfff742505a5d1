"""Training data for KaLM-Embedding-V2: catalog, validation, instructions, labeling, batching, mining, teacher.

One idea per file:
  catalog.yaml / catalog.py  every dataset once: task, language, stages, instruction, symmetric, path, Hub source
  errors.py                  DataError and its kinds (record, file, empty dataset, declaration); LoadReport
  jsonl.py, validation.py    line-by-line reading and per-field checks (errors name file:line:field)
  formats.py, hub.py         source layouts -> {"query", "pos", "neg"}; Hub streaming via ``datasets``
  overlap.py                 evaluation test texts never enter training (decontamination)
  labeling.py                example-based multi-class labeling for classification/clustering data
  loader.py                  one dataset: read -> validate -> normalise -> decontaminate -> label -> subset
  instructions.py            the KaLM template with per-dataset instructions (texts live in catalog.yaml)
  training_set.py            one stage's torch Dataset (q, p⁺, M p⁻, task, teacher scores)
  sampler.py                 semi-homogeneous, distributed, length-grouped task batches
  stream.py                  the Hub subsets streamed, one task per global batch, resumable (gpu / paper)
  encoders.py, search.py     any embedder -> unit vectors; exact top-k search (torch chunks / faiss)
  mining.py                  hard negatives from ranks [a, b) + ranking-consistency filter
  teacher.py                 cached, resumable teacher similarities for distillation
  stats.py, figures.py       tables and seaborn figures for notebooks/01_data.ipynb
"""
from .catalog import (CATALOG, STAGES, CatalogEntry, HubSource, entry_from_mapping, get_entry, load_catalog,
                      names_for_stage, resolve_data_dir)
from .encoders import as_encode_fn, embedder_name, load_sentence_transformer
from .errors import DataError, DataFileError, EmptyDatasetError, EntryError, LoadReport, RecordError
from .instructions import apply_instruction, format_query, get_instruction, instruction_table
from .jsonl import iter_jsonl, iter_tsv, write_jsonl
from .labeling import example_based_labeling
from .loader import load_corpus, load_hf_dataset, load_records, load_with_report, to_hf_dataset
from .mining import MiningReport, mine_dataset, mine_hard_negatives, scaled_ranges
from .overlap import decontaminate, eval_test_texts, evaluated_files, normalize_text
from .sampler import TaskBatchSampler
from .stream import StreamSubset, TaskStream
from .search import exact_topk
from .teacher import TeacherScorer, data_hash, score_datasets, score_with_teacher
from .training_set import KaLMTrainingDataset, build_training_set, stage_records
from .stats import dataset_table, instruction_examples, labeling_example, load_qwen2_tokenizer, token_lengths
from .validation import SCHEMAS, validate_file, validate_record

__all__ = [
    "CATALOG", "STAGES", "CatalogEntry", "HubSource", "entry_from_mapping", "get_entry", "load_catalog", "names_for_stage",
    "DataError", "DataFileError", "EmptyDatasetError", "EntryError", "iter_tsv", "validate_file",
    "resolve_data_dir", "as_encode_fn", "embedder_name", "load_sentence_transformer", "LoadReport", "RecordError", "apply_instruction", "format_query", "get_instruction",
    "instruction_table", "iter_jsonl", "write_jsonl", "example_based_labeling", "load_corpus", "load_hf_dataset", "load_records",
    "load_with_report", "to_hf_dataset", "MiningReport", "mine_dataset", "mine_hard_negatives", "scaled_ranges",
    "decontaminate", "eval_test_texts", "evaluated_files", "normalize_text", "TaskBatchSampler", "StreamSubset", "TaskStream", "exact_topk",
    "TeacherScorer", "data_hash", "score_datasets", "score_with_teacher", "KaLMTrainingDataset",
    "build_training_set", "stage_records", "SCHEMAS", "validate_record", "dataset_table", "instruction_examples",
    "labeling_example", "load_qwen2_tokenizer", "token_lengths",
]
# figures.py (seaborn) is imported by the notebook itself: ``from kalm_lib.data import figures``
