"""Hyperparameter tuning with Optuna, on validation data only: `bench tune`.

A study searches the method's own hyperparameter declarations (`Method.PARAMS`, each
drawn by its `suggest(trial, name)`) plus the shared ones the user opts into with
`--space`; its objective is the selected epoch's validation AUC (`result["val"]["auc"]`,
the out-of-fold AUC under k-fold validation). Every trial is a normal run directory made
by `runner.run(..., evaluate_test=False)`, so the test split is never loaded while tuning.

Budget and resumption. The budget N counts finished trials, completed or pruned (a pruned
trial is a search decision that cost compute, as in Optuna's MaxTrialsCallback); failed
trials do not count. A worker claims a trial only while holding a storage-wide lock (a file
lock beside an SQLite file, an advisory lock on PostgreSQL/MySQL) and only while fewer than
N trials are finished, running or queued, so any number of workers on any number of
machines finish exactly N between them. A trial whose process died is marked failed and
queued again with the same parameters: at once when the dead worker ran on this machine
(its process id is gone), else when its heartbeat is older than the grace period.

Sampling. TPE, rebuilt before every trial with a seed derived from (--seed, trial number):
a trial's draw depends only on the study's history and its own number, so one worker
reproduces a study exactly, and resumed or parallel workers never repeat each other's draws.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import multiprocessing
import os
import socket
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import runner
from .config import param_table, resolve
from .errors import BenchError, one_line
from .hparams import Param
from .methods import METHODS, Method
from .registry import Registry
from .store import check_folder_target, write_json
from .tasks import get_task
from .trainer import StopTraining

OBJECTIVE = "val/auc"
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
MAX_RETRIES = 3  # a trial killed this often is given up (its slot goes to a fresh trial)
MAX_CONSECUTIVE_FAILURES = 3
POLL_SECONDS = 5  # how often a worker with nothing to claim looks again
STORAGE_ATTEMPTS = 4
BUDGETED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
WORKER_ATTR = "bench:worker"
LOCK_NAME = "medauc-bench-tune"
MAX_SEED = 2**32 - 1  # what numpy and torch both accept as a seed
MAX_TRIALS = 100_000
MAX_JOBS = 256
SQLITE_HEADER = b"SQLite format 3\x00"

# --- pruners: a name -> a factory of the epoch budget -----------------------------------

PRUNERS: Registry[Callable[[int], optuna.pruners.BasePruner]] = Registry("pruner")
# Optuna's defaults, plus a warm-up of a fifth of the epochs: the first epochs' AUC says little
PRUNERS.add("median", lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 5)))
PRUNERS.add(
    "hyperband",
    lambda epochs: optuna.pruners.HyperbandPruner(min_resource=max(1, epochs // 10), max_resource=epochs, reduction_factor=3),
)
PRUNERS.add("none", lambda epochs: optuna.pruners.NopPruner())


def startup_trials(trials: int) -> int:
    """Return TPE's number of random trials for a budget of `trials`: a third, between 2 and Optuna's default 10."""
    return max(2, min(10, trials // 3))


def derive_seed(seed: int, number: int) -> int:
    """Return a 32-bit seed for trial `number` of a study seeded with `seed`."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")


class PerTrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler rebuilt before each trial from `factory(derive_seed(seed, trial.number))`.

    Hand-written because Optuna seeds a sampler once per process: two workers (or a resumed
    one) with the same seed would draw the same random-phase parameters. TPE keeps no state
    between trials other than its random generator, so rebuilding it loses nothing.
    """

    def __init__(self, factory: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._factory = factory
        self._seed = seed
        self._inner = factory(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._factory(derive_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # seeds come from trial numbers, never from the clock
        return None


def make_sampler(seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """Return the seeded TPE sampler of a study with budget `trials` (constant liar: parallel workers spread out)."""
    n_startup = startup_trials(trials)
    return PerTrialSeededSampler(
        lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=n_startup, constant_liar=True), seed
    )


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


def sqlite_path(url: str) -> Path | None:
    """Return the file of an SQLite URL (None for other databases and for an in-memory one)."""
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    database = parsed.database
    if str(parsed.query.get("uri", "")).lower() in ("true", "1") and database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
        if database in ("", ":memory:"):
            return None
    return Path(database)


def check_storage(url: str, *, create: bool, make_parents: bool = False) -> None:
    """Raise BenchError unless an SQLite storage's file is an SQLite database, or (with `create`) a new file in an existing folder.

    Nothing is created or overwritten silently: a file that is not a database (a typo, a log, a
    results table) is refused, and so is a folder that does not exist (unless `make_parents`,
    for the default storage inside the run store). An empty file is accepted when creating:
    SQLite itself treats it as an empty database. Other databases are checked when opened.
    """
    path = sqlite_path(url)
    if path is None:
        return
    shown = public_url(url)
    if path.is_dir():
        raise BenchError(f"--storage {shown}: {path} is a folder, not an SQLite database file")
    if path.exists():
        try:
            with path.open("rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise BenchError(f"--storage {shown}: {path} cannot be read ({exc.strerror or exc})") from None
        if header == SQLITE_HEADER or (create and header == b""):
            return
        raise BenchError(
            f"--storage {shown}: {path} exists and is not an SQLite database; "
            "refusing to overwrite it (give another file name, or a database URL)"
        )
    if not create:
        raise BenchError(f"--storage {shown}: {path} does not exist")
    if make_parents:
        check_folder_target(path.parent, "--storage")
        return
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist; create it first"
        raise BenchError(f"--storage {shown}: the folder {path.parent} {what}")


def database_url(url: str) -> str:
    """Return `url` checked, with a PostgreSQL driver that is installed (BenchError if it is no URL)."""
    import importlib.util

    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        raise BenchError(
            f"--storage {url!r} is not a database URL; use e.g. sqlite:///runs/optuna.db "
            "or postgresql://user:password@host/dbname"
        ) from None
    try:
        parsed.get_dialect()
    except Exception:
        raise BenchError(
            f"--storage {public_url(url)}: unknown database kind {parsed.drivername!r}; "
            "use e.g. sqlite:///runs/optuna.db or postgresql://user:password@host/dbname"
        ) from None
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; use psycopg2 when only it is installed
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def public_url(url: str) -> str:
    """Return `url` with any password hidden (for logs and JSON)."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


