"""The task adapter: a task card (tasks/<flag>.toml) plus its MedMNIST npz file.

A `Task` knows its shape, label kind, official file and reference numbers; `load_arrays`
finds the file (data root, download), checks its MD5 and returns the six arrays; the
official evaluation (`Task.evaluate`) lives in `metrics.py` and is called from here so the
harness never defines what a task measures anywhere else.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BenchError
from .registry import Registry

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"
SPLITS = ("train", "val", "test")
ARRAY_KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))


@dataclass(frozen=True)
class Task:
    """One MedMNIST task as its card describes it."""

    flag: str
    title: str
    dims: int
    channels: int
    labels: str  # "binary" or "multilabel"
    n_labels: int
    architecture: str
    md5: str
    url: str
    splits: dict[str, int]
    label_names: dict[str, str]
    reference: dict[str, Any]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def multilabel(self) -> bool:
        """Return whether the task has several independent binary labels."""
        return self.labels == "multilabel"

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Return the shape of one image without channels: (28, 28) or (28, 28, 28)."""
        return (28,) * self.dims

    def filename(self) -> str:
        """Return the official file name, `<flag>.npz`."""
        return f"{self.flag}.npz"


def _load_card(path: Path) -> Task:
    with path.open("rb") as handle:
        card = tomllib.load(handle)
    return Task(
        flag=card["flag"],
        title=card["title"],
        dims=int(card["dims"]),
        channels=int(card["channels"]),
        labels=card["labels"],
        n_labels=int(card["n_labels"]),
        architecture=card["architecture"],
        md5=card["md5"],
        url=card["url"],
        splits=dict(card["splits"]),
        label_names=dict(card.get("label_names", {})),
        reference=dict(card.get("reference", {})),
        defaults=dict(card.get("defaults", {})),
    )


TASKS: Registry[Task] = Registry("task")
if not TASKS_DIR.is_dir():  # pragma: no cover - only on a broken install
    raise RuntimeError(f"task cards not found at {TASKS_DIR}; install the project with `pip install -e .`")
for _card in sorted(TASKS_DIR.glob("*.toml")):
    _task = _load_card(_card)
    TASKS.add(_task.flag, _task)
# Study order: the 2D tasks, then the 3D ones, as in the MedMNIST paper.
ORDER = ["breastmnist", "pneumoniamnist", "chestmnist", "nodulemnist3d", "adrenalmnist3d", "vesselmnist3d", "synapsemnist3d"]
TASKS._items = {name: TASKS._items[name] for name in ORDER + [n for n in TASKS._items if n not in ORDER]}


def get_task(flag: str) -> Task:
    """Return the task registered as `flag` (BenchError listing the valid flags on a miss)."""
    return TASKS.get(flag)


def data_root_source(data_root: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """Return (the data folder, where it came from): the argument, else $BENCH_DATA_ROOT, else medmnist's default root."""
    if data_root:
        return Path(data_root).expanduser(), "--data-root"
    env = os.environ.get("BENCH_DATA_ROOT")
    if env:
        return Path(env).expanduser(), "$BENCH_DATA_ROOT"
    # medmnist.info.DEFAULT_ROOT, written out: importing medmnist imports torch (and creates the folder)
    return Path.home() / ".medmnist", "the medmnist package's default"


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> Path:
    """Return the data folder: the argument, else $BENCH_DATA_ROOT, else medmnist's default root."""
    return data_root_source(data_root)[0]


def file_md5(path: Path) -> str:
    """Return the hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _where_to_put(task: Task, root: Path) -> str:
    return (
        f"Download it from {task.url} (MD5 {task.md5}) and put it at {root / task.filename()}, "
        f"or pass --data-root DIR / set BENCH_DATA_ROOT to the folder that holds it."
    )


def _try_download(task: Task, root: Path) -> bool:
    """Ask the medmnist package to download the file; return whether it now exists."""
    try:
        import medmnist
        from medmnist import INFO

        root.mkdir(parents=True, exist_ok=True)
        cls = getattr(medmnist, INFO[task.flag]["python_class"])
        cls(split="train", root=str(root), download=True)
    except Exception:
        return False
    return (root / task.filename()).is_file()


@dataclass(frozen=True)
class TaskData:
    """The six arrays of a task file, with the file's path and MD5."""

    task: Task
    arrays: dict[str, np.ndarray]
    path: Path
    md5: str
    md5_verified: bool

    def images(self, split: str) -> np.ndarray:
        """Return the uint8 images of `split`, shape (N, *image_shape)."""
        return self.arrays[f"{split}_images"]

    def labels(self, split: str) -> np.ndarray:
        """Return the labels of `split` as int64 of shape (N, n_labels)."""
        return self.arrays[f"{split}_labels"]


def load_arrays(
    task: Task,
    data_root: str | os.PathLike[str] | None = None,
    *,
    verify_md5: bool = True,
    download: bool = True,
    splits: tuple[str, ...] = SPLITS,
) -> TaskData:
    """Return the task's arrays for `splits`, after checking the file's MD5 against the card.

    Only the requested splits are read from the npz (lazily loaded), so a caller that asks
    for train and val never touches the test arrays.
    """
    root = resolve_data_root(data_root)
    path = root / task.filename()
    if not path.is_file() and download:
        _try_download(task, root)
    if not path.is_file():
        raise BenchError(f"{task.filename()} not found in {root}. {_where_to_put(task, root)}")
    md5 = file_md5(path)
    if verify_md5 and md5 != task.md5:
        raise BenchError(
            f"{path} has MD5 {md5}, not the official {task.md5}: the file is corrupt or not the "
            f"28 px MedMNIST release. {_where_to_put(task, root)} "
            "(For a file you built yourself, pass --no-verify.)"
        )
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for split in splits:
                for kind in ("images", "labels"):
                    key = f"{split}_{kind}"
                    if key not in npz.files:
                        raise BenchError(f"{path} has no array {key!r}; it is not a MedMNIST file")
                    arrays[key] = npz[key]
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"{path} could not be read as an npz file ({exc}). {_where_to_put(task, root)}") from None
    for split in splits:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 1 + task.dims or images.shape[1:] != task.image_shape:
            raise BenchError(
                f"{path}: {split}_images has dtype {images.dtype} and shape {images.shape}; "
                f"expected uint8 (N, {', '.join(map(str, task.image_shape))})"
            )
        if len(images) == 0:
            raise BenchError(f"{path}: {split}_images is empty; every split needs at least one image")
        # checked before any conversion: a cast would turn 0.4 into 0 and "1" into 1
        if labels.ndim == 0 or labels.dtype.kind not in "biuf":
            raise BenchError(f"{path}: {split}_labels has dtype {labels.dtype} and shape {labels.shape}; expected an array of 0/1 integers")
        if labels.size != len(images) * task.n_labels or len(labels) != len(images):
            raise BenchError(f"{path}: {split}_labels has shape {labels.shape}; expected ({len(images)}, {task.n_labels})")
        labels = labels.reshape(len(labels), -1)
        if not np.isin(labels, (0, 1)).all():
            raise BenchError(f"{path}: {split}_labels holds values other than 0 and 1")
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    return TaskData(task=task, arrays=arrays, path=path, md5=md5, md5_verified=md5 == task.md5)
