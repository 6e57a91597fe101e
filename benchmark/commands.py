"""The `bench` commands: one function per command, called by `cli.py` with the parsed arguments; each returns the exit code.

Heavy modules (torch, optuna, matplotlib) are imported inside the command that needs them, so
`bench --help` and the light commands start quickly.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import BenchError


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print `rows` as an aligned plain-text table with the given columns."""
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


# --- commands -----------------------------------------------------------------------------


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import TASKS, data_root_source

    root, source = data_root_source(args.data_root)
    rows = []
    for flag in TASKS:
        t = TASKS.get(flag)
        rows.append(
            {
                "task": flag,
                "dims": f"{t.dims}D",
                "labels": "binary" if not t.multilabel else f"multi-label ({t.n_labels})",
                "channels": t.channels,
                "train": t.splits["train"],
                "val": t.splits["val"],
                "test": t.splits["test"],
                "model": t.reference.get("model"),
                "ref AUC": t.reference.get("auc"),
                "ref ACC": t.reference.get("acc"),
                # presence only: reading every file for its MD5 would take longer than the table
                "data file": "present" if (root / t.filename()).is_file() else "missing",
            }
        )
    print_table(rows, ["task", "dims", "labels", "channels", "train", "val", "test", "model", "ref AUC", "ref ACC", "data file"])
    print("\nref AUC / ACC: MedMNIST v2 paper (Yang et al., 2023), ResNet-18 (28) for 2D, ResNet-18+3D for 3D.")
    print(
        f"data file: <task>.npz in {root} ({source}); its MD5 is checked when a command reads it, "
        "and a missing one is downloaded by the medmnist package when the machine is online."
    )
    return 0


def _shown(value: Any) -> str:
    """Return a default as `bench methods` prints it (floats to 4 significant digits: 1/300 is 0.003333)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _described(param: Any) -> str:
    """Return a parameter's help as `bench methods` prints it, with the setting it needs to act, if any."""
    return f"{param.help} (only with {param.needed_setting()})" if param.needs else param.help


def cmd_methods(args: argparse.Namespace) -> int:
    from .config import SHARED_PARAMS
    from .methods import METHODS

    for name in METHODS:
        cls = METHODS.get(name)
        print(f"{name}: {cls.summary}")
        for key, param in cls.PARAMS.items():
            print(f"    {key:<16} default {_shown(param.default):<10} search {param.describe_space():<22} {_described(param)}")
        for key, value in cls.DEFAULTS.items():
            print(f"    {key:<16} default {_shown(value):<10} (sets the shared setting)")
    print("\nshared settings (every method):")
    for key, param in SHARED_PARAMS.items():
        print(f"    {key:<16} default {_shown(param.default):<10} search {param.describe_space():<22} {_described(param)}")
    print(
        "\nTask cards may change shared defaults (batch_size is 32 on the 3D tasks). Set any key with --set key=value.\n"
        "`bench tune` searches a method's own ranges (and the shared ones named with --space) that act in the study's configuration."
    )
    return 0


def _progress_factory(quiet: bool) -> Callable | None:
    if quiet:
        return None

    def factory(task, config):
        from tqdm.auto import tqdm

        bar = tqdm(total=config["epochs"], desc=f"{task.flag}", unit="epoch", dynamic_ncols=True)

        def callback(record: dict, _model: Any) -> None:
            # no refresh of its own: the update's refresh shows the epoch's count and values together
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", val_auc=_fmt(record.get("val/auc")), best=record["best_epoch"], refresh=False)
            bar.update(1)
            if record["epoch"] >= config["epochs"]:
                bar.close()

        return callback

    return factory


