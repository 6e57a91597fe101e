"""`bench tune` and `bench compare`: search spaces from the declarations, budgets, resumption,
concurrent workers (SQLite, and PostgreSQL when .ci/run started one), an untouched test split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from benchmark import metrics, runner, tune
from benchmark.cli import main
from benchmark.compare import CompareSpec, compare, final_run_dirs
from benchmark.errors import BenchError
from benchmark.hparams import Bool, Choice, Float, Int
from benchmark.methods import METHODS
from benchmark.methods.ce import CrossEntropy
from benchmark.store import load_predictions, read_json, read_jsonl
from benchmark.synthetic import synthetic_arrays
from benchmark.tasks import get_task
from benchmark.trainer import StopTraining

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 32, "val": 16, "test": 16}
POSTGRES_URL = os.environ.get("BENCH_TEST_POSTGRES_URL")


def _write(root: Path, with_test: bool) -> Path:
    arrays = synthetic_arrays(get_task("breastmnist"), SIZES, seed=1)
    if not with_test:
        # the test split is absent: any attempt to load it fails ("has no array 'test_images'")
        arrays = {k: v for k, v in arrays.items() if not k.startswith("test_")}
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / "breastmnist.npz", **arrays)
    return root


@pytest.fixture(scope="module")
def tune_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny breastmnist file WITHOUT test arrays: tuning must work without ever loading them."""
    return _write(tmp_path_factory.mktemp("tune-data"), with_test=False)


@pytest.fixture(scope="module")
def full_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny breastmnist file with all six arrays."""
    return _write(tmp_path_factory.mktemp("full-data"), with_test=True)


@pytest.fixture
def load_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The `splits` of every load_arrays call the runner makes."""
    calls: list[tuple[str, ...]] = []
    real = runner.load_arrays

    def spy(task, data_root=None, **kwargs):
        calls.append(tuple(kwargs.get("splits", ("train", "val", "test"))))
        return real(task, data_root, **kwargs)

    monkeypatch.setattr(runner, "load_arrays", spy)
    return calls


def _spec(root: Path, runs: Path, **kw) -> tune.TuneSpec:
    base = dict(task="breastmnist", method="ce", trials=2, overrides={"epochs": 1}, pruner="none", data_root=str(root), runs_root=str(runs), device="cpu", verify_md5=False)
    return tune.TuneSpec(**{**base, **kw})


def _bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmark", *args]


def _tune_args(root: Path, runs: Path, trials: int, epochs: int, *extra: str) -> list[str]:
    return _bench_cmd(
        "tune", "--task", "breastmnist", "--method", "ce", "--trials", str(trials), "--epochs", str(epochs), "--pruner", "none",
        "--data-root", str(root), "--no-verify", "--runs", str(runs), "--device", "cpu", *extra,
    )


def _env() -> dict[str, str]:
    # one torch thread per worker: several workers share the CI machine's cores
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# --- the search space is the declarations' own ------------------------------------------------


def _expected_distribution(param):
    if isinstance(param, Float) and param.grid:  # a paper's grid: one of its values
        return CategoricalDistribution(list(param.grid))
    if isinstance(param, Float):
        return FloatDistribution(param.search[0], param.search[1], log=param.log)
    if isinstance(param, Int):
        return IntDistribution(param.search[0], param.search[1], log=param.log)
    if isinstance(param, Bool):
        return CategoricalDistribution([False, True])
    assert isinstance(param, Choice)
    return CategoricalDistribution(list(param.choices) if param.search is True else list(param.search))


@pytest.mark.parametrize("name", METHODS.names())
def test_search_space_is_the_methods_declarations_plus_named_shared_ones(name: str) -> None:
    method = METHODS.get(name)
    space = tune.search_space(method, ("batch_size",))
    # alm's focal alpha and gamma act only with base=focal, not with its default ce (tests/test_search_space.py)
    own = {k: p for k, p in method.PARAMS.items() if p.searchable() and not (name == "alm" and k in ("alpha", "gamma"))}
    assert set(space) == set(own) | {"batch_size"}
    from benchmark.config import SHARED_PARAMS

    assert space["batch_size"] is SHARED_PARAMS["batch_size"] and all(space[k] is p for k, p in own.items())
    # what Optuna records for a trial is exactly each declaration's range
    study = optuna.create_study(direction="maximize", sampler=tune.make_sampler(0, 8))
    trial = study.ask()
    values = {k: p.suggest(trial, k) for k, p in space.items()}
    frozen = study.tell(trial, 0.5)
    for key, param in space.items():
        assert frozen.distributions[key] == _expected_distribution(param), key
        assert param.validate(values[key]) == values[key]
    # a value the user fixes with --set is not searched
    for key, param in own.items():
        assert key not in tune.search_space(method, ("batch_size",), {key: param.default})


