"""The `bench` command line: the argument parser and `main`, which calls the command's function in `commands.py`."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable, Sequence

from . import __version__
from .commands import (
    cmd_augmentations,
    cmd_compare,
    cmd_evaluate,
    cmd_leaderboard,
    cmd_methods,
    cmd_report,
    cmd_robustness,
    cmd_run,
    cmd_splits,
    cmd_study,
    cmd_submit,
    cmd_tasks,
    cmd_throughput,
    cmd_tune,
)
from .errors import BenchError, one_line
from .hparams import MAX_SEED


# --- parser -------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: `bench run: error: ... (see bench run --help)`, exit 2, no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def integer(low: int, high: int) -> Callable[[str], int]:
    """Return an argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text[:40]}")
        return value

    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (NaN and infinity refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text[:40]}")
    return value


SEED = integer(0, MAX_SEED)


def _add_run_args(p: argparse.ArgumentParser, method: bool = True) -> None:
    p.add_argument("--task", required=True, help="MedMNIST flag, e.g. breastmnist (see `bench tasks`)")
    if method:
        p.add_argument("--method", default="ce", help="method id, e.g. ce (see `bench methods`)")
    p.add_argument("--epochs", type=integer(1, 100_000), help="shortcut for --set epochs=N")
    p.add_argument("--seed", type=SEED, default=0, help=f"random seed, 0 to {MAX_SEED} (default 0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set a hyperparameter; repeatable")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--data-root", help="folder holding <task>.npz (else $BENCH_DATA_ROOT, else ~/.medmnist)")
    p.add_argument("--no-verify", action="store_true", help="accept a data file whose MD5 is not the official one")


