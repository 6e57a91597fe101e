"""What a result cost and how it was configured: its budget, whether it ran at the defaults, and the command that reproduces it.

A budget is the training epochs and the precision the run computed in; results of different
budgets are never ranked or compared together. A task's protocol budget is its card's epochs in
float32 (the official MedMNIST script's training). Seeds and "defaults or tuned" are shown
beside a budget, not part of it.

Only a run's stored configuration and the device it ran on are read, so the leaderboard, the
ranking and the report derive the same budget from the same record.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import BenchError
from .tasks import Task, get_task

PROTOCOL_PRECISION = "fp32"
# settings that say how fast or how much was computed, not what was trained: never count as tuning
COMPUTE_KEYS = frozenset({"epochs", "precision", "compile", "memory_format", "eval_fuse_bn", "track_train"})


@dataclass(frozen=True)
class Budget:
    """Epochs and precision of a result; `None` / "unknown" where the record does not say."""

    epochs: int | None
    precision: str

    @property
    def key(self) -> tuple[int, str]:
        """Return a sortable identity: results with equal keys may be ranked together."""
        return (self.epochs if self.epochs is not None else -1, self.precision)

    def label(self) -> str:
        """Return the budget in words, e.g. '100 epochs, fp32'."""
        epochs = "? epochs" if self.epochs is None else f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return f"{epochs}, {self.precision}"

    def as_json(self) -> dict[str, Any]:
        """Return the budget as a JSON object."""
        return {"epochs": self.epochs, "precision": self.precision}


def protocol_budget(task: Task | str) -> Budget:
    """Return the task's protocol budget: its card's epochs in float32."""
    task = get_task(task) if isinstance(task, str) else task
    return Budget(int(task.defaults.get("epochs", 100)), PROTOCOL_PRECISION)


def effective_precision(precision: Any, devices: Iterable[Any]) -> str:
    """Return the precision a run computed in: the setting when explicit, else what `auto` resolved to on its device(s).

    Runs record the precision they resolved to; only records of harnesses older than that hold
    `auto`, which those harnesses ran as bf16 on CUDA and fp32 on every CPU (today's `auto` is
    bf16 on CPUs with native bf16 too, but is never stored). Runs of several devices, or of none
    recorded, give "auto (device unknown)" unless they all resolve alike.
    """
    if precision in ("fp32", "bf16"):
        return str(precision)
    if precision not in (None, "auto"):
        return str(precision)
    kinds = {str(d).split(":")[0] for d in devices if d}
    resolved = {"bf16" if kind == "cuda" else "fp32" for kind in kinds}
    return resolved.pop() if len(resolved) == 1 else "auto (device unknown)"


def budget_of(config: Mapping[str, Any], devices: Iterable[Any] = ()) -> Budget:
    """Return the budget of a configuration trained on `devices` (each seed's record)."""
    epochs = config.get("epochs")
    epochs = int(epochs) if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and math.isfinite(epochs) else None
    return Budget(epochs, effective_precision(config.get("precision", "auto"), devices))


def hyperparameters(task: str, method: str, config: Mapping[str, Any]) -> str:
    """Return "defaults" when every setting but the compute ones equals the method's current defaults on the task, else "tuned".

    A key the configuration lacks counts as its default (it was recorded before the setting
    existed); a key this harness does not know, or an unregistered method, gives "unknown".
    """
    from .config import param_table, resolve
    from .methods import METHODS

    if method not in METHODS:
        return "unknown"
    cls = METHODS.get(method)
    table = param_table(cls)
    if any(k not in table for k in config):
        return "unknown"
    defaults = resolve(get_task(task), cls)
    differs = [k for k, v in config.items() if k not in COMPUTE_KEYS and v != defaults[k]]
    return "tuned" if differs else "defaults"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def reproducing_command(task: str, method: str, seed: int, config: Mapping[str, Any], device: Any = None) -> str | None:
    """Return the `bench run` command line that trains this configuration again with this harness, or None when none can.

    The command names every setting that differs from the method's defaults, `--epochs` always,
    and the device when the precision is `auto` (which resolves by device). It is returned only
    when parsing it gives back exactly `config`: a configuration recorded by an older harness
    (a setting it lacks whose default changes results, or one this harness no longer knows) has
    none. No data root or output folder is named: those are the user's.
    """
    from .config import param_table, resolve
    from .methods import METHODS

    if method not in METHODS:
        return None
    cls = METHODS.get(method)
    table = param_table(cls)
    task_obj = get_task(task)
    if any(k not in table for k in config) or any(k not in config and p.hash_at_default for k, p in table.items()):
        return None
    defaults = resolve(task_obj, cls)
    sets = {k: _text(v) for k, v in sorted(config.items()) if k != "epochs" and v != defaults[k]}
    overrides: dict[str, Any] = {**sets, "epochs": str(config["epochs"])}
    try:
        again = resolve(task_obj, cls, overrides)
    except BenchError:
        return None
    if any(again[k] != v for k, v in config.items()):
        return None
    words = ["bench", "run", "--task", task, "--method", method, "--seed", str(seed), "--epochs", str(config["epochs"])]
    for key, text in sets.items():
        words += ["--set", f"{key}={text}"]
    if config.get("precision", "auto") == "auto":
        kind = str(device or "").split(":")[0]
        if kind not in ("cpu", "cuda"):
            return None
        words += ["--device", kind]
    return shlex.join(words)
