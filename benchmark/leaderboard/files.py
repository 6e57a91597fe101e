"""The leaderboard files: where each task's board lives, its lock, its schema and statistics, and the per-entry prediction sidecars."""

from __future__ import annotations

import fcntl
import hashlib
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
# the numpy flavour: the same bytes as safetensors.torch's, without importing torch to print a table
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from ..errors import BenchError
from ..store import read_json, remove_stale_temporaries
from ..tasks import TASKS, Task, get_task

SCHEMA_VERSION = 1
DEFAULT_DIR = Path("leaderboards")
SIDECAR = re.compile(r"^[A-Za-z0-9_.-]+\.[0-9a-f]{12}\.safetensors$")
METRICS = ("auc", "acc", "pauc", "fpr_at_95tpr")
VAL_THRESHOLD_METRICS = ("acc_at_val_threshold", "balanced_acc_at_val_threshold")
# the CI is part of the record, so its settings are fixed and written into every file
CI_CONFIDENCE = 0.95
STATISTICS = {
    "metrics": {
        "auc": "ROC AUC of the sigmoid score; mean of per-label AUCs for multi-label tasks (MedMNIST)",
        "acc": "accuracy of score > 0.5, mean over labels (MedMNIST's official ACC)",
        "pauc": "two-way partial AUC, FPR <= 0.3 and TPR >= 0.7 (LibAUC pauc_roc_score), mean over labels",
        "fpr_at_95tpr": "lowest FPR with TPR >= 0.95, mean over labels (lower is better)",
        "acc_at_val_threshold": "test accuracy of logit >= the threshold chosen on the validation split by Youden's J "
        "(max TPR - FPR over the validation logits; per label); the test split never chooses it; absent where the runs kept no validation predictions",
        "balanced_acc_at_val_threshold": "test balanced accuracy ((TPR + TNR) / 2, mean over labels) at the same validation threshold",
    },
    "mean_sd": "mean and sample sd (ddof 1) over seeds; sd null for one seed",
    "ci95": {
        "what": "analytic 95 % CI of the seed-mean test AUC over test cases: DeLong's variance of the mean of the seeds' correlated AUCs "
        "(binary tasks; for one seed DeLong's interval of its AUC, as pROC's ci.auc), the per-case influence form for the label mean "
        "on multi-label tasks; mean +/- 1.96 se clipped to [0, 1]; no resampling, so it does not depend on any seed",
        "confidence": CI_CONFIDENCE,
    },
    "comparison": "computed by `bench leaderboard`, not stored: each ranked entry against the baseline of its budget, one quantity: "
    "the AUC of the entry's seed-averaged logits minus the baseline's (paired, same test cases), its DeLong 95 % CI and the two-sided "
    "DeLong p-value of that difference (binary tasks only), and the p-value Holm-adjusted over all comparisons on the task",
    "budget": "epochs and the precision computed in (config precision, `auto` resolved by the run's device: bf16 on CUDA, fp32 on CPU); "
    "entries of different budgets are never ranked together. The protocol budget is the task card's epochs in fp32",
    "hyperparameters": "defaults: every setting but the compute ones (epochs, precision, compile, memory format, evaluation switches) "
    "equals the method's defaults on the task in the harness that wrote the entry; tuned: some setting differs",
    "baseline": "per budget, the `ce` run entry of that budget that is not superseded, preferring defaults, then more seeds, then the "
    "smallest id; chosen without test numbers. At the protocol budget this is the task's comparison baseline",
    "superseded": "an entry with a `superseded` reason is kept for the record but never ranked nor chosen as a baseline",
    "fixed_architecture": "the task card's architecture, trained from scratch (no pretrained weights)",
}


def leaderboard_path(task: str, directory: str | Path = DEFAULT_DIR) -> Path:
    """Return the path of a task's leaderboard file."""
    return Path(directory) / f"{task}.json"


