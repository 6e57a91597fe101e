"""`bench report` end to end: load, select, draw every figure, write the tables and index.md into a staging folder, swap it in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from ..errors import BenchError
from ..tasks import TASKS, get_task
from . import ablation, bars, curves, data_figures, optuna_figures, robustness_section, roc, style
from .context import Loaded, ReportOptions, Section, roots_of
from .index import MARKER, write_index
from .levers import lever_table
from .runs import group_runs, load_runs
from .selection import build_entries, load_leaderboards
from .tables import write_tables

# the report's figures in their order in index.md; each returns its index.md section
FIGURES: list[Callable[[Loaded], Section]] = [
    curves.section,
    bars.section,
    roc.section,
    data_figures.prevalence_section,
    optuna_figures.section,
    ablation.section,
    data_figures.augmentation_section,
    robustness_section.section,
]


OWN_FOLDERS = ("figures", "tables")  # what every report writes; a study report of either name could not be kept inside one


def build_report(opts: ReportOptions) -> tuple[Path, list[str]]:
    """Write the report into `opts.out` (replacing a previous report there); return (out folder, list of files written)."""
    study = None
    if opts.study is not None:
        from ..studyfile import load

        study = load(opts.study)  # BenchError for a missing or wrong file
    tasks_filter = _check_tasks(opts.tasks or (list(study.tasks) if study else None))
    out = Path(opts.out)
    _check_out(out)
    kept = nested_reports(out)  # study reports inside `out`, carried into the new one
    if clash := [d.name for d in kept if d.name in OWN_FOLDERS]:
        raise BenchError(f"{out / clash[0]} holds a report but is the name of the report's own {clash[0]}/ folder; move it (a study report goes to reports/<study stem>)")
    order = tasks_filter or TASKS.names()
    roots = roots_of(opts)
    runs, load_notes = load_runs(roots, tasks_filter, allow_empty=opts.leaderboards is not None and not (opts.runs_first and roots))
    groups = group_runs(runs)
    boards, board_notes = load_leaderboards(opts.leaderboards, order)
    entries = build_entries(groups, boards, runs_first=opts.runs_first, study=study)
    if not entries and study is not None:
        raise BenchError(f"nothing to report: no final run of {opts.study} is on the leaderboards in {opts.leaderboards}; `bench study run {opts.study}` makes them")
    if not entries:
        where = f"the leaderboards in {opts.leaderboards}" if opts.leaderboards is not None else "no leaderboards"
        stores = ", ".join(str(r) for r in roots) or "no run store"
        raise BenchError(f"nothing to report: {stores} and {where} hold no results for the tasks asked; train with `bench run` first or pass --runs DIR")
    tasks = [t for t in order if any(k[0] == t for k in entries)]
    colors = style.method_colors(k[1] for k in entries)
    methods = [m for m in colors if any(k[1] == m for k in entries)]
    missing = [get_task(t).title for t in order if t not in tasks]

    staging = out.parent / f".staging-{out.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    for folder in OWN_FOLDERS:
        (staging / folder).mkdir(parents=True)
    data = Loaded(opts, staging / "figures", runs, groups, entries, order, tasks, methods, colors, {t: get_task(t).title for t in TASKS}, study)
    try:
        sections = [section(data) for section in FIGURES]
        extra = {}
        if study is not None and (levers := lever_table(boards, study, tasks)) is not None:
            extra["levers"] = (levers, "The generalization levers: each beside its base arm, same seeds and budget.", "tab:levers", (3,))
        tables = write_tables(staging / "tables", entries, tasks, methods, extra)
        write_index(staging, data, missing, load_notes + board_notes, sections, tables)
        if kept:
            with (staging / "index.md").open("a") as index:
                index.write("\n## Study reports\n\nBuilt apart by `bench report --study` (or `bench study run`) into this folder, and kept when it is rebuilt:\n\n")
                index.writelines(f"- [{d.name}]({d.name}/index.md)\n" for d in kept)
        written = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        _swap(staging, out, [d.name for d in kept])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out, written


def _check_tasks(tasks: Sequence[str] | None) -> list[str] | None:
    if not tasks:
        return None
    flags = [t.strip() for item in tasks for t in item.split(",") if t.strip()]
    for flag in flags:
        get_task(flag)  # BenchError listing the valid flags
    return [t for t in TASKS.names() if t in flags]


def _check_out(out: Path) -> None:
    if out.is_file():
        raise BenchError(f"{out} is a file; -o needs a folder")
    if out.is_dir() and any(out.iterdir()):
        index = out / "index.md"
        # a folder holding nothing but study reports (and the staging folders of those being built) is a report folder too
        names = {p.name for p in out.iterdir() if not p.name.startswith((".staging-", ".old-"))}
        only_reports = bool(names) and names <= {d.name for d in nested_reports(out)}
        if not only_reports and not (index.is_file() and MARKER in index.read_text(errors="replace")):
            raise BenchError(f"{out} exists and does not hold a previous `bench report`; choose an empty or new folder with -o")


def nested_reports(out: Path) -> list[Path]:
    """Return the subfolders of the report folder `out` that hold reports of their own (a study's, in ./reports/<study>)."""
    if not out.is_dir():
        return []
    return sorted(d for d in out.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / "index.md").is_file() and MARKER in (d / "index.md").read_text(errors="replace"))


def _swap(staging: Path, out: Path, keep: Sequence[str] = ()) -> None:
    """Move the finished report into place, replacing an older report (its nested reports `keep` move into the new one), so no reader ever sees half of one."""
    old = None
    if out.exists():
        old = out.parent / f".old-{out.name}-{os.getpid()}"
        os.replace(out, old)
        moved: list[str] = []
        try:
            for name in keep:
                os.replace(old / name, staging / name)
                moved.append(name)
            os.replace(staging, out)
        except BaseException:  # put the previous report back whole, study reports included
            for name in moved:
                os.replace(staging / name, old / name)
            os.replace(old, out)
            raise
    else:
        os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
