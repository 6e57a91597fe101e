"""`bench study run` / `bench study status`: a study file run to its end, resumably, with its record in the repo.

For every task and arm of the file: the arm's tuning study (`tune.tune`, same budget for
every tuned arm, validation data only) in the study's Optuna journal; then the selected
configuration retrained with each final seed, tested once, and added to the task's
leaderboard at once, with the study, the arm and the command in its record. What is done is
read back from the journal and the leaderboards, so a rerun (after a kill, or from a fresh
clone on another machine) does only what is left, and `status` needs no run store.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import leaderboard, runner, tune
from .errors import BenchError
from .storage import public_url
from .studyfile import ARM_KEY, STUDY_KEY, Arm, StudyFile


@dataclass
class Options:
    """Where a study runs: storage, run store, data, device, workers, leaderboards."""

    storage: str | None = None  # default: the journal beside the study file
    runs_root: str | None = None
    data_root: str | None = None
    device: str = "auto"
    verify_md5: bool = True
    jobs: int = 1
    quiet: bool = False
    leaderboard_dir: str = str(leaderboard.DEFAULT_DIR)
    tasks: tuple[str, ...] = ()  # a subset of the file's tasks; empty: all
    arms: tuple[str, ...] = ()  # a subset of its arms (with their bases); empty: all
    timeout: float | None = None  # seconds from the start of `run`; no new trial or final run starts after it
    emulated_bf16: bool = False  # run a bf16 study on a CPU that only emulates bf16 (many times slower than fp32)


def check_precision(study: StudyFile, opts: Options) -> None:
    """Refuse (BenchError) a study fixed at bf16 on a CPU without native bf16, unless `opts.emulated_bf16`.

    Such a CPU (no avx512_bf16, no AMX) emulates bf16: on a 2-core AVX2 EPYC a 100-epoch
    BreastMNIST trial reached its 4th epoch in 23 minutes, where fp32 takes 22 s an epoch
    (README, "bench study"). The study's precision cannot be changed midway without splitting
    its budget, so the machine is the thing to change.
    """
    if study.fixed.get("precision") != "bf16" or opts.emulated_bf16:
        return
    from .runner import resolve_device
    from .trainer import native_bf16_cpu

    if resolve_device(opts.device).type == "cpu" and not native_bf16_cpu():
        raise BenchError(
            f"{study.path} trains in bf16, which this CPU only emulates (no avx512_bf16 or AMX), many times slower than fp32; "
            "run it on a CPU with native bf16 or a GPU, or pass --emulated-bf16 to run it here anyway"
        )


def storage_of(study: StudyFile, opts: Options) -> str:
    """Return the Optuna storage of the study: --storage, else its journal."""
    return opts.storage or str(study.journal)


def command_of(study: StudyFile) -> str:
    """Return the command that reproduces the study's entries."""
    return f"bench study run {study.path.as_posix()}"


def _selected(study: StudyFile, opts: Options) -> tuple[list[str], list[Arm]]:
    for t in opts.tasks:
        if t not in study.tasks:
            raise BenchError(f"--tasks: {t!r} is not a task of {study.path} ({', '.join(study.tasks)})")
    names = set(opts.arms)
    for a in names:
        if a not in {arm.name for arm in study.arms}:
            raise BenchError(f"--arms: {a!r} is not an arm of {study.path} ({', '.join(arm.name for arm in study.arms)})")
    arms = [a for a in study.arms if not names or a.name in names]
    return [t for t in study.tasks if not opts.tasks or t in opts.tasks], arms


def tune_spec(study: StudyFile, opts: Options, task: str, arm: Arm, base_params: dict[str, Any], timeout: float | None = None) -> tune.TuneSpec:
    """Return the tuning study of (task, arm): the study's budget, on top of its base's selection; no new trial after `timeout` s."""
    space = arm.space if arm.base is not None else (*study.space, *arm.space)
    return tune.TuneSpec(
        task=task,
        method=arm.method,
        trials=study.budget(arm),
        space=tuple(space),
        overrides={**study.fixed, **base_params, **arm.fixed, "epochs": study.epochs},
        pruner=study.pruner,
        seed=study.seed,
        storage=storage_of(study, opts),
        study=study.optuna_name(task, arm),
        timeout=timeout,
        jobs=opts.jobs,
        quiet=opts.quiet,
        data_root=opts.data_root,
        runs_root=opts.runs_root,
        device=opts.device,
        verify_md5=opts.verify_md5,
    )


