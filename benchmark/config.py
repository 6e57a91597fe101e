"""Resolving a run's configuration: every hyperparameter declaration in one table, defaults layered.

Defaults are layered task card < method < user (`--set key=value`), each layer filling only
what it names. Unknown keys and invalid values are BenchErrors that name the valid choices.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from . import controls, data, trainer
from .data import augment, sampling, splits
from .errors import BenchError
from .hparams import Param
from .methods import METHODS, Method
from .tasks import Task

SHARED_PARAMS: dict[str, Param] = {**trainer.PARAMS, **data.PARAMS, **sampling.PARAMS, **augment.PARAMS, **splits.PARAMS, **controls.PARAMS}


def param_table(method: type[Method]) -> dict[str, Param]:
    """Return every hyperparameter a run of `method` accepts: the shared ones and the method's own."""
    clash = set(SHARED_PARAMS) & set(method.PARAMS)
    if clash:  # pragma: no cover - a programming error, caught by the registry test
        raise ValueError(f"method {method.name} redeclares shared parameters {sorted(clash)}")
    return {**SHARED_PARAMS, **method.PARAMS}


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """Return {key: text} from `--set key=value` strings."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BenchError(f"--set expects key=value, got {item!r}")
        out[key] = value.strip()
    return out


def resolve(task: Task | None, method: type[Method], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the full, validated configuration for a run of `method` on `task` (None: without a task card's defaults).

    Values in `overrides` may be strings (from the command line, parsed by the declaration)
    or already-typed values (from a tuner or a stored config, validated by it).
    """
    table = param_table(method)
    config = {name: param.default for name, param in table.items()}
    for layer in (task.defaults if task is not None else {}, method.DEFAULTS):
        for name, value in layer.items():
            if name in table:
                config[name] = table[name].validate(value)
    for name, value in (overrides or {}).items():
        if name not in table:
            raise BenchError(
                f"unknown setting {name!r} for method {method.name!r}; valid keys: {', '.join(sorted(table))}"
            )
        try:
            config[name] = table[name].parse(value) if isinstance(value, str) else table[name].validate(value)
        except BenchError as exc:
            raise BenchError(f"invalid value for {name}: {exc}") from None
    return config


def config_hash(task: str, method: str, seed: int, config: Mapping[str, Any]) -> str:
    """Return a short, stable hash of what determines a run's result (not where or on what it ran)."""
    table = param_table(METHODS.get(method)) if method in METHODS else SHARED_PARAMS
    hashed = {k: v for k, v in config.items() if k not in table or table[k].hash_at_default or v != table[k].default}
    blob = json.dumps({"task": task, "method": method, "seed": seed, "config": hashed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
