"""Which training rows make up each batch: uniform shuffling, or stratified batches with positives oversampled.

`sampling_rate` r = 0 keeps the official uniform shuffling (`ShuffleSampler`). r > 0 builds
every batch from a fixed number of positive and negative rows, as LibAUC's DualSampler does:
round(s * B) positives and the rest negatives, where s = max(r, training prevalence). So
positives are oversampled up to r but never undersampled: a task whose positive share already
exceeds r (BreastMNIST, 73 % positive) gets stratified batches at its own share. Every batch
then holds at least one positive and one negative, which the pairwise AUC losses need.

Unlike DualSampler, an epoch keeps the uniform sampler's number of batches (ceil(N / B)), so
epoch-based schedules (decay at 50 % and 75 %) mean the same thing with and without
oversampling. Each class is drawn from its own stream of fresh permutations (without
replacement until the class is exhausted, then a new permutation), so the minority class is
repeated as evenly as possible.

Multi-label tasks: a row counts as positive if any of its labels is positive; each label's
positive share under this sampler is computed exactly and handed to the methods as the prior.

`build_sampler` returns the sampler and that prior: the positive share, per label, of the
distribution batches are drawn from (the AUC-M / AUC-S / CT objectives use it as p).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BenchError
from ..hparams import Float
from ..lazy import lazy_import
from .loader import ShuffleSampler

torch = lazy_import("torch", globals())

PARAMS = {
    "sampling_rate": Float(
        0.0,
        "positive share per batch: 0 = uniform shuffling (official); r > 0 = stratified batches "
        "with max(r, prevalence) positives (oversampling, as LibAUC's DualSampler)",
        search=(0.0, 0.5),
        minimum=0.0,
        maximum=0.95,
    ),
}


def positive_rows(labels: np.ndarray) -> np.ndarray:
    """Return a boolean mask of rows with at least one positive label."""
    labels = np.asarray(labels).reshape(len(labels), -1)
    return (labels == 1).any(axis=1)


class PositiveOversampler:
    """Stratified batches of `n_pos` positive and `batch_size - n_pos` negative rows."""

    def __init__(self, labels: np.ndarray, batch_size: int, sampling_rate: float, seed: int) -> None:
        positive = positive_rows(labels)
        self.pos = torch.from_numpy(np.flatnonzero(positive))
        self.neg = torch.from_numpy(np.flatnonzero(~positive))
        self.n = len(positive)
        if len(self.pos) == 0 or len(self.neg) == 0:
            raise BenchError("sampling_rate > 0 needs both positive and negative training rows; this split has only one class")
        if batch_size < 2:
            raise BenchError("sampling_rate > 0 needs batch_size >= 2 (one positive and one negative per batch)")
        self.batch_size = batch_size
        self.seed = seed
        share = max(float(sampling_rate), len(self.pos) / self.n)
        self.n_pos = min(max(1, round(share * batch_size)), batch_size - 1)
        self.n_neg = batch_size - self.n_pos

    def steps_per_epoch(self) -> int:
        """Return the number of batches per epoch: as many as uniform shuffling gives (ceil(N / B))."""
        return max(1, math.ceil(self.n / self.batch_size))

    @staticmethod
    def _stream(rows: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
        # fresh permutations back to back: no row repeats before every row of its class was drawn
        chunks, have = [], 0
        while have < count:
            chunks.append(rows[torch.randperm(len(rows), generator=generator)])
            have += len(rows)
        return torch.cat(chunks)[:count]

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        """Return the batches of `epoch` as index tensors (positives first in each); depends only on (seed, epoch)."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        steps = self.steps_per_epoch()
        pos = self._stream(self.pos, steps * self.n_pos, generator).view(steps, self.n_pos)
        neg = self._stream(self.neg, steps * self.n_neg, generator).view(steps, self.n_neg)
        return list(torch.cat([pos, neg], dim=1).unbind(0))

    def prior(self, labels: np.ndarray) -> np.ndarray:
        """Return each label's positive share under this sampler: n_pos / B * P(label = 1 | positive row)."""
        labels = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
        return self.n_pos / self.batch_size * labels[self.pos.numpy()].mean(axis=0)


def build_sampler(labels: np.ndarray, batch_size: int, sampling_rate: float, seed: int) -> tuple[ShuffleSampler | PositiveOversampler, np.ndarray]:
    """Return (sampler, prior): the batch sampler for `sampling_rate` and the positive share per label it draws."""
    labels2d = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    if sampling_rate <= 0:
        return ShuffleSampler(labels, batch_size, seed), labels2d.mean(axis=0)
    sampler = PositiveOversampler(labels, batch_size, sampling_rate, seed)
    return sampler, sampler.prior(labels)