@pytest.mark.parametrize(
    ("shared", "fixed", "message"),
    [
        (("lrr",), {}, "unknown hyperparameter 'lrr'"),
        (("epochs",), {}, "'epochs' has no search range"),
        (("batch_size",), {"batch_size": "64"}, "both searched (--space) and fixed (--set)"),
    ],
)
def test_bad_search_space_is_a_bench_error(shared: tuple[str, ...], fixed: dict, message: str) -> None:
    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tune.search_space(METHODS.get("ce"), shared, fixed)


def test_a_method_with_nothing_to_search_needs_space() -> None:
    with pytest.raises(BenchError, match="nothing to search"):
        tune.search_space(METHODS.get("ce"), (), {"lr": "0.001", "weight_decay": "0"})
    assert set(tune.search_space(METHODS.get("ce"), ("batch_size",), {"lr": "0.001", "weight_decay": "0"})) == {"batch_size"}


def test_study_name_from_task_method_and_budget(tmp_path: Path) -> None:
    spec = _spec(tmp_path, tmp_path, trials=8, overrides={"epochs": 10})
    name = tune.study_name(tune.definition(spec))
    assert name.startswith("breastmnist.ce.8trials.10epochs.")
    assert name == tune.study_name(tune.definition(_spec(tmp_path, tmp_path, trials=8, overrides={"epochs": "10"})))
    variants = [
        dict(trials=9, overrides={"epochs": 10}),
        dict(trials=8, overrides={"epochs": 11}),
        dict(trials=8, overrides={"epochs": 10}, space=("batch_size",)),
        dict(trials=8, overrides={"epochs": 10}, pruner="median"),
        dict(trials=8, overrides={"epochs": 10}, seed=1),
        dict(trials=8, overrides={"epochs": 10, "as_rgb": "true"}),
    ]
    names = {tune.study_name(tune.definition(_spec(tmp_path, tmp_path, **v))) for v in variants}
    assert len(names) == len(variants) and name not in names


# --- sampling: a trial's draw depends on (seed, number, history) only -------------------------


def _draw(study: optuna.Study) -> dict:
    trial = study.ask()
    params = {"lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True), "bs": trial.suggest_categorical("bs", [32, 64, 128])}
    study.tell(trial, params["lr"])
    return params


def test_sampler_draws_are_reproducible_and_never_repeat_after_a_restart() -> None:
    straight = optuna.create_study(direction="maximize", sampler=tune.make_sampler(7, 8))
    reference = [_draw(straight) for _ in range(4)]
    restarted = optuna.create_study(direction="maximize", sampler=tune.make_sampler(7, 8))
    first = [_draw(restarted) for _ in range(2)]
    restarted.sampler = tune.make_sampler(7, 8)  # a new process resumes the study
    assert first + [_draw(restarted) for _ in range(2)] == reference
    assert len({json.dumps(p, sort_keys=True) for p in reference}) == 4
    # what the wrapper prevents: a plain seeded TPE restarted mid-study repeats its earlier random draws
    plain = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=7, n_startup_trials=10))
    early = [_draw(plain) for _ in range(2)]
    plain.sampler = optuna.samplers.TPESampler(seed=7, n_startup_trials=10)
    assert [_draw(plain) for _ in range(2)] == early


# --- pruning reports --------------------------------------------------------------------------


class FakeTrial:
    def __init__(self, prune_at_step: int | None) -> None:
        self.reports: list[tuple[float, int]] = []
        self.prune_at_step = prune_at_step

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self.prune_at_step is not None and len(self.reports) >= self.prune_at_step


def test_reporter_reports_the_running_best_and_prunes() -> None:
    fake = FakeTrial(prune_at_step=None)
    reporter = tune.PruningReporter(fake)  # type: ignore[arg-type]
    for epoch, auc in enumerate([0.6, 0.8, 0.7, float("nan")], start=1):
        reporter({"epoch": epoch, "val/auc": auc}, None)
    # a second fit (the next k-fold fold) restarts the running best; steps keep counting
    for epoch, auc in enumerate([0.5, 0.55], start=1):
        reporter({"epoch": epoch, "val/auc": auc}, None)
    assert fake.reports == [(0.6, 1), (0.8, 2), (0.8, 3), (0.5, 5), (0.55, 6)]
    pruned = FakeTrial(prune_at_step=2)
    reporter = tune.PruningReporter(pruned)  # type: ignore[arg-type]
    reporter({"epoch": 1, "val/auc": 0.6}, None)
    with pytest.raises(StopTraining):
        reporter({"epoch": 2, "val/auc": 0.5}, None)
    assert reporter.pruned_at == 2


