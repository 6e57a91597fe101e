"""What one seed contributes to a leaderboard: a SeedResult read from a finished run (or built from an evaluated submission), and the checks it must pass."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics
from ..errors import BenchError
from ..hparams import MAX_SEED
from ..store import RESULT, load_predictions, read_json
from ..tasks import get_task


@dataclass
class SeedResult:
    """One trained model's test predictions and provenance: a finished run, or an evaluated submission."""

    kind: str  # "run" or "submission"
    task: str
    method: str
    config: dict[str, Any]  # the hyperparameters, without task, method and seed
    seed: int
    architecture: str
    labels: np.ndarray  # (N, L) 0/1
    logits: np.ndarray  # (N, L) float32
    data_md5: str | None
    data_md5_verified: bool | None
    record: dict[str, Any] = field(default_factory=dict)  # per-seed provenance, stored as is
    packages: dict[str, str | None] = field(default_factory=dict)
    entry_id: str = ""
    name: str | None = None  # a submission's label
    val_labels: np.ndarray | None = None  # (Nv, L): validation labels of the same model, where kept
    val_logits: np.ndarray | None = None  # (Nv, L)

    def __post_init__(self) -> None:
        if not self.entry_id:
            self.entry_id = f"{_safe(self.method)}-{group_hash(self.task, self.method, self.config)}"

    @property
    def pretrained(self) -> bool:
        """Return whether the configuration declares pretrained initial weights."""
        return bool(self.config.get("pretrained", False))


def group_hash(task: str, method: str, config: dict[str, Any]) -> str:
    """Return the 12-hex hash of (task, method, configuration without seed) that groups seeds into an entry."""
    blob = json.dumps({"task": task, "method": method, "config": config}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(text))[:48] or "_"


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_run(run_dir: str | Path) -> SeedResult:
    """Return the SeedResult of a finished run directory (result.json, config, environment, test predictions).

    The metrics are recomputed from predictions_test.npz; a run whose stored test AUC does not
    match its own predictions, or that never evaluated the test split (a tuning trial), is refused.
    """
    run_dir = Path(run_dir)
    result_path = run_dir / RESULT
    if not result_path.is_file():
        raise BenchError(f"{run_dir} is not a finished run directory (no {RESULT})")
    try:
        result = read_json(result_path)
    except (OSError, ValueError) as exc:
        raise BenchError(f"{result_path} could not be read ({exc})") from None
    if not isinstance(result, dict) or not {"task", "method", "seed", "config"} <= set(result):
        raise BenchError(f"{result_path} is not a run result (it lacks task, method, seed or config)")
    if not isinstance(result["task"], str) or not isinstance(result["method"], str) or not isinstance(result["config"], dict):
        raise BenchError(f"{result_path}: task and method must be strings and config an object")
    if isinstance(result["seed"], bool) or not isinstance(result["seed"], int) or not 0 <= result["seed"] <= MAX_SEED:
        raise BenchError(f"{result_path}: seed {result['seed']!r} is not an integer from 0 to {MAX_SEED}")
    if not isinstance(result.get("test"), dict) or not result.get("test"):
        raise BenchError(f"{run_dir} has no test evaluation (a tuning trial?); only runs evaluated on the test split can enter a leaderboard")
    predictions = run_dir / "predictions_test.npz"
    if not predictions.is_file():
        raise BenchError(f"{run_dir} has no predictions_test.npz; the leaderboard needs the test predictions")
    try:
        labels, logits = load_predictions(predictions)
    except Exception as exc:  # numpy raises several types for a damaged npz
        raise BenchError(f"{predictions} could not be read ({exc})") from None
    task = get_task(result["task"])
    labels = np.asarray(labels).reshape(len(labels), -1)
    logits = np.asarray(logits, dtype=np.float32).reshape(len(logits), -1)
    if labels.shape != (task.splits["test"], task.n_labels) and result.get("data_md5_verified"):
        raise BenchError(f"{predictions}: labels have shape {labels.shape}, not the {task.flag} test split's")
    if logits.shape != labels.shape:
        raise BenchError(f"{predictions}: logits {logits.shape} and labels {labels.shape} differ in shape")
    recomputed = metrics.auc(labels, metrics.sigmoid(logits))
    stored = result["test"].get("auc")
    if stored is not None and (isinstance(stored, bool) or not isinstance(stored, (int, float))):
        raise BenchError(f"{result_path}: test.auc {stored!r} is not a number")
    if stored is not None and not math.isclose(recomputed, stored, rel_tol=0, abs_tol=1e-9):
        raise BenchError(f"{run_dir}: result.json says test AUC {stored}, its predictions give {recomputed}")
    env_path = run_dir / "environment.json"
    env = read_json(env_path) if env_path.is_file() else {}
    val_labels = val_logits = None
    val_path = run_dir / "predictions_val.npz"
    # a refit run's validation predictions are the selection model's, not the tested one's: no threshold from them
    if val_path.is_file() and result.get("val_strategy", result["config"].get("val_strategy")) != "refit":
        try:
            val_labels, val_logits = load_predictions(val_path)
        except Exception as exc:  # numpy raises several types for a damaged npz
            raise BenchError(f"{val_path} could not be read ({exc})") from None
        val_labels = np.asarray(val_labels).reshape(len(val_labels), -1)
        val_logits = np.asarray(val_logits, dtype=np.float32).reshape(len(val_logits), -1)
        if val_labels.shape != val_logits.shape or val_labels.shape[1] != labels.shape[1]:
            raise BenchError(f"{val_path}: labels {val_labels.shape} and logits {val_logits.shape} are not one (N, {labels.shape[1]}) shape")
    record = {
        "run_id": result.get("config_hash"),
        "best_epoch": result.get("best_epoch"),
        "epochs_run": result.get("epochs_run"),
        "val_auc": (result.get("val") or {}).get("auc"),
        "train_seconds": result.get("train_seconds"),
        "device": result.get("device"),
        "git_commit": env.get("git_commit"),
        "date": _utc(result_path.stat().st_mtime),
    }
    return SeedResult(
        kind="run",
        task=task.flag,
        method=str(result["method"]),
        config=dict(result["config"]),
        seed=int(result["seed"]),
        architecture=str(result.get("architecture", task.architecture)),
        labels=labels,
        logits=logits,
        data_md5=result.get("data_md5"),
        data_md5_verified=result.get("data_md5_verified"),
        record=record,
        packages=dict(env.get("packages") or {}),
        val_labels=val_labels,
        val_logits=val_logits,
    )


def check_result(r: SeedResult) -> None:
    """Raise BenchError unless a seed result can be stored: a seed numpy and torch accept, 0/1 labels and finite logits of one shape."""
    if isinstance(r.seed, bool) or not isinstance(r.seed, int) or not 0 <= r.seed <= MAX_SEED:
        raise BenchError(f"entry {r.entry_id}: seed {r.seed!r} is not an integer from 0 to {MAX_SEED}")
    labels, logits = np.asarray(r.labels), np.asarray(r.logits)
    if labels.ndim != 2 or labels.shape != logits.shape or len(labels) == 0:
        raise BenchError(f"entry {r.entry_id}, seed {r.seed}: labels {labels.shape} and logits {logits.shape} are not one (N, L) shape")
    if not np.isin(labels, (0, 1)).all():
        raise BenchError(f"entry {r.entry_id}, seed {r.seed}: labels hold values other than 0 and 1")
    if not np.isfinite(logits).all():
        raise BenchError(f"entry {r.entry_id}, seed {r.seed}: logits are NaN or infinite")
