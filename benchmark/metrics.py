"""Evaluation metrics, computed the way the MedMNIST paper computes them.

AUC: scikit-learn's roc_auc_score on the positive-class score; for multi-label tasks the
mean of the per-label AUCs. ACC: the score thresholded at 0.5; for multi-label tasks the
mean of the per-label accuracies (MedMNIST's getACC). pAUC: the two-way partial AUC of the
tpAUC papers, in the region FPR <= 0.3 and TPR >= 0.7 (LibAUC's pauc_roc_score), mean over labels.
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


def two_way_pauc(y_true: np.ndarray, y_score: np.ndarray, max_fpr: float = 0.3, min_tpr: float = 0.7) -> float:
    """Return the two-way partial AUC of one label: the ROC area with FPR <= max_fpr and TPR >= min_tpr, normalised.

    Empirical form of Yang et al. (ICML 2021) as in LibAUC's `pauc_roc_score`: the ROC AUC
    between the round(n+ (1 - min_tpr)) lowest-scored positives and the round(n- max_fpr)
    highest-scored negatives (at least one of each). scikit-learn has only the one-way form
    (`roc_auc_score(max_fpr=...)`), hence this function. NaN when a class is missing.
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_score = np.asarray(y_score, dtype=np.float64).reshape(-1)
    pos, neg = np.sort(y_score[y_true == 1]), np.sort(y_score[y_true != 1])
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    n_pos = max(1, round(len(pos) * (1 - min_tpr)))
    n_neg = max(1, round(len(neg) * max_fpr))
    low_pos, high_neg = pos[:n_pos], neg[len(neg) - n_neg :]
    return float(roc_auc_score(np.r_[np.ones(n_pos), np.zeros(n_neg)], np.r_[low_pos, high_neg]))


def pauc(y_true: np.ndarray, y_score: np.ndarray, max_fpr: float = 0.3, min_tpr: float = 0.7) -> float:
    """Return the task's two-way partial AUC: binary, or the mean over labels (labels with one class skipped)."""
    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    values = np.array([two_way_pauc(y_true[:, j], y_score[:, j], max_fpr, min_tpr) for j in range(y_true.shape[1])])
    return float("nan") if np.all(np.isnan(values)) else float(np.nanmean(values))


def evaluate(y_true: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Return {'auc', 'acc', 'pauc'} for the task's labels and the model's logits (scores are their sigmoid)."""
    scores = sigmoid(logits)
    return {"auc": auc(y_true, scores), "acc": acc(y_true, scores), "pauc": pauc(y_true, scores)}
