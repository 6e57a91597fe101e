"""The run store as the report reads it: finished runs, grouped by configuration over seeds, the best-by-validation group.

A run is a directory with a result.json that has a test evaluation (tuning trials have none
and are skipped with a note). The runs of one (task, method, configuration) form a group; the
selected group of a method on a task is the one with the best mean validation AUC (ties: more
seeds), never the test AUC.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..budget import Budget, budget_of
from ..errors import BenchError
from ..metrics import sigmoid
from ..store import read_json, read_jsonl
from .style import Scores


def num(value: Any) -> float:
    """Return `value` as a float, NaN for None."""
    return float(value) if value is not None else float("nan")


def shown(path: Path | str) -> str:
    """Return a path as the report may print it: relative to the working folder when inside it, else its last part only.

    A generated file never names a folder of the machine that made it.
    """
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


@dataclass(frozen=True)
class Run:
    """One finished run directory, read from its result.json."""

    path: Path
    result: dict[str, Any]

    @property
    def task(self) -> str:
        return self.result["task"]

    @property
    def method(self) -> str:
        return self.result["method"]

    @property
    def seed(self) -> int:
        return int(self.result.get("seed", 0))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.result.get("config") or {})

    @property
    def val_auc(self) -> float:
        return num((self.result.get("val") or {}).get("auc"))

    @property
    def test(self) -> dict[str, Any] | None:
        return self.result.get("test")

    @property
    def group_key(self) -> tuple[str, str, str]:
        """Return what identifies the run's configuration apart from its seed."""
        return (self.task, self.method, json.dumps(self.config, sort_keys=True))

    @cached_property
    def history(self) -> list[dict[str, Any]]:
        """Return the per-epoch records of metrics.jsonl (empty if the file is missing)."""
        path = self.path / "metrics.jsonl"
        return read_jsonl(path) if path.is_file() else []

    def train_val_gap(self) -> float | None:
        """Return train AUC minus validation AUC at the selected epoch, or None when train AUC was not recorded."""
        gap = self.result.get("train_val_gap")
        if gap is not None and math.isfinite(gap):
            return float(gap)
        train = (self.result.get("train") or {}).get("auc")
        if train is not None:
            return num(train) - self.val_auc
        best = self.result.get("best_epoch")
        for record in self.history:
            if record.get("epoch") == best and record.get("train/auc") is not None and record.get("val/auc") is not None:
                return float(record["train/auc"]) - float(record["val/auc"])
        return None

    def best_epochs(self) -> list[int]:
        """Return the selected epoch, or each fold's under k-fold validation."""
        if self.result.get("best_epoch"):
            return [int(self.result["best_epoch"])]
        return [int(f["best_epoch"]) for f in self.result.get("folds") or [] if f.get("best_epoch")]

    def predictions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Return (labels, sigmoid scores) of the test split, or None when the run stored none."""
        from ..store import load_predictions

        path = self.path / "predictions_test.npz"
        if not path.is_file():
            return None
        labels, logits = load_predictions(path)
        return np.asarray(labels).reshape(len(labels), -1), sigmoid(logits).reshape(len(labels), -1)


def load_runs(roots: Path | Sequence[Path], tasks: Sequence[str] | None = None, *, allow_empty: bool = False) -> tuple[list[Run], list[str]]:
    """Return (finished runs with a test evaluation, notes on what was skipped) under the run store(s) `roots`.

    A missing store is a BenchError, and so is an empty one unless `allow_empty` (the report then
    draws from the leaderboards alone); runs without a test evaluation (tuning trials) and
    unreadable result files are skipped with a note.
    """
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    for root in roots:
        if not root.is_dir():
            raise BenchError(f"no run store at {root}: train first (`bench run --task breastmnist --runs {root}`) or pass --runs DIR")
    runs: list[Run] = []
    notes: list[str] = []
    trials = 0
    for root in roots:
        for path in sorted(root.rglob("result.json")):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts):
                continue  # staging folders of unfinished runs
            try:
                result = read_json(path)
                result["task"], result["method"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                notes.append(f"skipped unreadable {shown(root)}/{rel} ({type(exc).__name__})")
                continue
            if tasks is not None and result["task"] not in tasks:
                continue
            test = result.get("test")
            if not test or test.get("auc") is None:
                trials += 1
                continue
            runs.append(Run(path.parent, result))
    if not runs and roots and not allow_empty:
        what = f" for {', '.join(tasks)}" if tasks else ""
        extra = f" ({trials} tuning runs without a test evaluation were found)" if trials else ""
        where = ", ".join(str(r) for r in roots)
        raise BenchError(f"the run store {where} holds no finished runs with a test evaluation{what}{extra}; train with `bench run` first")
    if trials:
        notes.append(f"{trials} runs without a test evaluation (tuning trials) are not shown")
    return runs, notes


@dataclass
class Group:
    """The runs of one configuration of a method on a task, one per seed."""

    task: str
    method: str
    config: dict[str, Any]
    runs: list[Run]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def val_auc(self) -> float:
        vals = [r.val_auc for r in self.runs if math.isfinite(r.val_auc)]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def budget(self) -> Budget:
        """Return the group's budget (epochs, the precision its runs computed in)."""
        return budget_of(self.config, [r.result.get("device") for r in self.runs])

    def test_scores(self, key: str = "auc") -> Scores:
        return Scores.of([num((r.test or {}).get(key)) for r in self.runs])

    def best_run(self) -> Run:
        """Return the seed with the best validation AUC (ties: lowest seed): the 'best model' of this configuration."""
        return max(self.runs, key=lambda r: (r.val_auc if math.isfinite(r.val_auc) else -1.0, -r.seed))

    def paths(self, roots: Sequence[Path]) -> list[str]:
        """Return the runs' directories relative to their run store, prefixed by the store's shown name when there are several."""
        out = []
        for run in self.runs:
            root = next((r for r in roots if run.path.is_relative_to(r)), None)
            if root is None:
                out.append(shown(run.path))
            else:
                rel = str(run.path.relative_to(root))
                out.append(rel if len(roots) == 1 else f"{shown(root)}/{rel}")
        return out


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Return the runs grouped by configuration; a repeated seed keeps the newest-looking run (last path)."""
    groups: dict[tuple[str, str, str], dict[int, Run]] = {}
    for run in runs:
        groups.setdefault(run.group_key, {})[run.seed] = run
    return [Group(k[0], k[1], json.loads(k[2]), [v[s] for s in sorted(v)]) for k, v in groups.items()]


def _val_score(g: Group) -> tuple[float, int]:
    return (g.val_auc if math.isfinite(g.val_auc) else -1.0, len(g.runs))


def select(groups: Iterable[Group]) -> dict[tuple[str, str], Group]:
    """Return {(task, method): the group with the best mean validation AUC} (ties: more seeds, then config order)."""
    best: dict[tuple[str, str], Group] = {}
    for g in sorted(groups, key=lambda g: json.dumps(g.config, sort_keys=True)):
        key = (g.task, g.method)
        if key not in best or _val_score(g) > _val_score(best[key]):
            best[key] = g
    return best

