"""Evaluation: an mteb 2.x wrapper with the KaLM-V2 prompts, local MTEB tasks, the paper's lists, tables.

    from kalm_lib.evaluation import evaluate_model, LOCAL_SUITE, SMOKE_SUITE, results_table
    df = evaluate_model(model, tasks=SMOKE_SUITE, output_dir="runs/smoke/eval", model_name="student/init")
    results_table(df); type_table(df); summary_table(df)      # per task, per type, MTK / MTY
    compare_with_paper(df, "MTEB(eng, v1)")                    # ours beside KaLM-V2 / V2.5

Modules: ``encoder`` (KaLMEncoder, prompts), ``local_tasks`` (the mirror as mteb tasks),
``benchmarks`` (MTEB(eng, v1), MTEB(cmn, v1)), ``runner`` (evaluate_model), ``tables``, ``figures``,
``suite`` (the evaluation notebook's steps), ``paired`` (paired-bootstrap intervals of score differences),
``per_example`` (a task's score example by example, from mteb's saved predictions).
"""

from .benchmarks import BENCHMARKS, MTEB_CMN_V1, MTEB_ENG_V1, benchmark_tasks, main_split
from .encoder import KALM_QUERY_TEMPLATE, KaLM_v2_task_prompts, KaLMEncoder, load_model
from .local_tasks import (
    COMPLETE_TASKS,
    LOCAL_SUITE,
    LOCAL_SUITE_EN,
    LOCAL_SUITE_ZH,
    LOCAL_TASK_SPECS,
    OVERVIEW_SUITE,
    SMOKE_SUITE,
    SUITES,
    LocalDataError,
    get_local_task,
)
from .cache import model_fingerprint, run_cache_dir
from .figures import plot_matryoshka, plot_type_scores
from .paired import PairedDifference, mean_difference, paired_bootstrap
from .per_example import PerExample, paired_gain, per_example_scores
from .saved_prompts import saved_model_prompts
from .runner import MODELS_FILE, RESULT_COLUMNS, evaluate_checkpoints, evaluate_model, listed_models, record_models
from .suite import (
    evaluate_released,
    final_suite,
    matryoshka_curve,
    matryoshka_dims,
    stage_checkpoints,
    stage_gains,
    untrained_student,
)
from .tables import (
    compare_with_paper,
    load_paper_results,
    main_scores,
    mtk,
    mty,
    paper_type_table,
    read_results,
    results_table,
    summary_table,
    type_table,
    write_results,
)

__all__ = [
    "BENCHMARKS", "COMPLETE_TASKS", "KALM_QUERY_TEMPLATE", "KaLMEncoder", "KaLM_v2_task_prompts", "LOCAL_SUITE",
    "LOCAL_SUITE_EN", "LOCAL_SUITE_ZH", "LOCAL_TASK_SPECS", "LocalDataError", "MTEB_CMN_V1", "MTEB_ENG_V1",
    "OVERVIEW_SUITE", "RESULT_COLUMNS", "saved_model_prompts", "SMOKE_SUITE", "SUITES", "benchmark_tasks", "compare_with_paper", "evaluate_checkpoints",
    "evaluate_model", "get_local_task", "load_model", "load_paper_results", "main_scores", "main_split", "mtk",
    "mty", "paper_type_table", "read_results", "results_table", "summary_table", "type_table", "write_results",
    "plot_matryoshka", "plot_type_scores", "evaluate_released", "final_suite", "matryoshka_curve", "matryoshka_dims",
    "stage_checkpoints", "untrained_student", "MODELS_FILE", "listed_models", "record_models",
    "PairedDifference", "mean_difference", "paired_bootstrap", "PerExample", "paired_gain", "per_example_scores",
    "stage_gains", "model_fingerprint", "run_cache_dir",
]
