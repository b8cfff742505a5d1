"""The seaborn figures of the training chapters: loss curves and before/after scores.

Every figure has labelled axes with units and a title that says what the reader is looking at.
Data figures live in ``kalm_lib.data`` (figures.py) and evaluation figures in ``kalm_lib.evaluation``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

LOSS_TERMS = {"loss": "total loss", "contrastive": "contrastive (focal InfoNCE)", "distill": "KL distillation"}


def _smooth(s: pd.Series, window: int) -> pd.Series:
    return s.rolling(window, min_periods=1).mean()


def plot_training_curves(metrics: pd.DataFrame, title: str, smooth: int = 10):
    """Loss terms, learning rate and throughput against the optimizer step, from ``metrics.jsonl``."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for key, label in LOSS_TERMS.items():
        if key in metrics and metrics[key].notna().any():
            ax.plot(metrics["step"], metrics[key], alpha=0.25)
            ax.plot(metrics["step"], _smooth(metrics[key], smooth), label=f"{label} (mean of {smooth})",
                    color=ax.lines[-1].get_color())
    ax.set(xlabel="optimizer step", ylabel="loss (nats)", title="loss")
    ax.legend(fontsize=8)
    axes[1].plot(metrics["step"], metrics["lr"])
    axes[1].set(xlabel="optimizer step", ylabel="learning rate", title="warm-up, then linear decay")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes[2].plot(metrics["step"], _smooth(metrics["tokens_per_s"], smooth), label="tokens / s")
    axes[2].set(xlabel="optimizer step", ylabel="real (non-pad) tokens per second", title="throughput")
    if "padding_fraction" in metrics:
        tw = axes[2].twinx()
        tw.plot(metrics["step"], 100 * metrics["padding_fraction"], color="gray", alpha=0.5, label="padding %")
        tw.set_ylabel("padded tokens (%)")
        tw.grid(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_before_after(scores: pd.DataFrame, title: str):
    """Grouped bars of the main score per task for each model label (``quick_scores`` output)."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * scores["task"].nunique() + 2), 4))
    sns.barplot(data=scores, x="task", y="main_score", hue="model", ax=ax)
    ax.set(xlabel="task (local MTEB copy, rows capped)", ylabel="main score (MTEB metric, 0-1)", title=title)
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(title=None, fontsize=8)
    fig.tight_layout()
    return fig


def score_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Tasks as rows, models as columns (in the order given), plus the mean over tasks."""
    order = list(dict.fromkeys(scores["model"]))
    t = scores.pivot_table(index="task", columns="model", values="main_score")[order]
    t.loc["mean over tasks"] = t.mean()
    return t.round(4)


def plot_mining_scores(reports, title: str = "mined hard negatives against positives"):
    """Score of each query's positive s(q, p⁺) and of its mined negatives, per dataset (MiningReport list)."""
    rows = []
    for r in reports:
        rows += [{"dataset": r.name, "candidate": "positive", "cosine": s} for s in r.pos_scores]
        rows += [{"dataset": r.name, "candidate": "mined negative", "cosine": s} for s in r.neg_scores]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(reports) + 2), 4))
    sns.boxplot(data=pd.DataFrame(rows), x="dataset", y="cosine", hue="candidate", ax=ax, fliersize=1)
    ax.set(xlabel="dataset", ylabel="cosine similarity to the query (stage-1 model)", title=title)
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return fig


def teacher_score_frame(written: dict, max_rows: int = 500) -> pd.DataFrame:
    """Long table (dataset, candidate, score) from the teacher-score JSON Lines files."""
    from kalm_lib.data import iter_jsonl

    rows = []
    for name, path in written.items():
        for n, (_, r) in enumerate(iter_jsonl(path)):
            if n >= max_rows:
                break
            k = len(r["pos"])
            rows += [{"dataset": name, "candidate": "positive", "score": s} for s in r["teacher_scores"][:k]]
            rows += [{"dataset": name, "candidate": "negative", "score": s} for s in r["teacher_scores"][k:]]
    return pd.DataFrame(rows)


def plot_teacher_scores(frame: pd.DataFrame, title: str = "teacher cosine scores of positives and negatives"):
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * frame["dataset"].nunique() + 2), 4))
    sns.boxplot(data=frame, x="dataset", y="score", hue="candidate", ax=ax, fliersize=1)
    ax.set(xlabel="dataset", ylabel="teacher cosine similarity", title=title)
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig
