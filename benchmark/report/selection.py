"""Selecting what the report shows: one result per (task, method), from the run store or the leaderboards.

Candidates are the run store's groups (one configuration over seeds) and the leaderboards'
entries trained by the harness (kind "run", not superseded). Where both sources are read, one is
preferred for a method on a task: the run store when runs were passed explicitly (they are never
replaced by a leaderboard entry), else the leaderboard. Within the preferred source, a result at
the task's protocol budget wins over any other budget; then the best mean validation AUC (ties:
more seeds). Test numbers never choose. A result at another budget is shown with its budget.

A report of a study (`bench report --study FILE`) shows the study's own results instead: per
(task, method), the leaderboard entry of the study's final runs of the method's tuned arm (its
configuration was selected on validation by that arm's tuning study), and the study's final
budget takes the place of the protocol budget.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..budget import Budget, protocol_budget
from ..metrics import sigmoid
from ..tasks import get_task
from .runs import Group, num
from .style import Scores


@dataclass
class Entry:
    """A table cell: a method's test AUC over seeds on a task, from a leaderboard entry or from a run group."""

    task: str
    method: str
    test_auc: Scores
    source: str  # "leaderboard" or "runs"
    budget: Budget
    group: Group | None = None  # the run store's group of this configuration, when the store has it
    config: dict[str, Any] = field(default_factory=dict)
    fpr: Scores | None = None
    board_entry: dict[str, Any] | None = None  # the leaderboard's record, for its stored predictions
    target: Budget | None = None  # the report's budget for this task when it is not the protocol's (a study's)

    @property
    def report_budget(self) -> Budget:
        """Return the budget the report ranks at on this task: a study's final budget, else the task's protocol budget."""
        return self.target or protocol_budget(self.task)

    @property
    def protocol(self) -> bool:
        """Return whether the result is at the report's budget (see `report_budget`), so it may be ranked and bolded."""
        return self.budget.key == self.report_budget.key

    @property
    def seeds(self) -> list[int]:
        """Return the seeds behind the numbers."""
        if self.source == "runs" and self.group is not None:
            return self.group.seeds
        return list((self.board_entry or {}).get("seeds", []))

    def best_predictions(self, board_dir: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Return (labels, sigmoid scores) of the seed with the best validation AUC: from its run, else the leaderboard's predictions file."""
        if self.group is not None:
            return self.group.best_run().predictions()
        if self.board_entry is None or board_dir is None:
            return None
        from ..leaderboard import read_predictions

        labels, logits, seeds = read_predictions(self.board_entry, board_dir)
        val = {r["seed"]: num(r.get("val_auc")) for r in self.board_entry.get("runs", [])}
        best = max(range(len(seeds)), key=lambda i: (val.get(seeds[i], -1.0) if math.isfinite(val.get(seeds[i], -1.0)) else -1.0, -seeds[i]))
        labels = np.asarray(labels).reshape(len(labels), -1)
        return labels, sigmoid(logits[best]).reshape(len(labels), -1)


def load_leaderboards(folder: Path | None, tasks: Sequence[str]) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], list[str]]:
    """Return ({(task, method): the leaderboard's candidate entries}, notes) from `folder/<task>.json`.

    Candidates are entries trained by the harness (kind "run") that are not superseded; reference
    rows come from the task cards, submissions and superseded entries are left to `bench
    leaderboard` (counted in the notes).
    """
    from ..leaderboard import leaderboard_path, read_board

    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    notes: list[str] = []
    if folder is None or not Path(folder).is_dir():
        return out, notes
    for task in tasks:
        if not leaderboard_path(task, folder).is_file():
            continue
        board = read_board(task, folder)  # BenchError for a file that is not a leaderboard of this schema
        submissions = superseded = 0
        for entry in board["entries"]:
            if entry.get("reference"):
                continue
            if entry.get("kind") != "run":
                submissions += 1
            elif entry.get("superseded"):
                superseded += 1
            else:
                out.setdefault((task, str(entry["method"])), []).append(entry)
        title = get_task(task).title
        if submissions:
            notes.append(f"{title}: {submissions} submitted-model entries of the leaderboard are not in the tables (see `bench leaderboard`)")
        if superseded:
            notes.append(f"{title}: {superseded} superseded leaderboard entries are not shown (listed apart by `bench leaderboard`)")
    return out, notes


def _entry_scores(entry: Mapping[str, Any], key: str) -> Scores | None:
    """Return the leaderboard's per-seed values of test metric `key` with the leaderboard's own mean and sd (the table must equal them)."""
    summary = (entry.get("test") or {}).get(key)
    if not isinstance(summary, Mapping) or summary.get("mean") is None:
        return None
    values = tuple(float(v) for r in entry.get("runs", []) if (v := (r.get("test") or {}).get(key)) is not None)
    return Scores(values, float(summary["mean"]), None if summary.get("sd") is None else float(summary["sd"]))


def _entry_val(entry: Mapping[str, Any]) -> tuple[float, int]:
    vals = [num(r.get("val_auc")) for r in entry.get("runs", [])]
    vals = [v for v in vals if math.isfinite(v)]
    return (float(np.mean(vals)) if vals else -1.0, len(entry.get("runs", [])))


def _group_val(g: Group) -> tuple[float, int]:
    return (g.val_auc if math.isfinite(g.val_auc) else -1.0, len(g.runs))


def _board_cell(key: tuple[str, str], entry: dict[str, Any], groups: Sequence[Group]) -> Entry | None:
    from ..ranking import entry_budget

    auc = _entry_scores(entry, "auc")
    if auc is None:
        return None
    config = dict(entry.get("config") or {})
    group = next((g for g in groups if (g.task, g.method) == key and g.config == config), None)
    return Entry(key[0], key[1], auc, "leaderboard", entry_budget(entry), group, config, _entry_scores(entry, "fpr_at_95tpr"), entry)


def _pick_groups(groups: Sequence[Group], protocol: Budget) -> Group:
    at_protocol = [g for g in groups if g.budget.key == protocol.key]
    # max() keeps the first of equals: ties go to the first configuration in a fixed order
    pool = sorted(at_protocol or groups, key=lambda g: json.dumps(g.config, sort_keys=True))
    return max(pool, key=_group_val)


def _pick_entries(entries: Sequence[dict[str, Any]], protocol: Budget) -> dict[str, Any]:
    from ..ranking import entry_budget

    at_protocol = [e for e in entries if entry_budget(e).key == protocol.key]
    return max(sorted(at_protocol or entries, key=lambda e: str(e["id"])), key=_entry_val)


def study_budget(study: Any) -> Budget:
    """Return the budget of a study's final runs (a precision left to the device counts as the protocol's fp32)."""
    from ..budget import PROTOCOL_PRECISION

    epochs, precision = study.final_budget()
    return Budget(epochs, precision or PROTOCOL_PRECISION)


def main_arm(study: Any, method: str) -> str | None:
    """Return the arm that stands for `method` in a study's main table: the arm named after it, else its first arm with no base."""
    names = [a.name for a in study.arms if a.method == method and a.base is None]
    return method if method in names else (names[0] if names else None)


def study_entries(boards: Mapping[tuple[str, str], Sequence[dict[str, Any]]], study: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Return {(task, arm name): leaderboard entry} for every arm of `study` (a StudyFile) whose final runs are on a leaderboard.

    An entry belongs to an arm when every one of its seeds is a final run of that arm; of two
    such entries (a rerun under changed code), the one with more seeds, then the first by id, is kept.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (task, method), entries in sorted(boards.items()):
        for arm in study.arms:
            if arm.method != method:
                continue
            mine = [e for e in entries if study.is_final(e, arm.name)]
            if mine:
                out[(task, arm.name)] = max(sorted(mine, key=lambda e: str(e["id"])), key=lambda e: len(e.get("runs", [])))
    return out


def build_entries(
    groups: Sequence[Group], boards: Mapping[tuple[str, str], Sequence[dict[str, Any]]], *, runs_first: bool, study: Any = None
) -> dict[tuple[str, str], Entry]:
    """Return the table's cells, one per (task, method) found in the run store or the leaderboards (see the module docstring).

    A leaderboard entry is matched to the run store's group of the same configuration (for
    curves and ROC); its numbers are the leaderboard's own. With `study` (a StudyFile), the cells
    are its methods' tuned arms' final entries alone, at its final budget.
    """
    if study is not None:
        target = study_budget(study)
        finals = study_entries(boards, study)
        cells = {}
        for (task, name), entry in finals.items():
            method = study.arm(name).method
            if name == main_arm(study, method) and (cell := _board_cell((task, method), entry, groups)) is not None:
                cell.target = target
                cells[(task, method)] = cell
        return cells
    by_key: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        by_key.setdefault((g.task, g.method), []).append(g)
    cells: dict[tuple[str, str], Entry] = {}
    for key in sorted(set(by_key) | set(boards)):
        protocol = protocol_budget(key[0])
        mine, theirs = by_key.get(key, []), list(boards.get(key, []))
        cell = None
        if theirs and not (runs_first and mine):
            cell = _board_cell(key, _pick_entries(theirs, protocol), groups)
        if cell is None and mine:
            g = _pick_groups(mine, protocol)
            cell = Entry(key[0], key[1], g.test_scores("auc"), "runs", g.budget, g, g.config)
        if cell is not None:
            cells[key] = cell
    return cells