def cmd_run(args: argparse.Namespace) -> int:
    from .config import parse_assignments
    from .runner import RunSpec, run

    overrides: dict[str, Any] = parse_assignments(args.set)
    if args.epochs is not None:
        overrides["epochs"] = str(args.epochs)
    spec = RunSpec(
        task=args.task,
        method=args.method,
        seed=args.seed,
        overrides=overrides,
        data_root=args.data_root,
        out=args.out,
        runs_root=args.runs,
        device=args.device,
        verify_md5=not args.no_verify,
        force=args.force,
    )
    result, run_dir = run(spec, progress=_progress_factory(args.quiet))
    ref = result.get("reference", {})
    print(
        f"{result['task']} / {result['method']} / seed {result['seed']}: "
        f"test AUC {_fmt(result['test']['auc'])}  ACC {_fmt(result['test']['acc'])}  pAUC {_fmt(result['test'].get('pauc'))}  "
        f"(MedMNIST v2 {ref.get('model', 'reference')}: AUC {_fmt(ref.get('auc'))}  ACC {_fmt(ref.get('acc'))})"
    )
    if result.get("folds"):
        chosen = f"{len(result['folds'])}-fold ensemble (epochs {', '.join(str(f['best_epoch']) for f in result['folds'])}), out-of-fold val AUC {_fmt(result['val']['auc'])}"
    else:
        chosen = f"selected epoch {result['best_epoch']} of {result['epochs_run']} by val AUC {_fmt(result['val']['auc'])}"
        if result.get("refit"):
            chosen += f", refit on train+val for {result['refit']['epochs']} epochs"
    print(
        f"{chosen}; train AUC {_fmt(result['train'].get('auc'))} (gap {_fmt(result['train_val_gap'])}); "
        f"training steps {result['train_seconds']:.1f} s at {result['images_per_second']:.0f} images/s, "
        f"{result['wall_seconds']:.1f} s in all with the per-epoch evaluation on {result['device']}"
    )
    print(f"run directory: {run_dir}")
    return 0


def cmd_augmentations(args: argparse.Namespace) -> int:
    from .data.augment import PARAMS, PRESETS

    rows = [{"preset": name, "2D (torchvision v2)": PRESETS.get(name).summary_2d, "3D (MONAI)": PRESETS.get(name).summary_3d} for name in PRESETS]
    print_table(rows, ["preset", "2D (torchvision v2)", "3D (MONAI)"])
    print("\nChoose one with --set augment=NAME (default none). Batch-level switches (pointwise losses such as ce only):")
    for key in ("mixup", "cutmix", "label_smoothing"):
        print(f"    {key:<16} default {PARAMS[key].default!s:<6} {PARAMS[key].help}")
    print("Augmentation applies to training batches only; validation, test and train-AUC images are never augmented.")
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from .config import parse_assignments
    from .data.splits import PARAMS, prevalence_rows
    from .tasks import get_task, load_arrays

    task = get_task(args.task)
    config = {name: param.default for name, param in PARAMS.items()}
    for name, text in parse_assignments(args.set).items():
        if name not in PARAMS:
            raise BenchError(f"unknown split setting {name!r}; valid keys: {', '.join(PARAMS)}")
        try:
            config[name] = PARAMS[name].parse(text)
        except BenchError as exc:
            raise BenchError(f"invalid value for {name}: {exc}") from None
    # labels only are used; the test split is shown for its prevalence, never used by a strategy
    data = load_arrays(task, args.data_root, verify_md5=not args.no_verify)
    rows = prevalence_rows(config, data.labels("train"), data.labels("val"), data.labels("test"))
    names = [task.label_names.get(str(j), str(j)) for j in range(task.n_labels)]
    positive = f"share of label 1 ({task.label_names.get('1', 'positive')})"
    columns = ["set", "n"] + ([positive] if not task.multilabel else [f"{j}:{n[:10]}" for j, n in enumerate(names)])
    if not task.multilabel:
        # binary tasks: the share of label 1
        table = [{"set": r["set"], "n": r["n"], columns[2]: float(r["share"][0])} for r in rows]
    else:
        table = [{"set": r["set"], "n": r["n"], **{c: float(v) for c, v in zip(columns[2:], r["share"])}} for r in rows]
    settings = ", ".join(f"{k}={config[k]}" for k in PARAMS if k == "val_strategy" or (config["val_strategy"] == "resplit" and k in ("val_fraction", "split_seed")) or (config["val_strategy"] == "kfold" and k in ("folds", "split_seed")))
    print(f"{task.flag}: {settings}")
    print_table(table, columns)
    return 0


