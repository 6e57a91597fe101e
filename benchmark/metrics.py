"""Evaluation metrics, computed the way the MedMNIST paper computes them.

AUC: scikit-learn's roc_auc_score on the positive-class score; for multi-label tasks the
mean of the per-label AUCs. ACC: the score thresholded at 0.5; for multi-label tasks the
mean of the per-label accuracies (MedMNIST's getACC). pAUC: the two-way partial AUC of the
tpAUC papers, in the region FPR <= 0.3 and TPR >= 0.7 (LibAUC's pauc_roc_score), mean over labels.
Thresholded at the validation split: accuracy and balanced accuracy with the threshold chosen
on validation logits by Youden's J (the test split never chooses it).
For leaderboards: FPR at 95 % TPR, DeLong's test of two correlated AUCs, DeLong's analytic CI of
the seed-mean AUC, Holm's adjustment of several p-values, and a bootstrap CI of the mean AUC.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import bootstrap, norm, rankdata

# scikit-learn is imported where it is used: `bench leaderboard` prints rankings without it


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Return the logistic function of `logits`, computed stably."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.where(logits >= 0, 1.0 / (1.0 + np.exp(-np.abs(logits))), np.exp(-np.abs(logits)) / (1.0 + np.exp(-np.abs(logits))))


def _as_2d(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.reshape(len(array), -1)


def per_label_auc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Return one ROC AUC per label column; NaN where a column holds a single class."""
    from sklearn.metrics import roc_auc_score

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
    from sklearn.metrics import roc_auc_score

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


# --- leaderboard statistics ---------------------------------------------------------------


def fpr_at_tpr(y_true: np.ndarray, y_score: np.ndarray, tpr: float = 0.95) -> float:
    """Return the lowest false positive rate at which the true positive rate reaches `tpr`.

    The operating point a screening test runs at (Sangalli et al., "Constrained optimization
    for training deep neural networks under class imbalance", report FPR at 95 % TPR); lower is
    better. From scikit-learn's ROC curve with every threshold kept; multi-label tasks average
    over labels (labels with a single class skipped).
    """
    from sklearn.metrics import roc_curve

    y_true, y_score = _as_2d(y_true), _as_2d(y_score)
    values = []
    for j in range(y_true.shape[1]):
        if len(np.unique(y_true[:, j])) < 2:
            continue
        fprs, tprs, _ = roc_curve(y_true[:, j], y_score[:, j], drop_intermediate=False)
        values.append(float(fprs[tprs >= tpr - 1e-12].min()))
    return float(np.mean(values)) if values else float("nan")


# --- thresholds chosen on the validation split ---------------------------------------------


def youden_thresholds(y_val: np.ndarray, logits_val: np.ndarray) -> np.ndarray:
    """Return one logit threshold per label, chosen on validation predictions by Youden's J.

    J = TPR - FPR (= 2 x balanced accuracy - 1) is maximised over scikit-learn's ROC thresholds
    (each a validation logit; "positive" means logit >= threshold; roc_curve's leading +inf,
    everything negative, is left out); among equal J the highest threshold (the first in roc_curve's order). Logits rather than sigmoid scores, so scores that
    saturate to 1.0 in floating point stay apart. NaN for a label whose validation rows hold one class.
    """
    from sklearn.metrics import roc_curve

    y_val, logits_val = _as_2d(y_val), _as_2d(np.asarray(logits_val, dtype=np.float64))
    out = np.full(y_val.shape[1], np.nan)
    for j in range(y_val.shape[1]):
        if len(np.unique(y_val[:, j])) == 2:
            fpr, tpr, thresholds = roc_curve(y_val[:, j], logits_val[:, j], drop_intermediate=False)
            out[j] = thresholds[1 + int(np.argmax((tpr - fpr)[1:]))]
    return out


