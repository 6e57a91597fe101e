"""Leaderboards: the run store (and evaluated submissions) -> `leaderboards/<task>.json`, and the ranking.

One file per task holds the MedMNIST v2 reference row (from the task card) and one entry per
(task, method, configuration without the seed): the seeds of that configuration grouped, each
seed's test AUC, ACC, two-way pAUC and FPR at 95 % TPR recomputed from its stored test
predictions (and, where the runs kept their validation predictions, the accuracy and balanced
accuracy at the threshold chosen on validation), their mean and sd, DeLong's analytic CI of the
mean AUC, the budget (epochs, precision; `budget.py`), the command that reproduces each seed where
this harness can, and the provenance (data MD5, package versions, git commits, dates, training
seconds, the fixed-architecture rule). An entry with a `superseded` reason stays in the file but
is never ranked or chosen as a baseline (`ranking.py` ranks).

The per-seed test logits (and validation labels and logits, when kept) live in a sidecar
`leaderboards/<task>/<entry>.<sha12>.safetensors` (no pickle), named by its content hash and
referenced with its SHA-256 from the JSON, so any number on the leaderboard, and the DeLong test
against the CE baseline, can be recomputed from the committed files alone (`bench leaderboard verify`).

Writes are deterministic (sorted keys, entries sorted by id, runs by seed, no write time
stamps, seeded bootstrap), so regenerating from the same run store gives byte-identical files;
atomic (temporary file + rename; sidecars written before the JSON that names them); and
serialised between processes by an exclusive `fcntl` lock on `leaderboards/.<task>.lock`
around the read-modify-write, so two processes adding at once lose nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
# the numpy flavour: the same bytes as safetensors.torch's, without importing torch to print a table
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from . import budget as budgets
from . import metrics
from .errors import BenchError
from .store import RESULT, atomic_write_bytes, check_folder_target, load_predictions, read_json, remove_stale_temporaries, write_json
from .tasks import TASKS, Task, get_task

SCHEMA_VERSION = 1
DEFAULT_DIR = Path("leaderboards")
MAX_SEED = 2**32 - 1  # what numpy and torch both accept as a seed
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


# --- what one seed contributes -------------------------------------------------------------


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


# --- files ---------------------------------------------------------------------------------


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


def _sidecar_bytes(labels: np.ndarray, logits: np.ndarray, seeds: Sequence[int], val: tuple[np.ndarray, np.ndarray] | None = None) -> bytes:
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


# --- building entries ----------------------------------------------------------------------


def _mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return {
        "mean": float(np.mean(array)),
        "sd": float(np.std(array, ddof=1)) if len(array) > 1 else None,
    }


def _distinct(values: Iterable[Any]) -> list[Any]:
    return sorted({v for v in values if v is not None}, key=str)


def build_entry(task: Task, results: Sequence[SeedResult], sources: dict[int, str]) -> tuple[dict[str, Any], bytes]:
    """Return (entry, sidecar bytes) for the seeds of one configuration, sorted by seed."""
    results = sorted(results, key=lambda r: r.seed)
    first = results[0]
    labels = first.labels
    for r in results[1:]:
        if r.labels.shape != labels.shape or not np.array_equal(r.labels, labels):
            raise BenchError(f"entry {first.entry_id}: seed {r.seed} was tested on other labels than seed {first.seed}")
    logits = np.stack([r.logits for r in results]).astype(np.float32)
    # validation predictions count only when every seed kept them, so every seed has the same metrics
    with_val = all(r.val_logits is not None for r in results)
    val = None
    if with_val:
        shapes = {r.val_logits.shape for r in results}
        if len(shapes) != 1:
            raise BenchError(f"entry {first.entry_id}: its seeds' validation predictions differ in shape ({sorted(shapes)})")
        val = (np.stack([r.val_labels for r in results]), np.stack([r.val_logits for r in results]).astype(np.float32))
    runs = []
    for i, r in enumerate(results):
        test_metrics = metrics.leaderboard_metrics(r.labels, r.logits, (val[0][i], val[1][i]) if val is not None else None)
        record = dict(r.record)
        if r.kind == "run" and "command" not in record:  # a stored seed keeps the command recorded when it was added
            record["command"] = budgets.reproducing_command(task.flag, r.method, r.seed, r.config, r.record.get("device"))
        if val is not None:
            record["val_threshold"] = metrics.thresholds_record(val[0][i], val[1][i])
        runs.append({"seed": r.seed, "source": sources[r.seed], "test": test_metrics, **record})
    keys = METRICS + (VAL_THRESHOLD_METRICS if with_val else ())
    test: dict[str, Any] = {key: _mean_sd([run["test"][key] for run in runs]) for key in keys}
    low, high = metrics.auc_mean_ci(labels, logits, confidence=CI_CONFIDENCE)
    test["auc"]["ci95"] = [low, high]
    budget = budgets.budget_of(first.config, [r.record.get("device") for r in results])
    packages: dict[str, list[str]] = {}
    for r in results:
        for name, version in r.packages.items():
            if version is not None:
                packages.setdefault(name, []).append(version)
    seconds = [r.record.get("train_seconds") for r in results if r.record.get("train_seconds") is not None]
    dates = _distinct(r.record.get("date") for r in results)
    sidecar = _sidecar_bytes(labels, logits, [r.seed for r in results], val)
    digest = hashlib.sha256(sidecar).hexdigest()
    entry = {
        "id": first.entry_id,
        "kind": first.kind,
        "reference": False,
        "name": first.name,
        "method": first.method,
        "config": first.config,
        "config_hash": group_hash(first.task, first.method, first.config),
        "architecture": first.architecture,
        "pretrained": first.pretrained,
        "fixed_architecture": first.architecture == task.architecture and not first.pretrained,
        "seeds": [r.seed for r in results],
        "n_seeds": len(results),
        "budget": {**budget.as_json(), "hyperparameters": budgets.hyperparameters(task.flag, first.method, first.config)},
        "runs": runs,
        "test": test,
        "n_test": int(labels.shape[0]),
        "data_md5": first.data_md5,
        "data_md5_verified": first.data_md5_verified,
        "packages": {name: sorted(set(versions)) for name, versions in sorted(packages.items())},
        "git_commits": _distinct(r.record.get("git_commit") for r in results),
        "dates": [dates[0], dates[-1]] if dates else [],
        "sources": _distinct(sources.values()),
        "train_seconds": {"total": float(sum(seconds)), "mean": float(np.mean(seconds))} if seconds else None,
        "predictions": {"file": f"{task.flag}/{first.entry_id}.{digest[:12]}.safetensors", "sha256": digest},
    }
    return entry, sidecar


def _carry_provenance(old: dict[str, Any], entry: dict[str, Any]) -> None:
    """Keep what an entry recorded when it was written that a rebuild cannot recompute: package versions seen, the defaults verdict, a superseded reason."""
    for name, versions in old.get("packages", {}).items():
        entry["packages"][name] = sorted(set(entry["packages"].get(name, [])) | set(versions))
    entry["packages"] = dict(sorted(entry["packages"].items()))
    if "hyperparameters" in (old.get("budget") or {}):
        entry["budget"]["hyperparameters"] = old["budget"]["hyperparameters"]
    if old.get("superseded"):
        entry["superseded"] = old["superseded"]


def rebuild_entry(task: Task, entry: dict[str, Any], directory: str | Path) -> tuple[dict[str, Any], bytes]:
    """Return (entry, sidecar bytes) recomputed from an entry's stored logits and records, with its provenance kept.

    What `bench leaderboard init` writes back and `bench leaderboard verify` compares with the file.
    """
    seeds = _existing_seeds(entry, Path(directory), task.flag)
    sources = {run["seed"]: run.get("source", "run") for run in entry["runs"]}
    fresh, sidecar = build_entry(task, seeds, sources)
    _carry_provenance(entry, fresh)
    return fresh, sidecar


def _existing_seeds(entry: dict[str, Any], directory: Path, task: str) -> list[SeedResult]:
    """Return the SeedResults already stored for an entry, rebuilt from its JSON and sidecar."""
    labels, logits, seeds = read_predictions(entry, directory)
    val = read_val_predictions(entry, directory)
    by_seed = {run["seed"]: run for run in entry["runs"]}
    out = []
    for i, seed in enumerate(seeds):
        run = {k: v for k, v in by_seed[seed].items() if k not in ("seed", "test", "source", "val_threshold")}
        out.append(
            SeedResult(
                kind=entry["kind"],
                task=task,
                method=entry["method"],
                config=entry["config"],
                seed=int(seed),
                architecture=entry["architecture"],
                labels=labels,
                logits=logits[i],
                data_md5=entry.get("data_md5"),
                data_md5_verified=entry.get("data_md5_verified"),
                record=run,
                packages={},  # re-merged below from the stored entry
                entry_id=entry["id"],
                name=entry.get("name"),
                val_labels=val[0][i] if val is not None else None,
                val_logits=val[1][i] if val is not None else None,
            )
        )
    return out


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


def _remove_unreferenced(directory: Path, task: str, keep: set[Path]) -> None:
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


@dataclass
class Snapshot:
    """What `restore` puts back if a step after an add fails: the board file's existence and the given entries with their sidecars."""

    task: str
    directory: Path
    board_existed: bool
    entries: dict[str, tuple[dict[str, Any], bytes] | None]  # id -> (entry, sidecar bytes), None where absent


