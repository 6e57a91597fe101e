"""Hyperparameter tuning with Optuna, on validation data only: `bench tune`.

A study searches the method's own hyperparameter declarations (`Method.PARAMS`, each
drawn by its `suggest(trial, name)`) plus the shared ones the user opts into with
`--space`; its objective is the selected epoch's validation AUC (`result["val"]["auc"]`,
the out-of-fold AUC under k-fold validation). Every trial is a normal run directory made
by `runner.run(..., evaluate_test=False)`, so the test split is never loaded while tuning.

Budget and resumption. The budget N counts finished trials, completed or pruned (a pruned
trial is a search decision that cost compute, as in Optuna's MaxTrialsCallback); failed
trials do not count. A worker claims a trial only while holding a storage-wide lock (a file
lock beside an SQLite file or a journal, an advisory lock on PostgreSQL/MySQL) and only while fewer than
N trials are finished, running or queued, so any number of workers on any number of
machines finish exactly N between them. A trial whose process died is marked failed and
queued again with the same parameters: at once when the dead worker ran on this machine
(its process id is gone), else when its heartbeat is older than the grace period.

Sampling. TPE, rebuilt before every trial with a seed derived from (--seed, trial number):
a trial's draw depends only on the study's history and its own number, so one worker
reproduces a study exactly, and resumed or parallel workers never repeat each other's draws.

Modules: `storage` (kinds of storage, checks, the shared lock), `workers` (liveness and
heartbeats), `sampling` (pruners, sampler), `tune_results` (summaries); this one holds the
study's definition, one trial, and the worker loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import runner
from .config import param_table, resolve
from .errors import BenchError, one_line
from .hparams import MAX_SEED, Param
from .methods import METHODS, Method
from .sampling import PRUNERS, make_sampler
from .storage import check_storage, claim_lock, database_url, open_storage, public_url, retry_callback
from .store import check_folder_target, write_json
from .tasks import get_task
from .trainer import StopTraining
from .tune_results import best_trial, summarize, summary_lines
from .workers import WORKER_ATTR, Heartbeat, beat, fail_abandoned_trials, worker_identity

OBJECTIVE = "val/auc"
MAX_CONSECUTIVE_FAILURES = 3
POLL_SECONDS = 5  # how often a worker with nothing to claim looks again
BUDGETED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
MAX_TRIALS = 100_000
MAX_JOBS = 256

# --- what a study is ------------------------------------------------------------------------


@dataclass
class TuneSpec:
    """One `bench tune`: a study of `method` on `task` with a budget of `trials` finished trials."""

    task: str
    method: str
    trials: int
    space: tuple[str, ...] = ()  # shared hyperparameters the user opts into searching
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed (--set); never searched
    pruner: str = "median"
    seed: int = 0
    storage: str | None = None  # Optuna storage URL; default sqlite:///<runs>/optuna.db
    study: str | None = None  # study name; default from the definition
    timeout: float | None = None  # seconds; no new trial starts after it
    jobs: int = 1
    quiet: bool = False  # no progress inside trials and no line per trial; errors and the summary still print
    data_root: str | None = None
    runs_root: str | None = None
    device: str = "auto"
    verify_md5: bool = True


def search_space(method: type[Method], shared: tuple[str, ...] | list[str] = (), fixed: dict[str, Any] | None = None) -> dict[str, Param]:
    """Return {name: declaration} searched by a study of `method`.

    The method's own searchable declarations that act in the fixed configuration (alm's focal
    alpha and gamma only with base=focal), plus the shared names in `shared`, minus what the
    user fixed. A shared name that is unknown, has no search range, is also fixed or does not
    act in the fixed configuration is a BenchError; the ranges are the declarations' own.
    """
    table = param_table(method)
    fixed = fixed or {}
    # task cards set only protocol defaults (epochs, batch_size), never a setting a parameter needs
    settings = resolve(None, method, fixed)
    space: dict[str, Param] = {name: p for name, p in method.PARAMS.items() if p.searchable() and name not in fixed and p.acts(settings)}
    for name in shared:
        if name not in table:
            raise BenchError(f"--space: unknown hyperparameter {name!r} for method {method.name!r}; valid: {', '.join(sorted(table))}")
        if not table[name].searchable():
            searchable = sorted(n for n, p in table.items() if p.searchable())
            raise BenchError(f"--space: {name!r} has no search range; searchable: {', '.join(searchable)}")
        if name in fixed:
            raise BenchError(f"{name!r} is both searched (--space) and fixed (--set); choose one")
        if not table[name].acts(settings):
            needed = table[name].needed_setting()
            raise BenchError(f"--space: {name!r} acts only with {needed}; fix that with --set {needed}")
        space[name] = table[name]
    if not space:
        raise BenchError(
            f"nothing to search: method {method.name!r} has no searchable hyperparameter left; "
            "name shared ones with --space (see `bench methods`)"
        )
    return dict(sorted(space.items()))


def definition(spec: TuneSpec) -> dict[str, Any]:
    """Return what defines the study's results (JSON-able); its hash names the study."""
    task = get_task(spec.task)
    method = METHODS.get(spec.method)
    if isinstance(spec.trials, bool) or not isinstance(spec.trials, int) or not 1 <= spec.trials <= MAX_TRIALS:
        raise BenchError(f"--trials must be an integer from 1 to {MAX_TRIALS}, got {spec.trials!r}")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or not 0 <= spec.seed <= MAX_SEED:
        raise BenchError(f"--seed must be an integer from 0 to {MAX_SEED}, got {spec.seed!r}")
    PRUNERS.get(spec.pruner)
    config = resolve(task, method, spec.overrides)
    space = search_space(method, spec.space, spec.overrides)
    return {
        "task": task.flag,
        "method": method.name,
        "trials": spec.trials,
        "epochs": config["epochs"],
        "seed": spec.seed,
        "pruner": spec.pruner,
        "objective": OBJECTIVE,
        "space": {name: param.describe_space() for name, param in space.items()},
        "fixed": {name: config[name] for name in sorted(spec.overrides)},
        # trial 0 is the method's own defaults (its paper's settings), so a small budget
        # never leaves a method worse off than untuned; a default outside its range is drawn instead
        "first_trial": {name: config[name] for name, param in space.items() if param.in_space(config[name])},
    }


