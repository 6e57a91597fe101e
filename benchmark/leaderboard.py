"""Leaderboards: the run store (and evaluated submissions) -> `leaderboards/<task>.json`, and the ranking.

One file per task holds the MedMNIST v2 reference row (from the task card) and one entry per
(task, method, configuration without the seed): the seeds of that configuration grouped, each
seed's test AUC, ACC, two-way pAUC and FPR at 95 % TPR recomputed from its stored test
predictions, their mean and sd, a bootstrap CI of the mean AUC, and the provenance (data MD5,
package versions, git commits, dates, training seconds, the fixed-architecture rule).

The per-seed test logits live in a sidecar `leaderboards/<task>/<entry>.<sha12>.safetensors`
(labels, logits, seeds; no pickle), named by its content hash and referenced with its SHA-256 from
the JSON, so any number on the leaderboard, and the DeLong test against the CE entry, can be
recomputed from the committed files alone.

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
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import metrics
from .errors import BenchError
from .store import RESULT, atomic_write_bytes, check_folder_target, load_predictions, read_json, remove_stale_temporaries, write_json
from .tasks import TASKS, Task, get_task

SCHEMA_VERSION = 1
DEFAULT_DIR = Path("leaderboards")
MAX_SEED = 2**32 - 1  # what numpy and torch both accept as a seed
SIDECAR = re.compile(r"^[A-Za-z0-9_.-]+\.[0-9a-f]{12}\.safetensors$")
METRICS = ("auc", "acc", "pauc", "fpr_at_95tpr")
# the CI is part of the record, so its settings are fixed and written into every file
CI_CONFIDENCE, CI_RESAMPLES, CI_SEED = 0.95, 1000, 0
STATISTICS = {
    "metrics": {
        "auc": "ROC AUC of the sigmoid score; mean of per-label AUCs for multi-label tasks (MedMNIST)",
        "acc": "accuracy of score > 0.5, mean over labels (MedMNIST)",
        "pauc": "two-way partial AUC, FPR <= 0.3 and TPR >= 0.7 (LibAUC pauc_roc_score), mean over labels",
        "fpr_at_95tpr": "lowest FPR with TPR >= 0.95, mean over labels (lower is better)",
    },
    "mean_sd": "mean and sample sd (ddof 1) over seeds; sd null for one seed",
    "ci95": {
        "what": "percentile bootstrap CI of the seed-mean test AUC, resampling test cases (the same cases for every seed; binary tasks stratified by class)",
        "confidence": CI_CONFIDENCE,
        "n_resamples": CI_RESAMPLES,
        "seed": CI_SEED,
    },
    "delong": "two-sided DeLong test of the entry's seed-ensemble (mean logits over seeds) against the CE "
    "entry's on the same test cases; binary tasks only; computed by `bench leaderboard`, not stored",
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


def _sidecar_bytes(labels: np.ndarray, logits: np.ndarray, seeds: Sequence[int]) -> bytes:
    return save_safetensors(
        {
            "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.uint8)),
            "logits": torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)),
            "seeds": torch.tensor(list(seeds), dtype=torch.int64),
        }
    )


def read_predictions(entry: dict[str, Any], directory: str | Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Return (labels (N, L), logits (S, N, L), seeds) of an entry from its sidecar, after checking its SHA-256."""
    ref = entry.get("predictions") or {}
    path = Path(directory) / ref.get("file", "")
    if not ref or not path.is_file():
        raise BenchError(f"entry {entry.get('id')}: predictions file {path} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
        raise BenchError(f"entry {entry.get('id')}: {path} does not match the SHA-256 the leaderboard records")
    tensors = load_safetensors(data)
    return tensors["labels"].numpy(), tensors["logits"].numpy(), tensors["seeds"].tolist()


# --- building entries ----------------------------------------------------------------------


def _mean_sd(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
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
    runs = []
    for r in results:
        runs.append({"seed": r.seed, "source": sources[r.seed], "test": metrics.leaderboard_metrics(r.labels, r.logits), **r.record})
    test: dict[str, Any] = {key: _mean_sd([run["test"][key] for run in runs]) for key in METRICS}
    low, high = metrics.bootstrap_auc_ci(labels, logits, confidence=CI_CONFIDENCE, n_resamples=CI_RESAMPLES, seed=CI_SEED)
    test["auc"]["ci95"] = [low, high]
    packages: dict[str, list[str]] = {}
    for r in results:
        for name, version in r.packages.items():
            if version is not None:
                packages.setdefault(name, []).append(version)
    seconds = [r.record.get("train_seconds") for r in results if r.record.get("train_seconds") is not None]
    dates = _distinct(r.record.get("date") for r in results)
    sidecar = _sidecar_bytes(labels, logits, [r.seed for r in results])
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


def _existing_seeds(entry: dict[str, Any], directory: Path, task: str) -> list[SeedResult]:
    """Return the SeedResults already stored for an entry, rebuilt from its JSON and sidecar."""
    labels, logits, seeds = read_predictions(entry, directory)
    by_seed = {run["seed"]: run for run in entry["runs"]}
    out = []
    for i, seed in enumerate(seeds):
        run = {k: v for k, v in by_seed[seed].items() if k not in ("seed", "test", "source")}
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
            packages_before: dict[str, list[str]] = {}
            old = entries.get(entry_id)
            if old is not None:
                for r in _existing_seeds(old, directory, task_obj.flag):
                    merged[r.seed] = r
                    sources[r.seed] = next((run.get("source") for run in old["runs"] if run["seed"] == r.seed), source)
                packages_before = old.get("packages", {})
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
                    r.record = {**r.record, "robustness": kept.record["robustness"]}  # the same model again: its robustness block stays
                merged[r.seed] = r
                sources[r.seed] = source
            entry, sidecar = build_entry(task_obj, list(merged.values()), sources)
            for name, versions in packages_before.items():
                entry["packages"][name] = sorted(set(entry["packages"].get(name, [])) | set(versions))
            entry["packages"] = dict(sorted(entry["packages"].items()))
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
    """Create or refresh the leaderboard files of `tasks` (reference rows from the cards, entries kept); return their paths."""
    paths = []
    check_folder_target(directory, "--leaderboard-dir")
    for flag in tasks:
        task = get_task(flag)
        with locked(flag, directory):
            board = read_board(flag, directory)
            fresh = empty_board(task)
            fresh["entries"] += sorted((e for e in board["entries"] if not e.get("reference")), key=lambda e: e["id"])
            write_json(leaderboard_path(flag, directory), fresh)
            _remove_unreferenced(Path(directory), flag, {Path(directory) / e["predictions"]["file"] for e in fresh["entries"] if e.get("predictions")})
        paths.append(leaderboard_path(flag, directory))
    return paths


# --- ranking ---------------------------------------------------------------------------------


def baseline_entry(entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the CE entry the others are compared with: the `ce` run entry with the most seeds (then the smallest id).

    Chosen without looking at test numbers, so the baseline cannot be cherry-picked.
    """
    ce = [e for e in entries if not e.get("reference") and e.get("method") == "ce" and e.get("kind") == "run"]
    return min(ce, key=lambda e: (-e["n_seeds"], e["id"])) if ce else None


def _ensemble(entry: dict[str, Any], directory: Path) -> tuple[np.ndarray, np.ndarray]:
    labels, logits, _ = read_predictions(entry, directory)
    return labels, logits.mean(axis=0)


def ranking(task: str, directory: str | Path = DEFAULT_DIR, sort: str = "auc") -> list[dict[str, Any]]:
    """Return the task's rows ranked by mean test AUC (best first), with deltas and DeLong p-values.

    Each row: rank, id, kind, method, seeds, auc (mean), auc_sd, ci_low, ci_high, delta_ref,
    delta_ce, p_delong (vs the CE entry; None for the CE entry itself, multi-label tasks or
    entries on other test labels), acc, pauc, fpr_at_95tpr, fixed_architecture, and
    robust_auc / robust_drop / robust_seeds (mean corrupted AUC, its relative drop and the seeds
    with a robustness block; None without one). `sort="robust"` ranks by robust_auc instead,
    entries without a block last.
    """
    from .robustness_board import summary as robustness_summary

    directory = Path(directory)
    task_obj = get_task(task)
    with locked(task, directory, shared=True):
        board = read_board(task, directory)
        entries = board["entries"]
        reference = next((e for e in entries if e.get("reference")), None)
        ref_auc = reference["test"]["auc"]["mean"] if reference else None
        baseline = baseline_entry(entries)
        base_labels = base_scores = None
        if baseline is not None and not task_obj.multilabel:
            base_labels, base_scores = _ensemble(baseline, directory)
        rows = []
        for e in entries:
            test = e.get("test", {})
            auc = test.get("auc", {}).get("mean")
            ci = test.get("auc", {}).get("ci95") or [None, None]
            p_value = None
            if base_scores is not None and not e.get("reference") and e is not baseline:
                labels, scores = _ensemble(e, directory)
                if labels.shape == base_labels.shape and np.array_equal(labels, base_labels):
                    p_value = metrics.delong_test(labels, scores, base_scores).p_value
            rows.append(
                {
                    "id": e["id"],
                    "kind": e["kind"],
                    "name": e.get("name") or e.get("model"),
                    "method": e.get("method", "-"),
                    "seeds": e.get("n_seeds"),
                    "auc": auc,
                    "auc_sd": test.get("auc", {}).get("sd"),
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                    "delta_ref": None if auc is None or ref_auc is None or e.get("reference") else auc - ref_auc,
                    "delta_ce": None if baseline is None or e.get("reference") or e is baseline or auc is None else auc - baseline["test"]["auc"]["mean"],
                    "p_delong": p_value,
                    "baseline": e is baseline,
                    "acc": test.get("acc", {}).get("mean"),
                    "pauc": test.get("pauc", {}).get("mean"),
                    "fpr_at_95tpr": test.get("fpr_at_95tpr", {}).get("mean"),
                    "fixed_architecture": e.get("fixed_architecture"),
                    "data_md5_verified": e.get("data_md5_verified", True),
                    **_robust_fields(robustness_summary(e)),
                }
            )
    key = "robust_auc" if sort == "robust" else "auc"
    rows.sort(key=lambda r: (-(r[key] if r[key] is not None and math.isfinite(r[key]) else -math.inf), r["id"]))
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return rows


def _robust_fields(summary: dict[str, Any] | None) -> dict[str, Any]:
    if summary is None:
        return {"robust_auc": None, "robust_drop": None, "robust_seeds": None}
    return {"robust_auc": summary["mean_corrupted_auc"]["mean"], "robust_drop": summary["relative_drop"]["mean"], "robust_seeds": summary["n_seeds"]}


def _cell(value: Any, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def display_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Return (column titles, text cells) of a ranking for the table and markdown formats."""
    columns = ["#", "entry", "method", "seeds", "test AUC", "95% CI", "vs ref", "vs CE", "p DeLong", "ACC", "pAUC", "FPR@95TPR", "fixed arch"]
    cells = []
    for r in rows:
        label = r["id"] + (" (reference)" if r["kind"] == "reference" else "") + (" (CE baseline)" if r["baseline"] else "")
        if r["kind"] == "submission":
            label += f" [submission{': ' + r['name'] if r['name'] else ''}]"
        if r.get("data_md5_verified") is False:
            label += " [unofficial data]"
        auc = _cell(r["auc"]) + (f" +/- {_cell(r['auc_sd'])}" if r["auc_sd"] is not None else "")
        ci = f"[{_cell(r['ci_low'])}, {_cell(r['ci_high'])}]" if r["ci_low"] is not None else "-"
        p = "-" if r["p_delong"] is None else (f"{r['p_delong']:.3g}")
        cells.append(
            [str(r["rank"]), label, str(r["method"]), _cell(r["seeds"]), auc, ci, _cell(r["delta_ref"], signed=True), _cell(r["delta_ce"], signed=True), p, _cell(r["acc"]), _cell(r["pauc"]), _cell(r["fpr_at_95tpr"]), _cell(r["fixed_architecture"])]
        )
    if any(r.get("robust_auc") is not None for r in rows):
        # mean corrupted AUC (bench robustness), over the seeds that carry a block
        columns += ["corrupted AUC", "drop"]
        for r, row in zip(rows, cells):
            seeds = f" ({r['robust_seeds']}/{r['seeds']})" if r.get("robust_seeds") and r["robust_seeds"] != r["seeds"] else ""
            row += [_cell(r.get("robust_auc")) + seeds, "-" if r.get("robust_drop") is None else f"{100 * r['robust_drop']:.1f} %"]
    return columns, cells


def format_table(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Return an aligned plain-text table."""
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def format_markdown(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Return a GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells]
    return "\n".join(lines)


def tasks_with_boards(directory: str | Path = DEFAULT_DIR) -> list[str]:
    """Return the registered tasks that have a leaderboard file in `directory`, in study order."""
    return [flag for flag in TASKS if leaderboard_path(flag, directory).is_file()]


FOOTNOTE = (
    "test AUC: mean +/- sd over seeds; 95% CI: bootstrap over test cases; vs ref: minus the MedMNIST v2 "
    "number; vs CE / p DeLong: against the CE baseline entry (seed-averaged logits, binary tasks only)."
)


def render(tasks: Sequence[str], fmt: str = "table", directory: str | Path = DEFAULT_DIR, sort: str = "auc") -> str:
    """Return the rankings of `tasks` (by mean test AUC, or by mean corrupted AUC with sort="robust") as a table, markdown or JSON."""
    rankings = {task: ranking(task, directory, sort) for task in tasks}
    if fmt == "json":
        return json.dumps(rankings, sort_keys=True, indent=2)
    blocks = []
    for task, rows in rankings.items():
        columns, cells = display_rows(rows)
        if fmt == "md":
            blocks.append(f"### {task}\n\n{format_markdown(columns, cells)}")
        else:
            blocks.append(f"{task}\n{format_table(columns, cells)}")
    return "\n\n".join(blocks) + "\n\n" + FOOTNOTE
