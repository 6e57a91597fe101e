"""Figures drawn from the task data files, for the tasks the report has results for: positive share per split, and the augmentation presets."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..errors import BenchError
from ..tasks import get_task, load_arrays, resolve_data_root
from .context import Loaded, Section
from .style import STYLE, legend_below, new_figure

SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


def _missing(flag: str, data_root: str | None, exc: BenchError) -> str:
    """Return why a task's data file could not be read, without naming the folder (a path of this machine)."""
    task = get_task(flag)
    if not (resolve_data_root(data_root) / task.filename()).is_file():
        return f"{task.title} left out: {task.filename()} is not under the data root"
    return f"{task.title} left out: {task.filename()} could not be read or is not the official file ({type(exc).__name__})"


def split_prevalence(
    binary: Mapping[str, Mapping[str, float]],
    multilabel: Mapping[str, tuple[Sequence[str], Mapping[str, np.ndarray]]] | None = None,
) -> Figure:
    """Return the positive share (%) of each split: one bar group per binary task, one per label for a multi-label task.

    `binary` maps task -> split -> positive share in [0, 1]; `multilabel` maps task ->
    (label names, split -> per-label shares).
    """
    multilabel = dict(multilabel or {})
    n_panels = (1 if binary else 0) + len(multilabel)
    widths = ([max(2.5, 0.9 * len(binary) + 1.0)] if binary else []) + [max(5.0, 0.42 * len(names) + 1.2) for names, _ in multilabel.values()]
    with plt.rc_context(STYLE):
        fig = new_figure((max(3.2, sum(widths)), 3.3))
        axes = fig.subplots(1, n_panels, squeeze=False, width_ratios=widths).ravel().tolist()
        panels: list[tuple[str, list[str], dict[str, np.ndarray], str]] = []
        if binary:
            tasks = list(binary)
            per_split = {s: np.array([binary[t].get(s, np.nan) for t in tasks]) for s in SPLIT_COLORS}
            panels.append(("binary tasks (label 1)", tasks, per_split, "task"))
        for task, (names, shares) in multilabel.items():
            panels.append((f"{task} (per label)", list(names), {s: np.asarray(v) for s, v in shares.items()}, "label"))
        for ax, (title, groups, per_split, xlabel) in zip(axes, panels):
            splits = [s for s in SPLIT_COLORS if s in per_split]
            width = 0.8 / len(splits)
            for j, split in enumerate(splits):
                x = np.arange(len(groups)) - 0.4 + width * (j + 0.5)
                ax.bar(x, 100 * per_split[split], width * 0.92, color=SPLIT_COLORS[split], label=split)
            tilt = len(groups) > 3 or xlabel == "label"
            ax.set_xticks(range(len(groups)), groups, rotation=35 if tilt else 0, ha="right" if tilt else "center")
            ax.set_ylabel("positive share (%)")
            ax.set_xlabel(xlabel)
            ax.set_title(title)
            ax.grid(axis="x", visible=False)
            top = np.nanmax([np.nanmax(v) for v in per_split.values()]) * 100
            ax.set_ylim(0, min(100, top * 1.15 + 1))
        legend_below(fig, [Patch(facecolor=c, label=s) for s, c in SPLIT_COLORS.items()], ncol=3)
    return fig


def prevalence(tasks: Sequence[str], data_root: str | None, verify_md5: bool) -> tuple[dict[str, dict[str, float]], dict[str, tuple[list[str], dict[str, np.ndarray]]], list[str], list[str]]:
    """Return (binary task -> split -> positive share, multi-label task -> (label names, split -> shares), tasks read, notes)."""
    binary: dict[str, dict[str, float]] = {}
    multi: dict[str, tuple[list[str], dict[str, np.ndarray]]] = {}
    read, notes = [], []
    for flag in tasks:
        task = get_task(flag)
        try:
            data = load_arrays(task, data_root, verify_md5=verify_md5, download=False, splits=("train", "val", "test"))
        except BenchError as exc:
            notes.append(_missing(flag, data_root, exc))
            continue
        read.append(flag)
        shares = {s: data.labels(s).mean(axis=0) for s in ("train", "val", "test")}
        if task.multilabel:
            names = [task.label_names.get(str(j), str(j)) for j in range(task.n_labels)]
            multi[task.title] = (names, shares)
        else:
            binary[task.title] = {s: float(v[0]) for s, v in shares.items()}
    return binary, multi, read, notes