@contextmanager
def locked(task: str, directory: str | Path, *, shared: bool = False) -> Iterator[None]:
    """Hold the task's leaderboard lock (exclusive for writers, shared for readers) for the block."""
    directory = Path(directory)
    if shared and not (directory / f".{task}.lock").exists():
        # nothing has ever been written here, so there is no writer to wait for; reading creates nothing
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f".{task}.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def reference_rows(task: Task) -> list[dict[str, Any]]:
    """Return the task card's MedMNIST v2 reference numbers as leaderboard rows marked `reference`."""
    ref = task.reference
    if "auc" not in ref:
        return []
    return [
        {
            "id": "medmnist-v2",
            "kind": "reference",
            "reference": True,
            "model": ref.get("model"),
            "architecture": task.architecture,
            "fixed_architecture": True,
            "source": "MedMNIST v2 paper (Yang et al., Scientific Data 2023), as in the task card",
            "test": {"auc": {"mean": ref.get("auc")}, "acc": {"mean": ref.get("acc")}},
        }
    ]


def empty_board(task: Task) -> dict[str, Any]:
    """Return a leaderboard with only the reference rows."""
    return {
        "schema_version": SCHEMA_VERSION,
        "task": task.flag,
        "architecture": task.architecture,
        "statistics": STATISTICS,
        "entries": reference_rows(task),
    }


def read_board(task: str, directory: str | Path = DEFAULT_DIR) -> dict[str, Any]:
    """Return a task's leaderboard (the reference rows alone when it has no file yet)."""
    task_obj = get_task(task)
    path = leaderboard_path(task, directory)
    if not path.is_file():
        return empty_board(task_obj)
    try:
        board = read_json(path)
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path} is not a readable leaderboard ({exc})") from None
    if not isinstance(board, dict) or board.get("schema_version") != SCHEMA_VERSION or board.get("task") != task:
        raise BenchError(f"{path} is not a schema-{SCHEMA_VERSION} leaderboard of {task}")
    return board


def sidecar_bytes(labels: np.ndarray, logits: np.ndarray, seeds: Sequence[int], val: tuple[np.ndarray, np.ndarray] | None = None) -> bytes:
    """Return the safetensors bytes of an entry's sidecar: labels, per-seed logits, seeds and, where kept, validation predictions."""
    tensors = {
        "labels": np.ascontiguousarray(labels, dtype=np.uint8),
        "logits": np.ascontiguousarray(logits, dtype=np.float32),
        "seeds": np.asarray(list(seeds), dtype=np.int64),
    }
    if val is not None:  # (S, Nv, L) each: the validation split may differ between seeds only in principle
        tensors["val_labels"] = np.ascontiguousarray(val[0], dtype=np.uint8)
        tensors["val_logits"] = np.ascontiguousarray(val[1], dtype=np.float32)
    return save_safetensors(tensors)


def _sidecar(entry: dict[str, Any], directory: str | Path) -> dict[str, np.ndarray]:
    ref = entry.get("predictions") or {}
    path = Path(directory) / ref.get("file", "")
    if not ref or not path.is_file():
        raise BenchError(f"entry {entry.get('id')}: predictions file {path} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
        raise BenchError(f"entry {entry.get('id')}: {path} does not match the SHA-256 the leaderboard records")
    return dict(load_safetensors(data))


def read_predictions(entry: dict[str, Any], directory: str | Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Return (labels (N, L), logits (S, N, L), seeds) of an entry from its sidecar, after checking its SHA-256."""
    tensors = _sidecar(entry, directory)
    return tensors["labels"], tensors["logits"], tensors["seeds"].tolist()


def read_val_predictions(entry: dict[str, Any], directory: str | Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray] | None:
    """Return (validation labels (S, Nv, L), validation logits (S, Nv, L)) of an entry's seeds, or None when its runs kept none."""
    tensors = _sidecar(entry, directory)
    if "val_logits" not in tensors:
        return None
    return tensors["val_labels"], tensors["val_logits"]


def remove_unreferenced(directory: Path, task: str, keep: set[Path]) -> None:
    """Remove sidecars of `task` no entry references (left by a process killed between writing one and the JSON), and dead processes' temporaries.

    Called under the exclusive lock, after the JSON is written: every writer writes sidecars under
    that lock, so a sidecar nothing references belongs to nobody.
    """
    folder = directory / task
    remove_stale_temporaries(directory)
    remove_stale_temporaries(folder)
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if SIDECAR.match(path.name) and path.is_file() and path not in keep:
            path.unlink(missing_ok=True)

def tasks_with_boards(directory: str | Path = DEFAULT_DIR) -> list[str]:
    """Return the registered tasks that have a leaderboard file in `directory`, in study order."""
    return [flag for flag in TASKS if leaderboard_path(flag, directory).is_file()]
