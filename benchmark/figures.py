"""The report's figures: each function takes already-loaded numbers and returns a matplotlib Figure.

Nothing here reads a run store or trains anything; `report.py` loads the stored results and
hands plain arrays to these functions, so each figure can be drawn (and tested) on its own.
All figures use the Agg backend, one fixed colour per method (`method_colors`), labelled
axes, and legends placed outside the plotting area so they never cover data.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # the report writes files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Okabe-Ito's colour-blind-safe palette (yellow left out: unreadable on white), then Paul Tol's muted set.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#117733", "#999933", "#44AA99", "#AA4499", "#332288")
REFERENCE_COLOR = "#000000"
STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "axes.edgecolor": "black",
    "axes.labelcolor": "black",
    "xtick.color": "black",
    "ytick.color": "black",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays selectable and LaTeX-friendly
}
PANEL_W, PANEL_H = 3.3, 2.6  # inches per panel: two panels fit a LaTeX text width at about 85 %


def method_colors(extra: Iterable[str] = ()) -> dict[str, str]:
    """Return {method: colour}: the METHODS registry order fixes each registered method's colour.

    Methods found in results but not registered (a submission's name, say) get the next
    palette colours in sorted order, after every registered method.
    """
    from .methods import METHODS

    names = list(METHODS.names())
    names += sorted(set(extra) - set(names))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


@dataclass(frozen=True)
class Scores:
    """One number per seed with its mean and standard deviation (as the table shows them)."""

    values: tuple[float, ...]
    mean: float
    sd: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> "Scores":
        """Return the scores of `values`: mean and sample standard deviation (None for one seed)."""
        vals = tuple(float(v) for v in values if v is not None and math.isfinite(v))
        if not vals:
            return cls((), float("nan"), None)
        sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        return cls(vals, float(np.mean(vals)), sd)


@dataclass(frozen=True)
class Curve:
    """A method's learning curve on one task: per-epoch AUC, averaged over the configuration's seeds."""

    epochs: np.ndarray
    val_auc: np.ndarray
    train_auc: np.ndarray | None
    best_epochs: tuple[int, ...]
    n_seeds: int


@dataclass(frozen=True)
class Roc:
    """A ROC curve (macro-averaged over labels for multi-label tasks) and its AUC."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


@dataclass(frozen=True)
class Variant:
    """One configuration in a controls ablation: its label, test AUC and train-val gap over seeds."""

    label: str
    test_auc: Scores
    gap: Scores | None
    baseline: bool = False


@dataclass(frozen=True)
class Ablation:
    """The variants of one method on one task that differ only in shared settings (controls)."""

    task: str
    method: str
    variants: tuple[Variant, ...] = field(default_factory=tuple)


def _figure(n_panels: int, ncols: int | None = None, panel: tuple[float, float] = (PANEL_W, PANEL_H), legend_rows: int = 1, min_width: float = 5.2) -> tuple[Figure, list]:
    ncols = ncols or min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    # a floor on the width keeps a one-panel figure's legend from being cut off
    fig = Figure(figsize=(max(min_width, panel[0] * ncols), panel[1] * nrows + 0.35 * legend_rows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _legend_below(fig: Figure, handles: list, ncol: int | None = None) -> None:
    """Put one legend for the whole figure below the panels, where it covers nothing, read row by row."""
    if not handles:
        return
    ncol = min(ncol or 5, len(handles))
    rows = math.ceil(len(handles) / ncol)
    # matplotlib fills a legend column by column; place the handles so that it reads row by row
    blank = Line2D([], [], alpha=0.0, label=" ")
    grid = [handles[i] if i < len(handles) else blank for i in range(rows * ncol)]
    ordered = [grid[r * ncol + c] for c in range(ncol) for r in range(rows)]
    fig.legend(handles=ordered, loc="outside lower center", ncol=ncol, frameon=False)


def _method_handles(methods: Iterable[str], colors: Mapping[str, str]) -> list:
    return [Patch(facecolor=colors[m], label=m) for m in methods]


def _task_title(task: str, titles: Mapping[str, str] | None) -> str:
    return (titles or {}).get(task, task)


def learning_curves(task_title: str, curves: Mapping[str, Curve], colors: Mapping[str, str]) -> Figure:
    """Return one task's learning curves: a panel per method with validation AUC (solid) and train AUC (dashed) per epoch.

    The shaded band between the two curves is the generalization gap; dots mark the selected
    (best-validation) epoch of each seed. Panels share the AUC axis so methods compare directly.
    """
    methods = [m for m in colors if m in curves]
    ncols = min(len(methods), 4)
    with plt.rc_context(STYLE):
        fig, axes = _figure(len(methods), ncols=ncols, panel=(2.6, 2.2))
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
        _legend_below(fig, handles, ncol=len(handles) if ncols >= 3 else 2)
    return fig


def _grouped_bars(
    ax,
    tasks: Sequence[str],
    scores: Mapping[str, Mapping[str, Scores]],
    colors: Mapping[str, str],
    reference: Mapping[str, float | None] | None = None,
) -> tuple[list[str], bool]:
    """Draw bars (mean), error bars (sd over seeds) and seed dots per task group; return the methods drawn."""
    methods = [m for m in colors if any(m in scores[t] for t in tasks)]
    width = 0.8 / max(len(methods), 1)
    drew_ref = False
    for i, task in enumerate(tasks):
        present = [m for m in methods if m in scores[task]]
        for j, method in enumerate(present):
            s = scores[task][method]
            x = i - 0.4 + width * (j + 0.5 + (len(methods) - len(present)) / 2)
            ax.bar(x, s.mean, width * 0.9, color=colors[method], alpha=0.85)
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


def _zoom(ax, values: Iterable[float], floor: float = 0.0, ceil: float = 1.0) -> None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return
    low = max(floor, math.floor((min(finite) - 0.05) * 20) / 20)
    ax.set_ylim(low, ceil)


def test_auc_bars(
    scores: Mapping[str, Mapping[str, Scores]],
    reference: Mapping[str, float | None],
    colors: Mapping[str, str],
    reference_label: str = "MedMNIST v2 ResNet-18",
) -> Figure:
    """Return grouped bars of mean test AUC per method per task, sd error bars, seed dots and the reference line."""
    tasks = list(scores)
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(max(4.5, 1.1 + 1.25 * len(tasks)), 3.4), layout="constrained")
        ax = fig.subplots()
        methods, drew_ref = _grouped_bars(ax, tasks, scores, colors, reference)
        ax.set_ylabel("test AUC")
        ax.set_xlabel("task")
        values = [v for t in tasks for s in scores[t].values() for v in (s.values or (s.mean,))]
        values += [r for t in tasks if (r := reference.get(t)) is not None]
        _zoom(ax, values)
        handles = _method_handles(methods, colors)
        if drew_ref:
            handles.append(Line2D([], [], color=REFERENCE_COLOR, ls="--", lw=1.2, label=reference_label))
        handles.append(Line2D([], [], color="black", marker="o", ls="", ms=2.5, label="one seed"))
        _legend_below(fig, handles, ncol=min(len(handles), 5))
    return fig


PAUC_REGION = (0.3, 0.7)  # two-way partial AUC region: FPR <= 0.3 and TPR >= 0.7 (LibAUC's tpAUC metric)


def roc_curves(rocs: Mapping[str, Mapping[str, Roc]], colors: Mapping[str, str], titles: Mapping[str, str] | None = None, tpr_level: float = 0.95) -> Figure:
    """Return one ROC panel per task with each method's curve, the two-way pAUC region and the TPR level shaded/marked."""
    tasks = list(rocs)
    max_fpr, min_tpr = PAUC_REGION
    with plt.rc_context(STYLE):
        fig, axes = _figure(len(tasks), panel=(3.0, 3.0))
        methods_seen: list[str] = []
        for ax, task in zip(axes, tasks):
            ax.add_patch(Rectangle((0, min_tpr), max_fpr, 1 - min_tpr, facecolor="0.85", edgecolor="0.6", lw=0.6, zorder=0))
            ax.axhline(tpr_level, color="0.4", lw=0.7, ls=":", zorder=1)
            ax.plot([0, 1], [0, 1], color="0.7", lw=0.7, ls="--", zorder=1)
            for method, roc in rocs[task].items():
                if method not in methods_seen:
                    methods_seen.append(method)
                ax.plot(roc.fpr, roc.tpr, color=colors[method], lw=1.3, drawstyle="default", zorder=2)
            ax.set_title(_task_title(task, titles))
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
            ax.set_aspect("equal")
        handles = _method_handles([m for m in colors if m in methods_seen], colors)
        handles.append(Patch(facecolor="0.85", edgecolor="0.6", label=f"pAUC region (FPR $\\leq$ {max_fpr:g}, TPR $\\geq$ {min_tpr:g})"))
        handles.append(Line2D([], [], color="0.4", ls=":", lw=0.7, label=f"TPR = {tpr_level:g}"))
        _legend_below(fig, handles, ncol=min(len(handles), 4))
    return fig


def fpr_bars(scores: Mapping[str, Mapping[str, Scores]], colors: Mapping[str, str], tpr_level: float = 0.95) -> Figure:
    """Return grouped bars of the test FPR at the given TPR per method per task (lower is better)."""
    tasks = list(scores)
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(max(4.5, 1.1 + 1.25 * len(tasks)), 3.2), layout="constrained")
        ax = fig.subplots()
        methods, _ = _grouped_bars(ax, tasks, scores, colors)
        ax.set_ylabel(f"test FPR at {tpr_level:.0%} TPR")
        ax.set_xlabel("task")
        top = max([v for t in tasks for s in scores[t].values() for v in (s.values or (s.mean,)) if math.isfinite(v)] + [0.05])
        ax.set_ylim(0, min(1.0, top * 1.1 + 0.02))
        handles = _method_handles(methods, colors)
        handles.append(Line2D([], [], color="black", marker="o", ls="", ms=2.5, label="one seed"))
        _legend_below(fig, handles, ncol=min(len(handles), 5))
    return fig


SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


def split_prevalence(
    binary: Mapping[str, Mapping[str, float]],
    multilabel: Mapping[str, tuple[Sequence[str], Mapping[str, np.ndarray]]] | None = None,
) -> Figure:
    """Return the positive share (%) of each split: one bar group per binary task, one per label for a multi-label task.

    `binary` maps task -> split -> positive share in [0, 1]; `multilabel` maps task ->
    (label names, split -> per-label shares).
    """
    multilabel = dict(multilabel or {})
    n_panels = (1 if binary else 0) + len(multilabel)
    widths = ([max(2.5, 0.9 * len(binary) + 1.0)] if binary else []) + [max(5.0, 0.42 * len(names) + 1.2) for names, _ in multilabel.values()]
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(sum(widths), 3.3), layout="constrained")
        axes = fig.subplots(1, n_panels, squeeze=False, width_ratios=widths).ravel().tolist()
        panels: list[tuple[str, list[str], dict[str, np.ndarray], str]] = []
        if binary:
            tasks = list(binary)
            per_split = {s: np.array([binary[t].get(s, np.nan) for t in tasks]) for s in SPLIT_COLORS}
            panels.append(("binary tasks (label 1)", tasks, per_split, "task"))
        for task, (names, shares) in multilabel.items():
            panels.append((f"{task} (per label)", list(names), {s: np.asarray(v) for s, v in shares.items()}, "label"))
        for ax, (title, groups, per_split, xlabel) in zip(axes, panels):
            splits = [s for s in SPLIT_COLORS if s in per_split]
            width = 0.8 / len(splits)
            for j, split in enumerate(splits):
                x = np.arange(len(groups)) - 0.4 + width * (j + 0.5)
                ax.bar(x, 100 * per_split[split], width * 0.92, color=SPLIT_COLORS[split], label=split)
            ax.set_xticks(range(len(groups)), groups, rotation=35 if len(groups) > 3 or xlabel == "label" else 0, ha="right" if len(groups) > 3 or xlabel == "label" else "center")
            ax.set_ylabel("positive share (%)")
            ax.set_xlabel(xlabel)
            ax.set_title(title)
            ax.grid(axis="x", visible=False)
            top = np.nanmax([np.nanmax(v) for v in per_split.values()]) * 100
            ax.set_ylim(0, min(100, top * 1.15 + 1))
        _legend_below(fig, [Patch(facecolor=c, label=s) for s, c in SPLIT_COLORS.items()], ncol=3)
    return fig


