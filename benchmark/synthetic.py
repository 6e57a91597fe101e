"""Small synthetic task files in the official npz format, for tests and for trying the harness offline.

The images carry a weak, learnable signal: positives (per label) get a brighter blob at a
label-specific place, on top of uniform noise. Label prevalence follows the real tasks'
imbalance (about 0.7 positive for the binary 2D tasks, 0.2 for 3D, a few percent per label
for ChestMNIST) so samplers and priors are exercised.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .store import atomic_write_bytes
from .tasks import SPLITS, Task

# a 3D ResNet-18 training step costs about a second of one CPU core per volume, so the 3D sets are kept tiny
DEFAULT_SIZES = {2: {"train": 96, "val": 32, "test": 32}, 3: {"train": 8, "val": 4, "test": 4}}


def synthetic_arrays(task: Task, sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Return the six arrays of a synthetic file for `task` (uint8 images, int labels of shape (N, L))."""
    rng = np.random.default_rng(seed)
    sizes = sizes or DEFAULT_SIZES[task.dims]
    prevalence = 0.1 if task.multilabel else (0.7 if task.dims == 2 else 0.3)
    shape = task.image_shape
    centres = rng.integers(6, 22, size=(task.n_labels, task.dims))
    grid = np.stack(np.meshgrid(*[np.arange(28)] * task.dims, indexing="ij"), axis=-1)
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        n = sizes[split]
        labels = (rng.random((n, task.n_labels)) < prevalence).astype(np.uint8)
        # every split holds both classes of every label, so AUC is defined
        labels[0, :], labels[1, :] = 1, 0
        images = rng.integers(0, 120, size=(n, *shape)).astype(np.float32)
        for j in range(task.n_labels):
            blob = np.exp(-((grid - centres[j]) ** 2).sum(-1) / 18.0) * 110.0
            images[labels[:, j] == 1] += blob
        arrays[f"{split}_images"] = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    return arrays


def write_synthetic(task: Task, root: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write `<root>/<flag>.npz` with synthetic data and return its path (its MD5 is not the official one)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **synthetic_arrays(task, sizes, seed))
    path = Path(root) / task.filename()
    atomic_write_bytes(path, buffer.getvalue())
    return path
