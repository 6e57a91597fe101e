"""A study's results: its summary (counts, best trial, cost, a row per trial) and the printed lines."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """Return the completed trial with the highest value (the earliest on ties), or None."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


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
    best = best_trial(study)
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
