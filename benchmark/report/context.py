"""What every part of the report is handed: the options, everything loaded once, and a section of index.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import style
from .runs import Group, Run
from .selection import Entry


@dataclass
class Section:
    """One figure of index.md: its title, caption, files and notes (or why it was left out)."""

    title: str
    caption: str = ""
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportOptions:
    """What `bench report` was asked for.

    `runs`: run stores read together (none: the leaderboards alone). `leaderboards`: the folder of
    `<task>.json` files, or None. `runs_first`: the runs were passed explicitly, so a method's run
    group is never replaced by a leaderboard entry (else the leaderboard entry is preferred).
    `study`: a study file; the tables then show its final entries alone (the run store only
    gives their curves).
    """

    runs: Path | list[Path]
    out: Path
    tasks: list[str] | None = None
    leaderboards: Path | None = None
    data_root: str | None = None
    verify_md5: bool = True
    storages: list[str] = field(default_factory=list)
    runs_first: bool = True
    study: Path | None = None  # a study file: report its final results (see selection.py) and its levers table


@dataclass
class Loaded:
    """Everything a figure or table is drawn from, loaded once: runs, groups, the selected entries, order and colours."""

    opts: ReportOptions
    folder: Path  # where figures go (inside the staging folder)
    runs: list[Run]
    groups: list[Group]
    entries: dict[tuple[str, str], Entry]
    order: list[str]  # the tasks asked for, in study order
    tasks: list[str]  # those of them with results
    methods: list[str]  # in colour (registry) order
    colors: dict[str, str]
    titles: dict[str, str]
    study: Any = None  # the StudyFile reported on, or None

    @property
    def roots(self) -> list[Path]:
        return roots_of(self.opts)

    def save(self, name: str, fig: Any) -> list[str]:
        """Write a figure as PNG and PDF; return their paths relative to the report."""
        return [f"figures/{p.name}" for p in style.save(fig, self.folder, name)]


def roots_of(opts: ReportOptions) -> list[Path]:
    """Return the run stores of the options as a list."""
    return [Path(opts.runs)] if isinstance(opts.runs, (str, Path)) else [Path(r) for r in opts.runs]


def runs_phrase(groups: Iterable[Group]) -> str:
    """Return 'N runs in K selected configurations (listed under Sources)' for a caption."""
    gs = list(groups)
    n = sum(len(g.runs) for g in gs)
    return f"{n} run{'s' if n != 1 else ''} in {len(gs)} selected configuration{'s' if len(gs) != 1 else ''} (listed under Sources)"
