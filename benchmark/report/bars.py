"""Figures: test AUC per method and task as bars from chance (0.5), and test FPR at 95 % TPR as bars from 0.

Each bar is named by its method (written along the bar), carries the sd over seeds and a dot
per seed; the MedMNIST v2 reference is a dashed line over its task.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..tasks import get_task
from .context import Loaded, Section, runs_phrase
from .style import REFERENCE_COLOR, STYLE, Scores, legend_below, method_handles, new_figure

CHANCE_AUC = 0.5  # the AUC bars grow from chance, so a bar's length is what the model adds over guessing


def grouped_bars(
    ax,
    tasks: Sequence[str],
    scores: Mapping[str, Mapping[str, Scores]],
    colors: Mapping[str, str],
    reference: Mapping[str, float | None] | None = None,
    bottom: float = 0.0,
) -> tuple[list[str], bool]:
    """Draw bars from `bottom` to the mean, sd error bars, seed dots and the method's name per bar; return (methods drawn, whether a reference line was)."""
    methods = [m for m in colors if any(m in scores[t] for t in tasks)]
    width = 0.8 / max(len(methods), 1)
    drew_ref = False
    for i, task in enumerate(tasks):
        present = [m for m in methods if m in scores[task]]
        for j, method in enumerate(present):
            s = scores[task][method]
            x = i - 0.4 + width * (j + 0.5 + (len(methods) - len(present)) / 2)
            ax.bar(x, s.mean - bottom, width * 0.9, bottom=bottom, color=colors[method], alpha=0.85)
            # the name along the bar, from its base: every bar says which method it is without the legend
            ax.text(x, bottom, f" {method}", rotation=90, ha="center", va="bottom", fontsize=6.5, color="black", clip_on=True, zorder=4)
            if s.sd is not None:
                ax.errorbar(x, s.mean, yerr=s.sd, color="black", lw=0.9, capsize=2)
            if s.values:
                jitter = np.linspace(-0.18, 0.18, len(s.values)) * width if len(s.values) > 1 else np.zeros(1)
                ax.plot(x + jitter, s.values, "o", ms=2.2, color="black", alpha=0.6, mew=0)
        ref = (reference or {}).get(task)
        if ref is not None:
            ax.hlines(ref, i - 0.45, i + 0.45, colors=REFERENCE_COLOR, linestyles="--", lw=1.2)
            drew_ref = True
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.grid(axis="x", visible=False)
    return methods, drew_ref


def auc_bars(
    scores: Mapping[str, Mapping[str, Scores]],
    reference: Mapping[str, float | None],
    colors: Mapping[str, str],
    reference_label: str = "MedMNIST v2 ResNet-18",
) -> Figure:
    """Return grouped bars of mean test AUC per method per task, from chance (0.5) up, with sd, seed dots and the reference line."""
    tasks = list(scores)
    n_methods = len({m for t in tasks for m in scores[t]})
    with plt.rc_context(STYLE):
        fig = new_figure((max(4.5, 1.1 + max(1.25, 0.3 * n_methods) * len(tasks)), 3.6))
        ax = fig.subplots()
        methods, drew_ref = grouped_bars(ax, tasks, scores, colors, reference, bottom=CHANCE_AUC)
        ax.set_ylabel("test AUC (bars from chance, 0.5)")
        ax.set_xlabel("task")
        values = [v for t in tasks for s in scores[t].values() for v in (s.values or (s.mean,)) if math.isfinite(v)]
        ax.set_ylim(min([CHANCE_AUC] + [v - 0.02 for v in values]), 1.0)
        handles = method_handles(methods, colors)
        if drew_ref:
            handles.append(Line2D([], [], color=REFERENCE_COLOR, ls="--", lw=1.2, label=reference_label))
        handles.append(Line2D([], [], color="black", marker="o", ls="", ms=2.5, label="one seed"))
        legend_below(fig, handles, ncol=min(len(handles), 5))
    return fig


def fpr_bars(scores: Mapping[str, Mapping[str, Scores]], colors: Mapping[str, str], tpr_level: float = 0.95) -> Figure:
    """Return grouped bars of the test FPR at the given TPR per method per task (lower is better)."""
    tasks = list(scores)
    n_methods = len({m for t in tasks for m in scores[t]})
    with plt.rc_context(STYLE):
        fig = new_figure((max(4.5, 1.1 + max(1.25, 0.3 * n_methods) * len(tasks)), 3.2))
        ax = fig.subplots()
        methods, _ = grouped_bars(ax, tasks, scores, colors)
        ax.set_ylabel(f"test FPR at {tpr_level:.0%} TPR")
        ax.set_xlabel("task")
        top = max([v for t in tasks for s in scores[t].values() for v in (s.values or (s.mean,)) if math.isfinite(v)] + [0.05])
        ax.set_ylim(0, min(1.0, top * 1.1 + 0.02))
        handles = method_handles(methods, colors)
        handles.append(Line2D([], [], color="black", marker="o", ls="", ms=2.5, label="one seed"))
        legend_below(fig, handles, ncol=min(len(handles), 5))
    return fig


def section(d: Loaded) -> Section:
    """Figure 2: mean test AUC per method and task with seed spread and the MedMNIST reference."""
    entries, tasks, methods, titles, colors = d.entries, d.tasks, d.methods, d.titles, d.colors
    sec = Section("Test AUC per method and task")
    scores = {titles[t]: {m: entries[(t, m)].test_auc for m in methods if (t, m) in entries} for t in tasks}
    refs = {titles[t]: get_task(t).reference.get("auc") for t in tasks}
    sec.files = d.save("test_auc", auc_bars(scores, refs, colors))
    sources = sorted({e.source for e in entries.values()})
    other = [f"{titles[e.task]} / {e.method} ({e.budget.label()})" for e in entries.values() if not e.protocol]
    sec.caption = (
        "Mean test AUC over seeds (bars, drawn from chance at 0.5), sd (error bars) and each seed (dots) per method and task, the dashed line "
        f"the MedMNIST v2 ResNet-18 reference. Numbers as in the main table ({' and '.join(sources)}); from {_groups_phrase(entries.values())}."
    )
    if other:
        sec.notes.append(f"not at the report's budget (as marked in the main table): {', '.join(other)}")
    return sec


def _groups_phrase(entries: Iterable) -> str:
    groups = [e.group for e in entries if e.group]
    from_board = sum(1 for e in entries if e.group is None)
    text = runs_phrase(groups) if groups else "no run directories"
    return text + (f" and {from_board} leaderboard entr{'y' if from_board == 1 else 'ies'}" if from_board else "")
