"""Figure: test ROC curve of each method's best model with the two-way pAUC region, and the FPR at 95 % TPR bars.

Curves that coincide exactly (AUC-M and AUC-S trained to the same weights, say) would hide one
another; the panel then says which methods share a curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .. import metrics
from ..tasks import get_task
from .bars import fpr_bars
from .context import Loaded, Section, runs_phrase
from .runs import Group
from .style import STYLE, Scores, legend_below, method_handles, panels

TPR_LEVEL = 0.95
PAUC_REGION = (0.3, 0.7)  # two-way partial AUC region: FPR <= 0.3 and TPR >= 0.7 (LibAUC's tpAUC metric)


@dataclass(frozen=True)
class Roc:
    """A ROC curve (macro-averaged over labels for multi-label tasks) and its AUC."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc_of(labels: np.ndarray, scores: np.ndarray) -> Roc | None:
    """Return the test ROC curve; for several labels, the macro average of per-label curves on a common FPR grid."""
    from sklearn.metrics import auc, roc_curve

    curves = []
    for j in range(labels.shape[1]):
        if len(np.unique(labels[:, j])) == 2:
            fpr, tpr, _ = roc_curve(labels[:, j], scores[:, j])
            curves.append((fpr, tpr))
    if not curves:
        return None
    if len(curves) == 1:
        fpr, tpr = curves[0]
    else:  # sklearn's documented macro-average ROC: interpolate each label's TPR on the union of FPRs
        fpr = np.unique(np.concatenate([c[0] for c in curves]))
        tpr = np.mean([np.interp(fpr, c[0], c[1]) for c in curves], axis=0)
    return Roc(fpr, tpr, float(auc(fpr, tpr)))


def fpr_at_tpr(labels: np.ndarray, scores: np.ndarray, level: float = TPR_LEVEL) -> float:
    """Return the test FPR at the given TPR (metrics.fpr_at_tpr: lowest FPR reaching it, mean over labels)."""
    return float(metrics.fpr_at_tpr(labels, scores, level))


def identical_curves(rocs: Mapping[str, Roc]) -> list[list[str]]:
    """Return the groups of two or more methods whose ROC curves are exactly the same, in the given order."""
    groups: list[list[str]] = []
    for method, roc in rocs.items():
        for group in groups:
            first = rocs[group[0]]
            if np.array_equal(first.fpr, roc.fpr) and np.array_equal(first.tpr, roc.tpr):
                group.append(method)
                break
        else:
            groups.append([method])
    return [g for g in groups if len(g) > 1]


def roc_curves(rocs: Mapping[str, Mapping[str, Roc]], colors: Mapping[str, str], titles: Mapping[str, str] | None = None, tpr_level: float = TPR_LEVEL) -> Figure:
    """Return one ROC panel per task with each method's curve, the two-way pAUC region and the TPR level shaded/marked.

    Where methods share an identical curve, the panel names them ("aucm = aucs: identical curves").
    """
    tasks = list(rocs)
    max_fpr, min_tpr = PAUC_REGION
    with plt.rc_context(STYLE):
        fig, axes = panels(len(tasks), panel=(3.0, 3.0))
        methods_seen: list[str] = []
        for ax, task in zip(axes, tasks):
            ax.add_patch(Rectangle((0, min_tpr), max_fpr, 1 - min_tpr, facecolor="0.85", edgecolor="0.6", lw=0.6, zorder=0))
            ax.axhline(tpr_level, color="0.4", lw=0.7, ls=":", zorder=1)
            ax.plot([0, 1], [0, 1], color="0.7", lw=0.7, ls="--", zorder=1)
            for method, roc in rocs[task].items():
                if method not in methods_seen:
                    methods_seen.append(method)
                ax.plot(roc.fpr, roc.tpr, color=colors[method], lw=1.3, drawstyle="default", zorder=2)
            same = identical_curves(rocs[task])
            if same:
                text = "\n".join(" = ".join(g) + ": identical curves" for g in same)
                ax.text(0.98, 0.03, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.2")
            ax.set_title((titles or {}).get(task, task))
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
            ax.set_aspect("equal")
        handles = method_handles([m for m in colors if m in methods_seen], colors)
        handles.append(Patch(facecolor="0.85", edgecolor="0.6", label=f"pAUC region (FPR $\\leq$ {max_fpr:g}, TPR $\\geq$ {min_tpr:g})"))
        handles.append(Line2D([], [], color="0.4", ls=":", lw=0.7, label=f"TPR = {tpr_level:g}"))
        legend_below(fig, handles, ncol=min(len(handles), 4))
    return fig


def section(d: Loaded) -> Section:
    """Figure 3: ROC curves of each method's best model with the pAUC region, and FPR at 95 % TPR."""
    entries, tasks, methods, titles, colors = d.entries, d.tasks, d.methods, d.titles, d.colors
    sec = Section("ROC curves of each method's best model, and FPR at 95 % TPR")
    rocs: dict[str, dict[str, Roc]] = {}
    fprs: dict[str, dict[str, Scores]] = {}
    used: list[Group] = []
    from_board: list[str] = []
    for task in tasks:
        for method in methods:
            e = entries.get((task, method))
            if e is None:
                continue
            if e.fpr is not None:
                fprs.setdefault(titles[task], {})[method] = e.fpr
            best = e.best_predictions(d.opts.leaderboards)
            if best is None:
                sec.notes.append(f"{titles[task]} / {method}: no stored test predictions")
                continue
            roc = roc_of(*best)
            if roc is not None:
                rocs.setdefault(titles[task], {})[method] = roc
                if e.group is not None:
                    used.append(e.group)
                else:
                    from_board.append(f"{titles[task]} / {method}")
            if e.fpr is None and e.group is not None:
                per_seed = [fpr_at_tpr(*p) for r in e.group.runs if (p := r.predictions()) is not None]
                fprs.setdefault(titles[task], {})[method] = Scores.of(per_seed)
    if rocs:
        sec.files += d.save("roc_curves", roc_curves(rocs, colors, tpr_level=TPR_LEVEL))
        for task, curves in rocs.items():
            for group in identical_curves(curves):
                sec.notes.append(f"{task}: the ROC curves of {' and '.join(group)} are identical (drawn over one another; the panel says so)")
    if fprs:
        fprs = {t: fprs[t] for t in (titles[x] for x in tasks) if t in fprs}
        sec.files += d.save("fpr_at_95tpr", fpr_bars(fprs, colors, TPR_LEVEL))
    if sec.files:
        multi = [titles[t] for t in tasks if get_task(t).multilabel and titles[t] in rocs]
        sec.caption = (
            "Test ROC curve of each method's best model (the seed of the selected configuration with the best validation AUC), "
            "the grey box the two-way partial-AUC region (FPR <= 0.3, TPR >= 0.7), the dotted line TPR = 0.95"
            + (f" ({', '.join(multi)}: macro average of the per-label curves)" if multi else "")
            + "; below, the test FPR at 95 % TPR (lower is better), mean and sd over the seeds"
            + (" (leaderboard values where a leaderboard lists the method)" if any(e.fpr is not None for e in entries.values()) else "")
            + ". From "
            + " and ".join(
                ([runs_phrase(used)] if used else []) + ([f"the leaderboard's stored predictions for {', '.join(from_board)}"] if from_board else [])
            )
            + "."
        )
    return sec
