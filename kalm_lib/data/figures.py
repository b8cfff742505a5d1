"""Seaborn figures for the data chapter: sizes, token lengths, mined-negative scores and positive ranks."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .mining import MiningReport


def plot_dataset_sizes(table: pd.DataFrame, ax=None):
    """Usable examples per dataset (log scale), coloured by language."""
    ax = ax or plt.subplots(figsize=(8, 0.32 * len(table) + 1))[1]
    t = table.sort_values("usable", ascending=False)
    sns.barplot(data=t, y="dataset", x="usable", hue="language", dodge=False, ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("usable examples (after validation, positive threshold, decontamination)")
    ax.set_ylabel("")
    return ax


def plot_token_lengths(lengths: pd.DataFrame, ax=None):
    """Qwen2 token counts per dataset, query vs positive (log scale)."""
    n = lengths["dataset"].nunique()
    ax = ax or plt.subplots(figsize=(8, 0.4 * n + 1))[1]
    sns.boxplot(data=lengths, y="dataset", x="tokens", hue="side", fliersize=1, ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("Qwen2 tokens (instruction template included)")
    ax.set_ylabel("")
    return ax


def plot_mining_scores(report: MiningReport, axes=None):
    """Left: s(q, p⁺) vs s(q, p⁻) of the mined negatives. Right: the positive's rank, with the top-k cut."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    df = pd.DataFrame({"cosine": np.r_[report.pos_scores, report.neg_scores],
                       "kind": ["positive s(q,p⁺)"] * len(report.pos_scores) + ["mined negative s(q,p⁻)"] * len(report.neg_scores)})
    sns.histplot(data=df, x="cosine", hue="kind", stat="density", common_norm=False, bins=30, ax=axes[0])
    axes[0].set_title(f"{report.name}: negatives from ranks [{report.sample_range[0]}, {report.sample_range[1]})")
    ranks = np.asarray(report.pos_ranks)
    sns.histplot(x=ranks, bins=np.unique(np.r_[np.geomspace(1, max(ranks.max(), 2) + 1, 25).astype(int)]), ax=axes[1])
    axes[1].set_xscale("log")
    if report.filter_topk > 0:
        axes[1].axvline(report.filter_topk + 0.5, color="crimson", ls="--",
                        label=f"top-{report.filter_topk}: {100 * report.filter_rate:.0f}% dropped")
        axes[1].legend()
    axes[1].set_xlabel("rank of the best positive")
    axes[1].set_title("ranking-consistency filter")
    return axes
