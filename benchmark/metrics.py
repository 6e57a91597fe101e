"""Evaluation metrics, computed the way the MedMNIST paper computes them.

AUC: scikit-learn's roc_auc_score on the positive-class score; for multi-label tasks the
mean of the per-label AUCs. ACC: the score thresholded at 0.5; for multi-label tasks the
mean of the per-label accuracies (MedMNIST's getACC).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Return the logistic function of `logits`, computed stably."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.where(logits >= 0, 1.0 / (1.0 + np.exp(-np.abs(logits))), np.exp(-np.abs(logits)) / (1.0 + np.exp(-np.abs(logits))))


def _as_2d(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.reshape(len(array), -1)


def per_label_auc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Return one ROC AUC per label column; NaN where a column holds a single class."""
    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    aucs = np.full(y_true.shape[1], np.nan)
    for j in range(y_true.shape[1]):
        if len(np.unique(y_true[:, j])) == 2:
            aucs[j] = roc_auc_score(y_true[:, j], y_score[:, j])
    return aucs


def auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Return the task AUC: binary ROC AUC, or the mean of per-label AUCs (labels with one class skipped)."""
    aucs = per_label_auc(y_true, y_score)
    if np.all(np.isnan(aucs)):
        return float("nan")
    return float(np.nanmean(aucs))


def acc(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Return the accuracy of `y_score > threshold`, averaged over labels for multi-label tasks."""
    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    return float(np.mean((y_score > threshold) == (y_true == 1)))


def evaluate(y_true: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Return {'auc', 'acc'} for the task's labels and the model's logits (scores are their sigmoid)."""
    scores = sigmoid(logits)
    return {"auc": auc(y_true, scores), "acc": acc(y_true, scores)}