# --- studies on the synthetic task -----------------------------------------------------------


def _load(spec: tune.TuneSpec, name: str | None = None) -> optuna.Study:
    study_name = name or tune.study_name(tune.definition(spec))
    return optuna.load_study(study_name=study_name, storage=tune.storage_url(spec))


def test_tune_finishes_the_budget_without_loading_the_test_split(tune_root: Path, tmp_path: Path, load_calls: list, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tune_root, tmp_path / "runs", trials=2)
    summary = tune.tune(spec)
    out = capsys.readouterr().out
    assert load_calls and all("test" not in splits for splits in load_calls)
    assert summary["finished"] == 2 and summary["counts"]["complete"] == 2 and summary["counts"]["fail"] == 0
    study = _load(spec)
    values = []
    for trial in study.trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        result = read_json(run_dir / "result.json")
        assert result["test"] is None and not (run_dir / "predictions_test.npz").exists()
        assert trial.value == pytest.approx(result["val"]["auc"])
        assert result["config"]["lr"] == trial.params["lr"] and result["config"]["epochs"] == 1
        assert len(read_jsonl(run_dir / "metrics.jsonl")) == 1
        values.append(trial.value)
        assert f"trial {trial.number} complete: val AUC {trial.value:.4f}" in out
    # trial 0 is the method's defaults
    first = tune.definition(spec)["first_trial"]
    assert first and study.trials[0].params == first
    assert all(first[k] == METHODS.get("ce").PARAMS[k].default for k in first if k in METHODS.get("ce").PARAMS)
    best = max(range(2), key=lambda i: (values[i], -i))
    assert summary["best"]["trial"] == best and summary["best"]["params"] == study.best_params
    assert f"best: trial {best}, val AUC {values[best]:.4f}" in out
    on_disk = read_json(tmp_path / "runs" / "studies" / study.study_name / "summary.json")
    assert on_disk["best"] == json.loads(json.dumps(summary["best"]))
    # rerunning the same command resumes a finished study: nothing is trained again
    calls = len(load_calls)
    again = tune.tune(spec)
    assert len(load_calls) == calls and again["finished"] == 2 and len(_load(spec).trials) == 2


