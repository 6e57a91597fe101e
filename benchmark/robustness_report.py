"""The report's robustness figure and table, from robustness blocks handed over as plain data.

Nothing here reads files: the caller gives, per task, {method: [block of each seed]} (the blocks
`bench robustness` stores on leaderboard entries, `entries[i].runs[j].robustness`), and gets

- `severity_figure`: AUC against severity (0 = clean) per corruption family, one panel per
  family, one line per method (the mean over the family's corruptions and over seeds, the seeds'
  range shaded), in each method's report colour;
- `clean_vs_corrupted_rows` / `markdown_table` / `latex_table`: per task and method the clean
  AUC, the mean corrupted AUC, the relative drop, the worst corruption and MedMNIST-C's BE/rBE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .report.style import STYLE, method_colors

Blocks = Mapping[str, Sequence[Mapping[str, Any]]]  # method -> one block per seed
# panel order: MedMNIST-C's families, then the 3D list's; stored blocks have their keys sorted
FAMILY_ORDER = ("digital", "noise", "blur", "color", "task-specific", "k-space", "intensity")


def family_curves(blocks: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Return {family: (seeds, severities + 1) AUCs}: column 0 the clean AUC, column s the family's mean AUC at severity s."""
    families: dict[str, list[np.ndarray]] = {}
    for block in blocks:
        per: dict[str, list[list[float]]] = {}
        for c in block["corruptions"].values():
            per.setdefault(c["family"], []).append(c["auc"])
        for family, aucs in per.items():
            families.setdefault(family, []).append(np.r_[block["clean"]["auc"], np.mean(aucs, axis=0)])
    return {family: np.stack(rows) for family, rows in families.items()}


def severity_figure(task_title: str, blocks: Blocks, colors: Mapping[str, str] | None = None) -> Figure:
    """Return one task's figure: AUC against severity per corruption family (panels), a line per method."""
    import matplotlib

    colors = colors or method_colors(blocks)
    curves = {method: family_curves(b) for method, b in blocks.items() if b}
    found = {f for c in curves.values() for f in c}
    families = [f for f in FAMILY_ORDER if f in found] + sorted(found - set(FAMILY_ORDER))
    ncols = min(len(families), 3) or 1
    nrows = max(1, math.ceil(len(families) / ncols))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(max(5.2, 3.0 * ncols), 2.5 * nrows + 0.4), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(families) :]:
            ax.set_visible(False)
        methods = [m for m in colors if m in curves]
        for ax, family in zip(axes, families):
            for method in methods:
                if family not in curves[method]:
                    continue
                values = curves[method][family]
                x = np.arange(values.shape[1])
                ax.plot(x, values.mean(axis=0), "o-", color=colors[method], lw=1.3, ms=3)
                if len(values) > 1:
                    ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=colors[method], alpha=0.15, lw=0)
            ax.set_title(family)
            n = max(curves[m][family].shape[1] for m in methods if family in curves[m])
            ax.set_xticks(range(n), ["clean"] + [str(s) for s in range(1, n)])
            ax.set_xlabel("severity")
            ax.set_ylabel("test AUC")
        handles = [Line2D([], [], color=colors[m], marker="o", ms=3, lw=1.3, label=f"{m} ({len(blocks[m])} seed{'s' if len(blocks[m]) > 1 else ''})") for m in methods]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(5, len(handles)) or 1, frameon=False)
        fig.suptitle(f"{task_title}: AUC under corruption (mean over each family's corruptions; band: seed range)")
    return fig


def clean_vs_corrupted_rows(tasks: Mapping[str, Blocks]) -> list[dict[str, Any]]:
    """Return one row per task and method: seeds, clean AUC, mean corrupted AUC, relative drop, worst corruption, BE, rBE (means over seeds)."""
    rows = []
    for task, by_method in tasks.items():
        for method, blocks in by_method.items():
            if not blocks:
                continue
            mean_auc = {name: float(np.mean([b["corruptions"][name]["auc"] for b in blocks])) for name in blocks[0]["corruptions"]}
            worst = min(mean_auc, key=mean_auc.get) if mean_auc else None
            mc = [b["medmnistc"] for b in blocks if b.get("medmnistc")]

            def mean(values: list[float]) -> float:
                return float(np.mean(values))

            def sd(values: list[float]) -> float | None:
                return float(np.std(values, ddof=1)) if len(values) > 1 else None

            clean = [b["clean"]["auc"] for b in blocks]
            corrupted = [b["mean_corrupted_auc"] for b in blocks]
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "seeds": len(blocks),
                    "clean_auc": mean(clean),
                    "clean_auc_sd": sd(clean),
                    "corrupted_auc": mean(corrupted),
                    "corrupted_auc_sd": sd(corrupted),
                    "relative_drop": mean([b["relative_drop"] for b in blocks]) if all(b["relative_drop"] is not None for b in blocks) else None,
                    "worst": worst,
                    "worst_auc": mean_auc.get(worst) if worst else None,
                    "be": mean([m["be"] for m in mc]) if mc else None,
                    "rbe": mean([m["rbe"] for m in mc]) if mc else None,
                }
            )
    return rows


def _cells(row: Mapping[str, Any]) -> list[str]:
    def num(value: float | None, sd: float | None = None) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")

    return [
        row["task"],
        row["method"],
        str(row["seeds"]),
        num(row["clean_auc"], row["clean_auc_sd"]),
        num(row["corrupted_auc"], row["corrupted_auc_sd"]),
        "-" if row["relative_drop"] is None else f"{100 * row['relative_drop']:.1f} %",
        f"{row['worst']} ({row['worst_auc']:.3f})" if row["worst"] else "-",
        num(row["be"]),
        num(row["rbe"]),
    ]


COLUMNS = ["task", "method", "seeds", "clean AUC", "corrupted AUC", "drop", "worst corruption (AUC)", "BE", "rBE"]


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Return the clean-vs-corrupted table as GitHub markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def latex_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Return the clean-vs-corrupted table as a LaTeX tabular (booktabs)."""

    def tex(text: str) -> str:
        return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&").replace("±", "$\\pm$")

    lines = ["\\begin{tabular}{ll r lll l ll}", "\\toprule", " & ".join(tex(c) for c in COLUMNS) + " \\\\", "\\midrule"]
    lines += [" & ".join(tex(c) for c in _cells(r)) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