def study_name(definition_: dict[str, Any]) -> str:
    """Return `<task>.<method>.<N>trials.<E>epochs.<hash>`: readable, and distinct for distinct studies."""
    digest = hashlib.sha256(json.dumps(definition_, sort_keys=True, default=str).encode()).hexdigest()[:8]
    d = definition_
    return f"{d['task']}.{d['method']}.{d['trials']}trials.{d['epochs']}epochs.{digest}"


def runs_root(spec: TuneSpec) -> Path:
    """Return the root of the run store."""
    return Path(spec.runs_root) if spec.runs_root else runner.DEFAULT_RUNS


def storage_url(spec: TuneSpec) -> str:
    """Return the Optuna storage URL: --storage, else an SQLite file `optuna.db` under the runs root (checked, see check_storage)."""
    if not spec.storage:
        url = f"sqlite:///{(runs_root(spec) / 'optuna.db').resolve()}"
        check_storage(url, create=True, make_parents=True)
        return url
    url = database_url(spec.storage)
    check_storage(url, create=True)
    return url


def open_study(spec: TuneSpec) -> tuple[optuna.Study, optuna.storages.BaseStorage, dict[str, Any]]:
    """Create or load the study of `spec`; return (study, storage, definition).

    A study of the same name with another definition (possible with --study) is refused.
    """
    definition_ = definition(spec)
    name = spec.study or study_name(definition_)
    url = storage_url(spec)
    if url.startswith("sqlite:///") and not spec.storage:
        runs_root(spec).mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with claim_lock(url):
        storage = open_storage(url)
        sampler, pruner = make_sampler(spec.seed, spec.trials), PRUNERS.get(spec.pruner)(definition_["epochs"])
        try:
            # an existing study is loaded, not re-created: create_study(load_if_exists=True) appends a
            # create record to a journal on every open, which a committed journal would carry for good
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True)
        stored = study.user_attrs.get("definition")
        if stored is None:
            study.set_user_attr("definition", definition_)
            if definition_["first_trial"] and not study.trials:
                study.enqueue_trial(definition_["first_trial"], skip_if_exists=True)
        elif json.loads(json.dumps(stored)) != json.loads(json.dumps(definition_, default=str)):
            raise BenchError(
                f"study {name!r} in {public_url(url)} was made by another definition "
                f"({json.dumps(stored, sort_keys=True)}); choose another --study name"
            )
    return study, storage, definition_


