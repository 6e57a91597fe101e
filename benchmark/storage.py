"""Optuna storages: which kind a `--storage` names, checking it, opening it, and the lock all workers share.

Two kinds. A database URL (`sqlite:///runs/optuna.db`, `postgresql://user@host/db`) opens an
`RDBStorage` with Optuna's heartbeats. Anything else is the path of a journal file, opened as
`JournalStorage(JournalFileBackend(path))`: Optuna's append-only text log, its own choice for
shared file systems, small enough to commit beside a study file and carried to another machine
by git. A journal has no heartbeat of its own; `workers` keeps one in a trial attribute.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial

from .errors import BenchError, one_line
from .store import check_folder_target

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
MAX_RETRIES = 3  # a trial killed this often is given up (its slot goes to a fresh trial)
STORAGE_ATTEMPTS = 4
LOCK_NAME = "medauc-bench-tune"
SQLITE_HEADER = b"SQLite format 3\x00"
JOURNAL_SUFFIXES = (".journal", ".log")  # ours, and the name Optuna's documentation uses


def is_journal(url: str) -> bool:
    """Return whether `url` names a journal file (a path ending .journal or .log, no scheme) rather than a database URL."""
    return "://" not in url and Path(url).suffix in JOURNAL_SUFFIXES


def _looks_like_journal(path: Path) -> bool:
    # a journal is JSON lines of Optuna operations, each with an "op_code"
    try:
        with path.open("rb") as handle:
            first = handle.readline(1 << 16)
    except OSError:
        return False
    if not first.strip():
        return True
    try:
        return isinstance(json.loads(first), dict) and "op_code" in json.loads(first)
    except ValueError:
        return False


def sqlite_path(url: str) -> Path | None:
    """Return the file of an SQLite URL (None for other databases, journals and an in-memory one)."""
    import sqlalchemy

    if is_journal(url):
        return None

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
    if is_journal(url):
        _check_journal(Path(url), create=create, make_parents=make_parents)
        return
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



def _check_journal(path: Path, *, create: bool, make_parents: bool) -> None:
    """Raise BenchError unless `path` is a journal file, or (with `create`) a new file in an existing folder."""
    if path.is_dir():
        raise BenchError(f"--storage {path}: is a folder, not a journal file")
    if path.exists():
        if _looks_like_journal(path):
            return
        raise BenchError(
            f"--storage {path}: exists and is not an Optuna journal; refusing to write to it "
            "(give another file name, or a database URL such as sqlite:///runs/optuna.db)"
        )
    if not create:
        raise BenchError(f"--storage {path}: no such journal file")
    if make_parents:
        check_folder_target(path.parent, "--storage")
        return
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist; create it first"
        raise BenchError(f"--storage {path}: the folder {path.parent} {what}")


def database_url(url: str) -> str:
    """Return `url` checked, with a PostgreSQL driver that is installed (BenchError if it is no URL); a journal path as it is."""
    import importlib.util

    import sqlalchemy

    if is_journal(url):
        return url

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        raise BenchError(
            f"--storage {url!r} is not a database URL nor a journal file (*.journal); use e.g. sqlite:///runs/optuna.db, "
            "postgresql://user:password@host/dbname or studies/name.journal"
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
    """Return `url` with any password hidden (for logs and JSON); a journal path as it is."""
    if is_journal(url):
        return url
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]



# --- locking and opening --------------------------------------------------------------------


_LOCK_ENGINES: dict[str, Any] = {}


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def claim_lock(url: str) -> Iterator[None]:
    """Hold a lock shared by every worker on this storage (all machines) for the duration.

    SQLite: an exclusive file lock on `<file>.lock`; a journal: on `<file>.claim.lock` (Optuna's
    own journal lock is `<file>.lock`); PostgreSQL: a session advisory lock; MySQL: GET_LOCK.
    Other backends get no lock (Optuna itself does not offer one).
    """
    import sqlalchemy

    if is_journal(url):
        with _file_lock(Path(url + ".claim.lock")):
            yield
        return
    parsed = sqlalchemy.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        with _file_lock(Path(parsed.database + ".lock")):
            yield
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


def open_journal(path: str | Path) -> optuna.storages.JournalStorage:
    """Return the journal storage in the file `path` (created empty if missing)."""
    try:
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    except Exception as exc:  # a damaged line, an unreadable file
        raise BenchError(f"cannot open the Optuna journal {path}: {one_line(exc)}") from None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Return the storage at `url`: a journal for a path, else an RDB storage with heartbeats and retry of trials whose worker died."""
    if is_journal(url):
        return open_journal(url)
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



def copy_studies(source: str, target: str, prefix: str = "") -> list[str]:
    """Copy every study named `prefix...` from storage `source` to `target` with Optuna's `copy_study`; return their names.

    A study that already exists in the target is refused before anything is copied.
    """
    check_storage(database_url(target), create=True)
    src = open_storage(database_url(source))
    names = sorted(s.study_name for s in src.get_all_studies() if s.study_name.startswith(prefix))
    dst = open_storage(database_url(target))
    clash = sorted(set(names) & {s.study_name for s in dst.get_all_studies()})
    if clash:
        raise BenchError(f"{public_url(target)} already holds the study {clash[0]!r}; copy to another storage or remove it there")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name in names:
            optuna.copy_study(from_study_name=name, from_storage=src, to_storage=dst)
    return names