def test_timeout_stops_starting_trials(tune_root: Path, tmp_path: Path, load_calls: list, capsys: pytest.CaptureFixture[str]) -> None:
    summary = tune.tune(_spec(tune_root, tmp_path / "runs", trials=2, timeout=1e-9))
    assert summary["finished"] == 0 and summary["trials"] == [] and load_calls == []
    assert summary["counts"]["waiting"] == 1  # trial 0 (the defaults) stays queued for the next worker
    assert "no trial completed" in capsys.readouterr().out


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruned_trials_stop_early_and_count_toward_the_budget(tune_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(tune.PRUNERS._items, "always", lambda epochs: AlwaysPrune())
    spec = _spec(tune_root, tmp_path / "runs", trials=2, overrides={"epochs": 3}, pruner="always")
    summary = tune.tune(spec)
    out = capsys.readouterr().out
    assert summary["counts"]["pruned"] == 2 and summary["finished"] == 2 and summary["best"] is None
    for trial in _load(spec).trials:
        assert trial.state == TrialState.PRUNED and trial.intermediate_values
        result = read_json(Path(trial.user_attrs["run_dir"]) / "result.json")
        assert result["epochs_run"] == 1 and result["stopped_early"] is True
    assert out.count("pruned at epoch 1") == 2 and "no trial completed" in out


def _wait_for(predicate, timeout: float, process: subprocess.Popen | None = None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"worker exited early with {process.returncode}: {process.stdout.read() if process.stdout else ''}")
        time.sleep(0.5)
    raise AssertionError("timed out waiting")


def test_killed_worker_resumes_without_losing_completed_trials(tune_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    spec = _spec(tune_root, runs, trials=2, overrides={"epochs": 2})
    folder = runs / "studies" / tune.study_name(tune.definition(spec)) / "trials"
    argv = _tune_args(tune_root, runs, 2, 2)
    worker = subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def mid_second_trial() -> bool:
        if not (folder.parent / "study.json").exists():  # the worker has made the study
            return False
        try:
            trials = _load(spec).trials
        except Exception:  # the study is not created yet
            return False
        running = [t for t in trials if t.state == TrialState.RUNNING and t.number >= 1]
        # killed while the trial trains: its staging folder exists
        return any(t.state == TrialState.COMPLETE for t in trials) and bool(running) and any(folder.glob(f".staging-{running[0].number:04d}-*"))

    try:
        _wait_for(mid_second_trial, 600, worker)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate()
    before = _load(spec).trials
    killed = next(t for t in before if t.state == TrialState.RUNNING)
    kept = {t.number: (t.value, t.params) for t in before if t.state == TrialState.COMPLETE}
    assert kept and any(folder.glob(f".staging-{killed.number:04d}-*"))

    assert main(argv[3:]) == 0
    out = capsys.readouterr().out
    after = _load(spec).trials
    assert f"trial {killed.number} failed: its worker died; queued again" in out
    assert {t.number: (t.value, t.params) for t in after if t.number in kept} == kept
    assert [t.state for t in after].count(TrialState.COMPLETE) == 2
    assert after[killed.number].state == TrialState.FAIL
    retry = next(t for t in after if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert Path(retry.user_attrs["run_dir"]).name == f"{killed.number:04d}"
    assert len(after) == 3 and not list(folder.glob(".staging-*"))


def _check_exact_budget(study: optuna.Study, n: int) -> None:
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n, [t.state for t in trials]
    assert sorted(t.number for t in trials) == list(range(n))
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == n  # no duplicated draw
    run_dirs = {t.user_attrs["run_dir"] for t in trials}
    assert len(run_dirs) == n
    for trial in trials:
        assert read_json(Path(trial.user_attrs["run_dir"]) / "result.json")["val"]["auc"] == pytest.approx(trial.value)


def test_two_workers_on_one_sqlite_file_finish_exactly_n_trials(tune_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = subprocess.run(_tune_args(tune_root, runs, 4, 1, "--jobs", "2"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    spec = _spec(tune_root, runs, trials=4)
    _check_exact_budget(_load(spec), 4)
    assert done.stdout.count(" complete: val AUC ") == 4 and "4 trials finished (4 complete, 0 pruned), 0 failed" in done.stdout
    pids = {t.system_attrs[tune.WORKER_ATTR]["pid"] for t in _load(spec).trials}
    assert 1 <= len(pids) <= 2


@pytest.mark.skipif(
    not POSTGRES_URL,
    reason="no PostgreSQL server: BENCH_TEST_POSTGRES_URL is unset (.ci/run starts one on 127.0.0.1 and sets it)"
    + (f"; {os.environ['BENCH_TEST_POSTGRES_SKIP']}" if os.environ.get("BENCH_TEST_POSTGRES_SKIP") else ""),
)
def test_two_workers_on_postgresql_finish_exactly_n_trials(tune_root: Path, tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    name = f"pg-test-{uuid.uuid4().hex[:8]}"
    argv = _tune_args(tune_root, tmp_path / "runs", 4, 1, "--storage", POSTGRES_URL, "--study", name)
    workers = [subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    _check_exact_budget(optuna.load_study(study_name=name, storage=tune.database_url(POSTGRES_URL)), 4)
    assert sum(o.count(" complete: val AUC ") for o in outputs) == 4


# --- compare ----------------------------------------------------------------------------------


class Twin(CrossEntropy):
    """A second method for the comparison test: CE under another name (registered by the test only)."""

    name = "ce_twin"


def test_compare_tunes_with_one_budget_retrains_over_seeds_and_tests_once(full_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load_calls: list, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(METHODS._items, "ce_twin", Twin)
    runs = tmp_path / "runs"
    spec = CompareSpec(task="breastmnist", methods=("ce", "ce_twin"), trials=2, seeds=2, overrides={"epochs": 1}, pruner="none", data_root=str(full_root), runs_root=str(runs), device="cpu", verify_md5=False)
    summary, dirs = compare(spec)
    out = capsys.readouterr().out
    # the test split is read once per final run and never while tuning
    assert sum("test" in splits for splits in load_calls) == 4
    assert all(splits == ("test",) for splits in load_calls if "test" in splits)
    assert summary["complete"] and summary["seeds"] == [1, 2] and dirs == final_run_dirs(summary) and len(dirs) == 4
    on_disk = read_json(runs / "compare" / summary["name"] / "summary.json")
    assert on_disk == json.loads(json.dumps(summary))
    for method in ("ce", "ce_twin"):
        r = summary["results"][method]
        study = optuna.load_study(study_name=r["study"], storage=f"sqlite:///{(runs / 'optuna.db').resolve()}")
        assert study.user_attrs["definition"]["trials"] == 2 and study.user_attrs["definition"]["pruner"] == "none"
        assert r["best_params"] == study.best_params and r["best_trial"] == study.best_trial.number
        tests = []
        for run in r["runs"]:
            result = read_json(Path(run["run_dir"]) / "result.json")
            assert result["method"] == method and result["seed"] == run["seed"]
            assert all(result["config"][k] == v for k, v in r["best_params"].items())
            labels, logits = load_predictions(Path(run["run_dir"]) / "predictions_test.npz")
            recomputed = metrics.evaluate(labels, logits)
            assert run["test"]["auc"] == pytest.approx(recomputed["auc"]) and run["test"]["acc"] == pytest.approx(recomputed["acc"])
            assert run["val"] == result["val"]
            tests.append(run["test"]["auc"])
        assert set(recomputed) <= set(r["test"]) and r["test"]["auc"]["n"] == 2  # with the val-threshold accuracies besides
        assert r["test"]["auc"]["mean"] == pytest.approx(np.mean(tests)) and r["test"]["auc"]["sd"] == pytest.approx(np.std(tests, ddof=1))
        assert r["cost"]["tuning"]["runs"] == 2 and r["cost"]["final"]["runs"] == 2
        assert r["cost"]["cpu_seconds"] > 0 and r["cost"]["gpu_seconds"] == 0
        assert f"  {method:<10} test AUC {r['test']['auc']['mean']:.4f} +/- {r['test']['auc']['sd']:.4f}" in out
    # resumes: nothing is tuned or trained again, the summary is the same
    calls = len(load_calls)
    again, _ = compare(spec)
    assert len(load_calls) == calls and again == summary


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tune", "--method", "ce", "--space", "epochs"], "'epochs' has no search range"),
        (["tune", "--method", "ce", "--space", "nope"], "unknown hyperparameter 'nope'"),
        (["tune", "--method", "ce", "--pruner", "bogus"], "unknown pruner 'bogus'"),
        (["tune", "--method", "svm"], "unknown method 'svm'"),
        (["tune", "--method", "ce", "--trials", "0"], "argument --trials: must be from 1 to"),
        (["tune", "--method", "ce", "--jobs", "0"], "argument --jobs: must be from 1 to"),
        (["tune", "--method", "ce", "--storage", "not a url"], "is not a database URL"),
        (["compare", "--methods", "ce,ce"], "names a method twice"),
        (["compare", "--methods", "ce", "--seeds", "0"], "argument --seeds: must be from 1 to"),
        (["compare", "--methods", "ce", "--set", "margin=1"], "no method in ce has such a setting"),
    ],
)
def test_cli_bad_input(argv: list[str], message: str, tune_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if "--trials" not in argv:
        argv = [*argv, "--trials", "2"]
    code = main([*argv, "--task", "breastmnist", "--data-root", str(tune_root), "--no-verify", "--runs", str(tmp_path / "runs"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_first_trial_is_the_paper_defaults_and_skips_a_default_outside_its_range(tune_root: Path, tmp_path: Path) -> None:
    aucm = METHODS.get("aucm")
    first = tune.definition(_spec(tune_root, tmp_path / "runs", method="aucm"))["first_trial"]
    searched = {k for k, p in aucm.PARAMS.items() if p.searchable()}
    assert set(first) == searched and first["lr"] == 0.1 and first["momentum"] == 0.0
    assert all(first[k] == aucm.PARAMS[k].default for k in first)
    # a fixed parameter is not searched, so not in the first trial
    fixed = tune.definition(_spec(tune_root, tmp_path / "runs", method="aucm", overrides={"epochs": 1, "lr": 0.5}))["first_trial"]
    assert "lr" not in fixed and fixed["momentum"] == 0.0
    # a default outside its own search range is left to the sampler
    assert Float(0.5, search=(0.0, 0.1)).in_space(0.5) is False and Float(0.05, search=(0.0, 0.1)).in_space(0.05)
    assert Choice("b", choices=("a", "b"), search=("a",)).in_space("b") is False and Bool(False, search=True).in_space(False)