def study_dir(spec: TuneSpec, name: str) -> Path:
    """Return the folder of a study's files and trial run directories: <runs>/studies/<name>."""
    return runs_root(spec) / "studies" / name


# --- one trial -----------------------------------------------------------------------------


class PruningReporter:
    """A trainer callback: reports the best validation AUC so far to the trial each epoch; prunes.

    The running best, not the epoch's value, because the objective is the selected (best)
    epoch's AUC and Optuna's percentile pruners compare a trial's best with others' values at
    the same step. A new `fit` (the next k-fold fold) restarts the running best; steps keep counting.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.step = 0
        self.best = -math.inf
        self.last_epoch = 0
        self.pruned_at: int | None = None
        self.abandoned = False

    def __call__(self, record: dict[str, Any], _model: Any) -> None:
        epoch = int(record["epoch"])
        if epoch <= self.last_epoch:
            self.best = -math.inf
        self.last_epoch = epoch
        self.step += 1
        value = record.get(OBJECTIVE)
        if value is None or not math.isfinite(value):
            return
        self.best = max(self.best, float(value))
        try:
            self.trial.report(self.best, self.step)
        except optuna.exceptions.UpdateFinishedTrialError:
            # another worker gave this trial up as stale and queued it again: stop duplicating it
            self.abandoned = True
            raise StopTraining("trial given up by another worker") from None
        if self.trial.should_prune():
            self.pruned_at = epoch
            raise StopTraining(f"pruned at epoch {epoch}")


class TrialProgress:
    """A trainer callback: one line on a terminal, rewritten each epoch (trial, epoch, val AUC, best so far, elapsed).

    Off a terminal it writes nothing: the worker prints one line per finished trial instead.
    """

    def __init__(self, label: str, epochs: int, stream: Any = None) -> None:
        import sys

        self.label, self.epochs = label, epochs
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self.best = -math.inf
        self.width = 0
        self.active = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, record: dict[str, Any], _model: Any) -> None:
        if not self.active:
            return
        value = record.get(OBJECTIVE)
        if value is not None and math.isfinite(value):
            self.best = max(self.best, float(value))
        shown = "-" if value is None else f"{value:.4f}"
        best = "-" if self.best == -math.inf else f"{self.best:.4f}"
        line = f"{self.label}: epoch {int(record['epoch'])}/{self.epochs}, val AUC {shown}, best {best}, {time.monotonic() - self.started:.0f} s"
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def close(self) -> None:
        """Erase the line, so the trial's summary line takes its place."""
        if self.active and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def trial_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """Return the one line printed for a finished trial: number, state, value, best so far, time, params."""
    best = best_trial(study)
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}.get(trial.state, trial.state.name.lower())
    if trial.state == TrialState.PRUNED and trial.user_attrs.get("pruned_at_epoch"):
        state += f" at epoch {trial.user_attrs['pruned_at_epoch']}"
    best_text = "-" if best is None else f"{best.value:.4f} (trial {best.number})"
    seconds = trial.user_attrs.get("wall_seconds")
    return (
        f"[{study.study_name}] trial {trial.number} {state}: val AUC {value}, best {best_text}, "
        f"{'-' if seconds is None else f'{seconds:.1f} s'}, {_format_params(trial.params)}"
    )