def snapshot(task: str, ids: Iterable[str], directory: str | Path = DEFAULT_DIR) -> Snapshot:
    """Return the state of entries `ids` of the task's leaderboard, for `restore` (reads only; creates nothing)."""
    directory = Path(directory)
    saved: dict[str, tuple[dict[str, Any], bytes] | None] = {}
    with locked(task, directory, shared=True):
        existed = leaderboard_path(task, directory).is_file()
        board = read_board(task, directory)
        entries = {e["id"]: e for e in board["entries"] if not e.get("reference")}
        for entry_id in ids:
            entry = entries.get(entry_id)
            path = directory / entry["predictions"]["file"] if entry is not None else None
            saved[entry_id] = (entry, path.read_bytes()) if entry is not None and path is not None and path.is_file() else None
    return Snapshot(task, directory, existed, saved)


def restore(saved: Snapshot) -> None:
    """Put the entries of `saved` back as they were (removing those that were absent), leaving every other entry alone.

    A board file that did not exist before and would now hold no entry is removed again, so an
    add rolled back into a new folder leaves only the folder and its lock file.
    """
    task_obj = get_task(saved.task)
    directory = saved.directory
    with locked(task_obj.flag, directory):
        board = read_board(task_obj.flag, directory)
        entries = {e["id"]: e for e in board["entries"] if not e.get("reference")}
        for entry_id, before in saved.entries.items():
            if before is None:
                entries.pop(entry_id, None)
                continue
            entry, sidecar = before
            path = directory / entry["predictions"]["file"]
            if not path.is_file() or path.read_bytes() != sidecar:
                atomic_write_bytes(path, sidecar)
            entries[entry_id] = entry
        path = leaderboard_path(task_obj.flag, directory)
        if entries or saved.board_existed:
            fresh = empty_board(task_obj)
            fresh["entries"] += [entries[k] for k in sorted(entries)]
            write_json(path, fresh)
        else:
            path.unlink(missing_ok=True)
        _remove_unreferenced(directory, task_obj.flag, {directory / e["predictions"]["file"] for e in entries.values()})
        if not entries and not saved.board_existed:
            with contextlib.suppress(OSError):
                (directory / task_obj.flag).rmdir()  # only if empty