# --- storage, locking, liveness -------------------------------------------------------------


_LOCK_ENGINES: dict[str, Any] = {}


@contextlib.contextmanager
def claim_lock(url: str) -> Iterator[None]:
    """Hold a lock shared by every worker on this storage (all machines) for the duration.

    SQLite: an exclusive file lock on `<file>.lock`; PostgreSQL: a session advisory lock;
    MySQL: GET_LOCK. Other backends get no lock (Optuna itself does not offer one).
    """
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        import fcntl

        lock_path = Path(parsed.database + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if backend not in ("postgresql", "mysql"):
        yield
        return
    engine = _LOCK_ENGINES.get(url)
    if engine is None:
        try:
            engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        except Exception as exc:
            raise BenchError(f"cannot use the storage {public_url(url)}: {type(exc).__name__}: {one_line(exc)}") from None
        _LOCK_ENGINES[url] = engine
    key = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big", signed=True)
    try:
        connection = engine.connect()
    except Exception as exc:
        raise BenchError(f"cannot connect to the storage {public_url(url)}: {type(exc).__name__}: {one_line(exc)}") from None
    with connection as conn:
        if backend == "postgresql":
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            release = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
        else:
            conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, 3600)"), {"k": LOCK_NAME})
            release = sqlalchemy.text("SELECT RELEASE_LOCK(:k)")
        try:
            yield
        finally:
            conn.execute(release, {"k": key if backend == "postgresql" else LOCK_NAME})


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Return the RDB storage at `url` with heartbeats and retry of trials whose worker died."""
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}  # wait for other workers' writes
    for attempt in range(STORAGE_ATTEMPTS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                    **{_RETRY_KWARG: retry_callback()},
                )
            except ImportError as exc:
                raise BenchError(f"cannot open the Optuna storage {public_url(url)}: {one_line(exc)} (install its database driver)") from None
            except Exception as exc:
                # a program that is not a worker (optuna-dashboard, a script) may be creating
                # Optuna's tables at the same moment, outside our lock: try again
                if attempt + 1 == STORAGE_ATTEMPTS:
                    raise BenchError(f"cannot open the Optuna storage {public_url(url)}: {one_line(exc)}") from None
                time.sleep(1 + attempt)
    raise AssertionError("unreachable")


# Optuna 4.9 renamed RetryFailedTrialCallback / failed_trial_callback; accept both spellings
_RETRY_CLASS = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
_RETRY_KWARG = (
    "heartbeat_stale_trial_callback"
    if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    else "failed_trial_callback"
)


def retry_callback() -> Callable[[optuna.Study, FrozenTrial], None]:
    """Return Optuna's callback that queues a failed trial again with the same parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _RETRY_CLASS(max_retry=MAX_RETRIES)