def controls_ablation(ablations: Sequence[Ablation], colors: Mapping[str, str]) -> Figure:
    """Return, per (task, method), horizontal bars of test AUC and of the train-val AUC gap for each variant.

    The variant with no control switched on (the defaults) is hatched; error bars are the sd over seeds.
    """
    n_rows = len(ablations)
    heights = [0.4 * len(a.variants) + 1.3 for a in ablations]
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(8.0, sum(heights) + 0.5), layout="constrained")
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
            ax_auc.set_title(f"{ab.task} / {ab.method}: test AUC", loc="left")
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
            handles.insert(0, Patch(facecolor="0.6", hatch="///", edgecolor="white", label="defaults (no control)"))
        _legend_below(fig, handles, ncol=2)
    return fig


def _zoom_x(ax, values: Iterable[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        ax.set_xlim(max(0.0, math.floor((min(finite) - 0.05) * 20) / 20), 1.0)


def augmentation_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], column_titles: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Return a grid of grayscale images: one row per augmentation preset, one column per example (or view).

    Images are 2D arrays with values in [-1, 1] (the network's input scale), shown with a
    fixed grey scale so intensity presets are visible as such.
    """
    n_cols = max(len(images) for _, images in rows)
    size = 0.85
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(1.3 + size * n_cols, 0.35 + size * len(rows) + (0.25 if column_titles else 0)), layout="constrained")
        axes = fig.subplots(len(rows), n_cols, squeeze=False)
        for r, (name, images) in enumerate(rows):
            for c in range(n_cols):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c < len(images):
                    ax.imshow(np.asarray(images[c]), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
                if c == 0:
                    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
                if r == 0 and column_titles and c < len(column_titles):
                    ax.set_title(column_titles[c], fontsize=7)
        if title:
            fig.suptitle(title, fontsize=9)
    return fig


def style_optuna(ax, title: str, ylabel: str | None = None, xlabel: str | None = None, rename: Mapping[str, str] | None = None) -> Figure:
    """Restyle an axes from optuna's matplotlib visualizations like the other figures; return its Figure.

    Optuna draws in matplotlib's ggplot style with its own figure title and a legend inside
    the axes; this sets our title and labels, a white background, and a legend outside (or
    none where it names a single series).
    """
    fig = ax.figure
    fig.set_size_inches(6.0, 3.2)
    if getattr(fig, "_suptitle", None) is not None:
        fig._suptitle.remove()
        fig._suptitle = None
    ax.set_facecolor("white")
    ax.grid(True, color="0.85", linewidth=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(True)
        ax.spines[side].set_color("black")
    for loc in ("left", "right"):
        ax.set_title("", loc=loc)
    ax.set_title(title, fontsize=10)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9, color="black")
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9, color="black")
    ax.tick_params(labelsize=8, colors="black")
    legend = ax.get_legend()
    if legend is not None:
        handles, labels = ax.get_legend_handles_labels()
        legend.remove()
        labels = [(rename or {}).get(label, label) for label in labels]
        if len(handles) > 1:
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def save(fig: Figure, folder: Path, name: str) -> list[Path]:
    """Write `fig` as `<name>.png` and `<name>.pdf` in `folder` (no timestamps, so reruns give the same files); return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    with plt.rc_context(STYLE):
        fig.savefig(paths[0], metadata={"Software": None})
        fig.savefig(paths[1], metadata={"Creator": None, "Producer": None, "CreationDate": None})
    plt.close(fig)
    return paths