def cmd_throughput(args: argparse.Namespace) -> int:
    from .config import parse_assignments
    from .store import write_json
    from .throughput import ThroughputSpec, check_json_target, describe, measure, table_rows

    json_path = check_json_target(args.json) if args.json else None
    spec = ThroughputSpec(
        task=args.task,
        method=args.method,
        overrides=parse_assignments(args.set),
        device=args.device,
        steps=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
        data_root=args.data_root,
        verify_md5=not args.no_verify,
        workers=args.workers,
    )
    result = measure(spec)
    print(describe(result) + "\n")
    print_table(table_rows(result), ["pipeline", "train img/s", "eval img/s", "epoch s", "epoch s (train+val)", "train TFLOP/s", "of peak"])
    if json_path is not None:
        write_json(json_path, result)
        print(f"\nwrote {json_path}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from . import leaderboard as lb
    from .tasks import TASKS

    if args.action == "add":
        added = lb.add_runs(args.task, args.run_dirs, args.leaderboard_dir, source="run")
        for task, ids in added.items():
            print(f"{task}: updated {', '.join(ids)} in {lb.leaderboard_path(task, args.leaderboard_dir)}")
        return 0
    if args.action == "init":
        for path in lb.init_boards([args.task] if args.task else TASKS.names(), args.leaderboard_dir):
            print(f"wrote {path}")
        return 0
    tasks = [args.task] if args.task else (lb.tasks_with_boards(args.leaderboard_dir) or TASKS.names())
    if args.action == "verify":
        from .verify import verify

        checks = verify(tasks, args.leaderboard_dir, args.data_root, verify_md5=not args.no_verify)
        for check in checks:
            print(f"{check.task}: {check.entries} entries recomputed, {len(check.problems)} differences")
            for problem in check.problems:
                print(f"  {problem}")
        found = sum(len(c.problems) for c in checks)
        if found:
            raise BenchError(f"leaderboard verify found {found} difference{'s' if found != 1 else ''} (listed above)")
        return 0
    from .ranking import render

    print(render(tasks, args.format, args.leaderboard_dir, sort=args.sort))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from .store import read_json
    from .submission import package

    out = package(args.run_dir, args.out, name=args.name, allow_tuning_trial=args.allow_tuning_trial)
    env_path = Path(args.run_dir) / "environment.json"
    data_file = read_json(env_path).get("data_file") if env_path.is_file() else None
    data_root = Path(data_file).parent if data_file else "DIR"
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB); check it with: bench evaluate {out} --data-root {data_root}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import leaderboard as lb
    from . import submission as sub
    from .store import PendingWrite, check_file_target, check_folder_target, dumps

    # every destination is checked before the submission is even read
    json_path = check_file_target(args.json, "--json") if args.json else None
    if args.leaderboard:
        check_folder_target(args.leaderboard_dir, "--leaderboard-dir")
    loaded = sub.load_submission(args.file, max_mb=args.max_size_mb)
    evaluation = sub.evaluate(loaded, data_root=args.data_root, device=args.device, verify_md5=not args.no_verify)
    result = sub.seed_result(evaluation) if args.leaderboard else None
    entry = result.entry_id if result is not None else None
    # the JSON is written first, beside its place, and moved there after the leaderboard entry:
    # a failure on either side leaves both as they were
    pending = PendingWrite(json_path, dumps(sub.evaluation_record(evaluation, entry)).encode()) if json_path else None
    try:
        if result is not None:
            before = lb.snapshot(loaded.task.flag, [result.entry_id], args.leaderboard_dir)
            (entry,) = lb.add_results(loaded.task.flag, [result], args.leaderboard_dir, source="evaluate")
        if pending is not None:
            try:
                pending.commit()
            except BaseException:
                if result is not None:
                    lb.restore(before)
                raise
    finally:
        if pending is not None:
            pending.discard()
    t = evaluation.test
    print(
        f"{loaded.task.flag} / {loaded.manifest['architecture']} / {loaded.manifest['config']['method']} "
        f"(weights {loaded.weights_sha256[:12]}): test AUC {_fmt(t['auc'])}  ACC {_fmt(t['acc'])}  "
        f"pAUC {_fmt(t['pauc'])}  FPR@95%TPR {_fmt(t['fpr_at_95tpr'])}  on {len(evaluation.labels)} test cases"
    )
    if entry:
        print(f"added leaderboard entry {entry} to {lb.leaderboard_path(loaded.task.flag, args.leaderboard_dir)}")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from .robustness_cli import run_command

    return run_command(args, print_table)


