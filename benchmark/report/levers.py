"""The report's levers table: each lever arm of a study beside its base arm, on the same final seeds.

A lever arm retrains its base arm's configuration (validation-selected where the base was tuned,
else the paper defaults) with one control switched on (EMA, SWA, k-fold, refit, two-stage), or with one more setting searched on validation (the
augmentation preset). Each row sets the lever's final entry beside its base's: test AUC mean ±
sd over the final seeds, the difference of the means with the sd of the per-seed differences
(same seeds, so paired), the mean validation AUC, and the mean corrupted AUC where the seeds
carry robustness blocks. Nothing here selects: lever and base are both the study's own results.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..tasks import get_task
from .selection import study_entries
from .tables import Table, fmt, mean_sd_text, value_text

HEADER = ["task", "lever", "base", "change", "test AUC", "base test AUC", "Δ test AUC (paired sd)", "val AUC", "corrupted AUC", "base corrupted AUC"]


def _per_seed(entry: Mapping[str, Any] | None, get: Callable[[Mapping[str, Any]], Any]) -> dict[int, float]:
    """Return {seed: get(seed record)} over the entry's seeds, for the finite numbers `get` finds."""
    out: dict[int, float] = {}
    for run in (entry or {}).get("runs", []):
        value = get(run)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[int(run["seed"])] = float(value)
    return out


TEST_AUC = lambda run: (run.get("test") or {}).get("auc")  # noqa: E731
VAL_AUC = lambda run: run.get("val_auc")  # noqa: E731
CORRUPTED_AUC = lambda run: (run.get("robustness") or {}).get("mean_corrupted_auc")  # noqa: E731


def _cell(values: Sequence[float]) -> str:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return mean_sd_text(float(np.mean(values)) if values else None, sd, len(values))


def _delta(lever: Mapping[int, float], base: Mapping[int, float]) -> str:
    if not lever or not base:
        return "-"
    diff = float(np.mean(list(lever.values())) - np.mean(list(base.values())))
    paired = [lever[s] - base[s] for s in sorted(set(lever) & set(base))]
    sd = f" ({fmt(float(np.std(paired, ddof=1)))})" if len(paired) > 1 else ""
    return f"{diff:+.3f}{sd}"


def _change(arm: Any, entry: Mapping[str, Any] | None) -> str:
    config = (entry or {}).get("config") or {}
    parts = [f"{k}={value_text(v)}" for k, v in arm.fixed.items()]
    parts += [f"{k}={value_text(config[k])} (searched)" if k in config else f"{k} (searched)" for k in arm.space]
    return "; ".join(parts) or "(none)"


def _selected_on_validation(study: Any, lever: Any) -> bool:
    """Return whether the configuration a lever retrains was tuned: some arm up its chain of bases searched on validation."""
    base = lever.base
    while base is not None:  # a base is always an arm declared before it (studyfile checks)
        arm = study.arm(base)
        if study.budget(arm) > 0:
            return True
        base = arm.base
    return False


def lever_table(boards: Mapping[tuple[str, str], Sequence[dict[str, Any]]], study: Any, tasks: Sequence[str]) -> Table | None:
    """Return the levers table of `study` (a StudyFile) from the leaderboards' candidate entries, or None when it has no lever arm with a final entry."""
    finals = study_entries(boards, study)
    rows = []
    for task in tasks:
        for arm in study.arms:
            if arm.base is None or (task, arm.name) not in finals:
                continue
            entry, base = finals[(task, arm.name)], finals.get((task, arm.base))
            lever_auc, base_auc = _per_seed(entry, TEST_AUC), _per_seed(base, TEST_AUC)
            rows.append([
                get_task(task).title, arm.name, arm.base, _change(arm, entry),
                _cell(list(lever_auc.values())), _cell(list(base_auc.values())), _delta(lever_auc, base_auc),
                _cell(list(_per_seed(entry, VAL_AUC).values())),
                _cell(list(_per_seed(entry, CORRUPTED_AUC).values())), _cell(list(_per_seed(base, CORRUPTED_AUC).values())),
            ])
    if not rows:
        return None
    shown = [arm for arm in study.arms if arm.base is not None and any((task, arm.name) in finals for task in tasks)]
    tuned = [_selected_on_validation(study, arm) for arm in shown]
    selected = "selected on validation" if all(tuned) else "its paper defaults, untuned" if not any(tuned) else "selected on validation where it was tuned, else its paper defaults"
    note = (
        f"Each lever of the study `{study.path.name}` retrains its base arm's configuration ({selected}) with the change shown, "
        "on the same final seeds and budget. Test and corrupted AUC: mean ± sd over seeds (seeds in brackets); Δ: lever mean minus base mean, "
        "in brackets the sd of the per-seed differences. The test split chose none of these settings."
    )
    return Table(HEADER, rows, set(), note, numeric=tuple(range(4, len(HEADER))))