def _load_optuna(study: StudyFile, opts: Options, task: str, arm: Arm) -> Any:
    import optuna

    from .storage import open_storage

    url = storage_of(study, opts)
    if not Path(url).exists() and "://" not in url:
        return None
    try:
        return optuna.load_study(study_name=study.optuna_name(task, arm), storage=open_storage(url))
    except KeyError:
        return None


def selection(study: StudyFile, opts: Options, task: str, arm: Arm, summaries: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any] | None:
    """Return the settings `arm` is retrained with on `task` (its base's, then its own best trial's), or None while untuned."""
    params: dict[str, Any] = {}
    if arm.base is not None:
        base = selection(study, opts, task, study.arm(arm.base), summaries)
        if base is None:
            return None
        params.update(base)
    params.update(arm.fixed)
    if study.budget(arm) > 0:
        summary = summaries.get((task, arm.name))
        if summary is None:
            optuna_study = _load_optuna(study, opts, task, arm)
            if optuna_study is None:
                return None
            from .tune_results import summarize

            summary = summarize(optuna_study)
        finished = summary["finished"]
        if summary["best"] is None or finished < study.budget(arm):
            return None
        params.update(summary["best"]["params"])
    return params


def final_overrides(study: StudyFile, params: dict[str, Any]) -> dict[str, Any]:
    """Return the settings of a final run: the fixed ones, the selection, the final epochs."""
    return {**study.fixed, **params, "epochs": study.final_epochs or study.epochs}


def finals_done(study: StudyFile, task: str, arm: Arm, directory: str | Path) -> dict[int, dict[str, Any]]:
    """Return {seed: its per-seed leaderboard record} for the final runs of (task, arm) already on the leaderboard."""
    try:
        board = leaderboard.read_board(task, directory)
    except BenchError:
        return {}
    done: dict[int, dict[str, Any]] = {}
    for entry in board.get("entries", []):
        for run in entry.get("runs", []):
            if run.get(STUDY_KEY) == study.name and run.get(ARM_KEY) == arm.name and run.get("seed") in study.seeds:
                done[int(run["seed"])] = {**run, "entry": entry["id"]}
    return done


def run_final(study: StudyFile, opts: Options, task: str, arm: Arm, params: dict[str, Any], seed: int, out: Callable[[str], None]) -> str:
    """Train, test once and add to the leaderboard one final seed of (task, arm), with its robustness block; return the entry id."""
    result, run_dir = runner.run(
        runner.RunSpec(
            task=task,
            method=arm.method,
            seed=seed,
            overrides=final_overrides(study, params),
            data_root=opts.data_root,
            runs_root=opts.runs_root,
            device=opts.device,
            verify_md5=opts.verify_md5,
            evaluate_test=True,
        )
    )
    seed_result = leaderboard.read_run(run_dir)
    seed_result.record.update(
        {
            STUDY_KEY: study.name,
            ARM_KEY: arm.name,
            "command": command_of(study),
            "wall_seconds": result.get("wall_seconds"),
            "cpu_seconds": result.get("cpu_seconds"),
        }
    )
    robust = ""
    # the weights stay in the run store, which does not outlive the machine: score them under shift now
    if study.final_robustness and (run_dir / "model.safetensors").is_file():  # a kfold run keeps one model per fold
        from . import robustness as rb

        started = time.perf_counter()
        block = rb.evaluate(rb.load_model(run_dir), data_root=opts.data_root, device=opts.device, verify_md5=opts.verify_md5)
        seed_result.record.update({"robustness": block, "robustness_seconds": time.perf_counter() - started})
        if block["mean_corrupted_auc"] is not None:
            robust = f", mean corrupted AUC {block['mean_corrupted_auc']:.4f}"
    ids = leaderboard.add_results(task, [seed_result], opts.leaderboard_dir)
    if not opts.quiet:
        out(f"[{study.name}] {task} / {arm.name} seed {seed}: test AUC {result['test']['auc']:.4f} (val {result['val']['auc']:.4f}){robust} -> {ids[0]}")
    return ids[0]


