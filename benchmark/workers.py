"""Which worker runs a trial, whether it still lives, and its heartbeat.

A trial records its worker (host, process id and start time). A running trial whose worker
is gone is failed and queued again with the same parameters: at once when the worker ran on
this machine (its process is gone), else when its heartbeat is older than the grace period.
Database storages keep Optuna's heartbeat; a journal has none, so the heartbeat is a trial
attribute (`bench:beat`, seconds since the epoch) written every interval.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from .storage import GRACE_SECONDS, HEARTBEAT_SECONDS, retry_callback

WORKER_ATTR = "bench:worker"
BEAT_ATTR = "bench:beat"


def has_optuna_heartbeat(storage: BaseStorage) -> bool:
    """Return whether `storage` keeps Optuna's own heartbeats (RDB storages opened with an interval)."""
    return callable(getattr(storage, "record_heartbeat", None)) and bool(getattr(storage, "get_heartbeat_interval", lambda: None)())


def beat(storage: BaseStorage, trial_id: int) -> None:
    """Record that the trial's worker is alive now."""
    if has_optuna_heartbeat(storage):
        storage.record_heartbeat(trial_id)
    else:
        storage.set_trial_system_attr(trial_id, BEAT_ATTR, time.time())


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


def _gone(trial: Any, host: str, now: float) -> bool:
    worker = trial.system_attrs.get(WORKER_ATTR)
    if not worker:
        return False
    if worker.get("host") == host:
        return not _alive(worker)
    last = trial.system_attrs.get(BEAT_ATTR)
    if last is None and trial.datetime_start is not None:
        last = trial.datetime_start.timestamp()
    return last is not None and now - float(last) > GRACE_SECONDS


def fail_abandoned_trials(study: optuna.Study, storage: BaseStorage) -> list[int]:
    """Mark failed, and queue again, the running trials whose worker is gone; return their numbers.

    A worker on this machine is gone when its process is; one elsewhere when its heartbeat is
    older than the grace period (Optuna's `fail_stale_trials` on a database; the `bench:beat`
    attribute on a journal).
    """
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna_beats = has_optuna_heartbeat(storage)
    if optuna_beats:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    host, now = _host_id(), time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.system_attrs.get(WORKER_ATTR)
        if optuna_beats and worker and worker.get("host") != host:
            continue  # Optuna's heartbeat judged it above
        if not _gone(trial, host, now):
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

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = getattr(self.storage, "get_heartbeat_interval", lambda: None)() or HEARTBEAT_SECONDS
        while not self.stop.wait(interval):
            with contextlib.suppress(Exception):  # a busy database: the next beat will do
                beat(self.storage, self.trial_id)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()

