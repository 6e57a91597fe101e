"""Hyperparameter declarations: one object holds a default, its valid range and its search space.

A module that owns a hyperparameter declares it once, in a `PARAMS` dict
(`{"lr": Float(1e-3, search=(1e-4, 1e-1), log=True)}`); `config.py` collects them,
`--set key=value` parses and validates against the same object, and `tune.py`
asks the same object for an Optuna suggestion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import BenchError

MAX_SEED = 2**32 - 1  # what numpy and torch both accept as a seed (torch.manual_seed, np.random.seed)


@dataclass(frozen=True)
class Param:
    """Base declaration: a default and a one-line help text."""

    default: Any
    help: str = ""
    # False for a setting added after runs were stored: the run id hashes it only when it is set
    # away from its default, so the ids (and leaderboard entries) of earlier runs stay valid
    hash_at_default: bool = field(default=True, kw_only=True)
    # (setting, value): the parameter acts only in configurations where that setting has that
    # value (ema_decay only with ema=true); a study never searches it elsewhere
    needs: tuple[str, Any] | None = field(default=None, kw_only=True)

    def acts(self, config: Mapping[str, Any]) -> bool:
        """Return whether this parameter changes anything in `config` (always, unless it `needs` a setting)."""
        return self.needs is None or config.get(self.needs[0]) == self.needs[1]

    def needed_setting(self) -> str:
        """Return the setting this parameter needs as `--set` takes it ('ema=true'); '' when it needs none."""
        if self.needs is None:
            return ""
        value = self.needs[1]
        return f"{self.needs[0]}={str(value).lower() if isinstance(value, bool) else value}"

    def parse(self, text: str) -> Any:
        """Return `text` (from `--set key=text`) converted and validated."""
        raise NotImplementedError

    def validate(self, value: Any) -> Any:
        """Return `value` if valid, else raise BenchError."""
        return value

    def searchable(self) -> bool:
        """Return whether this parameter has a search space."""
        return False

    def in_space(self, value: Any) -> bool:
        """Return whether `value` lies in the search space (a study may start from it)."""
        return False

    def suggest(self, trial: Any, name: str) -> Any:
        """Return a value drawn by an Optuna trial from the search space."""
        raise BenchError(f"hyperparameter {name!r} has no search range")

    def describe_space(self) -> str:
        """Return the search space in words, '-' when there is none."""
        return "-"


@dataclass(frozen=True)
class Float(Param):
    """A real number in [minimum, maximum], searched over `search` (log scale if `log`) or over the values of `grid`.

    A `grid` is a paper's tuning grid: the study draws one of its values (categorical), while
    `--set` still takes any number in range.
    """

    search: tuple[float, float] | None = None
    log: bool = False
    minimum: float = -math.inf
    maximum: float = math.inf
    grid: tuple[float, ...] | None = None

    def parse(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise BenchError(f"expected a number, got {text!r}") from None
        return self.validate(value)

    def validate(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BenchError(f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value) or not (self.minimum <= value <= self.maximum):
            raise BenchError(f"{value!r} is outside [{self.minimum}, {self.maximum}]")
        return value

    def searchable(self) -> bool:
        return self.search is not None or bool(self.grid)

    def in_space(self, value: Any) -> bool:
        if self.grid:
            return value in self.grid
        return self.search is not None and self.search[0] <= value <= self.search[1]

    def suggest(self, trial: Any, name: str) -> float:
        if self.grid:
            return float(trial.suggest_categorical(name, list(self.grid)))
        if self.search is None:
            return super().suggest(trial, name)
        return trial.suggest_float(name, self.search[0], self.search[1], log=self.log)

    def describe_space(self) -> str:
        if self.grid:
            return "{" + ", ".join(f"{v:.4g}" for v in self.grid) + "}"
        if self.search is None:
            return "-"
        return f"[{self.search[0]:g}, {self.search[1]:g}]" + (" log" if self.log else "")


@dataclass(frozen=True)
class Int(Param):
    """An integer in [minimum, maximum], searched over `search` (inclusive, log scale if `log`)."""

    search: tuple[int, int] | None = None
    log: bool = False
    minimum: int = -(2**63)
    maximum: int = 2**63 - 1

    def parse(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise BenchError(f"expected an integer, got {text!r}") from None
        return self.validate(value)

    def validate(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise BenchError(f"expected an integer, got {value!r}")
        if not (self.minimum <= value <= self.maximum):
            raise BenchError(f"{value!r} is outside [{self.minimum}, {self.maximum}]")
        return value

    def searchable(self) -> bool:
        return self.search is not None

    def in_space(self, value: Any) -> bool:
        return self.search is not None and self.search[0] <= value <= self.search[1]

    def suggest(self, trial: Any, name: str) -> int:
        if self.search is None:
            return super().suggest(trial, name)
        return trial.suggest_int(name, self.search[0], self.search[1], log=self.log)

    def describe_space(self) -> str:
        return "-" if self.search is None else f"{{{self.search[0]}..{self.search[1]}}}"


@dataclass(frozen=True)
class Choice(Param):
    """One of `choices`; searched over `search` (a subset), or over all choices if `search` is True."""

    choices: Sequence[Any] = field(default_factory=tuple)
    search: Sequence[Any] | bool | None = None

    def parse(self, text: str) -> Any:
        for choice in self.choices:
            if str(choice) == text:
                return choice
        # numeric choices may be written differently ("1" vs "1.0")
        for choice in self.choices:
            if isinstance(choice, (int, float)) and not isinstance(choice, bool):
                try:
                    if float(text) == float(choice):
                        return choice
                except ValueError:
                    pass
        raise BenchError(f"{text!r} is not one of: {', '.join(str(c) for c in self.choices)}")

    def validate(self, value: Any) -> Any:
        if value not in list(self.choices):
            return self.parse(str(value))
        return value

    def _space(self) -> list[Any]:
        if self.search is True:
            return list(self.choices)
        return list(self.search or [])

    def searchable(self) -> bool:
        return bool(self._space())

    def in_space(self, value: Any) -> bool:
        return value in self._space()

    def suggest(self, trial: Any, name: str) -> Any:
        space = self._space()
        if not space:
            return super().suggest(trial, name)
        return trial.suggest_categorical(name, space)

    def describe_space(self) -> str:
        space = self._space()
        return "-" if not space else "{" + ", ".join(str(c) for c in space) + "}"


@dataclass(frozen=True)
class Bool(Param):
    """A switch; searched over {False, True} if `search`."""

    search: bool = False

    def parse(self, text: str) -> bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise BenchError(f"expected true or false, got {text!r}")

    def validate(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        return self.parse(str(value))

    def searchable(self) -> bool:
        return self.search

    def in_space(self, value: Any) -> bool:
        return bool(self.search)

    def suggest(self, trial: Any, name: str) -> bool:
        if not self.search:
            return super().suggest(trial, name)
        return trial.suggest_categorical(name, [False, True])

    def describe_space(self) -> str:
        return "{false, true}" if self.search else "-"
