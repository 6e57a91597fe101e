"""Figure: the controls ablation, test AUC and train-val gap per setting of the shared controls, within one budget.

Variants of a method on a task are compared only with the defaults variant of the same budget
(epochs and precision): a control is never set beside a baseline trained longer or in another
precision. A budget with no defaults variant, or with the defaults alone, is not drawn.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..budget import COMPUTE_KEYS
from ..errors import BenchError
from ..tasks import get_task
from .context import Loaded, Section
from .runs import Group, select
from .style import STYLE, Scores, legend_below, new_figure
from .tables import value_text


@dataclass(frozen=True)
class Variant:
    """One configuration in a controls ablation: its label, test AUC and train-val gap over seeds."""

    label: str
    test_auc: Scores
    gap: Scores | None
    baseline: bool = False


@dataclass(frozen=True)
class Ablation:
    """The variants of one method on one task, at one budget, that differ only in shared settings (controls)."""

    task: str
    method: str
    variants: tuple[Variant, ...] = field(default_factory=tuple)
    budget: str = ""


def ablations(groups: Sequence[Group], tasks: Sequence[str], methods: Sequence[str]) -> list[Ablation]:
    """Return, per (task, method, budget) with the defaults and at least one other setting, the best-by-validation group of each setting.

    A variant is named by the shared settings (augmentation, validation strategy, controls, ...)
    that differ from the defaults and are not common to all of the method's runs at that budget;
    compute settings (epochs, precision, ...) define the budget and never name a variant.
    """
    from ..config import SHARED_PARAMS, resolve
    from ..methods import METHODS

    out: list[Ablation] = []
    for task in tasks:
        for method in methods:
            mine = [g for g in groups if g.task == task and g.method == method]
            if len(mine) < 2 or method not in METHODS:
                continue
            try:
                defaults = resolve(get_task(task), METHODS.get(method))
            except BenchError:
                continue
            own = set(METHODS.get(method).PARAMS)
            by_budget: dict[tuple, list[Group]] = {}
            for g in mine:
                by_budget.setdefault(g.budget.key, []).append(g)
            for key in sorted(by_budget):
                at_budget = by_budget[key]
                # a key a run does not record (made before the setting existed) had its default value
                full = [{**{k: v for k, v in defaults.items() if k not in own}, **g.config} for g in at_budget]
                # only settings this harness declares are compared: a key it does not know cannot be named fairly
                diffs = [{k: v for k, v in c.items() if k in SHARED_PARAMS and k not in COMPUTE_KEYS and v != defaults.get(k)} for c in full]
                common = {k: v for k, v in diffs[0].items() if all(d.get(k, object()) == v for d in diffs[1:])}
                variants: dict[tuple, list[Group]] = {}
                for g, d in zip(at_budget, diffs):
                    label = tuple(sorted((k, json.dumps(v)) for k, v in d.items() if k not in common))
                    variants.setdefault(label, []).append(g)
                if len(variants) < 2 or () not in variants:
                    continue
                chosen = []
                for label, gs in variants.items():
                    g = select(gs)[(task, method)]
                    gaps = [r.train_val_gap() for r in g.runs]
                    gap = Scores.of([x for x in gaps if x is not None]) if any(x is not None for x in gaps) else None
                    text = ", ".join(f"{k}={value_text(json.loads(v))}" for k, v in label) or "defaults"
                    chosen.append(Variant(text, g.test_scores("auc"), gap, baseline=not label))
                chosen.sort(key=lambda v: (not v.baseline, v.label))
                out.append(Ablation(get_task(task).title, method, tuple(chosen), at_budget[0].budget.label()))
    return out


def _zoom_x(ax, values: Iterable[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        ax.set_xlim(max(0.0, math.floor((min(finite) - 0.05) * 20) / 20), 1.0)


def controls_ablation(ablations: Sequence[Ablation], colors: Mapping[str, str]) -> Figure:
    """Return, per (task, method, budget), horizontal bars of test AUC and of the train-val AUC gap for each variant.

    The variant with no control switched on (the defaults of that budget) is hatched; error bars are the sd over seeds.
    """
    n_rows = len(ablations)
    heights = [0.4 * len(a.variants) + 1.3 for a in ablations]
    with plt.rc_context(STYLE):
        fig = new_figure((8.0, sum(heights) + 0.5))
        axes = fig.subplots(n_rows, 2, squeeze=False, height_ratios=heights)
        for (ax_auc, ax_gap), ab in zip(axes, ablations):
            labels = [textwrap.fill(v.label.replace(", ", "; "), 26) for v in ab.variants]
            y = np.arange(len(labels))[::-1]
            c = colors[ab.method]
            for yi, v in zip(y, ab.variants):
                hatch = "///" if v.baseline else None
                ax_auc.barh(yi, v.test_auc.mean, 0.7, color=c, alpha=0.85, hatch=hatch, edgecolor="white" if hatch else None)
                if v.test_auc.sd is not None:
                    ax_auc.errorbar(v.test_auc.mean, yi, xerr=v.test_auc.sd, color="black", lw=0.9, capsize=2)
                if v.gap is not None and math.isfinite(v.gap.mean):
                    ax_gap.barh(yi, v.gap.mean, 0.7, color=c, alpha=0.55, hatch=hatch, edgecolor="white" if hatch else None)
                    if v.gap.sd is not None:
                        ax_gap.errorbar(v.gap.mean, yi, xerr=v.gap.sd, color="black", lw=0.9, capsize=2)
                else:
                    ax_gap.text(0.0, yi, " train AUC not recorded", va="center", fontsize=7, color="0.4")
            for ax in (ax_auc, ax_gap):
                ax.set_ylim(-0.6, len(labels) - 0.4)
            ax_auc.set_yticks(y, labels)
            ax_gap.set_yticks(y, [""] * len(labels))
            ax_auc.set_title(f"{ab.task} / {ab.method}, {ab.budget}: test AUC" if ab.budget else f"{ab.task} / {ab.method}: test AUC", loc="left")
            ax_gap.set_title("train AUC $-$ val AUC at the selected epoch", loc="left")
            ax_auc.set_xlabel("test AUC")
            ax_gap.set_xlabel("generalization gap (AUC)")
            _zoom_x(ax_auc, [x for v in ab.variants for x in (v.test_auc.values or (v.test_auc.mean,))])
            gaps = [x for v in ab.variants if v.gap is not None for x in (v.gap.values or (v.gap.mean,))]
            ax_gap.set_xlim(min([0.0] + gaps) - 0.01, max([0.05] + gaps) * 1.15 + 0.01)
            ax_gap.axvline(0, color="0.3", lw=0.6)
            for ax in (ax_auc, ax_gap):
                ax.grid(axis="y", visible=False)
        handles = [Patch(facecolor="0.6", label="with the named setting")]
        if any(v.baseline for a in ablations for v in a.variants):
            handles.insert(0, Patch(facecolor="0.6", hatch="///", edgecolor="white", label="defaults (no control), same budget"))
        legend_below(fig, handles, ncol=2)
    return fig


def section(d: Loaded) -> Section:
    """Figure 6: test AUC and train-val gap per setting of the shared controls, per (task, method, budget)."""
    sec = Section("Controls ablation: test AUC and generalization gap per setting")
    abl = ablations(d.groups, d.tasks, d.methods)
    if abl:
        sec.files = d.save("controls_ablation", controls_ablation(abl, d.colors))
        n = sum(len(v.test_auc.values) for a in abl for v in a.variants)
        sec.caption = (
            "For each method and task run with the defaults and at least one other setting of the shared controls (augmentation, "
            "validation strategy, EMA/SWA, early stopping, ...) at the same budget (epochs and precision, named in each panel): test AUC "
            "(left) and train AUC minus validation AUC at the selected epoch (right), mean and sd over seeds; each bar is the "
            f"best-by-validation configuration with that setting, hatched the defaults of that budget. From {n} runs."
        )
        if any(v.gap is None for a in abl for v in a.variants):
            sec.notes.append("runs without per-epoch train AUC show no gap bar ('not recorded')")
    else:
        sec.notes.append("no method was run with the defaults and another setting of the shared controls at one budget (epochs and precision)")
    return sec