def _host_id() -> str:
    # the boot id tells apart machines (or containers' hosts) that share a host name
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _process_start(pid: int) -> str | None:
    # the start time (field 22 of /proc/<pid>/stat) tells a reused process id apart
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict[str, Any]:
    """Return {host, pid, start} of this process, stored on the trials it runs."""
    return {"host": _host_id(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _alive(worker: dict[str, Any]) -> bool:
    pid = int(worker["pid"])
    start = _process_start(pid)
    if worker.get("start") is not None:
        return start == worker["start"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_abandoned_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[int]:
    """Mark failed, and queue again, the running trials whose worker is gone; return their numbers.

    A worker on this machine is gone when its process is; one elsewhere when its heartbeat is
    older than the grace period (Optuna's `fail_stale_trials`).
    """
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    host = _host_id()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.system_attrs.get(WORKER_ATTR)
        if not worker or worker.get("host") != host or _alive(worker):
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                retry_callback()(study, storage.get_trial(trial._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    # failed without an error of their own: their worker is gone (a trial that raised records "error")
    return sorted(
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if t.number in running and "error" not in t.user_attrs
    )


class Heartbeat:
    """Record the trial's heartbeat every `interval` seconds in a daemon thread while in the block.

    Hand-written: Optuna beats only inside `Study.optimize`, and the budget lock needs ask/tell.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval() or HEARTBEAT_SECONDS
        while not self.stop.wait(interval):
            with contextlib.suppress(Exception):  # a busy database: the next beat will do
                self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def open_study(spec: TuneSpec) -> tuple[optuna.Study, optuna.storages.RDBStorage, dict[str, Any]]:
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
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            sampler=make_sampler(spec.seed, spec.trials),
            pruner=PRUNERS.get(spec.pruner)(definition_["epochs"]),
            load_if_exists=True,
        )
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


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def _best(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def trial_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """Return the one line printed for a finished trial: number, state, value, best so far, time, params."""
    best = _best(study)
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


def run_trial(spec: TuneSpec, study: optuna.Study, trial: optuna.Trial, space: dict[str, Param], run_dir: Path) -> FrozenTrial:
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
        result, run_dir = runner.run(run_spec, callbacks=[reporter])
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
    study, storage, _ = open_study(spec)
    url = storage_url(spec)
    space = search_space(METHODS.get(spec.method), spec.space, spec.overrides)
    folder = study_dir(spec, study.study_name)
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
                storage.record_heartbeat(trial._trial_id)
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
            frozen = run_trial(spec, study, trial, space, folder / "trials" / f"{original:04d}")
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


def tune(spec: TuneSpec, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the study of `spec` with `spec.jobs` workers on this machine; return its summary.

    The summary is also written to <runs>/studies/<name>/summary.json.
    """
    if isinstance(spec.jobs, bool) or not isinstance(spec.jobs, int) or not 1 <= spec.jobs <= MAX_JOBS:
        raise BenchError(f"--jobs must be an integer from 1 to {MAX_JOBS}, got {spec.jobs!r}")
    if spec.timeout is not None and (isinstance(spec.timeout, bool) or not isinstance(spec.timeout, (int, float)) or not math.isfinite(spec.timeout) or spec.timeout <= 0):
        raise BenchError(f"--timeout must be a positive number of seconds, got {spec.timeout!r}")
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


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """Return one trial's row for the summary."""
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value,
        "params": trial.params,
        "retry_of": trial.system_attrs.get("failed_trial"),
        **{k: trial.user_attrs.get(k) for k in ("run_dir", "wall_seconds", "cpu_seconds", "train_seconds", "device", "epochs_run", "best_epoch", "pruned_at_epoch", "error")},
    }


def summarize(study: optuna.Study) -> dict[str, Any]:
    """Return the study's summary: counts by state, the best trial and a row per started trial.

    Waiting trials (queued, such as trial 0's defaults before any worker ran it) are counted,
    not listed: they have no run yet.
    """
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    best = _best(study)
    rows = [trial_record(t) for t in trials if t.state != TrialState.WAITING]
    return {
        "study": study.study_name,
        "definition": study.user_attrs.get("definition"),
        "counts": counts,
        "finished": counts["complete"] + counts["pruned"],
        "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params, "run_dir": best.user_attrs.get("run_dir")},
        "cost": cost(rows),  # a waiting trial has no run, so no cost
        "trials": rows,
    }


def cost(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the summed wall, CPU and GPU seconds of run rows (GPU seconds: wall time of runs on CUDA)."""
    measured = [r for r in rows if r.get("wall_seconds") is not None]
    return {
        "runs": len(measured),
        "wall_seconds": sum(r["wall_seconds"] for r in measured),
        "cpu_seconds": sum(r.get("cpu_seconds") or 0.0 for r in measured),
        "train_seconds": sum(r.get("train_seconds") or 0.0 for r in measured),
        "gpu_seconds": sum(r["wall_seconds"] for r in measured if str(r.get("device", "")).startswith("cuda")),
        "devices": sorted({str(r.get("device")) for r in measured}),
    }


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Return the printed final summary of a study: counts, best value and parameters, cost."""
    c = summary["counts"]
    lines = [
        f"study {summary['study']}: {summary['finished']} trials finished ({c['complete']} complete, {c['pruned']} pruned), "
        f"{c['fail']} failed; {summary['cost']['wall_seconds']:.0f} s of trial wall time, {summary['cost']['cpu_seconds']:.0f} CPU s"
    ]
    best = summary["best"]
    if best is None:
        lines.append("no trial completed; nothing to report")
        return lines
    lines.append(f"best: trial {best['trial']}, val AUC {best['value']:.4f}, run {best['run_dir']}")
    lines.extend(f"    {k} = {v}" for k, v in sorted(best["params"].items()))
    return lines
