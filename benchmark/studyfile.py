"""A study file, `studies/<name>.toml`: which tasks and arms, one tuning budget, the final seeds.

Example (every key but `tasks` and `[[arm]]` has a default)::

    tasks = ["breastmnist"]
    [tune]
    trials = 10          # finished trials per (task, arm); trial 0 is the method's paper defaults;
                         # 0: no tuning, the finals retrain the paper defaults
    epochs = 100
    pruner = "median"
    seed = 0
    space = []           # shared hyperparameters searched in every tuned arm, besides the method's own
    [final]
    seeds = [0, 1, 2]    # the validation-selected configuration is retrained with each, tested once
    robustness = true    # each final model also scored on the corrupted test copies (bench robustness)
    [fixed]              # settings of every run
    precision = "bf16"
    [[arm]]
    method = "aucm"      # name defaults to the method
    [[arm]]
    name = "aucm+ema"
    method = "aucm"
    base = "aucm"        # take arm aucm's selected configuration ...
    fixed = { ema = true }  # ... with these settings; no tuning unless `space` names some

An arm is tuned when it has no `base`, or when it names a `space` (then only those are
searched, on top of the base's selection), and its trial budget is above 0. Its Optuna study is `<file stem>.<task>.<arm>` in
the journal `studies/<name>.journal` (or `--storage`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import param_table, resolve
from .errors import BenchError
from .hparams import MAX_SEED
from .methods import METHODS
from .sampling import PRUNERS
from .tasks import get_task

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
TOP_KEYS = {"description", "tasks", "tune", "final", "fixed", "arm"}
TUNE_KEYS = {"trials", "epochs", "pruner", "seed", "space"}
FINAL_KEYS = {"seeds", "epochs", "robustness"}
ARM_KEYS = {"name", "method", "base", "fixed", "space", "trials"}
MAX_TRIALS = 100_000
STUDY_KEY = "study"  # per-seed record keys of a study's final runs on leaderboard entries
ARM_KEY = "arm"


@dataclass(frozen=True)
class Arm:
    """One line of the study: a method with fixed settings, tuned or taking another arm's selection."""

    name: str
    method: str
    fixed: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
    space: tuple[str, ...] = ()
    trials: int | None = None  # None: the study's budget

    @property
    def tuned(self) -> bool:
        """Return whether this arm runs a tuning study of its own."""
        return self.base is None or bool(self.space)


@dataclass(frozen=True)
class StudyFile:
    """A parsed, checked study file."""

    path: Path
    tasks: tuple[str, ...]
    arms: tuple[Arm, ...]
    trials: int = 10
    epochs: int = 100
    pruner: str = "median"
    seed: int = 0
    space: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    final_epochs: int | None = None  # None: the tuning epochs
    final_robustness: bool = True  # each final run's leaderboard record carries its robustness block
    fixed: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def name(self) -> str:
        """Return the study's name: the file's stem."""
        return self.path.stem

    @property
    def journal(self) -> Path:
        """Return the default Optuna journal: `<name>.journal` beside the file."""
        return self.path.with_suffix(".journal")

    def arm(self, name: str) -> Arm:
        """Return the arm called `name`."""
        return next(a for a in self.arms if a.name == name)

    def optuna_name(self, task: str, arm: Arm) -> str:
        """Return the Optuna study name of (task, arm)."""
        return f"{self.name}.{task}.{arm.name}"

    def budget(self, arm: Arm) -> int:
        """Return the number of finished trials `arm` is tuned for (0 when it is not tuned)."""
        if not arm.tuned:
            return 0
        return arm.trials if arm.trials is not None else self.trials

    def final_budget(self) -> tuple[int, str | None]:
        """Return (epochs, precision) of the final runs; precision None where the file leaves it to the device (`auto`)."""
        precision = self.fixed.get("precision")
        return self.final_epochs or self.epochs, None if precision in (None, "auto") else str(precision)

    def is_final(self, entry: dict[str, Any], arm: str | None = None) -> bool:
        """Return whether every seed of leaderboard `entry` is a final run of this study (of `arm`, when given)."""
        runs = entry.get("runs") or []
        return bool(runs) and all(r.get(STUDY_KEY) == self.name and (arm is None or r.get(ARM_KEY) == arm) for r in runs)


