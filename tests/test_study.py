"""`bench study`: a study file parsed and checked, run to its budget, killed and resumed, its
leaderboard entries equal to its final runs, its status read from the journal and the
leaderboards alone; the journal storage and Optuna's copy_study; progress inside trials."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from benchmark import leaderboard, metrics, robustness as rb, study as st, tune
from benchmark.cli import main
from benchmark.errors import BenchError
from benchmark.methods import METHODS
from benchmark.storage import copy_studies, open_storage
from benchmark.store import load_predictions, read_json
from benchmark.studyfile import load, parse
from benchmark.synthetic import synthetic_arrays, write_synthetic
from benchmark.tasks import TASKS, get_task

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 32, "val": 16, "test": 16}

TINY = """
tasks = ["breastmnist"]
[tune]
trials = 2
epochs = {epochs}
pruner = "none"
[final]
seeds = [0, 1]
robustness = {robustness}
[[arm]]
method = "ce"
[[arm]]
name = "ce+ema"
method = "ce"
base = "ce"
fixed = {{ ema = true }}
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study-data")
    np.savez_compressed(root / "breastmnist.npz", **synthetic_arrays(get_task("breastmnist"), SIZES, seed=2))
    return root


def tiny(epochs: int = 1, robustness: bool = False) -> str:
    """The tiny study's text; the robustness pass (35 corrupted test sets per final seed) only where a test checks it."""
    return TINY.format(epochs=epochs, robustness=str(robustness).lower())