def run_trial(
    spec: TuneSpec, study: optuna.Study, trial: optuna.Trial, space: dict[str, Param], run_dir: Path, progress: TrialProgress | None = None
) -> FrozenTrial:
    """Train the trial's configuration as a run in `run_dir`, without the test split; tell Optuna; return the finished trial."""
    params = {name: param.suggest(trial, name) for name, param in space.items()}
    run_spec = runner.RunSpec(
        task=spec.task,
        method=spec.method,
        seed=spec.seed,
        overrides={**spec.overrides, **params},
        data_root=spec.data_root,
        out=str(run_dir),
        device=spec.device,
        verify_md5=spec.verify_md5,
        evaluate_test=False,
    )
    reporter = PruningReporter(trial)
    try:
        result, run_dir = runner.run(run_spec, callbacks=[reporter] if progress is None else [reporter, progress])
    except KeyboardInterrupt:
        # interrupted, not the configuration's fault: queue it again with the same parameters
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # else already failed and queued
            retry_callback()(study, study.tell(trial, state=TrialState.FAIL))
        raise
    except Exception as exc:
        return finish(study, trial, {"error": f"{type(exc).__name__}: {exc}"[:500]}, state=TrialState.FAIL)
    attrs = {"run_dir": str(run_dir.resolve()), **{k: result.get(k) for k in ("wall_seconds", "cpu_seconds", "train_seconds", "device", "epochs_run", "best_epoch")}}
    if reporter.abandoned:
        return finish(study, trial, attrs, state=TrialState.FAIL)
    if reporter.pruned_at is not None:
        return finish(study, trial, {**attrs, "pruned_at_epoch": reporter.pruned_at}, state=TrialState.PRUNED)
    value = (result.get("val") or {}).get("auc")
    if value is None or not math.isfinite(value):
        return finish(study, trial, {**attrs, "error": "validation AUC is undefined"}, state=TrialState.FAIL)
    return finish(study, trial, attrs, value=float(value))


def finish(study: optuna.Study, trial: optuna.Trial, attrs: dict[str, Any], value: float | None = None, state: TrialState | None = None) -> FrozenTrial:
    """Store `attrs` on the trial and tell Optuna its outcome; return the finished trial.

    If another worker already gave the trial up as stale (and queued it again), its record is
    left as it is: the retry owns the budget slot.
    """
    try:
        for key, item in attrs.items():
            trial.set_user_attr(key, item)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    return study.tell(trial, value, state=state, skip_if_finished=True)


# --- workers -------------------------------------------------------------------------------


def work(spec: TuneSpec, deadline: float | None = None, out: Callable[[str], None] = print) -> int:
    """Run trials until the study has `spec.trials` finished ones or `deadline` (epoch seconds) passes.

    Returns the number of trials this worker finished. Safe to run in any number of
    processes on any number of machines against one storage.
    """
    study, storage, definition_ = open_study(spec)
    url = storage_url(spec)
    space = search_space(METHODS.get(spec.method), spec.space, spec.overrides)
    folder = study_dir(spec, study.study_name)
    epochs = int(definition_["epochs"])
    finished, failures, waiting_said = 0, 0, False
    while deadline is None or time.time() < deadline:
        with claim_lock(url):
            for number in fail_abandoned_trials(study, storage):
                out(f"[{study.study_name}] trial {number} failed: its worker died; queued again")
            budgeted = study.get_trials(deepcopy=False, states=BUDGETED)
            queued = any(t.state == TrialState.WAITING for t in budgeted)
            running = sum(t.state == TrialState.RUNNING for t in budgeted)
            trial = None
            if len(budgeted) < spec.trials or queued:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*Heartbeat.*")
                    trial = study.ask()  # a queued (retried) trial first, else a new draw
                storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, worker_identity())
                beat(storage, trial._trial_id)
                # a retried trial reuses its original's run directory: a run finished there is not retrained
                original = storage.get_trial(trial._trial_id).system_attrs.get("failed_trial", trial.number)
            elif not running:
                break
        if trial is None:
            # the rest of the budget is running elsewhere: wait, to retry it should its worker die
            if not waiting_said:
                out(f"[{study.study_name}] waiting for {running} running trial(s) of other workers")
                waiting_said = True
            time.sleep(POLL_SECONDS)
            continue
        with Heartbeat(storage, trial._trial_id):
            progress = None
            if not spec.quiet and spec.jobs == 1:  # several workers rewriting one terminal line would garble it
                progress = TrialProgress(f"[{study.study_name}] trial {trial.number}", epochs)
            try:
                frozen = run_trial(spec, study, trial, space, folder / "trials" / f"{original:04d}", progress)
            finally:
                if progress is not None:
                    progress.close()
        if not spec.quiet or frozen.state == TrialState.FAIL:
            out(trial_line(study, frozen))
        if frozen.state == TrialState.FAIL:
            out(f"[{study.study_name}] trial {frozen.number} error: {frozen.user_attrs.get('error')}")
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise BenchError(f"{failures} trials in a row failed; the last: {frozen.user_attrs.get('error')}")
        else:
            finished, failures = finished + 1, 0
    return finished


