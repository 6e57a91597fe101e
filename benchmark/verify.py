"""`bench leaderboard verify`: recompute every entry's numbers from its committed logits and the task's data file.

For each entry: the sidecar must match its recorded SHA-256; its test labels must be the data
file's test labels (and its validation labels the file's validation split, for the official
split); the data file must be the one the entry was tested on (MD5); and every statistic the
entry records (per-seed metrics, means, sds, the CI, the budget) must equal what this harness
recomputes from those logits. Any difference is reported; none may remain for the check to pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import BenchError
from .leaderboard import DEFAULT_DIR, locked, read_board, read_predictions, read_val_predictions, rebuild_entry
from .tasks import get_task, load_arrays

TOLERANCE = 1e-9  # floating-point sums may differ in the last bits between BLAS builds; a real difference is far larger
CHECKED = ("seeds", "n_seeds", "n_test", "test", "fixed_architecture")


@dataclass
class TaskCheck:
    """What verifying one task's leaderboard found: entries checked and the differences."""

    task: str
    entries: int = 0
    problems: list[str] = field(default_factory=list)


def _differences(path: str, stored: Any, fresh: Any) -> Iterator[str]:
    """Yield 'path: stored X, recomputed Y' for every leaf where the two JSON values differ."""
    if isinstance(stored, dict) and isinstance(fresh, dict):
        for key in sorted(set(stored) | set(fresh)):
            yield from _differences(f"{path}.{key}", stored.get(key), fresh.get(key))
    elif isinstance(stored, list) and isinstance(fresh, list) and len(stored) == len(fresh):
        for i, (a, b) in enumerate(zip(stored, fresh)):
            yield from _differences(f"{path}[{i}]", a, b)
    elif isinstance(stored, (int, float)) and isinstance(fresh, (int, float)) and not isinstance(stored, bool) and not isinstance(fresh, bool):
        if not math.isclose(float(stored), float(fresh), rel_tol=0.0, abs_tol=TOLERANCE):
            yield f"{path}: stored {stored!r}, recomputed {fresh!r}"
    elif stored != fresh:
        yield f"{path}: stored {stored!r}, recomputed {fresh!r}"


def _json(value: Any) -> Any:
    """Return `value` as it reads back from a leaderboard file (NaN as null), so stored and recomputed compare alike."""
    import json

    from .store import dumps

    return json.loads(dumps(value))


def verify_task(task: str, directory: str | Path = DEFAULT_DIR, data_root: str | None = None, verify_md5: bool = True) -> TaskCheck:
    """Return the check of one task's leaderboard against its data file (see the module docstring)."""
    task_obj = get_task(task)
    directory = Path(directory)
    check = TaskCheck(task)
    with locked(task, directory, shared=True):
        board = read_board(task, directory)
        entries = [e for e in board["entries"] if not e.get("reference")]
        if not entries:
            return check
        try:
            data = load_arrays(task_obj, data_root, verify_md5=verify_md5, download=False, splits=("test", "val"))
        except BenchError as exc:
            check.problems.append(f"{task}: cannot verify {len(entries)} entries without the data file ({str(exc).split('. ')[0]})")
            return check
        test_labels = data.labels("test").reshape(len(data.labels("test")), -1)
        val_labels = data.labels("val").reshape(len(data.labels("val")), -1)
        for entry in entries:
            check.entries += 1
            name = f"{task}/{entry.get('id')}"
            try:
                labels, _, _ = read_predictions(entry, directory)
                val = read_val_predictions(entry, directory)
                fresh, _ = rebuild_entry(task_obj, entry, directory)
            except (BenchError, KeyError, ValueError) as exc:
                check.problems.append(f"{name}: {exc}")
                continue
            if labels.shape != test_labels.shape or not np.array_equal(labels, test_labels):
                check.problems.append(f"{name}: its stored test labels are not the test labels of {task_obj.filename()}")
            if entry.get("data_md5") != data.md5:
                check.problems.append(f"{name}: tested on data file MD5 {entry.get('data_md5')}, the file here has {data.md5}")
            official = (entry.get("config") or {}).get("val_strategy", "official") == "official"
            if val is not None and official and any(v.shape != val_labels.shape or not np.array_equal(v, val_labels) for v in val[0]):
                check.problems.append(f"{name}: its stored validation labels are not the validation split of {task_obj.filename()}")
            fresh = _json(fresh)
            for key in CHECKED:
                check.problems += [f"{name}: {d}" for d in _differences(key, entry.get(key), fresh.get(key))]
            for i, (run, again) in enumerate(zip(entry.get("runs", []), fresh["runs"])):
                for key in ("test", "val_threshold"):
                    check.problems += [f"{name}: {d}" for d in _differences(f"runs[{i}].{key}", run.get(key), again.get(key))]
            for key in ("epochs", "precision"):
                check.problems += [f"{name}: {d}" for d in _differences(f"budget.{key}", (entry.get("budget") or {}).get(key), fresh["budget"].get(key))]
    return check


def verify(tasks: Sequence[str], directory: str | Path = DEFAULT_DIR, data_root: str | None = None, verify_md5: bool = True) -> list[TaskCheck]:
    """Return the check of each task's leaderboard (`verify_task`)."""
    return [verify_task(t, directory, data_root, verify_md5) for t in tasks]
