"""Robustness blocks on leaderboard entries: one per seed, added by `bench robustness --leaderboard`.

A block sits on its seed's run record, `entries[i].runs[j].robustness`, beside that seed's test
metrics; the entry's summary over seeds (`summary`) is computed when the board is read, and is
what `bench leaderboard --sort robust` ranks by. Committed entries hold test logits but no
weights, so a block can only be computed where the seed's model is at hand: a run directory
given on the command line or found under `--runs` (matched by task, method, seed, run id and
its own test predictions), or a submission archive given on the command line.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import leaderboard as lb
from . import metrics
from .errors import BenchError
from .store import RESULT, read_json, write_json


def summary(entry: dict[str, Any]) -> dict[str, Any] | None:
    """Return an entry's robustness over the seeds that carry a block (mean and sd of each figure), or None."""
    blocks = [run["robustness"] for run in entry.get("runs", []) if run.get("robustness")]
    if not blocks:
        return None

    def mean_sd(values: list[float]) -> dict[str, Any]:
        return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None}

    return {
        "mean_corrupted_auc": mean_sd([b["mean_corrupted_auc"] for b in blocks]),
        "relative_drop": mean_sd([b["relative_drop"] for b in blocks if b["relative_drop"] is not None]) if all(b["relative_drop"] is not None for b in blocks) else {"mean": None, "sd": None},
        "clean_auc": mean_sd([b["clean"]["auc"] for b in blocks]),
        "n_seeds": len(blocks),
    }


def attach(task: str, entry_id: str, seed: int, block: dict[str, Any], directory: str | Path = lb.DEFAULT_DIR, seconds: float | None = None) -> None:
    """Store `block` (and the `seconds` it took, where given) on seed `seed` of entry `entry_id` (under the board's lock, atomically; everything else unchanged)."""
    directory = Path(directory)
    with lb.locked(task, directory):
        board = lb.read_board(task, directory)
        entry = next((e for e in board["entries"] if e.get("id") == entry_id and not e.get("reference")), None)
        run = next((r for r in (entry or {}).get("runs", []) if r.get("seed") == seed), None)
        if run is None:
            raise BenchError(f"{lb.leaderboard_path(task, directory)} has no entry {entry_id} with seed {seed}")
        run["robustness"] = block
        if seconds is not None:
            run["robustness_seconds"] = seconds
        else:  # the time of a pass this block replaces is not this block's
            run.pop("robustness_seconds", None)
        write_json(lb.leaderboard_path(task, directory), board)


def seed_result_of(source: str | Path, evaluate_kwargs: dict[str, Any], max_mb: float) -> tuple[lb.SeedResult, str]:
    """Return (the leaderboard SeedResult of a run directory or submission archive, its source kind "run" or "evaluate")."""
    from . import submission as sub

    path = Path(source)
    if path.is_dir():
        return lb.read_run(path), "run"
    kwargs = {k: v for k, v in evaluate_kwargs.items() if k in ("data_root", "device", "verify_md5")}
    return sub.seed_result(sub.evaluate(sub.load_submission(path, max_mb=max_mb), **kwargs)), "evaluate"


def store(result: lb.SeedResult, kind: str, block: dict[str, Any], directory: str | Path = lb.DEFAULT_DIR, seconds: float | None = None) -> bool:
    """Store `block` (and its `seconds`) on the result's entry and seed, adding the result to its leaderboard with the block where absent; return whether it was added."""
    directory = Path(directory)
    board = lb.read_board(result.task, directory)
    if any(e.get("id") == result.entry_id and any(r.get("seed") == result.seed for r in e.get("runs", [])) for e in board["entries"]):
        attach(result.task, result.entry_id, result.seed, block, directory, seconds)
        return False
    result.record = {**result.record, "robustness": block, **({"robustness_seconds": seconds} if seconds is not None else {})}
    lb.add_results(result.task, [result], directory, source=kind)
    return True


def _result_files(roots: Iterable[Path]) -> Iterable[Path]:
    for root in roots:
        for path in sorted(Path(root).rglob(RESULT)):
            if not any(part.startswith(".") for part in path.relative_to(root).parts):  # staging folders
                yield path


def locate_runs(task: str, entry: dict[str, Any], roots: Sequence[Path]) -> dict[int, Path]:
    """Return {seed: run directory} for the entry's seeds found under `roots`, each checked against the entry's own test AUC."""
    wanted = {run["seed"]: run for run in entry.get("runs", []) if run.get("run_id")}
    found: dict[int, Path] = {}
    for path in _result_files(roots):
        try:
            result = read_json(path)
        except (OSError, ValueError):
            continue
        if not isinstance(result, dict) or result.get("task") != task or result.get("method") != entry.get("method"):
            continue
        seed = result.get("seed")
        run = wanted.get(seed) if isinstance(seed, int) else None
        if run is None or seed in found or result.get("config_hash") != run["run_id"] or not (path.parent / "model.safetensors").is_file():
            continue
        try:
            mine = lb.read_run(path.parent)
        except BenchError:
            continue
        if mine.entry_id == entry["id"] and math.isclose(metrics.leaderboard_metrics(mine.labels, mine.logits)["auc"], run["test"]["auc"], rel_tol=0, abs_tol=1e-12):
            found[seed] = path.parent
    return found


def fill(
    tasks: Sequence[str],
    roots: Sequence[Path],
    directory: str | Path,
    compute: Callable[[Path], dict[str, Any]],
    *,
    say: Callable[[str], None] = print,
) -> int:
    """Add a block to every seed of every run entry of `tasks` whose run is found under `roots`; return how many were added.

    Seeds that already carry a block are kept; the others are named with the reason they were skipped.
    """
    added = 0
    for task in tasks:
        board = lb.read_board(task, directory)
        for entry in board["entries"]:
            if entry.get("reference"):
                continue
            missing = [run["seed"] for run in entry.get("runs", []) if not run.get("robustness")]
            if not missing:
                say(f"{task} {entry['id']}: every seed already has a robustness block")
                continue
            if entry.get("kind") != "run":
                say(f"{task} {entry['id']}: skipped seeds {missing}: a submission entry; give its archive (bench robustness FILE --leaderboard)")
                continue
            located = locate_runs(task, entry, roots)
            for seed in missing:
                if seed not in located:
                    say(f"{task} {entry['id']} seed {seed}: skipped, its run directory (with model.safetensors) is not under {', '.join(map(str, roots))}")
                    continue
                started = time.perf_counter()  # as a study times its own pass: loading the model and scoring it
                block = compute(located[seed])
                attach(task, entry["id"], seed, block, directory, time.perf_counter() - started)
                added += 1
                say(f"{task} {entry['id']} seed {seed}: added the robustness block of {located[seed]}")
    return added
