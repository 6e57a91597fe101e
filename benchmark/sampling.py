"""How a study draws and stops trials: the pruners by name, and a TPE sampler seeded per trial."""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from .registry import Registry

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