def _keys(table: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise BenchError(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise BenchError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return table


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BenchError(f"{where} must be an integer from {low} to {high}, got {value!r}")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BenchError(f"{where} must be a list of names")
    if len(set(value)) != len(value):
        raise BenchError(f"{where} names {next(v for v in value if value.count(v) > 1)!r} twice")
    return tuple(value)


def _settings(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(v, (bool, int, float, str)) for v in value.values()):
        raise BenchError(f"{where} must be a table of settings (key = number, boolean or string)")
    return dict(value)


def _arm(raw: Any, index: int, earlier: dict[str, Arm]) -> Arm:
    raw = _keys(raw, ARM_KEYS, f"[[arm]] {index + 1}")
    if "method" not in raw:
        raise BenchError(f"[[arm]] {index + 1}: no method")
    method = METHODS.get(raw["method"]).name
    name = raw.get("name", method)
    if not isinstance(name, str) or not NAME.match(name):
        raise BenchError(f"[[arm]] {index + 1}: name {name!r} must be 1-64 letters, digits or _ . + -")
    if name in earlier:
        raise BenchError(f"[[arm]] {name!r} is declared twice")
    base = raw.get("base")
    if base is not None:
        if base not in earlier:
            raise BenchError(f"[[arm]] {name!r}: base {base!r} is not an arm declared before it")
        if earlier[base].method != method:
            raise BenchError(f"[[arm]] {name!r}: base {base!r} is a {earlier[base].method} arm; a base must be of the same method")
    trials = raw.get("trials")
    if trials is not None:
        trials = _int(trials, f"[[arm]] {name!r}: trials", 0, MAX_TRIALS)
    return Arm(name, method, _settings(raw.get("fixed", {}), f"[[arm]] {name!r}: fixed"), base, _names(raw.get("space", []), f"[[arm]] {name!r}: space"), trials)


def parse(text: str, path: Path) -> StudyFile:
    """Return the StudyFile of TOML `text` (read from `path`), checked; BenchError names the first problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path}: not valid TOML ({exc})") from None
    raw = _keys(raw, TOP_KEYS, str(path))
    if "tasks" not in raw:
        raise BenchError(f"{path}: no `tasks` list")
    tasks = tuple(get_task(t).flag for t in _names(raw["tasks"], "tasks"))
    if not tasks:
        raise BenchError(f"{path}: `tasks` is empty")
    tune = _keys(raw.get("tune", {}), TUNE_KEYS, "[tune]")
    final = _keys(raw.get("final", {}), FINAL_KEYS, "[final]")
    arms_raw = raw.get("arm", [])
    if not isinstance(arms_raw, list) or not arms_raw:
        raise BenchError(f"{path}: no [[arm]]; declare at least one (e.g. [[arm]] method = \"ce\")")
    arms: dict[str, Arm] = {}
    for i, a in enumerate(arms_raw):
        arm = _arm(a, i, arms)
        arms[arm.name] = arm
    seeds = final.get("seeds", [0, 1, 2])
    if not isinstance(final.get("robustness", True), bool):
        raise BenchError("[final] robustness must be true or false")
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds):
        raise BenchError("[final] seeds must be a non-empty list of distinct integers")
    study = StudyFile(
        path=path,
        tasks=tasks,
        arms=tuple(arms.values()),
        trials=_int(tune.get("trials", 10), "[tune] trials", 0, MAX_TRIALS),
        epochs=_int(tune.get("epochs", 100), "[tune] epochs", 1, 100_000),
        pruner=str(tune.get("pruner", "median")),
        seed=_int(tune.get("seed", 0), "[tune] seed", 0, MAX_SEED),
        space=_names(tune.get("space", []), "[tune] space"),
        seeds=tuple(_int(s, "[final] seeds", 0, MAX_SEED) for s in seeds),
        final_epochs=None if "epochs" not in final else _int(final["epochs"], "[final] epochs", 1, 100_000),
        final_robustness=final.get("robustness", True),
        fixed=_settings(raw.get("fixed", {}), "[fixed]"),
        description=str(raw.get("description", "")),
    )
    PRUNERS.get(study.pruner)
    for task in study.tasks:
        for arm in study.arms:
            check_arm(study, task, arm)
    return study


def check_arm(study: StudyFile, task: str, arm: Arm) -> None:
    """Raise BenchError unless every setting and searched name of `arm` is one its method has."""
    method = METHODS.get(arm.method)
    table = param_table(method)
    for where, names in (("[fixed]", study.fixed), (f"[[arm]] {arm.name!r}: fixed", arm.fixed), ("space", (*study.space, *arm.space))):
        for key in names:
            if key not in table:
                raise BenchError(f"{where}: {arm.method} has no setting {key!r} (see `bench methods`)")
    resolve(get_task(task), method, {**study.fixed, **arm.fixed, "epochs": study.epochs})


def load(path: str | Path) -> StudyFile:
    """Return the checked study file at `path` (BenchError if missing or wrong)."""
    path = Path(path)
    if path.suffix != ".toml":
        raise BenchError(f"{path}: a study file ends in .toml")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BenchError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot be read ({exc})") from None
    return parse(text, path)
