"""Validation-set reconstruction: which training rows fit a model and which select it.

Every strategy works on the pool of the official train rows followed by the official val
rows (row i < n_train is train row i, row n_train + j is val row j). The test split is
never part of the pool: the functions here never see it.

- `official`: the given split (fit on the train rows, select on the val rows).
- `resplit`:  the pool split again, stratified, `val_fraction` of it for validation.
- `kfold`:    `folds` stratified folds over the pool; fold k validates the model fitted on the others.
- `refit`:    select on the official split, then refit on the whole pool (the runner does the refit).

The splits depend only on the labels (so on the task) and `split_seed`, never on a
hyperparameter or the training seed, so every configuration compared on a task sees the
same validation rows. Stratification is by label for binary tasks; for multi-label tasks by
the combination of labels, with combinations too rare to be spread over the splits pooled
into one stratum, which keeps every label's positive share close to the pool's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BenchError
from ..hparams import Choice, Float, Int

STRATEGIES = ("official", "resplit", "kfold", "refit")

# No search ranges: tuning these would compare configurations on different validation data.
PARAMS = {
    "val_strategy": Choice("official", "how the validation set is built: official, resplit, kfold or refit (see `bench splits`)", choices=STRATEGIES),
    "val_fraction": Float(0.2, "resplit: share of train+val held out for validation", minimum=0.05, maximum=0.5),
    "split_seed": Int(0, "seed of resplit / kfold splits (independent of the training seed)", minimum=0),
    "folds": Int(5, "kfold: number of folds (= models in the ensemble)", minimum=2, maximum=20),
}


@dataclass(frozen=True)
class Fold:
    """One (fit, select) pair of row sets, as sorted indices into the train+val pool."""

    name: str
    train: np.ndarray
    val: np.ndarray

    def digest(self) -> str:
        """Return a short hash of the validation rows (equal digests: identical validation data)."""
        return hashlib.sha256(np.asarray(self.val, dtype=np.int64).tobytes()).hexdigest()[:12]


def stratum(labels: np.ndarray, min_count: int) -> np.ndarray:
    """Return one stratum id per row, each stratum holding at least `min_count` rows where possible.

    Binary tasks: the label. Multi-label tasks: the label combination; a row whose combination
    is rarer than `min_count` falls back to its rarest positive label (so each label's
    positives are still spread over the splits), and rows rare even then share one stratum.
    """
    labels = np.asarray(labels).reshape(len(labels), -1).astype(np.int64)
    _, combo, counts = np.unique(labels, axis=0, return_inverse=True, return_counts=True)
    combo = combo.reshape(-1)
    key = combo.copy()
    rare = counts[combo] < min_count
    if rare.any():
        n_combos = len(counts)
        prevalence = labels.sum(axis=0)
        # the row's rarest positive label (rows without positives are never rare: all-zero is common)
        masked = np.where(labels[rare] == 1, prevalence, np.iinfo(np.int64).max)
        fallback = n_combos + masked.argmin(axis=1)
        key[rare] = fallback
        values, sizes = np.unique(key, return_counts=True)
        small = np.isin(key, values[sizes < min_count])
        key[small] = -1
        if 0 < small.sum() < min_count:  # a pooled stratum too small to split joins the largest one
            key[small] = np.bincount(key[~small]).argmax()
    return key


def pool_size(n_train: int, n_val: int) -> int:
    """Return the number of rows of the train+val pool."""
    return n_train + n_val


def make_folds(strategy: str, train_labels: np.ndarray, val_labels: np.ndarray, *, val_fraction: float = 0.2, split_seed: int = 0, folds: int = 5) -> list[Fold]:
    """Return the (fit, select) row sets of `strategy` over the pool of the train and val rows."""
    n_train, n_val = len(train_labels), len(val_labels)
    if strategy in ("official", "refit"):
        return [Fold("official", np.arange(n_train), np.arange(n_train, n_train + n_val))]
    labels = np.concatenate([np.asarray(train_labels).reshape(n_train, -1), np.asarray(val_labels).reshape(n_val, -1)])
    rows = np.arange(len(labels))
    from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

    try:
        if strategy == "resplit":
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=int(round(val_fraction * len(labels))), random_state=split_seed)
            fit, hold = next(splitter.split(rows, stratum(labels, 2)))
            return [Fold("resplit", np.sort(fit), np.sort(hold))]
        if strategy == "kfold":
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=split_seed)
            pairs = splitter.split(rows, stratum(labels, folds))
            return [Fold(f"fold{k + 1}", np.sort(fit), np.sort(hold)) for k, (fit, hold) in enumerate(pairs)]
    except ValueError as exc:  # scikit-learn's message says which size does not fit
        raise BenchError(f"cannot build the {strategy} split of {len(labels)} train+val rows: {exc}") from None
    raise BenchError(f"unknown val_strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")


def folds_for(config: dict[str, Any], train_labels: np.ndarray, val_labels: np.ndarray) -> list[Fold]:
    """Return the folds a run's configuration asks for; only the split settings are read."""
    return make_folds(
        config.get("val_strategy", "official"),
        train_labels,
        val_labels,
        val_fraction=config.get("val_fraction", 0.2),
        split_seed=config.get("split_seed", 0),
        folds=config.get("folds", 5),
    )


def positive_share(labels: np.ndarray) -> np.ndarray:
    """Return the positive share of each label column (NaN for an empty set)."""
    labels = np.asarray(labels).reshape(len(labels), -1)
    return labels.mean(axis=0) if len(labels) else np.full(labels.shape[1], np.nan)


def prevalence_rows(config: dict[str, Any], train_labels: np.ndarray, val_labels: np.ndarray, test_labels: np.ndarray | None) -> list[dict[str, Any]]:
    """Return one row per set a run of `config` uses: its name, size and positive share per label.

    `refit` lists the official split it selects on and then the pool it refits on; the test
    split, when given, is listed last for comparison (no strategy uses it).
    """
    pool = np.concatenate([np.asarray(train_labels), np.asarray(val_labels)])
    rows: list[dict[str, Any]] = []

    def add(name: str, labels: np.ndarray) -> None:
        rows.append({"set": name, "n": len(labels), "share": positive_share(labels)})

    for fold in folds_for(config, train_labels, val_labels):
        prefix = "" if fold.name in ("official", "resplit") else f"{fold.name} "
        add(f"{prefix}train", pool[fold.train])
        add(f"{prefix}val", pool[fold.val])
    if config.get("val_strategy") == "refit":
        add("refit train+val", pool)
    if test_labels is not None:
        add("test", np.asarray(test_labels))
    return rows
