"""The `bench robustness` command: evaluate kept models under shift, print their tables, store their blocks."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from . import leaderboard as lb
from . import robustness as rb
from . import robustness_board as board
from .errors import BenchError
from .store import check_file_target, check_folder_target, write_json
from .tasks import TASKS


def run_command(args: argparse.Namespace, print_table: Callable[[list[dict[str, Any]], list[str]], None]) -> int:
    """Run `bench robustness` for parsed `args`; return the exit code (0).

    Sources are evaluated in order and each prints its table. With --leaderboard each block is
    stored on its entry (the source is added to the board first where absent); without sources
    every entry of the boards gets the blocks its runs under --runs allow.
    """
    if not args.sources and not args.leaderboard:
        raise BenchError("give run directories or submission archives, or --leaderboard to fill the leaderboard's blocks from --runs")
    json_path = check_file_target(args.json, "--json") if args.json else None
    if args.leaderboard:
        check_folder_target(args.leaderboard_dir, "--leaderboard-dir")
        if args.seed != rb.SEED or args.corruptions:
            raise BenchError(f"a leaderboard block covers every corruption at seed {rb.SEED}; --seed and --corruptions only apply without --leaderboard")
    evaluate_kwargs: dict[str, Any] = dict(data_root=args.data_root, device=args.device, verify_md5=not args.no_verify, seed=args.seed)
    records = []

    def compute(source: Any) -> dict[str, Any]:
        submission = rb.load_model(source, max_mb=args.max_size_mb)
        chosen = rb.corruption_list(submission.task)
        if args.corruptions:
            names = [n.strip() for n in args.corruptions.split(",") if n.strip()]
            unknown = [n for n in names if n not in chosen]
            if unknown:
                raise BenchError(f"{submission.task.flag} has no corruption {', '.join(unknown)}; its list: {', '.join(chosen)}")
            chosen = {n: chosen[n] for n in names}
        started = time.perf_counter()
        block = rb.evaluate(submission, corruptions=chosen, **evaluate_kwargs)
        seconds = time.perf_counter() - started
        config = submission.manifest["config"]
        title = f"{submission.task.flag} / {config['method']} / seed {config['seed']} (weights {submission.weights_sha256[:12]}), {block['corruption_set']}"
        print(f"{title}: {len(block['corruptions'])} corruptions x {block['severities']} severities, {block['n_test']} test cases, {seconds:.0f} s on {block['device']}")
        columns, rows = rb.table_rows(block)
        print_table(rows, columns)
        for line in rb.summary_lines(block):
            print(line)
        print()
        records.append({"source": str(source), "task": submission.task.flag, "method": config["method"], "seed": config["seed"], "weights_sha256": submission.weights_sha256, "seconds": seconds, "robustness": block})
        return block

    if args.leaderboard:
        for source in args.sources:
            # the source's leaderboard identity first (cheap checks), the block, then one write
            result, kind = board.seed_result_of(source, evaluate_kwargs, args.max_size_mb)
            started = time.perf_counter()
            block = compute(source)
            added = board.store(result, kind, block, args.leaderboard_dir, time.perf_counter() - started)
            where = lb.leaderboard_path(result.task, args.leaderboard_dir)
            print(f"{'added entry' if added else 'stored the block on'} {result.entry_id} seed {result.seed} {'to' if added else 'in'} {where}")
        if not args.sources:
            tasks = [TASKS.get(args.task).flag] if args.task else lb.tasks_with_boards(args.leaderboard_dir)
            roots = [Path(r) for r in args.runs or ["runs"]]
            for root in roots:
                if not root.is_dir():
                    raise BenchError(f"--runs {root} is not a folder; give the run store that holds the entries' run directories")
            added = board.fill(tasks, roots, args.leaderboard_dir, compute)
            print(f"added {added} robustness block(s)")
    else:
        for source in args.sources:
            compute(source)
    if json_path is not None:
        write_json(json_path, {"results": records})
        print(f"wrote {json_path}")
    return 0