def _add_tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=integer(1, 100_000), required=True, help="budget: finished (complete or pruned) trials per study")
    p.add_argument("--space", help="shared hyperparameters to search too, comma-separated (e.g. lr,weight_decay,batch_size)")
    p.add_argument("--pruner", default="median", help="median (default), hyperband or none: stops hopeless trials early")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///<runs>/optuna.db); e.g. postgresql://user@host/db")
    p.add_argument("--jobs", type=integer(1, 256), default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--timeout", type=positive_number, help="seconds per study; no new trial starts after it")
    p.add_argument("--runs", help="root of the run store (default ./runs)")
    p.add_argument("--quiet", action="store_true", help="no progress inside trials and no line per trial (errors and the summary still print)")


def _command(sub: Any, name: str, summary: str, example: str, **kwargs: Any) -> argparse.ArgumentParser:
    """Return the parser of command `name`: `summary` in `bench --help` and atop its own help, `example` below it."""
    return sub.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".", epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs,
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the `bench` argument parser."""
    parser = Parser(
        prog="bench", description="Deep AUC Maximization benchmark on MedMNIST.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  bench run --task breastmnist --method ce --data-root ../shared/data/medmnist\n\n`bench COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"medauc-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "run", "train and evaluate one configuration", "bench run --task breastmnist --method ce --epochs 100 --seed 0 --data-root ../shared/data/medmnist")
    _add_run_args(p)
    p.add_argument("--out", help="run directory (default runs/<task>/<method>/<config-hash>)")
    p.add_argument("--runs", help="root of the run store (default ./runs)")
    p.add_argument("--force", action="store_true", help="retrain even if this configuration already finished")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = _command(sub, "throughput", "time the harness against the official MedMNIST pipeline, side by side", "bench throughput --task breastmnist --set precision=bf16 --json runs/throughput.json")
    p.add_argument("--task", required=True, help="MedMNIST flag, e.g. breastmnist (see `bench tasks`)")
    p.add_argument("--method", default="ce", help="method id, e.g. ce (see `bench methods`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set a hyperparameter of the harness run (e.g. precision=bf16); repeatable")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--steps", type=integer(1, 100_000), help="training steps per timed window (default: a whole epoch up to 10; 1 for 3D on CPU)")
    p.add_argument("--repeats", type=integer(1, 1000), default=3, help="timed rounds per pipeline; medians are reported (default 3)")
    p.add_argument("--warmup", type=integer(0, 1000), default=1, help="untimed warm-up rounds first (default 1)")
    p.add_argument("--workers", type=integer(0, 256), default=0, help="DataLoader workers of the reference pipeline (official: 0)")
    p.add_argument("--seed", type=SEED, default=0, help=f"random seed, 0 to {MAX_SEED} (default 0)")
    p.add_argument("--data-root", help="folder holding <task>.npz (else $BENCH_DATA_ROOT, else ~/.medmnist)")
    p.add_argument("--no-verify", action="store_true", help="accept a data file whose MD5 is not the official one")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_throughput)

    p = _command(sub, "tune", "tune a method's hyperparameters on validation data (Optuna)", "bench tune --task breastmnist --method aucm --trials 20 --epochs 20")
    _add_run_args(p)
    _add_tune_args(p)
    p.add_argument("--study", help="study name (default <task>.<method>.<N>trials.<E>epochs.<hash>)")
    p.set_defaults(func=cmd_tune)

    p = _command(sub, "compare", "tune several methods with one budget, retrain the winners over seeds, test once", "bench compare --task breastmnist --methods ce,aucm --trials 20 --seeds 3 --epochs 20")
    _add_run_args(p, method=False)
    p.add_argument("--methods", required=True, help="comma-separated method ids, e.g. ce,aucm")
    p.add_argument("--seeds", type=integer(1, 1000), default=3, help="final runs per method (seeds --seed+1 .. --seed+S; default 3)")
    _add_tune_args(p)
    p.set_defaults(func=cmd_compare)

    p = _command(sub, "tasks", "list the tasks, their MedMNIST reference numbers and which data files are present", "bench tasks --data-root ../shared/data/medmnist")
    p.add_argument("--data-root", help="folder to look for <task>.npz in (else $BENCH_DATA_ROOT, else ~/.medmnist)")
    p.set_defaults(func=cmd_tasks)

    p = _command(sub, "methods", "list the methods and their hyperparameters with defaults and search ranges", "bench methods")
    p.set_defaults(func=cmd_methods)

    p = _command(sub, "augmentations", "list the augmentation presets and batch-level switches", "bench augmentations")
    p.set_defaults(func=cmd_augmentations)

    p = _command(sub, "splits", "print each split's size and positive share per label", "bench splits --task pneumoniamnist --set val_strategy=kfold")
    p.add_argument("--task", required=True, help="MedMNIST flag, e.g. breastmnist")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="val_strategy, val_fraction, split_seed or folds; repeatable")
    p.add_argument("--data-root", help="folder holding <task>.npz (else $BENCH_DATA_ROOT, else ~/.medmnist)")
    p.add_argument("--no-verify", action="store_true", help="accept a data file whose MD5 is not the official one")
    p.set_defaults(func=cmd_splits)

    # usage written out: argparse shows an optional sub-command without the brackets that say so
    p = _command(
        sub, "leaderboard", "print the leaderboards; `leaderboard add RUN_DIR...` adds runs", "bench leaderboard --task breastmnist --format md",
        usage="bench leaderboard [-h] [--task TASK] [--format {table,md,json}]\n                         [--leaderboard-dir DIR] [{add,init} ...]",
    )
    p.add_argument("--task", help="one task (default: every task with a leaderboard file)")
    p.add_argument("--format", choices=("table", "md", "json"), default="table", help="output format (default table)")
    p.add_argument("--leaderboard-dir", default="leaderboards", metavar="DIR", help="folder of the leaderboard files (default ./leaderboards)")
    p.add_argument("--sort", choices=("auc", "robust"), default="auc", help="rank by mean test AUC (default) or by mean corrupted AUC (bench robustness)")
    p.set_defaults(func=cmd_leaderboard, action=None)
    actions = p.add_subparsers(dest="action", metavar="{add,init}", prog="bench leaderboard", title="actions (optional; without one the ranking is printed)")
    a = _command(actions, "add", "add finished run directories to their task's leaderboard (seeds of one configuration become one entry)", "bench leaderboard add runs/breastmnist/ce/*/ --leaderboard-dir runs/leaderboards")
    a.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    a.add_argument("--task", help="refuse runs of any other task")
    a.add_argument("--leaderboard-dir", default="leaderboards", help="folder of the leaderboard files (default ./leaderboards)")
    a = _command(actions, "init", "create or refresh the files: the MedMNIST v2 reference rows, every entry recomputed from its stored logits", "bench leaderboard init --leaderboard-dir runs/leaderboards")
    a.add_argument("--task", help="one task (default: all seven)")
    a.add_argument("--leaderboard-dir", default="leaderboards", help="folder of the leaderboard files (default ./leaderboards)")
    a = _command(actions, "verify", "recompute every entry's numbers from its stored logits and the data file; fail on any difference", "bench leaderboard verify --data-root ../shared/data/medmnist")
    a.add_argument("--task", help="one task (default: every task with a leaderboard file)")
    a.add_argument("--leaderboard-dir", default="leaderboards", help="folder of the leaderboard files (default ./leaderboards)")
    a.add_argument("--data-root", help="folder holding <task>.npz (else $BENCH_DATA_ROOT, else ~/.medmnist)")
    a.add_argument("--no-verify", action="store_true", help="accept data files whose MD5 is not the official one")

    p = _command(sub, "submit", "package a finished run's weights as a submission archive", "bench submit runs/breastmnist/ce/<hash> -o runs/team-a.tar --name team-a")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="archive to write, e.g. runs/team-a.tar")
    p.add_argument("--name", help="a label for the leaderboard (letters, digits, . _ -)")
    p.add_argument("--allow-tuning-trial", action="store_true", help="package a tuning trial's run too (organizers only: a trial was chosen on validation data, and the test split is for final models)")
    p.set_defaults(func=cmd_submit)

    p = _command(sub, "evaluate", "validate a submission and evaluate it on the test split (organizers)", "bench evaluate runs/team-a.tar --data-root ../shared/data/medmnist --json runs/team-a.json")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--leaderboard", action="store_true", help="add the result to the task's leaderboard")
    p.add_argument("--leaderboard-dir", default="leaderboards", help="folder of the leaderboard files (default ./leaderboards)")
    p.add_argument("--json", metavar="OUT", help="write the metrics (test.auc, ...) to this JSON file")
    p.add_argument("--max-size-mb", type=positive_number, default=200.0, help="largest archive accepted, in MB (default 200)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--data-root", help="folder holding <task>.npz (else $BENCH_DATA_ROOT, else ~/.medmnist)")
    p.add_argument("--no-verify", action="store_true", help="accept a data file whose MD5 is not the official one")
    p.set_defaults(func=cmd_evaluate)

    p = _command(sub, "study", "run a study file (tune every arm, final seeds, leaderboard, report) or show where it stands", "bench study status studies/breastmnist.toml")
    p.set_defaults(func=cmd_study)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (
        ("run", "run or resume every tuning study and final seed of FILE, then rebuild the report"),
        ("status", "done / running / left per task and arm, compute spent, expected time left (no run store needed)"),
        ("copy", "copy the study's Optuna studies from its journal (or --storage) to another storage (Optuna's copy_study)"),
    ):
        examples = {"run": "bench study run studies/breastmnist.toml --data-root ../shared/data/medmnist", "status": "bench study status studies/breastmnist.toml", "copy": "bench study copy studies/breastmnist.toml --to postgresql://bench@db.example.org/bench"}
        a = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".", epilog=f"example:\n  {examples[action]}", formatter_class=argparse.RawDescriptionHelpFormatter)
        a.add_argument("file", metavar="FILE", help="study file, e.g. studies/breastmnist.toml")
        a.add_argument("--storage", help="Optuna storage (default: the journal <FILE stem>.journal beside FILE); a database URL or a *.journal path")
        a.add_argument("--tasks", help="only these of the file's tasks, comma-separated")
        a.add_argument("--arms", help="only these arms (and their bases), comma-separated")
        a.add_argument("--leaderboard-dir", default="leaderboards", help="folder of the leaderboard files (default ./leaderboards)")
        if action == "copy":
            a.add_argument("--to", required=True, metavar="URL", help="target storage, e.g. postgresql://user@host/db")
        if action == "status":
            a.add_argument("--json", action="store_true", help="print the status as JSON")
        if action == "run":
            a.add_argument("--runs", help="root of the run store (default ./runs)")
            a.add_argument("--data-root", help="folder holding <task>.npz (else $BENCH_DATA_ROOT, else ~/.medmnist)")
            a.add_argument("--no-verify", action="store_true", help="accept data files whose MD5 is not the official one")
            a.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
            a.add_argument("--jobs", type=integer(1, 256), default=1, help="tuning worker processes on this machine (default 1)")
            a.add_argument("--quiet", action="store_true", help="no progress lines")
            a.add_argument("--timeout", type=positive_number, metavar="SECONDS", help="no new trial or final run starts after this many seconds (the one running finishes); rerun to resume")
            a.add_argument("--emulated-bf16", action="store_true", help="run a bf16 study on a CPU without native bf16 (emulated: many times slower than fp32); refused otherwise")
            a.add_argument("--report-out", help="folder of the rebuilt study report (default ./reports/<FILE stem>)")
            a.add_argument("--no-report", action="store_true", help="do not rebuild the report at the end")

    p = _command(sub, "robustness", "evaluate a kept model on corrupted copies of the test split (MedMNIST-C in 2D, MONAI artifacts in 3D)", "bench robustness runs/breastmnist/ce/<hash> --data-root ../shared/data/medmnist")
    p.add_argument("sources", nargs="*", metavar="RUN_DIR_OR_SUBMISSION", help="run directories (model.safetensors) or submission archives")
    p.add_argument("--json", metavar="OUT", help="write every block (and its seconds) to this JSON file")
    p.add_argument("--leaderboard", action="store_true", help="store each block on its leaderboard entry (added first if absent); without sources: every entry whose runs are under --runs")
    p.add_argument("--leaderboard-dir", default="leaderboards", help="folder of the leaderboard files (default ./leaderboards)")
    p.add_argument("--task", help="with --leaderboard and no sources: only this task's board (default: every board)")
    p.add_argument("--runs", action="append", metavar="DIR", help="with --leaderboard and no sources: where to look for the entries' run directories (default ./runs); repeatable")
    p.add_argument("--corruptions", help="only these corruptions, comma-separated (not with --leaderboard)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the corrupted copies (default 0, the leaderboard's)")
    p.add_argument("--max-size-mb", type=positive_number, default=200.0, help="largest archive or weights accepted, in MB (default 200)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--data-root", help="folder holding <task>.npz (else $BENCH_DATA_ROOT, else ~/.medmnist)")
    p.add_argument("--no-verify", action="store_true", help="accept a data file whose MD5 is not the official one")
    p.set_defaults(func=cmd_robustness)

    p = _command(sub, "report", "figures and tables of the technical report, from stored results only", "bench report --runs runs -o runs/report --data-root ../shared/data/medmnist")
    p.add_argument("--runs", action="append", metavar="DIR", help="root of a run store; repeat to read several together. Given: its runs alone (add --leaderboards to fill the methods it lacks). Not given: the leaderboards, with ./runs if present")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (default: every task with runs)")
    p.add_argument("-o", "--out", help="output folder (default ./reports, with --study ./reports/<study stem>; a previous report there is replaced, the study reports inside it kept)")
    p.add_argument("--leaderboards", metavar="DIR", help="folder of <task>.json leaderboards (default ./leaderboards when no --runs is given)")
    p.add_argument("--storage", action="append", metavar="URL", help="Optuna storage URL or journal file to read studies from; repeatable (default: the SQLite files in the run store and studies/*.journal)")
    p.add_argument("--data-root", help="folder holding <task>.npz, for the split-prevalence and augmentation figures")
    p.add_argument("--no-verify", action="store_true", help="accept data files whose MD5 is not the official one")
    p.add_argument("--study", metavar="FILE", help="a study file (studies/NAME.toml): its final results alone, at its budget, with the levers table")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `bench` command line; return the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed on one line
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.func(args) or 0)
    except BenchError as exc:
        print(f"bench: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`bench ... | head`): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # a destination that became unusable after the checks (disk full, read-only, removed)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"bench: error: {one_line(where + (exc.strerror or str(exc)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; nothing was half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
