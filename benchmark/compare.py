"""A fair comparison of methods on one task: `bench compare`.

For each method, a study with the same budget, pruner, shared search space and fixed
settings (`tune.tune`); the best configuration of each is retrained with S seeds on the same
splits, and each retrained model is evaluated on the test split once (`runner.run` with
`evaluate_test=True`). The summary (per seed, mean and sample standard deviation, and the
wall/CPU/GPU seconds each method cost) is written to <runs>/compare/<name>/summary.json.
Rerunning the command resumes: studies continue where they stopped and finished final runs
are reused, not retrained.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import runner, tune
from .config import param_table
from .errors import BenchError
from .hparams import MAX_SEED
from .methods import METHODS
from .store import check_folder_target, write_json
from .tune_results import cost

MAX_SEEDS = 1000


@dataclass
class CompareSpec:
    """One `bench compare`: `methods` on `task`, each tuned with `trials` and retrained with `seeds` seeds."""

    task: str
    methods: tuple[str, ...]
    trials: int
    seeds: int
    space: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    seed: int = 0  # the tuning seed; the final runs use seeds seed+1 .. seed+S
    storage: str | None = None
    timeout: float | None = None  # per study
    jobs: int = 1
    quiet: bool = False  # no progress inside trials, no line per trial
    data_root: str | None = None
    runs_root: str | None = None
    device: str = "auto"
    verify_md5: bool = True


def final_seeds(spec: CompareSpec) -> list[int]:
    """Return the seeds of the final runs: fresh ones, none equal to the tuning seed."""
    return [spec.seed + 1 + i for i in range(spec.seeds)]


def method_overrides(spec: CompareSpec, method: str) -> dict[str, Any]:
    """Return the --set values that apply to `method` (those its hyperparameter table declares)."""
    table = param_table(METHODS.get(method))
    return {k: v for k, v in spec.overrides.items() if k in table}


def validate(spec: CompareSpec) -> None:
    """Raise BenchError for an unusable comparison (before anything is trained)."""
    if not spec.methods:
        raise BenchError("--methods: name at least one method, e.g. --methods ce,aucm")
    if len(set(spec.methods)) != len(spec.methods):
        raise BenchError(f"--methods names a method twice: {','.join(spec.methods)}")
    if isinstance(spec.seeds, bool) or not isinstance(spec.seeds, int) or not 1 <= spec.seeds <= MAX_SEEDS:
        raise BenchError(f"--seeds must be an integer from 1 to {MAX_SEEDS}, got {spec.seeds!r}")
    if isinstance(spec.seed, int) and spec.seed + spec.seeds > MAX_SEED:
        raise BenchError(f"--seed {spec.seed} with --seeds {spec.seeds}: the final seeds would pass {MAX_SEED}, the largest seed numpy and torch accept")
    check_folder_target(Path(spec.runs_root) if spec.runs_root else runner.DEFAULT_RUNS, "--runs")
    for method in spec.methods:
        METHODS.get(method)
    known = set().union(*(param_table(METHODS.get(m)) for m in spec.methods))
    unknown = sorted(set(spec.overrides) - known)
    if unknown:
        raise BenchError(f"--set {', '.join(unknown)}: no method in {','.join(spec.methods)} has such a setting")
    for method in spec.methods:
        tune.definition(tune_spec(spec, method))  # checks the space, trials and pruner of every study first


def tune_spec(spec: CompareSpec, method: str) -> tune.TuneSpec:
    """Return the study of `method` in this comparison: the same budget, pruner, space and seed for all."""
    return tune.TuneSpec(
        task=spec.task,
        method=method,
        trials=spec.trials,
        space=tuple(spec.space),
        overrides=method_overrides(spec, method),
        pruner=spec.pruner,
        seed=spec.seed,
        storage=spec.storage,
        timeout=spec.timeout,
        jobs=spec.jobs,
        quiet=spec.quiet,
        data_root=spec.data_root,
        runs_root=spec.runs_root,
        device=spec.device,
        verify_md5=spec.verify_md5,
    )


def compare_name(spec: CompareSpec) -> str:
    """Return `<task>.<m1+m2>.<N>trials.<S>seeds.<hash>` from what defines the comparison."""
    defining = {
        "task": spec.task,
        "methods": list(spec.methods),
        "trials": spec.trials,
        "seeds": final_seeds(spec),
        "space": list(spec.space),
        "overrides": spec.overrides,
        "pruner": spec.pruner,
    }
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{spec.task}.{'+'.join(spec.methods)}.{spec.trials}trials.{spec.seeds}seeds.{digest}"


def mean_sd(values: list[float]) -> dict[str, Any]:
    """Return {mean, sd, n}: the mean and the sample standard deviation (n - 1; None for one value)."""
    values = [float(v) for v in values if v is not None]
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def compare(spec: CompareSpec, out: Callable[[str], None] = print) -> tuple[dict[str, Any], list[Path]]:
    """Tune every method, retrain each one's best configuration with S seeds and test each once.

    Returns (summary, final run directories); the summary is also written to
    <runs>/compare/<name>/summary.json, after each method (with "complete": false until the last).
    """
    validate(spec)
    name = compare_name(spec)
    root = Path(spec.runs_root) if spec.runs_root else runner.DEFAULT_RUNS
    path = root / "compare" / name / "summary.json"
    summary: dict[str, Any] = {
        "name": name,
        "task": spec.task,
        "methods": list(spec.methods),
        "trials": spec.trials,
        "pruner": spec.pruner,
        "space": list(spec.space),
        "overrides": spec.overrides,
        "tuning_seed": spec.seed,
        "seeds": final_seeds(spec),
        "storage": tune.public_url(tune.storage_url(tune_spec(spec, spec.methods[0]))),
        "objective": tune.OBJECTIVE,
        "results": {},
        "complete": False,
    }
    final_dirs: list[Path] = []
    for method in spec.methods:
        out(f"== {method}: tuning ({spec.trials} trials)")
        study = tune.tune(tune_spec(spec, method), out=out)
        if study["best"] is None:
            raise BenchError(f"no trial of {method} completed; nothing to retrain (see {study['study']})")
        best_params = study["best"]["params"]
        fixed = method_overrides(spec, method)
        out(f"== {method}: retraining trial {study['best']['trial']}'s configuration with seeds {final_seeds(spec)}")
        runs = []
        for seed in final_seeds(spec):
            result, run_dir = runner.run(
                runner.RunSpec(
                    task=spec.task,
                    method=method,
                    seed=seed,
                    overrides={**fixed, **best_params},
                    data_root=spec.data_root,
                    runs_root=spec.runs_root,
                    device=spec.device,
                    verify_md5=spec.verify_md5,
                    evaluate_test=True,
                )
            )
            final_dirs.append(run_dir)
            runs.append(
                {
                    "seed": seed,
                    "run_dir": str(run_dir.resolve()),
                    "best_epoch": result["best_epoch"],
                    "val": result["val"],
                    "test": result["test"],
                    "wall_seconds": result.get("wall_seconds"),
                    "cpu_seconds": result.get("cpu_seconds"),
                    "train_seconds": result.get("train_seconds"),
                    "device": result.get("device"),
                }
            )
            out(f"   seed {seed}: val AUC {_f(result['val']['auc'])}  test {_metrics(result['test'])}  ({run_dir})")
        tuning_cost, final_cost = study["cost"], cost(runs)
        summary["results"][method] = {
            "study": study["study"],
            "trials": study["counts"],
            "best_trial": study["best"]["trial"],
            "best_val_auc": study["best"]["value"],
            "best_params": best_params,
            "fixed": fixed,
            "runs": runs,
            # every metric the runs report (auc, acc, pauc, ...), over the seeds
            "test": {k: mean_sd([r["test"].get(k) for r in runs]) for k in runs[0]["test"]},
            "val": {k: mean_sd([r["val"].get(k) for r in runs]) for k in runs[0]["val"]},
            "cost": {
                "tuning": tuning_cost,
                "final": final_cost,
                **{k: tuning_cost[k] + final_cost[k] for k in ("wall_seconds", "cpu_seconds", "gpu_seconds", "train_seconds")},
            },
        }
        write_json(path, summary)
    summary["complete"] = True
    write_json(path, summary)
    for line in summary_lines(summary):
        out(line)
    out(f"summary: {path}")
    return summary, final_dirs


def final_run_dirs(summary: dict[str, Any]) -> list[Path]:
    """Return the final (test-evaluated) run directories listed in a comparison summary."""
    return [Path(r["run_dir"]) for result in summary["results"].values() for r in result["runs"]]


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


LABELS = {"auc": "AUC", "acc": "ACC", "pauc": "pAUC"}  # display names; other metrics print as their keys


def _metrics(values: dict[str, float | None]) -> str:
    return "  ".join(f"{LABELS.get(k, k)} {_f(v)}" for k, v in values.items())


def _pm(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.4f} +/- {stat['sd']:.4f}" if stat["sd"] is not None else f"{stat['mean']:.4f}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Return the printed table of a comparison: test AUC/ACC mean +/- sd per method and its cost."""
    lines = [f"{summary['task']}: test metrics over seeds {summary['seeds']} (mean +/- sample sd), best of {summary['trials']} trials each"]
    for method, r in summary["results"].items():
        cost = r["cost"]
        metrics = "  ".join(f"{LABELS.get(k, k)} {_pm(stat)}" for k, stat in r["test"].items())
        lines.append(
            f"  {method:<10} test {metrics}  (val AUC of the tuned config {r['best_val_auc']:.4f}; "
            f"{cost['wall_seconds']:.0f} s wall, {cost['cpu_seconds']:.0f} CPU s, {cost['gpu_seconds']:.0f} GPU s)"
        )
    return lines