def threshold_metrics(thresholds: np.ndarray, y_true: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Return {'acc', 'balanced_acc'} of `logits >= thresholds` (one threshold per label), each the mean over labels.

    Labels without a threshold (NaN) or with one class on this split (balanced accuracy) are skipped;
    NaN when none is left.
    """
    from sklearn.metrics import balanced_accuracy_score

    y_true, logits = _as_2d(y_true), _as_2d(np.asarray(logits, dtype=np.float64))
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    accs, balanced = [], []
    for j, t in enumerate(thresholds):
        if math.isnan(t):
            continue
        predicted = logits[:, j] >= t
        accs.append(float(np.mean(predicted == (y_true[:, j] == 1))))
        if len(np.unique(y_true[:, j])) == 2:
            balanced.append(float(balanced_accuracy_score(y_true[:, j] == 1, predicted)))
    return {"acc": float(np.mean(accs)) if accs else float("nan"), "balanced_acc": float(np.mean(balanced)) if balanced else float("nan")}


def val_threshold_metrics(y_val: np.ndarray, logits_val: np.ndarray, y_test: np.ndarray, logits_test: np.ndarray) -> dict[str, float]:
    """Return {'acc_at_val_threshold', 'balanced_acc_at_val_threshold'} on the test split.

    The thresholds come from the validation predictions alone (`youden_thresholds`); the test
    predictions are only scored with them.
    """
    scored = threshold_metrics(youden_thresholds(y_val, logits_val), y_test, logits_test)
    return {"acc_at_val_threshold": scored["acc"], "balanced_acc_at_val_threshold": scored["balanced_acc"]}


def thresholds_record(y_val: np.ndarray, logits_val: np.ndarray) -> list[float | None]:
    """Return the validation-chosen thresholds as stored beside the metrics: one logit per label, None where undefined."""
    return [float(t) if math.isfinite(t) else None for t in youden_thresholds(y_val, logits_val)]


def leaderboard_metrics(y_true: np.ndarray, logits: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Return what a leaderboard entry records per seed on the test split: {'auc', 'acc', 'pauc', 'fpr_at_95tpr'}.

    With `val` = (validation labels, validation logits) of the same model, also the accuracy and
    balanced accuracy at the threshold chosen on validation (`val_threshold_metrics`).
    """
    scores = sigmoid(logits)
    out = {**evaluate(y_true, logits), "fpr_at_95tpr": fpr_at_tpr(y_true, scores, 0.95)}
    if val is not None:
        out.update(val_threshold_metrics(val[0], val[1], y_true, logits))
    return out


# --- DeLong: AUC intervals and comparisons ----------------------------------------------


@dataclass(frozen=True)
class DeLongResult:
    """Two correlated AUCs on the same cases, their difference's DeLong standard error and the two-sided p-value."""

    auc_a: float
    auc_b: float
    se: float
    z: float
    p_value: float


def delong_components(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (aucs, V10, V01) for k score vectors on the same binary labels.

    `scores` has shape (k, N). V10[r, i] is the share of negatives that positive i outranks under
    scorer r (ties 1/2), V01[r, j] the share of positives that outrank negative j: DeLong's
    structural components, computed in O(N log N) from mid-ranks (Sun & Xu, IEEE SPL 2014):
    V10 = (rank of x_i among all - rank among positives) / n, V01 = 1 - (rank of y_j among
    all - rank among negatives) / m.
    """
    y = np.asarray(y_true).reshape(-1)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positive = y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both classes among the labels")
    x, z = scores[:, positive], scores[:, ~positive]
    rank_all = rankdata(np.concatenate([x, z], axis=1), axis=1)
    rank_x, rank_z = rankdata(x, axis=1), rankdata(z, axis=1)
    v10 = (rank_all[:, :m] - rank_x) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_z) / m
    aucs = (rank_all[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    return aucs, v10, v01


def delong_covariance(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    """Return DeLong's covariance matrix of k AUCs: S10 / m + S01 / n (sample covariances, ddof 1)."""
    m, n = v10.shape[1], v01.shape[1]
    return np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLongResult:
    """Return DeLong's test of H0: AUC(score_a) = AUC(score_b), both scored on the same binary cases.

    z = (AUC_a - AUC_b) / sqrt(Var_a + Var_b - 2 Cov_ab) with DeLong's nonparametric covariance
    (DeLong, DeLong & Clarke-Pearson, Biometrics 1988); p = 2 (1 - Phi(|z|)) from scipy.
    When the difference has zero variance (e.g. identically ranked scores) p is 1 if the AUCs
    are equal, else 0.
    """
    aucs, v10, v01 = delong_components(y_true, np.stack([np.ravel(score_a), np.ravel(score_b)]))
    cov = delong_covariance(v10, v01)
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if variance <= 1e-15:
        return DeLongResult(float(aucs[0]), float(aucs[1]), 0.0, 0.0 if diff == 0 else math.copysign(math.inf, diff), 1.0 if diff == 0 else 0.0)
    z = diff / math.sqrt(variance)
    return DeLongResult(float(aucs[0]), float(aucs[1]), math.sqrt(variance), z, float(2 * norm.sf(abs(z))))


def auc_mean_ci(y_true: np.ndarray, logits_per_seed: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Return the analytic CI of the seed-mean test AUC over test cases: mean +/- z se, clipped to [0, 1].

    Binary tasks: DeLong's variance of a linear combination of correlated AUCs (DeLong, DeLong &
    Clarke-Pearson 1988), the contrast (1/S, ..., 1/S) over the S seeds' AUCs on the same cases,
    i.e. 1' C 1 / S^2 with C = S10 / m + S01 / n; for one seed, DeLong's interval of that AUC.
    Multi-label tasks (the task AUC is the mean of per-label AUCs): each case's DeLong component
    per label and seed, (V10 - AUC) / m where the case is positive for that label and (V01 - AUC) / n
    where negative, averaged over labels and seeds; the variance of the sum over cases is
    N / (N - 1) times the sum of squares, treating cases as independent (the influence-curve
    form of LeDell et al., EJS 2015), so correlations between labels are counted. No resampling:
    the interval is a function of the predictions alone. Scores are sigmoid(logits), as the AUC.
    """
    y_true = _as_2d(y_true)
    n_cases = len(y_true)
    scores = sigmoid(np.asarray(logits_per_seed, dtype=np.float64).reshape(len(logits_per_seed), n_cases, -1))
    z = float(norm.ppf(0.5 + confidence / 2))
    labels = [j for j in range(y_true.shape[1]) if len(np.unique(y_true[:, j])) == 2]
    if not labels:
        return float("nan"), float("nan")
    if y_true.shape[1] == 1:
        aucs, v10, v01 = delong_components(y_true[:, 0], scores[:, :, 0])
        mean, variance = float(aucs.mean()), float(delong_covariance(v10, v01).mean())
    else:
        component = np.zeros(n_cases)
        per_label = []
        for j in labels:
            positive = y_true[:, j] == 1
            aucs, v10, v01 = delong_components(y_true[:, j], scores[:, :, j])
            m, n = int(positive.sum()), int((~positive).sum())
            phi = np.zeros((len(aucs), n_cases))
            phi[:, positive] = (v10 - aucs[:, None]) / m
            phi[:, ~positive] = (v01 - aucs[:, None]) / n
            component += phi.mean(axis=0) / len(labels)
            per_label.append(aucs)
        mean = float(np.mean(per_label))
        variance = n_cases / (n_cases - 1) * float(np.sum(component**2))
    half = z * math.sqrt(max(variance, 0.0))
    return max(0.0, mean - half), min(1.0, mean + half)


def difference_ci(result: DeLongResult, confidence: float = 0.95) -> tuple[float, float]:
    """Return the Wald CI of AUC_a - AUC_b from a DeLong test: the difference +/- z times its DeLong standard error."""
    z = float(norm.ppf(0.5 + confidence / 2))
    diff = result.auc_a - result.auc_b
    return diff - z * result.se, diff + z * result.se


def holm(p_values: Sequence[float]) -> list[float]:
    """Return Holm's step-down adjusted p-values (Holm, Scand. J. Statist. 1979), in the order given.

    With the m p-values sorted, p_(i) becomes max over k <= i of (m - k + 1) p_(k), capped at 1.
    Written out here: scipy has no Holm, and statsmodels (which has) is not a dependency.
    """
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


class _WeightedAUC:
    """AUCs of one score column under many case weightings (bootstrap resamples as multiplicities).

    Sorting is done once; each weighting then costs O(N): AUC = sum over positives of
    w_i (negative weight strictly below + half the negative weight tied) / (W+ W-), the
    Mann-Whitney form of roc_auc_score with ties counted 1/2. Hand-written because calling
    roc_auc_score once per resample, seed and label is 100x slower on ChestMNIST's 22,433 cases.
    """

    def __init__(self, positive: np.ndarray, scores: np.ndarray) -> None:
        self.order = np.argsort(scores, kind="stable")
        sorted_scores = scores[self.order]
        self.positive = positive[self.order].astype(np.float64)
        new_group = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
        starts = np.flatnonzero(new_group)
        group = np.cumsum(new_group) - 1
        ends = np.r_[starts[1:], len(scores)] - 1
        self.first, self.last = starts[group], ends[group]  # each case's tie group bounds

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """Return one AUC per row of `weights` (B, N); NaN where a weighting leaves one class."""
        w = weights[:, self.order]
        pos_w, neg_w = w * self.positive, w * (1.0 - self.positive)
        neg_cum = np.cumsum(neg_w, axis=1)
        neg_cum0 = np.concatenate([np.zeros((len(w), 1)), neg_cum], axis=1)  # exclusive prefix
        below = neg_cum0[:, self.first]
        tied = neg_cum[:, self.last] - below
        m, n = pos_w.sum(axis=1), neg_w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (pos_w * (below + 0.5 * tied)).sum(axis=1) / (m * n)


def bootstrap_auc_ci(
    y_true: np.ndarray,
    logits_per_seed: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Return the percentile bootstrap CI of the seed-mean test AUC, resampling test cases.

    `logits_per_seed` has shape (S, N) or (S, N, L). Each resample draws test cases with
    replacement (the same cases for every seed, which keeps the seeds paired; for binary tasks
    positives and negatives separately, keeping their counts) and computes the mean over seeds
    of the task AUC (mean over labels for multi-label tasks); the interval is
    scipy.stats.bootstrap's percentile interval. It says how far the mean AUC could move on
    another test set of this size, and exists with a single seed; the seed-to-seed spread is
    reported separately as the sd. Deterministic for a given `seed`.
    """
    y_true = _as_2d(y_true)
    n_cases = len(y_true)
    logits = np.asarray(logits_per_seed, dtype=np.float64).reshape(len(logits_per_seed), n_cases, -1)
    columns = [
        _WeightedAUC(y_true[:, j] == 1, logits[s, :, j])
        for s in range(logits.shape[0])
        for j in range(y_true.shape[1])
        if len(np.unique(y_true[:, j])) == 2
    ]
    if not columns:
        return float("nan"), float("nan")
    per_seed_labels = len(columns) // logits.shape[0]

    def mean_auc(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        index = np.concatenate([np.atleast_2d(np.asarray(x, dtype=np.int64)) for x in samples], axis=1)
        weights = np.zeros((len(index), n_cases))
        np.add.at(weights, (np.arange(len(index))[:, None], index), 1.0)
        aucs = np.stack([column(weights) for column in columns], axis=1).reshape(len(index), -1, per_seed_labels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a rare label absent from a resample is skipped
            return np.nanmean(aucs, axis=2).mean(axis=1)

    if y_true.shape[1] == 1:
        # binary: stratified, positives and negatives resampled separately (as pROC does), so every
        # resample keeps both classes and the case mix of the test set
        samples = (np.flatnonzero(y_true[:, 0] == 1), np.flatnonzero(y_true[:, 0] != 1))
        if min(len(x) for x in samples) < 2:  # one case of a class: no resample can vary it
            return float("nan"), float("nan")
    else:
        samples = (np.arange(n_cases),)
    result = bootstrap(
        samples,
        mean_auc,
        vectorized=True,
        paired=False,
        n_resamples=n_resamples,
        batch=max(1, int(2e6 // n_cases)),
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
