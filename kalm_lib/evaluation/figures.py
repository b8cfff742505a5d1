"""The evaluation chapter's seaborn figures: scores by task type, and the Matryoshka curve.

Every figure has labelled axes (scores ×100, the paper's scale) and a title saying what is shown.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .tables import main_scores


def plot_type_scores(df: pd.DataFrame, title: str = "Mean main score per task type (local suite)"):
    """Grouped bars: mean main score per task type for each model, one panel per language."""
    s = main_scores(df)
    sns.set_theme(style="whitegrid", context="notebook")
    langs = list(dict.fromkeys(s["language"])) if "language" in s else [None]
    # one row per language, 7 in wide, so the figure stays legible at the book's text width
    fig, axes = plt.subplots(len(langs), 1, figsize=(7, 4.2 * len(langs)), squeeze=False)
    for ax, lang in zip(axes[:, 0], langs):
        d = s if lang is None else s[s["language"] == lang]
        d = d.groupby(["model", "task_type"], sort=False, as_index=False)["score"].mean()
        sns.barplot(data=d, x="task_type", y="score", hue="model", ax=ax)
        ax.set(xlabel="task type", ylabel="mean main score (×100)",
               title={"en": "English", "zh": "Chinese"}.get(lang, lang or ""))
        ax.tick_params(axis="x", rotation=25)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        ax.legend(title=None, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_matryoshka(curve: pd.DataFrame, title: str = "Matryoshka: score against embedding dimension"):
    """Main score (×100) against the truncated dimension, one line per task (and per model)."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    d = curve.assign(score=100 * curve["main_score"])
    hue = "task" if curve["model"].nunique() == 1 else "model"
    style = "task" if hue == "model" else None
    sns.lineplot(data=d, x="dim", y="score", hue=hue, style=style, marker="o", ax=ax)
    ax.set_xscale("log", base=2)
    dims = sorted(d["dim"].unique())
    ax.set_xticks(dims, [str(int(x)) for x in dims])
    ax.set(xlabel="embedding dimension kept (first d coordinates, re-normalised)",
           ylabel="main score (×100)", title=title)
    ax.legend(title=None, fontsize=8)
    fig.tight_layout()
    return fig
