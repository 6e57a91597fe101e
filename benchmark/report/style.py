"""The figures' shared look: Agg backend, one colour per method, the panel grid, a legend that fits, and saving.

Nothing here reads a run store; the figure modules of this package hand plain numbers to
matplotlib through these helpers, so every figure has the same fonts, colours and legend rule:
legends sit below the panels, inside the figure (their columns are reduced until they fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # the report writes files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

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
    from ..methods import METHODS

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


def new_figure(figsize: tuple[float, float]) -> Figure:
    """Return an empty constrained-layout Figure with an Agg canvas (so its legends can be measured)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def panels(n_panels: int, ncols: int | None = None, panel: tuple[float, float] = (PANEL_W, PANEL_H), legend_rows: int = 1, min_width: float = 5.2) -> tuple[Figure, list]:
    """Return (figure, axes) for `n_panels` panels in a grid of `ncols` columns; unused cells are hidden."""
    ncols = ncols or min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    # a floor on the width keeps a one-panel figure's legend from being cut off
    fig = new_figure((max(min_width, panel[0] * ncols), panel[1] * nrows + 0.35 * legend_rows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def legend_below(fig: Figure, handles: list, ncol: int | None = None) -> None:
    """Put one legend for the whole figure below the panels, read row by row, with as many columns as fit the figure's width.

    matplotlib's "outside" legends get room below the panels from the constrained layout but
    none sideways, so a row wider than the figure would be clipped: the columns are reduced until
    the drawn legend lies inside the figure.
    """
    if not handles:
        return
    ncol = min(ncol or 5, len(handles))
    renderer = fig.canvas.get_renderer()
    while True:
        rows = math.ceil(len(handles) / ncol)
        # matplotlib fills a legend column by column; place the handles so that it reads row by row
        blank = Line2D([], [], alpha=0.0, label=" ")
        grid = [handles[i] if i < len(handles) else blank for i in range(rows * ncol)]
        ordered = [grid[r * ncol + c] for c in range(ncol) for r in range(rows)]
        legend = fig.legend(handles=ordered, loc="outside lower center", ncol=ncol, frameon=False)
        if ncol == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width * 0.98:
            return
        legend.remove()
        ncol -= 1


def method_handles(methods: Iterable[str], colors: Mapping[str, str]) -> list:
    """Return one legend patch per method in its colour."""
    return [Patch(facecolor=colors[m], label=m) for m in methods]


def save(fig: Figure, folder: Path, name: str) -> list[Path]:
    """Write `fig` as `<name>.png` and `<name>.pdf` in `folder` (no timestamps, so reruns give the same files); return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    with plt.rc_context(STYLE):
        fig.savefig(paths[0], metadata={"Software": None})
        fig.savefig(paths[1], metadata={"Creator": None, "Producer": None, "CreationDate": None})
    plt.close(fig)
    return paths
