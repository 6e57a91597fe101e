"""The baseline the harness is timed against: data and evaluation as MedMNIST's official scripts do them.

MedMNIST/experiments (`MedMNIST2D/train_and_eval_pytorch.py`, `MedMNIST3D/train_and_eval_pytorch.py`)
wrap the npz arrays in the `medmnist` package's torch Dataset, which builds one PIL image (2D)
or one float64 array scaled to [0, 1] (3D) per sample, apply per-sample transforms
(2D: torchvision `ToTensor()` + `Normalize(mean=[.5], std=[.5])`; 3D: `Transform3D()`, a cast
to float32), batch them with a `DataLoader` (no worker processes), run the model in float32,
read the loss on the host every step, and after each training epoch evaluate the model over
the training split (a second, unshuffled loader), the validation split and the test split.

This module is kept only as the baseline for `bench throughput`; training runs never use it.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator

import numpy as np
import torch
from medmnist.dataset import MedMNIST2D, MedMNIST3D
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from . import metrics
from .data import Batch
from .methods.base import Method, StepContext


class _ArraysMixin:
    """Feeds medmnist's own `__getitem__` from arrays already in memory.

    `MedMNIST.__init__` re-reads the npz from a root folder and `__len__` asserts the official
    sample count (which synthetic test files do not have), so both are replaced; the per-sample
    work, `__getitem__`, is the package's own.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Any], Any] | None, as_rgb: bool) -> None:
        self.imgs = images
        self.labels = labels
        self.transform = transform
        self.target_transform = None
        self.as_rgb = as_rgb

    def __len__(self) -> int:
        return len(self.imgs)


class Official2D(_ArraysMixin, MedMNIST2D):
    """medmnist's 2D Dataset: one PIL image per sample, converted to RGB with as_rgb."""


class Official3D(_ArraysMixin, MedMNIST3D):
    """medmnist's 3D Dataset: one (C, 28, 28, 28) float64 array in [0, 1] per sample."""


class Transform3D:
    """The official 3D script's `utils.Transform3D()` without shape augmentation: a cast to float32.

    Hand-written because it lives in the MedMNIST/experiments repository, not in a package.
    """

    def __call__(self, voxel: np.ndarray) -> np.ndarray:
        return voxel.astype(np.float32)


class _WithIndex(Dataset):
    """Adds the row index to each sample, for methods that keep per-sample state (the official loop has none)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        image, target = self.dataset[index]
        return image, target, index


def official_transform(dims: int) -> Callable[[Any], Any]:
    """Return the official scripts' per-sample transform without augmentation for 2D or 3D data."""
    if dims == 2:
        return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=[0.5], std=[0.5])])
    return Transform3D()


def official_dataset(images: np.ndarray, labels: np.ndarray, *, as_rgb: bool = False) -> Dataset:
    """Return medmnist's Dataset over `images` (uint8, (N, 28, 28) or (N, 28, 28, 28)) with the official transform."""
    dims = images.ndim - 1
    cls = Official2D if dims == 2 else Official3D
    return cls(images, labels, official_transform(dims), as_rgb)


def train_loader(dataset: Dataset, batch_size: int, seed: int, workers: int = 0) -> DataLoader:
    """Return the official training loader (shuffled) yielding (images, targets, index)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(_WithIndex(dataset), batch_size=batch_size, shuffle=True, num_workers=workers, generator=generator)


def eval_loader(dataset: Dataset, batch_size: int, workers: int = 0) -> DataLoader:
    """Return the official evaluation loader: unshuffled, at the training batch size."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


class ReferenceTrainer:
    """Drives `method` over an official DataLoader the way the official loop does (float32, loss read every step)."""

    def __init__(self, model: torch.nn.Module, method: Method, loader: DataLoader, device: torch.device) -> None:
        self.model = model
        self.method = method
        self.loader = loader
        self.device = torch.device(device)
        # a second stream of batches for methods that draw one (compositional training)
        self._extra: Iterator[Any] = itertools.chain.from_iterable(loader for _ in itertools.count())
        self.ctx = StepContext(forward=self.model, next_batch=lambda: self._batch(next(self._extra)))

    def _batch(self, item: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Batch:
        images, targets, index = item
        return Batch(images.to(self.device).float(), targets.to(self.device).float(), index.to(self.device))

    def train(self, max_steps: int | None = None) -> tuple[int, int, list[float]]:
        """Run one epoch of the loader (or its first `max_steps` batches); return (steps, images, losses)."""
        self.model.train()
        steps, images, losses = 0, 0, []
        for item in self.loader:
            loss = self.method.train_step(self._batch(item), self.ctx)
            losses.append(loss.item())  # the official loop's total_loss.append(loss.item()): a host sync per step
            steps += 1
            images += len(item[0])
            if max_steps is not None and steps >= max_steps:
                break
        return steps, images, losses


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, labels: np.ndarray, device: torch.device) -> dict[str, float]:
    """Return {'auc', 'acc'} of `model` over `loader`, as the official `test()` computes them per epoch.

    The official loop runs under no_grad in float32, moves each batch to the device, applies the
    sigmoid on the device, concatenates the scores and evaluates them on the host.
    """
    model.eval()
    scores = []
    for images, _targets in loader:
        scores.append(torch.sigmoid(model(images.to(device).float())))
    y_score = torch.cat(scores).cpu().numpy()
    model.train()
    return {"auc": metrics.auc(labels, y_score), "acc": metrics.acc(labels, y_score)}
