"""Figure: learning curves, train and validation AUC per epoch for each method's selected configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .context import Loaded, Section, runs_phrase
from .runs import Group
from .style import STYLE, legend_below, panels


@dataclass(frozen=True)
class Curve:
    """A method's learning curve on one task: per-epoch AUC, averaged over the configuration's seeds."""

    epochs: np.ndarray
    val_auc: np.ndarray
    train_auc: np.ndarray | None
    best_epochs: tuple[int, ...]
    n_seeds: int


def curve_of(group: Group) -> Curve | None:
    """Return the group's learning curve (mean over seeds, and over folds under k-fold, per epoch), or None without logs.

    A refit phase (retraining on train+val) is left out: its validation rows are training rows.
    """
    per_epoch: dict[int, dict[str, list[float]]] = {}
    for run in group.runs:
        for rec in run.history:
            if rec.get("phase") == "refit":
                continue
            slot = per_epoch.setdefault(int(rec["epoch"]), {"val": [], "train": []})
            if rec.get("val/auc") is not None:
                slot["val"].append(float(rec["val/auc"]))
            if rec.get("train/auc") is not None:
                slot["train"].append(float(rec["train/auc"]))
    if not per_epoch:
        return None
    epochs = np.array(sorted(per_epoch))
    val = np.array([np.mean(per_epoch[e]["val"]) if per_epoch[e]["val"] else np.nan for e in epochs])
    has_train = all(per_epoch[e]["train"] for e in epochs)
    train = np.array([np.mean(per_epoch[e]["train"]) for e in epochs]) if has_train else None
    best = tuple(sorted({e for r in group.runs for e in r.best_epochs()}))
    return Curve(epochs, val, train, best, len(group.runs))


def learning_curves(task_title: str, curves: Mapping[str, Curve], colors: Mapping[str, str]) -> Figure:
    """Return one task's learning curves: a panel per method with validation AUC (solid) and train AUC (dashed) per epoch.

    The shaded band between the two curves is the generalization gap; dots mark the selected
    (best-validation) epoch of each seed. Panels share the AUC axis so methods compare directly.
    """
    methods = [m for m in colors if m in curves]
    ncols = min(len(methods), 4)
    with plt.rc_context(STYLE):
        fig, axes = panels(len(methods), ncols=ncols, panel=(2.6, 2.2))
        any_train = False
        for ax, method in zip(axes, methods):
            curve, c = curves[method], colors[method]
            ax.plot(curve.epochs, curve.val_auc, color=c, lw=1.4)
            if curve.train_auc is not None:
                any_train = True
                ax.plot(curve.epochs, curve.train_auc, color=c, lw=1.1, ls="--")
                ax.fill_between(curve.epochs, curve.val_auc, curve.train_auc, color=c, alpha=0.15, lw=0)
            for best in curve.best_epochs:
                hit = np.flatnonzero(curve.epochs == best)
                if hit.size:
                    ax.plot(best, curve.val_auc[hit[0]], "o", color=c, ms=4, mec="black", mew=0.6, zorder=3)
            seeds = f"{curve.n_seeds} seed{'s' if curve.n_seeds != 1 else ''}"
            ax.set_title(f"{method} ({seeds})", color=c)
            ax.set_xlabel("epoch")
            ax.set_ylabel("AUC")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        values = [v for m in methods for arr in (curves[m].val_auc, curves[m].train_auc) if arr is not None for v in arr if math.isfinite(v)]
        if values:
            low = max(0.0, math.floor((min(values) - 0.02) * 20) / 20)
            for ax in axes:
                ax.set_ylim(low, 1.005)
        handles = [Line2D([], [], color="0.3", lw=1.4, label="validation AUC")]
        if any_train:
            handles.append(Line2D([], [], color="0.3", lw=1.1, ls="--", label="train AUC"))
            handles.append(Patch(facecolor="0.3", alpha=0.15, label="gap"))
        handles.append(Line2D([], [], color="0.3", marker="o", ls="", ms=4, mec="black", mew=0.6, label="selected epoch (per seed)"))
        fig.suptitle(task_title, fontsize=10)
        legend_below(fig, handles, ncol=len(handles) if ncols >= 3 else 2)
    return fig


def section(d: Loaded) -> Section:
    """Figure 1: per task, each method's train and validation AUC per epoch (the overfitting story)."""
    entries, tasks, methods, titles, colors = d.entries, d.tasks, d.methods, d.titles, d.colors
    sec = Section("Learning curves: train and validation AUC per epoch")
    used: list[Group] = []
    no_train: list[str] = []
    for task in tasks:
        curves: dict[str, Curve] = {}
        for method in methods:
            e = entries.get((task, method))
            c = curve_of(e.group) if e and e.group else None
            if c is not None:
                curves[method] = c
                used.append(e.group)
                if c.train_auc is None:
                    no_train.append(f"{titles[task]} / {method}")
            elif e is not None:
                why = "no per-epoch log in its runs" if e.group else "its runs are not in the run store read (leaderboard entry only)"
                sec.notes.append(f"{titles[task]} / {method}: {why}, so no curve")
        if curves:
            sec.files += d.save(f"learning_curves_{task}", learning_curves(titles[task], curves, colors))
    if sec.files:
        sec.caption = (
            "Per task, one panel per method: validation AUC (solid) and train AUC (dashed) per epoch, mean over the seeds of the "
            f"method's selected configuration; the shaded band is the train-validation gap, dots the selected epochs. From {runs_phrase(used)}."
        )
    if no_train:
        sec.notes.append(f"train AUC per epoch is not in the logs of {', '.join(no_train)} (runs made before train-AUC logging), so only the validation curve is drawn there")
    return sec
