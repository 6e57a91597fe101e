"""Figures of the Optuna studies: each study's optimization history and its fANOVA hyperparameter importances.

Studies are read through storage URLs or journal files (`--storage`, else the SQLite files at
the top of the run stores, opened read-only, and the study journals `studies/*.journal`). The history is Optuna's own plot, restyled: integer trial numbers,
the best value so far as a step line (it changes only at a better trial), pruned trials as crosses.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..tasks import TASKS
from .context import Loaded, Section
from .runs import shown


def storage_name(url: str) -> str:
    """Return how the report names a storage: an SQLite file by its shown path, a server by host and database (no credentials)."""
    from ..storage import is_journal

    if is_journal(url):
        return shown(url)
    if url.startswith("sqlite:"):
        path = url.split(":///", 1)[-1].removeprefix("file:").split("?", 1)[0]
        return shown(path)
    return url.split("@", 1)[-1] if "@" in url else url


def discover_storages(roots: Sequence[Path], explicit: Sequence[str], studies: Path | None = Path("studies")) -> list[tuple[str, str]]:
    """Return [(URL to open, name to print)]: the given URLs, else every SQLite file at the run stores' top level, opened read-only, and the journals in `studies`."""
    if explicit:
        return [(url, storage_name(url)) for url in explicit]
    files = sorted(p for root in roots for pattern in ("*.db", "*.sqlite", "*.sqlite3") for p in Path(root).glob(pattern) if p.is_file())
    # SQLite's read-only URI mode: reading a study must never write to (or lock) another person's storage
    found = [(f"sqlite:///file:{p.resolve()}?mode=ro&uri=true", shown(p)) for p in files]
    journals = sorted(studies.glob("*.journal")) if studies is not None and studies.is_dir() else []
    return found + [(str(p), shown(p)) for p in journals if p.is_file() and p.stat().st_size]


@dataclass
class StudyInfo:
    """An Optuna study found in a storage, with the task and method it tuned."""

    study: Any
    task: str
    method: str
    storage: str
    n_complete: int


def _open(url: str) -> Any:
    """Return the storage to read: a journal opened as such, anything else as the URL Optuna opens."""
    from ..storage import is_journal, open_journal

    return open_journal(url) if is_journal(url) else url


def load_studies(storages: Sequence[tuple[str, str]], tasks: Sequence[str]) -> tuple[list[StudyInfo], list[str]]:
    """Return (the studies in `storages` tuning one of `tasks` with at least one completed trial, notes)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found: list[StudyInfo] = []
    notes: list[str] = []
    for url, name_shown in storages:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                storage = _open(url)
                names = optuna.study.get_all_study_names(storage=storage)
        except Exception as exc:  # an unreachable server or a file that is not an Optuna storage
            notes.append(f"could not read the Optuna storage {name_shown} ({type(exc).__name__})")
            continue
        for name in sorted(names):
            study = optuna.load_study(study_name=name, storage=storage)
            definition = study.user_attrs.get("definition") or {}
            parts = name.split(".")
            task = definition.get("task") or (parts[0] if parts[0] in TASKS else None)
            method = definition.get("method") or (parts[1] if len(parts) > 1 else "?")
            if task is None:
                notes.append(f"study {name} in {name_shown}: its task is not recorded; left out")
                continue
            if task not in tasks:
                continue
            complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
            if not complete:
                notes.append(f"study {name}: no completed trial yet; left out")
                continue
            found.append(StudyInfo(study, task, method, name_shown, len(complete)))
    order = TASKS.names()
    found.sort(key=lambda s: (order.index(s.task), s.method, s.study.study_name))
    return found, notes


def pruned_points(study: Any) -> list[tuple[int, float]]:
    """Return (trial number, last reported value) of each pruned trial that reported one."""
    import optuna

    return [
        (t.number, t.intermediate_values[max(t.intermediate_values)])
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values
    ]


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


def history_figure(info: StudyInfo, color: str, label: str) -> Figure:
    """Return a study's optimization history: completed trials (dots), pruned trials at their last report (crosses), best so far (steps).

    The x axis carries whole trial numbers only; the best-so-far line steps at the trials that
    improved it instead of slanting between them.
    """
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    # optuna's plots switch matplotlib's global style to ggplot; rc_context puts it back afterwards
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_optimization_history(info.study, target_name="validation AUC")
        return _restyle_history(ax, info, color, label)


def _restyle_history(ax, info: StudyInfo, color: str, label: str) -> Figure:
    for artist in ax.collections:  # the trials' dots in the method's colour; optuna's best-value line stays
        artist.set_color(color)
    for line in ax.get_lines():
        if line.get_label() == "Best Value":
            line.set_drawstyle("steps-post")
    # optuna leaves pruned trials out; show where each stopped, so the budget spent is visible
    pruned = pruned_points(info.study)
    if pruned:
        ax.scatter(*zip(*pruned), marker="x", color="0.45", s=25, zorder=3, label="pruned trial (last reported)")
        ax.legend()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return style_optuna(ax, f"{label}: {info.n_complete} completed, {len(pruned)} pruned trials", ylabel="validation AUC", xlabel="trial number", rename={"Best Value": "best so far", "validation AUC": "completed trial"})


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def section(d: Loaded) -> Section:
    """Figure 5: optuna's optimization history and hyperparameter importances for each study of the tasks shown."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    sec = Section("Optuna studies: optimization history and hyperparameter importances")
    opts, colors, titles = d.opts, d.colors, d.titles
    storages = discover_storages(d.roots, opts.storages)
    if not storages:
        where = f"no SQLite file at the top of {', '.join(shown(r) for r in d.roots)}" if d.roots else "no run store read"
        sec.notes.append(f"no Optuna storage found (none given with --storage, {where})")
        return sec
    studies, notes = load_studies(storages, d.tasks)
    sec.notes += notes
    if not studies:
        sec.notes.append("no study with a completed trial for the tasks shown")
        return sec
    for info in studies:
        name = _safe_name(f"optuna_{info.study.study_name}")
        label = f"{titles[info.task]} / {info.method}"
        color = colors.get(info.method, "0.3")
        # optuna's plots switch matplotlib's global style to ggplot; rc_context puts it back afterwards
        with warnings.catch_warnings(), plt.rc_context():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sec.files += d.save(f"{name}_history", history_figure(info, color, label))
            try:
                ax = ovm.plot_param_importances(info.study, evaluator=FanovaImportanceEvaluator(seed=0))
                for patch in ax.patches:
                    patch.set_color(color)
                fig = style_optuna(ax, f"{label}: hyperparameter importances", xlabel="importance (fANOVA share of the validation AUC variance)", ylabel="hyperparameter")
                sec.files += d.save(f"{name}_importance", fig)
            except (RuntimeError, ValueError) as exc:
                plt.close("all")
                sec.notes.append(f"{info.study.study_name}: no importances ({exc})")
    names = sorted({s.storage for s in studies})
    sec.caption = (
        "Per Optuna study: the validation AUC of each completed trial (dots), the last reported value of each pruned trial (crosses) "
        "and the best so far (step line), and fANOVA importances "
        f"of the searched hyperparameters (seeded, needs two or more completed trials). From {len(studies)} stud{'y' if len(studies) == 1 else 'ies'} in {', '.join(names)}."
    )
    return sec