def add_results(task: str, results: Sequence[SeedResult], directory: str | Path = DEFAULT_DIR, *, source: str = "run") -> list[str]:
    """Merge seed results into the task's leaderboard under its lock; return the ids of the entries touched.

    A seed already in an entry is replaced (re-adding the same runs changes nothing). Results
    whose data file MD5 differs from the entry's are refused: an entry is one test set.
    Everything that can be checked without the board is checked before the lock is taken.
    """
    task_obj = get_task(task)
    directory = Path(directory)
    for r in results:
        if r.task != task_obj.flag:
            raise BenchError(f"a {r.task} result cannot enter the {task_obj.flag} leaderboard")
        check_result(r)
    check_folder_target(directory, "--leaderboard-dir")
    if not results:
        return []
    groups: dict[str, list[SeedResult]] = {}
    for r in results:
        groups.setdefault(r.entry_id, []).append(r)
    for entry_id, group in groups.items():
        seeds = [r.seed for r in group]
        if len(set(seeds)) != len(seeds):
            raise BenchError(f"entry {entry_id}: seed {max(set(seeds), key=seeds.count)} given twice in one add")
    with locked(task_obj.flag, directory):
        board = read_board(task_obj.flag, directory)
        entries = {e["id"]: e for e in board["entries"] if not e.get("reference")}
        stale: list[Path] = []
        new_files: list[tuple[Path, bytes]] = []
        for entry_id, group in sorted(groups.items()):
            merged: dict[int, SeedResult] = {}
            sources: dict[int, str] = {}
            old = entries.get(entry_id)
            if old is not None:
                for r in _existing_seeds(old, directory, task_obj.flag):
                    merged[r.seed] = r
                    sources[r.seed] = next((run.get("source") for run in old["runs"] if run["seed"] == r.seed), source)
                stale.append(directory / old["predictions"]["file"])
                if old.get("data_md5") != group[0].data_md5:
                    raise BenchError(
                        f"entry {entry_id} holds results on data file MD5 {old.get('data_md5')}; "
                        f"this one was tested on {group[0].data_md5}"
                    )
            for r in group:
                if r.data_md5 != group[0].data_md5:
                    raise BenchError(f"entry {entry_id}: its seeds were tested on different data files (data file MD5 {group[0].data_md5} and {r.data_md5})")
                kept = merged.get(r.seed)
                if kept is not None and "robustness" in kept.record and np.array_equal(kept.logits, r.logits):
                    # the same model again: its robustness block (and the time it took) stays
                    r.record = {**r.record, **{k: kept.record[k] for k in ("robustness", "robustness_seconds") if k in kept.record}}
                merged[r.seed] = r
                sources[r.seed] = source
            entry, sidecar = build_entry(task_obj, list(merged.values()), sources)
            if old is not None:
                _carry_provenance(old, entry)
            entries[entry_id] = entry
            new_files.append((directory / entry["predictions"]["file"], sidecar))
        board = empty_board(task_obj)
        board["entries"] += [entries[k] for k in sorted(entries)]
        for path, data in new_files:
            if not path.is_file() or path.read_bytes() != data:
                atomic_write_bytes(path, data)
        write_json(leaderboard_path(task_obj.flag, directory), board)
        keep = {directory / e["predictions"]["file"] for e in entries.values()}
        for path in stale:
            if path not in keep:
                path.unlink(missing_ok=True)
        _remove_unreferenced(directory, task_obj.flag, keep)
    return sorted(groups)


