"""What a new user meets first: listing commands that answer without loading torch, help with
an example, the data files `bench tasks` finds, the progress bar and the run summary."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmark.cli import build_parser, main
from benchmark.commands import _progress_factory
from benchmark.store import read_json
from benchmark.synthetic import write_synthetic
from benchmark.tasks import TASKS, get_task

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "monai", "timm", "optuna", "matplotlib", "sklearn")


def imported_by(argv: list[str]) -> tuple[int, list[str]]:
    """Run `bench ARGV` in a fresh interpreter from the repository root; return (exit code, heavy libraries it imported)."""
    probe = (
        "import json, sys\n"
        "from benchmark.cli import main\n"
        f"code = main({argv!r})\n"
        f"print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    code, modules = json.loads(done.stdout.strip().splitlines()[-1])
    return code, modules


@pytest.mark.parametrize("argv", [["--help"], ["tasks"], ["methods"], ["augmentations"], ["leaderboard"], ["leaderboard", "--task", "breastmnist", "--format", "json"]])
def test_listing_commands_never_import_torch_or_the_other_heavy_libraries(argv: list[str]) -> None:
    code, modules = imported_by(argv)
    # the ranking recomputes each entry's seed-ensemble AUC from its logits: scikit-learn is used there
    allowed = ["sklearn"] if argv[0] == "leaderboard" else []
    assert code == 0 and [m for m in modules if m not in allowed] == []


def test_the_probe_sees_a_heavy_import() -> None:
    # the check above would pass vacuously if the probe could not see modules being imported;
    # submit loads torch before it finds the folder missing
    code, modules = imported_by(["submit", "/nonexistent-folder-for-this-test", "-o", "/nonexistent-folder-for-this-test/x.tar"])
    assert code == 2 and "torch" in modules


def _commands(parser: argparse.ArgumentParser, prefix: str = "bench") -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix} {name}", sub))
                found += _commands(sub, f"{prefix} {name}")
    return found


COMMANDS = _commands(build_parser())


def test_every_command_is_listed() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"bench run", "bench tune", "bench tasks", "bench leaderboard", "bench leaderboard add", "bench leaderboard init", "bench submit", "bench evaluate", "bench report"} <= names


@pytest.mark.parametrize(("name", "parser"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_command_help_has_a_one_line_description_and_an_example(name: str, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    description = parser.description or ""
    assert description and "\n" not in description and description in text
    example = re.search(r"example:\n  (bench .+)\n", text)
    assert example and example.group(1).startswith(name), text
    # the example parses: its options exist and its values are accepted (placeholders aside)
    argv = [a for a in example.group(1).replace("<hash>", "0123abcd").split()[1:] if a != "runs/breastmnist/ce/*/"]
    if name == "bench leaderboard add":
        argv += ["runs/x"]
    assert build_parser().parse_args(argv).func is not None


def test_bench_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "example:\n  bench run --task breastmnist" in out and "`bench COMMAND --help` describes a command." in out


def test_leaderboard_help_shows_its_action_as_optional(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", "--help"]) == 0
    out = capsys.readouterr().out
    usage = out.split("\n\n")[0]
    assert "[{add,init} ...]" in usage and "ACTION" not in out
    assert main(["leaderboard", "add"]) == 2
    assert "bench leaderboard add: error: the following arguments are required: RUN_DIR" in capsys.readouterr().err


def test_tasks_marks_the_data_files_present_under_the_data_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_synthetic(get_task("breastmnist"), tmp_path, sizes={"train": 8, "val": 4, "test": 4})
    write_synthetic(get_task("adrenalmnist3d"), tmp_path, sizes={"train": 4, "val": 2, "test": 2})
    assert main(["tasks", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.split() and line.split()[0] in TASKS}
    assert rows == {flag: "present" if flag in ("breastmnist", "adrenalmnist3d") else "missing" for flag in TASKS}
    assert f"in {tmp_path} (--data-root)" in out


def test_progress_bar_never_shows_an_epochs_values_beside_the_previous_count(capsys: pytest.CaptureFixture[str]) -> None:
    callback = _progress_factory(False)(SimpleNamespace(flag="breastmnist"), {"epochs": 3})
    for epoch in (1, 2, 3):
        callback({"epoch": epoch, "train_loss": 0.5, "val/auc": 0.6 + epoch / 10, "best_epoch": epoch}, None)
    frames = [f for f in re.split(r"[\r\n]", capsys.readouterr().err) if "val_auc" in f]
    assert frames, "the bar never showed an epoch's values"
    for frame in frames:
        count = int(re.search(r"(\d+)/3", frame).group(1))
        shown = float(re.search(r"val_auc=([0-9.]+)", frame).group(1))
        assert count >= 1 and shown == pytest.approx(0.6 + count / 10), frame


def test_run_summary_environment_and_submit_hint(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_synthetic(get_task("breastmnist"), tmp_path / "data", sizes={"train": 16, "val": 8, "test": 8})
    monkeypatch.chdir(tmp_path)  # a relative --data-root, as a user types it
    assert main(["run", "--task", "breastmnist", "--epochs", "1", "--data-root", "data", "--no-verify", "--out", "r", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    result = read_json(tmp_path / "r" / "result.json")
    # what the seconds count is said: the training steps, then everything with the per-epoch evaluation
    assert f"training steps {result['train_seconds']:.1f} s" in out and f"{result['wall_seconds']:.1f} s in all with the per-epoch evaluation" in out
    env = read_json(tmp_path / "r" / "environment.json")
    assert env["data_file"] == str((tmp_path / "data" / "breastmnist.npz").resolve())
    assert main(["submit", "r", "-o", "sub/team.tar"]) == 0
    out = capsys.readouterr().out
    assert f"check it with: bench evaluate sub/team.tar --data-root {(tmp_path / 'data').resolve()}" in out