def run(study: StudyFile, opts: Options, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every tuning study and final seed of `study`; return its status (see `status`).

    With `opts.timeout`, no trial or final run starts once that many seconds have passed: the
    status then has `stopped` true, and the same call resumes where it stopped.
    """
    tune.check_timeout(opts.timeout)
    check_precision(study, opts)
    deadline = time.time() + opts.timeout if opts.timeout else None
    tasks, arms = _selected(study, opts)
    wanted = {a.name for a in arms}
    for arm in arms:  # an arm needs its bases
        while arm.base is not None and arm.base not in wanted:
            wanted.add(arm.base)
            arm = study.arm(arm.base)
    arms = [a for a in study.arms if a.name in wanted]
    summaries: dict[tuple[str, str], dict[str, Any]] = {}

    def stopped(where: str) -> dict[str, Any]:
        if not opts.quiet:
            out(f"== [{study.name}] time limit reached ({opts.timeout:g} s): stopped before {where}; rerun to resume")
        return {**status(study, opts), "stopped": True}

    out_of_time = lambda: deadline is not None and time.time() >= deadline  # noqa: E731
    for task in tasks:
        for arm in arms:
            if out_of_time():
                return stopped(f"{task} / {arm.name}")
            base_params: dict[str, Any] = {}
            if arm.base is not None:
                got = selection(study, opts, task, study.arm(arm.base), summaries)
                if got is None:
                    raise BenchError(f"{task} / {arm.name}: its base {arm.base!r} has no selection yet")
                base_params = got
            if study.budget(arm) > 0:
                if not opts.quiet:
                    out(f"== [{study.name}] {task} / {arm.name}: tuning ({study.budget(arm)} trials)")
                left_s = None if deadline is None else max(deadline - time.time(), 1e-3)
                summaries[(task, arm.name)] = tune.tune(tune_spec(study, opts, task, arm, base_params, timeout=left_s), out=out)
            params = selection(study, opts, task, arm, summaries)
            if params is None:
                if out_of_time():
                    return stopped(f"the rest of {task} / {arm.name}'s trials")
                raise BenchError(f"{task} / {arm.name}: no trial completed; nothing to retrain")
            done = finals_done(study, task, arm, opts.leaderboard_dir)
            left = [s for s in study.seeds if s not in done]
            if left and not opts.quiet:
                out(f"== [{study.name}] {task} / {arm.name}: final seeds {left} with {tune._format_params(params) or 'the defaults'}")
            for seed in left:
                if out_of_time():
                    return stopped(f"{task} / {arm.name} seed {seed}")
                run_final(study, opts, task, arm, params, seed, out)
    return {**status(study, opts), "stopped": False}


# --- status --------------------------------------------------------------------------------


def _trial_rows(optuna_study: Any) -> list[dict[str, Any]]:
    from .tune_results import trial_record

    return [trial_record(t) for t in optuna_study.get_trials(deepcopy=False) if t.state.name != "WAITING"]


def models_per_run(settings: dict[str, Any]) -> int:
    """Return how many models one run of `settings` trains: `folds` for kfold, 2 for refit (select, then refit), else 1."""
    from .data.splits import PARAMS as SPLIT_PARAMS

    strategy = settings.get("val_strategy", "official")
    if strategy == "kfold":
        return int(settings.get("folds", SPLIT_PARAMS["folds"].default))
    return 2 if strategy == "refit" else 1


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else None


def status(study: StudyFile, opts: Options) -> dict[str, Any]:
    """Return per (task, arm): trials finished / running / left, final seeds done / left, compute spent, expected time left.

    Read from the journal (or --storage) and the leaderboards only: no run store is needed.
    The time left is the mean wall time of this arm's finished trials (else of the task's) per
    trial left, and the mean of its final runs (else of its complete trials, else its base's
    final runs, else a trial's, else the task's other arms' final runs, times the models a run of
    the arm trains: K for kfold, 2 for refit) per seed left.
    """
    rows: list[dict[str, Any]] = []
    tasks, arms = _selected(study, opts)
    for task in tasks:
        task_trial_walls: list[float] = []
        task_rows: list[dict[str, Any]] = []
        for arm in arms:
            budget = study.budget(arm)
            optuna_study = _load_optuna(study, opts, task, arm) if budget > 0 else None
            trials = _trial_rows(optuna_study) if optuna_study is not None else []
            finished = [t for t in trials if t["state"] in ("complete", "pruned")]
            running = [t for t in trials if t["state"] == "running"]
            walls = [t["wall_seconds"] for t in finished if t.get("wall_seconds") is not None]
            complete_walls = [t["wall_seconds"] for t in finished if t["state"] == "complete" and t.get("wall_seconds") is not None]
            task_trial_walls += walls
            done = finals_done(study, task, arm, opts.leaderboard_dir)
            final_walls = [r.get("wall_seconds") for r in done.values()]
            cpu = sum(t.get("cpu_seconds") or 0.0 for t in trials) + sum(r.get("cpu_seconds") or 0.0 for r in done.values())
            wall = sum(t.get("wall_seconds") or 0.0 for t in trials) + sum(r.get("wall_seconds") or 0.0 for r in done.values())
            task_rows.append(
                {
                    "task": task,
                    "arm": arm.name,
                    "method": arm.method,
                    "trials": {"budget": budget, "finished": min(len(finished), budget), "running": len(running), "left": max(0, budget - len(finished))},
                    "finals": {"done": sorted(done), "left": [s for s in study.seeds if s not in done]},
                    "test_auc": [done[s]["test"]["auc"] for s in sorted(done)],
                    "spent": {"wall_seconds": wall, "cpu_seconds": cpu},
                    "_trial_wall": _mean(walls),
                    "_final_wall": _mean(final_walls) or _mean(complete_walls),
                }
            )
        fallback = _mean(task_trial_walls)
        finals_of = {row["arm"]: row["_final_wall"] for row in task_rows}
        task_final = _mean(list(finals_of.values()))
        for row, arm in zip(task_rows, arms):
            per_trial = row.pop("_trial_wall") or fallback
            # an arm not measured yet costs what its base's final runs (else a trial, else, with
            # no trials to time, the task's other final runs) cost, per model it trains
            per_final = row.pop("_final_wall")
            if per_final is None:
                per_model = (finals_of.get(arm.base) if arm.base else None) or per_trial or task_final
                per_final = None if per_model is None else per_model * models_per_run({**study.fixed, **arm.fixed})
            left_trials, left_finals = row["trials"]["left"] + row["trials"]["running"], len(row["finals"]["left"])
            if left_trials == 0 and left_finals == 0:
                row["expected_seconds_left"] = 0.0
            elif per_final is None or (left_trials and per_trial is None):
                row["expected_seconds_left"] = None  # nothing measured yet
            else:
                row["expected_seconds_left"] = left_trials * (per_trial or 0.0) + left_finals * per_final
            row["state"] = "done" if row["expected_seconds_left"] == 0.0 else ("running" if row["trials"]["running"] else ("left" if not row["trials"]["finished"] and not row["finals"]["done"] else "partial"))
        rows += task_rows
    known = [r["expected_seconds_left"] for r in rows if r["expected_seconds_left"] is not None]
    return {
        "study": study.name,
        "file": study.path.as_posix(),
        "storage": public_url(storage_of(study, opts)),
        "rows": rows,
        "spent": {k: sum(r["spent"][k] for r in rows) for k in ("wall_seconds", "cpu_seconds")},
        "expected_seconds_left": sum(known) if len(known) == len(rows) else None,
        "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def status_lines(report: dict[str, Any]) -> list[str]:
    """Return the printed table of a status: a row per (task, arm), then the totals."""
    lines = [f"study {report['study']} ({report['file']}; storage {report['storage']})"]
    header = f"{'task':<16} {'arm':<16} {'state':<8} {'trials':>12} {'finals':>8} {'test AUC':>16} {'spent':>8} {'left':>8}"
    lines.append(header)
    for r in report["rows"]:
        t, f = r["trials"], r["finals"]
        trials = f"{t['finished']}/{t['budget']}" + (f" +{t['running']}" if t["running"] else "")
        n = len(f["done"]) + len(f["left"])
        aucs = r["test_auc"]
        auc = "-" if not aucs else (f"{aucs[0]:.3f}" if len(aucs) == 1 else f"{statistics.fmean(aucs):.3f}+/-{statistics.stdev(aucs):.3f}")
        lines.append(
            f"{r['task']:<16} {r['arm']:<16} {r['state']:<8} {trials:>12} {len(f['done'])}/{n:<6} {auc:>16} "
            f"{_hours(r['spent']['wall_seconds']):>8} {_hours(r['expected_seconds_left']):>8}"
        )
    lines.append(
        f"spent {_hours(report['spent']['wall_seconds'])} wall, {_hours(report['spent']['cpu_seconds'])} CPU; "
        f"expected left {_hours(report['expected_seconds_left'])} (from this study's measured run times)"
    )
    return lines