def _tune_fields(args: argparse.Namespace) -> dict[str, Any]:
    from .config import parse_assignments

    overrides: dict[str, Any] = parse_assignments(args.set)
    if args.epochs is not None:
        overrides["epochs"] = str(args.epochs)
    return dict(
        task=args.task,
        trials=args.trials,
        space=tuple(s.strip() for s in (args.space or "").split(",") if s.strip()),
        overrides=overrides,
        pruner=args.pruner,
        seed=args.seed,
        storage=args.storage,
        timeout=args.timeout,
        jobs=args.jobs,
        quiet=args.quiet,
        data_root=args.data_root,
        runs_root=args.runs,
        device=args.device,
        verify_md5=not args.no_verify,
    )


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import TuneSpec, tune

    tune(TuneSpec(method=args.method, study=args.study, **_tune_fields(args)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import CompareSpec, compare

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    compare(CompareSpec(methods=methods, seeds=args.seeds, **_tune_fields(args)))
    return 0


def _study_options(args: argparse.Namespace) -> Any:
    from .study import Options

    split = lambda text: tuple(x.strip() for x in (text or "").split(",") if x.strip())  # noqa: E731
    return Options(
        storage=args.storage,
        runs_root=getattr(args, "runs", None),
        data_root=getattr(args, "data_root", None),
        device=getattr(args, "device", "auto"),
        verify_md5=not getattr(args, "no_verify", False),
        jobs=getattr(args, "jobs", 1),
        quiet=getattr(args, "quiet", False),
        leaderboard_dir=args.leaderboard_dir,
        tasks=split(args.tasks),
        arms=split(args.arms),
        timeout=getattr(args, "timeout", None),
        emulated_bf16=getattr(args, "emulated_bf16", False),
    )


def cmd_study(args: argparse.Namespace) -> int:
    import json

    from . import study as st
    from .storage import check_storage, database_url
    from .studyfile import load

    study = load(args.file)
    opts = _study_options(args)
    if opts.storage:
        check_storage(database_url(opts.storage), create=args.action == "run")
    elif args.action == "copy" and not study.journal.is_file():
        raise BenchError(f"{study.journal}: no journal yet; `bench study run {args.file}` starts the study")
    if args.action == "copy":
        from .storage import copy_studies

        source = opts.storage or str(study.journal)
        copied = copy_studies(source, args.to, prefix=f"{study.name}.")
        print(f"copied {len(copied)} studies from {source} to {args.to}: {', '.join(copied) or 'none'}")
        return 0
    if args.action == "run":
        report_out = None
        if not args.no_report:  # a report folder that cannot be written is said before hours of training, not after
            from .store import check_folder_target

            report_out = check_folder_target(Path(args.report_out or default_report_out(study.path)), "--report-out")
        report = st.run(study, opts)
        if report_out is not None:
            from .report import ReportOptions, build_report

            out, notes = build_report(
                ReportOptions(
                    runs=[Path(opts.runs_root or "runs")],
                    out=report_out,
                    tasks=list(study.tasks),
                    leaderboards=Path(opts.leaderboard_dir),
                    data_root=opts.data_root,
                    verify_md5=opts.verify_md5,
                    storages=[st.storage_of(study, opts)],
                    runs_first=False,
                    study=study.path,
                )
            )
            print(f"report: {out}/index.md")
    else:
        report = st.status(study, opts)
    if getattr(args, "json", None):
        print(json.dumps(report, indent=1))
    else:
        for line in st.status_lines(report):
            print(line)
    return 0


def default_report_out(study: str | Path | None) -> Path:
    """Return where a report goes when no folder is given: ./reports, and a study's own ./reports/<stem> inside it."""
    from .report.build import OWN_FOLDERS

    if study is not None and Path(study).stem in OWN_FOLDERS:
        raise BenchError(f"a study named {Path(study).stem!r} would put its report in the report's own reports/{Path(study).stem}/ folder; rename the study file or give the report folder")
    return Path("reports") / Path(study).stem if study is not None else Path("reports")


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportOptions, build_report
    from .store import check_folder_target, clean_stale_folders
    from .tune import check_storage, database_url

    for url in args.storage or []:
        check_storage(database_url(url), create=False)  # a report reads studies; it never creates a database
    out_dir = check_folder_target(Path(args.out or default_report_out(args.study)), "-o")
    clean_stale_folders(out_dir.parent, out_dir.name)  # a killed report's staging folder
    if args.study is not None:
        # a study's results are its leaderboard entries; a run store only draws their curves
        runs = [Path(r) for r in args.runs] if args.runs else ([Path("runs")] if Path("runs").is_dir() else [])
        boards, runs_first = args.leaderboards or "leaderboards", False
    elif args.runs is not None:
        # runs passed explicitly are shown as they are: leaderboards only when asked for too, and never in their place
        runs, boards, runs_first = [Path(r) for r in args.runs], args.leaderboards, True
    else:
        runs, boards, runs_first = [Path("runs")] if Path("runs").is_dir() else [], args.leaderboards or "leaderboards", False
    opts = ReportOptions(
        runs=runs,
        out=out_dir,
        tasks=args.tasks,
        leaderboards=Path(boards) if boards is not None else None,
        data_root=args.data_root,
        verify_md5=not args.no_verify,
        storages=args.storage or [],
        runs_first=runs_first,
        study=Path(args.study) if args.study is not None else None,
    )
    out, written = build_report(opts)
    print(f"wrote {len(written)} files to {out}: {out / 'index.md'} shows every figure and table")
    return 0