def _worker_main(spec: TuneSpec, deadline: float | None, threads: int) -> int:
    """Entry point of a spawned worker process; returns its exit code."""
    import sys

    import torch

    torch.set_num_threads(threads)
    try:
        work(spec, deadline, out=lambda line: print(line, flush=True))
    except BenchError as exc:
        print(f"bench: error: {one_line(exc)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _spawned(spec_dict: dict[str, Any], deadline: float | None, threads: int) -> None:
    raise SystemExit(_worker_main(TuneSpec(**spec_dict), deadline, threads))


def check_timeout(timeout: Any) -> None:
    """Raise BenchError unless `timeout` is None or a positive finite number of seconds."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0):
        raise BenchError(f"--timeout must be a positive number of seconds, got {timeout!r}")


def tune(spec: TuneSpec, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the study of `spec` with `spec.jobs` workers on this machine; return its summary.

    The summary is also written to <runs>/studies/<name>/summary.json.
    """
    if isinstance(spec.jobs, bool) or not isinstance(spec.jobs, int) or not 1 <= spec.jobs <= MAX_JOBS:
        raise BenchError(f"--jobs must be an integer from 1 to {MAX_JOBS}, got {spec.jobs!r}")
    check_timeout(spec.timeout)
    definition(spec)  # every argument checked before anything is written
    check_folder_target(runs_root(spec), "--runs")
    storage_url(spec)
    study, _, definition_ = open_study(spec)
    folder = study_dir(spec, study.study_name)
    write_json(folder / "study.json", {"name": study.study_name, "storage": public_url(storage_url(spec)), "definition": definition_})
    deadline = time.time() + spec.timeout if spec.timeout else None
    out(f"study {study.study_name} in {public_url(storage_url(spec))}: {spec.trials} trials, pruner {spec.pruner}, "
        f"searching {', '.join(definition_['space'])}")
    if spec.jobs == 1:
        work(spec, deadline, out)
    else:
        # spawn, not fork: torch and SQLAlchemy hold threads and connections a fork would copy
        context = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // spec.jobs)
        workers = [context.Process(target=_spawned, args=(asdict(spec), deadline, threads)) for _ in range(spec.jobs)]
        for process in workers:
            process.start()
        try:
            for process in workers:
                process.join()
        except KeyboardInterrupt:
            for process in workers:
                process.join(timeout=30)
            raise
        failed = [p.exitcode for p in workers if p.exitcode != 0]
        if failed:
            raise BenchError(f"{len(failed)} of {spec.jobs} workers failed (exit codes {failed}); rerun the command to resume")
    summary = summarize(study)
    write_json(folder / "summary.json", summary)
    for line in summary_lines(summary):
        out(line)
    return summary


# --- results -------------------------------------------------------------------------------