def augmentation_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], column_titles: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Return a grid of grayscale images: one row per augmentation preset, one column per example (or view).

    Images are 2D arrays with values in [-1, 1] (the network's input scale), shown with a
    fixed grey scale so intensity presets are visible as such.
    """
    n_cols = max(len(images) for _, images in rows)
    size = 0.85
    with plt.rc_context(STYLE):
        fig = new_figure((1.3 + size * n_cols, 0.35 + size * len(rows) + (0.25 if column_titles else 0)))
        axes = fig.subplots(len(rows), n_cols, squeeze=False)
        for r, (name, images) in enumerate(rows):
            for c in range(n_cols):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c < len(images):
                    ax.imshow(np.asarray(images[c]), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
                if c == 0:
                    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
                if r == 0 and column_titles and c < len(column_titles):
                    ax.set_title(column_titles[c], fontsize=7)
        if title:
            fig.suptitle(title, fontsize=9)
    return fig


def prevalence_section(d: Loaded) -> Section:
    """Figure 4: positive share per split for each task with results (per label for ChestMNIST), from the data files."""
    sec = Section("Positive share per split (distribution shift)")
    binary, multi, read, notes = prevalence(d.tasks, d.opts.data_root, d.opts.verify_md5)
    sec.notes += notes
    if read:
        sec.files = d.save("split_prevalence", split_prevalence(binary, multi))
        sec.caption = (
            f"Share of positive labels (label 1) in the train, validation and test splits of {', '.join(d.titles[t] for t in read)}, "
            "the tasks with results, read from the data files (not from runs)" + (", per label for ChestMNIST" if multi else "") + "."
        )
    return sec


def _mid_slices(shape: Sequence[int]) -> list[tuple]:
    """Return index tuples for the middle slice of a volume along each of its three axes."""
    d, h, w = shape
    return [(d // 2, slice(None), slice(None)), (slice(None), h // 2, slice(None)), (slice(None), slice(None), w // 2)]


def augmentation_section(d: Loaded) -> Section:
    """Figure 7: every augmentation preset applied to a few training images (2D) and volumes (3D, mid-slices), of a task with results."""
    opts = d.opts
    sec = Section("Augmentation presets on training examples")
    try:
        from ..data.augment import PRESETS, Augmenter
    except ImportError:
        sec.notes.append("this harness version has no augmentation presets")
        return sec
    import torch

    from ..data import DeviceSplit

    drawn = []
    for dims in (2, 3):
        candidates = [t for t in d.tasks if get_task(t).dims == dims]
        if not candidates:
            continue
        for flag in candidates:
            task = get_task(flag)
            try:
                data = load_arrays(task, opts.data_root, verify_md5=opts.verify_md5, download=False, splits=("train",))
            except BenchError:
                continue
            n = 6 if dims == 2 else 2
            split = DeviceSplit(data.images("train")[:n], data.labels("train")[:n], torch.device("cpu"))
            x = split.inputs(torch.arange(len(split)))
            rows = []
            for preset in PRESETS.names():
                aug = Augmenter(preset, dims, seed=0)
                out = aug.images(x.clone(), seed=0) if aug.transform is not None else x
                images = out[:, 0].numpy()
                if dims == 2:
                    rows.append((preset, list(images)))
                else:
                    rows.append((preset, [v[s] for v in images for s in _mid_slices(v.shape)]))
            columns = None if dims == 2 else [f"vol {i + 1}, {p}" for i in range(len(split)) for p in ("axis-0", "axis-1", "axis-2")]
            sec.files += d.save(f"augmentation_{dims}d_{flag}", augmentation_grid(rows, columns, f"{task.title}, training split"))
            drawn.append(f"{task.title} ({'first 6 training images' if dims == 2 else 'mid-slices of the first 2 training volumes in three planes'})")
            break
        else:
            sec.notes.append(f"no data file of a {dims}D task with results found under the data root; {dims}D presets not drawn")
    if drawn:
        sec.caption = f"Each augmentation preset (rows; 'none' is the original) applied once with seed 0 to {'; '.join(drawn)}, on the network's [-1, 1] input scale."
    elif not sec.notes:
        sec.notes.append("no data file of a task with results found under the data root")
    return sec