def _file(folder: Path, epochs: int = 1, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.toml"
    path.write_text(text if text is not None else tiny(epochs))
    return path


def _opts(tmp_path: Path, data_root: Path, **kw) -> st.Options:
    base = dict(runs_root=str(tmp_path / "runs"), data_root=str(data_root), device="cpu", verify_md5=False, leaderboard_dir=str(tmp_path / "boards"), quiet=True)
    return st.Options(**{**base, **kw})


# --- the file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tasks = ["breastmnist"]\n', "no [[arm]]"),
        ('tasks = ["nope"]\n[[arm]]\nmethod = "ce"\n', "unknown task 'nope'"),
        ('tasks = ["breastmnist"]\n[[arm]]\nmethod = "svm"\n', "unknown method 'svm'"),
        ('tasks = ["breastmnist"]\nbudget = 3\n[[arm]]\nmethod = "ce"\n', "unknown key 'budget'"),
        ('tasks = ["breastmnist"]\n[[arm]]\nmethod = "ce"\nbase = "aucm"\n', "base 'aucm' is not an arm declared before it"),
        ('tasks = ["breastmnist"]\n[[arm]]\nmethod = "aucm"\n[[arm]]\nname = "x"\nmethod = "ce"\nbase = "aucm"\n', "a base must be of the same method"),
        ('tasks = ["breastmnist"]\n[[arm]]\nmethod = "ce"\nfixed = { margin = 1.0 }\n', "ce has no setting 'margin'"),
        ('tasks = ["breastmnist"]\n[final]\nseeds = []\n[[arm]]\nmethod = "ce"\n', "seeds must be a non-empty list"),
        ('tasks = ["breastmnist"]\n[final]\nrobustness = "yes"\n[[arm]]\nmethod = "ce"\n', "robustness must be true or false"),
        ('tasks = ["breastmnist"]\n[tune]\ntrials = -1\n[[arm]]\nmethod = "ce"\n', "trials must be an integer from 0"),
        ('tasks = ["breastmnist"]\n[tune]\npruner = "x"\n[[arm]]\nmethod = "ce"\n', "unknown pruner 'x'"),
        ("tasks = [", "not valid TOML"),
    ],
)
def test_a_bad_study_file_is_one_line_and_writes_nothing(text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BenchError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse(text, Path("x.toml"))
    path = _file(tmp_path / "studies", text=text)
    code = main(["study", "run", str(path), "--runs", str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "boards"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "boards").exists() and not path.with_suffix(".journal").exists()


def test_the_committed_study_files_parse_and_cover_what_they_promise() -> None:
    files = sorted((REPO / "studies").glob("*.toml"))
    assert files
    studies = {f.stem: load(f) for f in files}
    assert set(studies["medmnist7"].tasks) == set(TASKS.names())
    breast = studies["breastmnist"]
    assert breast.trials >= 10 and breast.epochs == 100 and breast.seeds == (0, 1, 2) and breast.pruner == "median"
    tuned = {a.method for a in breast.arms if a.tuned and a.base is None}
    assert tuned == set(METHODS.names())
    # every lever is a final-only arm on top of a tuned CE or AUC-M arm, except the augmentation search
    levers = [a for a in breast.arms if a.base is not None]
    assert {a.base for a in levers} == {"ce", "aucm"}
    assert all(breast.budget(a) == 0 for a in levers if not a.space)


# --- run, resume, status ------------------------------------------------------------------------


def test_a_study_runs_to_its_budget_and_its_entries_equal_its_final_runs(data_root: Path, tmp_path: Path) -> None:
    study = load(_file(tmp_path / "studies", text=tiny(robustness=True)))
    opts = _opts(tmp_path, data_root)
    report = st.run(study, opts)
    journal = study.journal
    assert journal.is_file() and journal.read_text().strip()  # the record sits beside the file
    s = optuna.load_study(study_name=study.optuna_name("breastmnist", study.arm("ce")), storage=open_storage(str(journal)))
    assert [t.state for t in s.trials] == [TrialState.COMPLETE] * 2
    assert not optuna.study.get_all_study_names(open_storage(str(journal))).count(study.optuna_name("breastmnist", study.arm("ce+ema")))
    rows = {r["arm"]: r for r in report["rows"]}
    assert all(r["state"] == "done" and r["expected_seconds_left"] == 0.0 for r in rows.values())
    assert rows["ce"]["trials"] == {"budget": 2, "finished": 2, "running": 0, "left": 0} and rows["ce+ema"]["trials"]["budget"] == 0
    board = leaderboard.read_board("breastmnist", opts.leaderboard_dir)
    entries = [e for e in board["entries"] if not e.get("reference")]
    assert len(entries) == 2
    best = s.best_trial.params
    for entry in entries:
        arm = entry["runs"][0]["arm"]
        assert entry["seeds"] == [0, 1] and all(r["study"] == "tiny" and r["arm"] == arm for r in entry["runs"])
        assert all(r["command"] == f"bench study run {study.path.as_posix()}" for r in entry["runs"])
        assert all(entry["config"][k] == v for k, v in best.items())  # retrained with the selection
        assert entry["config"]["ema"] is (arm == "ce+ema")
        labels, logits, seeds = leaderboard.read_predictions(entry, opts.leaderboard_dir)
        for run, row in zip(entry["runs"], logits):
            run_dir = Path(opts.runs_root) / "breastmnist" / "ce" / run["run_id"]
            result = read_json(run_dir / "result.json")
            l2, g2 = load_predictions(run_dir / "predictions_test.npz")
            assert np.array_equal(g2, row) and np.array_equal(l2, labels)
            # the entry's number is the run's, and both are the formula's
            assert run["test"]["auc"] == result["test"]["auc"] == pytest.approx(metrics.auc(labels, metrics.sigmoid(row)), abs=1e-12)
            # scored under shift while its weights were at hand: the block's clean AUC is the run's test AUC
            block = run["robustness"]
            assert block["clean"]["auc"] == pytest.approx(metrics.auc(labels, metrics.sigmoid(row)), abs=1e-12)
            assert set(block["corruptions"]) == set(rb.corruption_list(TASKS.get("breastmnist"))) and run["robustness_seconds"] > 0
        assert rows[arm]["test_auc"] == [r["test"]["auc"] for r in entry["runs"]]
    # rerun: nothing left, nothing retrained, the same entries
    mtimes = {p: p.stat().st_mtime for p in Path(opts.runs_root).rglob("result.json")}
    record = journal.read_bytes()
    again = st.run(study, opts)
    assert {p: p.stat().st_mtime for p in Path(opts.runs_root).rglob("result.json")} == mtimes
    assert journal.read_bytes() == record, "a finished study opened again adds nothing to its committed record"
    assert leaderboard.read_board("breastmnist", opts.leaderboard_dir) == board
    assert [r["state"] for r in again["rows"]] == ["done", "done"]
    # the rerun through the command line rebuilds the study's report: its cells are the entries' own numbers
    rep = tmp_path / "rep"
    assert main(["study", "run", str(study.path), "--runs", opts.runs_root, "--data-root", str(data_root), "--no-verify", "--device", "cpu",
                 "--leaderboard-dir", opts.leaderboard_dir, "--quiet", "--report-out", str(rep)]) == 0
    by_arm = {e["runs"][0]["arm"]: [r["test"]["auc"] for r in e["runs"]] for e in entries}
    main_row = next(line for line in (rep / "tables" / "main_results.md").read_text().splitlines() if line.startswith("| ce |"))
    ce = np.asarray(by_arm["ce"])
    assert f"{ce.mean():.3f} ± {ce.std(ddof=1):.3f} (2)" in main_row
    lever = next(line for line in (rep / "tables" / "levers.md").read_text().splitlines() if "| ce+ema |" in line)
    ema = np.asarray(by_arm["ce+ema"])
    assert f"{ema.mean() - ce.mean():+.3f} ({np.std(ema - ce, ddof=1):.3f})" in lever
    # from the committed record alone: no run store
    shutil.rmtree(opts.runs_root)
    alone = st.status(study, opts)
    assert [(r["trials"]["finished"], r["finals"]["done"]) for r in alone["rows"]] == [(2, [0, 1]), (0, [0, 1])]
    assert alone["spent"]["wall_seconds"] > 0 and alone["expected_seconds_left"] == 0.0


def test_a_study_with_no_trials_retrains_the_paper_defaults_and_tunes_nothing(data_root: Path, tmp_path: Path) -> None:
    text = 'tasks = ["breastmnist"]\n[tune]\ntrials = 0\n[final]\nepochs = 1\nseeds = [3]\nrobustness = false\n[[arm]]\nmethod = "aucm"\n'
    study = load(_file(tmp_path / "studies", text=text))
    assert study.budget(study.arm("aucm")) == 0
    opts = _opts(tmp_path, data_root)
    report = st.run(study, opts)
    assert not study.journal.exists() or not optuna.study.get_all_study_names(open_storage(str(study.journal)))
    (row,) = report["rows"]
    assert row["state"] == "done" and row["trials"] == {"budget": 0, "finished": 0, "running": 0, "left": 0} and row["finals"]["done"] == [3]
    (entry,) = [e for e in leaderboard.read_board("breastmnist", opts.leaderboard_dir)["entries"] if not e.get("reference")]
    # the paper's defaults, read from the method's own parameter table, not from the study code
    method = METHODS.get("aucm")
    defaults = {**{name: p.default for name, p in method.PARAMS.items()}, **method.DEFAULTS}
    assert defaults and all(entry["config"][k] == v for k, v in defaults.items())
    assert entry["seeds"] == [3] and entry["config"]["epochs"] == 1 and entry["budget"]["hyperparameters"] == "defaults"
    # with no trials to time, an arm not yet run is expected to cost what the task's final runs cost
    path = study.path
    path.write_text(text + '[[arm]]\nmethod = "ce"\n')
    rows = {r["arm"]: r for r in st.status(load(path), opts)["rows"]}
    assert rows["ce"]["state"] == "left" and rows["ce"]["expected_seconds_left"] == pytest.approx(entry["runs"][0]["wall_seconds"])


def test_status_before_and_partway_gives_what_is_left_and_a_time_estimate(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path / "studies")
    study = load(path)
    opts = _opts(tmp_path, data_root)
    fresh = st.status(study, opts)
    assert [r["state"] for r in fresh["rows"]] == ["left", "left"] and fresh["expected_seconds_left"] is None
    st.run(study, dataclasses.replace(opts, arms=("ce",)))
    part = st.status(study, opts)
    rows = {r["arm"]: r for r in part["rows"]}
    assert rows["ce"]["state"] == "done" and rows["ce+ema"]["finals"]["left"] == [0, 1]
    (entry,) = [e for e in leaderboard.read_board("breastmnist", opts.leaderboard_dir)["entries"] if not e.get("reference")]
    walls = [r["wall_seconds"] for r in entry["runs"]]
    assert len(walls) == 2 and rows["ce+ema"]["expected_seconds_left"] == pytest.approx(2 * np.mean(walls))
    # an arm that trains K models per run (kfold) or two (refit) is expected to cost that many of its base's runs
    path.write_text(tiny() + '[[arm]]\nname = "ce+kfold3"\nmethod = "ce"\nbase = "ce"\nfixed = { val_strategy = "kfold", folds = 3 }\n'
                    '[[arm]]\nname = "ce+refit"\nmethod = "ce"\nbase = "ce"\nfixed = { val_strategy = "refit" }\n')
    grown = {r["arm"]: r for r in st.status(load(path), opts)["rows"]}
    assert grown["ce+kfold3"]["expected_seconds_left"] == pytest.approx(2 * 3 * np.mean(walls))
    assert grown["ce+refit"]["expected_seconds_left"] == pytest.approx(2 * 2 * np.mean(walls))
    assert grown["ce"]["state"] == "done"  # a grown file keeps what its arms already did
    path.write_text(tiny())
    code = main(["study", "status", str(path), "--leaderboard-dir", opts.leaderboard_dir])
    out = capsys.readouterr().out
    assert code == 0 and "ce+ema" in out and "2/2" in out and "expected left" in out


def test_a_study_killed_mid_trial_resumes_to_exactly_its_budget(data_root: Path, tmp_path: Path) -> None:
    path = _file(tmp_path / "studies", epochs=3)
    study = load(path)
    opts = _opts(tmp_path, data_root)
    argv = [sys.executable, "-m", "benchmark", "study", "run", str(path), "--runs", opts.runs_root, "--data-root", str(data_root),
            "--no-verify", "--device", "cpu", "--leaderboard-dir", opts.leaderboard_dir, "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trials = Path(opts.runs_root) / "studies" / study.optuna_name("breastmnist", study.arm("ce")) / "trials"
    end = time.time() + 600
    try:
        while not list(trials.glob(".staging-0001-*")):  # the second trial is training
            assert worker.poll() is None, worker.stdout.read()
            assert time.time() < end, "timed out"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate()
    assert main(argv[3:]) == 0
    s = optuna.load_study(study_name=study.optuna_name("breastmnist", study.arm("ce")), storage=open_storage(str(study.journal)))
    states = [t.state for t in s.trials]
    assert states.count(TrialState.COMPLETE) == 2 and states.count(TrialState.FAIL) == 1 and len(states) == 3
    retry = next(t for t in s.trials if t.system_attrs.get("failed_trial") is not None)
    assert retry.params == s.trials[retry.system_attrs["failed_trial"]].params
    board = leaderboard.read_board("breastmnist", opts.leaderboard_dir)
    assert sorted(len(e["seeds"]) for e in board["entries"] if not e.get("reference")) == [2, 2]
    assert st.status(study, opts)["expected_seconds_left"] == 0.0


class _Clock:
    """`time` as the study and tune modules see it, with `time()` moved forward by hand."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_a_study_with_a_timeout_stops_between_runs_and_resumes_to_exactly_its_budget(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path / "studies")
    study = load(path)
    opts = _opts(tmp_path, data_root, quiet=False, timeout=3600.0)
    clock = _Clock()
    monkeypatch.setattr(tune, "time", clock)
    monkeypatch.setattr(st, "time", clock)
    real_trial = tune.run_trial

    def trial_then_the_limit_passes(*args, **kwargs):
        frozen = real_trial(*args, **kwargs)
        clock.ahead = 7200.0  # the first trial "took" two hours
        return frozen

    monkeypatch.setattr(tune, "run_trial", trial_then_the_limit_passes)
    report = st.run(study, opts)
    assert report["stopped"] is True
    assert "time limit reached" in capsys.readouterr().out
    name = study.optuna_name("breastmnist", study.arm("ce"))
    s = optuna.load_study(study_name=name, storage=open_storage(str(study.journal)))
    assert [t.state for t in s.trials] == [TrialState.COMPLETE]  # the running trial finished; no new one started
    assert not [e for e in leaderboard.read_board("breastmnist", opts.leaderboard_dir)["entries"] if not e.get("reference")]
    rows = {r["arm"]: r for r in report["rows"]}
    assert rows["ce"]["trials"]["left"] == 1 and rows["ce+ema"]["finals"]["left"] == [0, 1]
    # resumed without a limit: exactly the budget, then every final seed
    monkeypatch.setattr(tune, "run_trial", real_trial)
    again = st.run(study, dataclasses.replace(opts, timeout=None, quiet=True))
    s = optuna.load_study(study_name=name, storage=open_storage(str(study.journal)))
    assert [t.state for t in s.trials] == [TrialState.COMPLETE] * 2
    assert again["stopped"] is False and again["expected_seconds_left"] == 0.0
    assert main(["study", "run", str(path), "--timeout", "0", "--no-report"]) == 2  # not a positive number
    for bad in (0, -1.0, float("nan"), True):  # the API's own check, which the CLI's parser does not reach
        with pytest.raises(BenchError, match="--timeout must be a positive number"):
            st.run(study, dataclasses.replace(opts, timeout=bad))
        with pytest.raises(BenchError, match="--timeout must be a positive number"):
            tune.tune(st.tune_spec(study, opts, "breastmnist", study.arm("ce"), {}, timeout=bad))


def test_the_seven_task_study_runs_end_to_end_on_synthetic_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for flag in TASKS.names():  # tiny sets that still hold both classes: each 3D task costs two runs and a robustness pass
        task = get_task(flag)
        write_synthetic(task, root, SIZES if task.dims == 2 else {"train": 4, "val": 2, "test": 2})
    # the first corruption of each task's list, at its 5 severities: the whole robustness pass of a 3D task
    # costs minutes on a CPU; its list in full is checked in tests/test_robustness.py
    full_list = rb.corruption_list
    monkeypatch.setattr(rb, "corruption_list", lambda task: dict(list(full_list(task).items())[:1]))
    study = load(REPO / "studies" / "medmnist7.toml")
    # one arm, one trial, one epoch, one seed: the file's own tasks and settings, end to end
    # fp32: the file's bf16 is emulated, and far too slow for 3D, on a CPU without native bf16 (CI's may be one)
    tiny = dataclasses.replace(study, path=tmp_path / "medmnist7.toml", arms=study.arms[:1], trials=1, epochs=1, final_epochs=1, seeds=(0,), pruner="none",
                               fixed={**study.fixed, "precision": "fp32"})
    opts = _opts(tmp_path, root)
    report = st.run(tiny, opts)
    assert {r["task"] for r in report["rows"]} == set(TASKS.names())
    assert all(r["state"] == "done" for r in report["rows"])
    for task in TASKS.names():
        entries = [e for e in leaderboard.read_board(task, opts.leaderboard_dir)["entries"] if not e.get("reference")]
        assert {e["runs"][0]["arm"] for e in entries} == {a.name for a in tiny.arms}
        # scored under shift (MedMNIST-C in 2D, MONAI's artifacts in 3D) while its weights were at hand
        first = next(iter(full_list(TASKS.get(task))))
        assert all(list(r["robustness"]["corruptions"]) == [first] and len(r["robustness"]["corruptions"][first]["auc"]) == 5 for e in entries for r in e["runs"])


def test_a_bf16_study_is_refused_on_a_cpu_that_only_emulates_bf16(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import benchmark.trainer as trainer

    path = _file(tmp_path / "studies", text=tiny() + '[fixed]\nprecision = "bf16"\n')
    argv = ["study", "run", str(path), "--runs", str(tmp_path / "runs"), "--data-root", str(data_root), "--no-verify", "--device", "cpu",
            "--leaderboard-dir", str(tmp_path / "boards"), "--no-report"]
    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "only emulates" in err and "--emulated-bf16" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "boards").exists() and not path.with_suffix(".journal").exists()
    # on a CPU with native bf16, or a study in fp32, nothing is refused
    study = load(path)
    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: ["amx_bf16"])
    st.check_precision(study, _opts(tmp_path, data_root))
    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: [])
    st.check_precision(dataclasses.replace(study, fixed={"precision": "fp32"}), _opts(tmp_path, data_root))
    st.check_precision(study, _opts(tmp_path, data_root, emulated_bf16=True))
    with pytest.raises(BenchError, match="only emulates"):
        st.check_precision(study, _opts(tmp_path, data_root))


# --- storage and progress --------------------------------------------------------------------


def test_a_journal_copies_to_sqlite_with_optunas_copy_study(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path / "studies")
    study = load(path)
    st.run(study, _opts(tmp_path, data_root, arms=("ce",)))
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    assert main(["study", "copy", str(path), "--to", target]) == 0
    name = study.optuna_name("breastmnist", study.arm("ce"))
    a = optuna.load_study(study_name=name, storage=open_storage(str(study.journal)))
    b = optuna.load_study(study_name=name, storage=target)
    assert [(t.state, t.value, t.params) for t in a.trials] == [(t.state, t.value, t.params) for t in b.trials]
    assert b.user_attrs["definition"] == a.user_attrs["definition"]
    with pytest.raises(BenchError, match="already holds the study"):
        copy_studies(str(study.journal), target)


def test_a_storage_that_is_no_journal_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "notes.log"
    log.write_text("this is a log, not a journal\n")
    with pytest.raises(BenchError, match="not an Optuna journal"):
        tune.check_storage(str(log), create=True)
    assert log.read_text() == "this is a log, not a journal\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_trial_progress_on_a_terminal_and_silence_elsewhere() -> None:
    term, pipe = _Terminal(), io.StringIO()
    for stream in (term, pipe):
        progress = tune.TrialProgress("[s] trial 3", 4, stream=stream)
        progress({"epoch": 1, "val/auc": 0.61}, None)
        progress({"epoch": 2, "val/auc": 0.55}, None)
        progress.close()
    text = term.getvalue()
    assert "[s] trial 3: epoch 1/4, val AUC 0.6100, best 0.6100" in text
    assert "epoch 2/4, val AUC 0.5500, best 0.6100" in text and text.endswith("\r")
    assert pipe.getvalue() == ""


def test_tune_quiet_prints_no_trial_lines(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tune", "--task", "breastmnist", "--method", "ce", "--trials", "2", "--epochs", "1", "--pruner", "none",
            "--data-root", str(data_root), "--no-verify", "--runs", str(tmp_path / "runs"), "--device", "cpu"]
    assert main([*argv, "--quiet"]) == 0
    quiet = capsys.readouterr().out
    assert " complete: val AUC " not in quiet and "2 trials finished" in quiet
    assert main([*argv, "--runs", str(tmp_path / "runs2")]) == 0
    loud = capsys.readouterr().out
    assert loud.count(" complete: val AUC ") == 2
