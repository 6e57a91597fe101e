"""Leaderboards: the run store (and evaluated submissions) -> `leaderboards/<task>.json`.

A seed's result is read and checked in `seeds.py`, grouped into entries and merged into a board
in `entries.py`; the files, their lock, schema and sidecars are `files.py`. This package exports
the names the rest of the harness uses.

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

from .entries import Snapshot, add_results, add_runs, build_entry, init_boards, rebuild_entry, restore, snapshot
from .files import DEFAULT_DIR, SCHEMA_VERSION, STATISTICS, empty_board, leaderboard_path, locked, read_board, read_predictions, read_val_predictions, reference_rows, tasks_with_boards
from .seeds import SeedResult, check_result, group_hash, read_run

__all__ = [
    "DEFAULT_DIR", "SCHEMA_VERSION", "STATISTICS", "SeedResult", "Snapshot", "add_results", "add_runs", "build_entry", "check_result",
    "empty_board", "group_hash", "init_boards", "leaderboard_path", "locked", "read_board", "read_predictions", "read_run",
    "read_val_predictions", "rebuild_entry", "reference_rows", "restore", "snapshot", "tasks_with_boards",
]
