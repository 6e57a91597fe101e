"""Leaderboard entries: the seeds of one configuration built into an entry, merged into a task's board under its lock, rolled back, rebuilt."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .. import budget as budgets
from .. import metrics
from ..errors import BenchError
from ..store import atomic_write_bytes, check_folder_target, write_json
from ..tasks import Task, get_task
from .files import CI_CONFIDENCE, DEFAULT_DIR, METRICS, VAL_THRESHOLD_METRICS, empty_board, leaderboard_path, locked, read_board, read_predictions, read_val_predictions, remove_unreferenced, sidecar_bytes
from .seeds import SeedResult, check_result, group_hash, read_run


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
    sidecar = sidecar_bytes(labels, logits, [r.seed for r in results], val)
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
        remove_unreferenced(directory, task_obj.flag, {directory / e["predictions"]["file"] for e in entries.values()})
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
                    # (both from one record, so the block never carries another pass's time)
                    fresh = {k: v for k, v in r.record.items() if k not in ("robustness", "robustness_seconds")}
                    r.record = {**fresh, **{k: kept.record[k] for k in ("robustness", "robustness_seconds") if k in kept.record}}
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
        remove_unreferenced(directory, task_obj.flag, keep)
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
            remove_unreferenced(directory, flag, {directory / e["predictions"]["file"] for e in fresh["entries"] if e.get("predictions")})
        paths.append(leaderboard_path(flag, directory))
    return paths