def add_runs(task: str | None, run_dirs: Sequence[str | Path], leaderboard_dir: str | Path = DEFAULT_DIR, *, source: str = "run") -> dict[str, list[str]]:
    """Add finished run directories to their tasks' leaderboards; return {task: entry ids touched}.

    Seeds of the same (task, method, configuration) become one entry. With `task` given, every
    run must be of that task. This is what `bench leaderboard add` and `bench compare` call.
    """
    if not run_dirs:
        raise BenchError("no run directories given")
    results = [read_run(d) for d in run_dirs]
    by_task: dict[str, list[SeedResult]] = {}
    for r in results:
        if task is not None and r.task != task:
            raise BenchError(f"run of {r.task} given for the {task} leaderboard")
        by_task.setdefault(r.task, []).append(r)
    return {t: add_results(t, rs, leaderboard_dir, source=source) for t, rs in sorted(by_task.items())}


def init_boards(tasks: Sequence[str], directory: str | Path = DEFAULT_DIR) -> list[Path]:
    """Create or refresh the leaderboard files of `tasks`; return their paths.

    The reference rows are rewritten from the task cards, and every entry is recomputed from its
    stored logits with this harness's statistics (`rebuild_entry`), keeping its provenance.
    """
    paths = []
    directory = Path(directory)
    check_folder_target(directory, "--leaderboard-dir")
    for flag in tasks:
        task = get_task(flag)
        with locked(flag, directory):
            board = read_board(flag, directory)
            fresh = empty_board(task)
            rebuilt = [rebuild_entry(task, e, directory) for e in sorted((e for e in board["entries"] if not e.get("reference")), key=lambda e: e["id"])]
            for entry, sidecar in rebuilt:
                path = directory / entry["predictions"]["file"]
                if not path.is_file() or path.read_bytes() != sidecar:
                    atomic_write_bytes(path, sidecar)
            fresh["entries"] += [entry for entry, _ in rebuilt]
            write_json(leaderboard_path(flag, directory), fresh)
            _remove_unreferenced(directory, flag, {directory / e["predictions"]["file"] for e in fresh["entries"] if e.get("predictions")})
        paths.append(leaderboard_path(flag, directory))
    return paths


# --- listing --------------------------------------------------------------------------------


def tasks_with_boards(directory: str | Path = DEFAULT_DIR) -> list[str]:
    """Return the registered tasks that have a leaderboard file in `directory`, in study order."""
    return [flag for flag in TASKS if leaderboard_path(flag, directory).is_file()]
