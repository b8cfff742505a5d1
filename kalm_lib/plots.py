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
    """Loss terms, learning rate and throughput against the optimizer step, from ``metrics.jsonl``.

    Three stacked panels, 7 inches wide, so the figure is legible at the book's text width.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(3, 1, figsize=(7, 8.5), sharex=True)
    ax = axes[0]
    for n, (key, label) in enumerate(LOSS_TERMS.items()):
        if key in metrics and metrics[key].notna().any():
            color = f"C{n}"
            ax.plot(metrics["step"], metrics[key], alpha=0.25, color=color)
            ax.plot(metrics["step"], _smooth(metrics[key], smooth), color=color,
                    label=f"{label}, running mean of {smooth}")
    ax.set(ylabel="loss (nats)", title="loss per step (faint: raw)")
    ax.legend(fontsize=9)
    axes[1].plot(metrics["step"], metrics["lr"])
    axes[1].set(ylabel="learning rate", title="learning rate: linear warm-up, then linear decay")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes[2].plot(metrics["step"], _smooth(metrics["tokens_per_s"], smooth), label="tokens / s")
    axes[2].set(xlabel="optimizer step", ylabel="non-pad tokens / s", title="throughput (left) and padding (right)")
    if "padding_fraction" in metrics:
        tw = axes[2].twinx()
        tw.plot(metrics["step"], 100 * metrics["padding_fraction"], color="gray", alpha=0.6)
        tw.set_ylabel("padded tokens (%)", color="gray")
        tw.grid(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


METRIC_COLUMNS = ["loss", "contrastive", "distill", "focal_weight_mean", "p_pos_mean", "lr", "grad_norm",
                  "tokens_per_s", "padding_fraction", "memory_mb"]


def last_steps(metrics: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The last ``n`` logged steps, one column per step (narrow enough for the book's column)."""
    cols = [c for c in METRIC_COLUMNS if c in metrics]
    t = metrics.tail(n).set_index("step")[cols].T
    t.columns = [f"step {c}" for c in t.columns]
    return t.map(lambda v: f"{v:.4g}")


def plot_before_after(scores: pd.DataFrame, title: str):
    """Grouped bars of the main score per task for each model label (``quick_scores`` output)."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 4))
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


def plot_mining_by_dataset(reports, title: str = "mined hard negatives against positives"):
    """Score of each query's positive s(q, p⁺) and of its mined negatives, one box per dataset (MiningReport list;
    one dataset in detail: kalm_lib.data.figures.plot_mining_scores)."""
    rows = []
    for r in reports:
        rows += [{"dataset": r.name, "candidate": "positive", "cosine": s} for s in r.pos_scores]
        rows += [{"dataset": r.name, "candidate": "mined negative", "cosine": s} for s in r.neg_scores]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.boxplot(data=pd.DataFrame(rows), x="dataset", y="cosine", hue="candidate", ax=ax, fliersize=1)
    ax.set(xlabel="dataset", ylabel="cosine similarity to the query (stage-1 model)", title=title)
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return fig


def plot_teacher_scores(frame: pd.DataFrame, title: str = "teacher cosine scores of positives and negatives"):
    """``frame``: kalm_lib.data.teacher.teacher_score_frame."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.boxplot(data=frame, x="dataset", y="score", hue="candidate", ax=ax, fliersize=1)
    ax.set(xlabel="dataset", ylabel="teacher cosine similarity", title=title)
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


def plot_ablations(table: pd.DataFrame, title: str = "ablations: each arm's gain over its group's reference"):
    """One panel per ablation group: each arm's gain over the group's reference arm on every STS/retrieval task
    (points, ×100) with its paired 95% bootstrap interval (bars); a bar that crosses the dashed zero line is not
    evidence of a difference. ``table``: ``kalm_lib.ablations.ablation_table``."""
    d = table[table.gain.notna()].copy()
    groups = list(dict.fromkeys(d.group))
    if not groups:
        raise ValueError("plot_ablations: no arm with a reference to compare with (only reference arms were run)")
    tasks = list(dict.fromkeys(d.task))
    sns.set_theme(style="whitegrid", context="notebook")
    heights = [max(1.2, 0.45 * d[d.group == g].arm.nunique() + 0.6) for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(7, sum(heights) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    offsets = {t: (i - (len(tasks) - 1) / 2) * 0.8 / max(len(tasks), 1) for i, t in enumerate(tasks)}
    for ax, g in zip(axes[:, 0], groups):
        sub = d[d.group == g]
        arms = list(dict.fromkeys(sub.arm))
        for i, t in enumerate(tasks):
            s = sub[sub.task == t]
            y = [arms.index(a) + offsets[t] for a in s.arm]
            gains = s.gain.astype(float)
            err = [gains - s.gain_low.astype(float), s.gain_high.astype(float) - gains]
            ax.errorbar(gains, y, xerr=err, fmt="o", color=f"C{i}", capsize=2, markersize=4,
                        label=t if g == groups[0] else None)
        ax.axvline(0, color="0.3", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(arms)), arms, fontsize=9)
        ax.invert_yaxis()
        ref = sub.reference.iloc[0]
        ax.set_title(f"{g} (reference: {ref})", fontsize=10)
        ax.set_xlabel("gain over the reference (main score × 100)")
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
