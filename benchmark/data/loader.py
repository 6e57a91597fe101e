"""A split held on the training device as one uint8 tensor, and the batches drawn from it.

The 28 px MedMNIST sets are tiny (all of ChestMNIST is 88 MB as uint8), so a whole split
lives on the device and a batch is an index into it: no Dataset, no per-sample PIL
transforms, no worker processes. Normalisation is the official ToTensor + Normalize(0.5, 0.5),
i.e. x / 127.5 - 1, done on the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..hparams import Bool, Choice
from ..lazy import lazy_import

torch = lazy_import("torch", globals())

PARAMS = {
    "batch_size": Choice(128, "training mini-batch size (official: 128 for 2D, 32 for 3D)", choices=(8, 16, 32, 64, 128, 256, 512), search=(32, 64, 128)),
    "as_rgb": Bool(False, "repeat the grayscale channel three times (the official script's --as_rgb)"),
}


@dataclass
class Batch:
    """A training mini-batch: normalised images, float targets and the samples' row indices in the split."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


class DeviceSplit:
    """One split's images (uint8) and labels (float32) resident on `device`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, *, as_rgb: bool = False) -> None:
        self.device = torch.device(device)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32)).to(self.device)
        self.labels_np = np.asarray(labels)
        self.as_rgb = as_rgb
        self.dims = images.ndim - 1
        # 2D batches channels-last, like 2D models under memory_format=auto (trainer.channels_last);
        # a 1-channel batch is laid out the same either way, so this only moves as_rgb batches
        self.channels_last = self.dims == 2

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def in_channels(self) -> int:
        """Return the number of channels a batch has (3 with as_rgb, else 1)."""
        return 3 if self.as_rgb else 1

    def inputs(self, index: torch.Tensor) -> torch.Tensor:
        """Return the normalised float images at `index`, shape (B, C, *spatial)."""
        x = self.images[index].unsqueeze(1).float().div_(127.5).sub_(1.0)
        if self.as_rgb:
            x = x.expand(-1, 3, *x.shape[2:])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        return x

    def batch(self, index: torch.Tensor) -> Batch:
        """Return the Batch of rows `index` (an int64 tensor on any device)."""
        index = index.to(self.device)
        return Batch(self.inputs(index), self.labels[index], index)

    def sequential(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Yield index tensors covering the split in order (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield torch.arange(start, min(start + batch_size, len(self)), device=self.device)


class ShuffleSampler:
    """Uniform shuffling, as the official DataLoader(shuffle=True): each sample once per epoch."""

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int) -> None:
        self.n = len(labels)
        self.batch_size = batch_size
        self.seed = seed

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        """Return the batches of `epoch` as index tensors; depends only on (seed, epoch)."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.n, generator=generator)
        batches = list(order.split(self.batch_size))
        # a batch of one breaks BatchNorm in training mode; drop such a tail
        if len(batches) > 1 and len(batches[-1]) < 2:
            batches.pop()
        return batches

    def steps_per_epoch(self) -> int:
        """Return the number of batches per epoch."""
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= 2 or full == 0 else 0)
