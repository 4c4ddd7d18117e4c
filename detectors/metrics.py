"""Detection metrics for fakeness scores: AP, ROC-AUC, accuracy, EER, TPR at 5 % FPR, thresholds.

Labels are 0 = real, 1 = fake; a score is the fakeness in [0, 1] and an image counts as fake when
its score is >= the threshold. Pure NumPy / scikit-learn, no torch.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

METRICS = ("ap", "auc", "acc", "acc_cal", "acc_real", "acc_fake", "eer", "tpr_at_5fpr")
# The benchmark table of ``forgelab bench`` (the field's shape: CNNDetection, UniversalFakeDetect,
# SIDBench): accuracy overall and on real and fake images apart, at 0.5 and at the calibrated
# threshold, and the oracle accuracy (best threshold chosen on the test scores themselves).
BENCH_METRICS = ("ap", "auc", "acc", "acc_real_05", "acc_fake_05", "acc_cal", "acc_real_cal", "acc_fake_cal",
                 "acc_oracle")


def _check(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels in {0, 1} (both present) and finite scores of the same length."""
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} labels but scores has {s.size} values; give one score per label.")
    if y.size == 0:
        raise ValueError("y_true is empty; evaluation needs at least one real and one fake image.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 (real) and 1 (fake); map attribution labels with y > 0 first.")
    if np.unique(y).size < 2:
        raise ValueError("y_true holds only one class; evaluation needs both real and fake images.")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity; check the detector's input images.")
    return y.astype(np.int64), s


def accuracy(y_true, scores, threshold: float) -> float:
    """Fraction of images whose label equals ``score >= threshold``."""
    y, s = np.asarray(y_true).reshape(-1), np.asarray(scores, dtype=np.float64).reshape(-1)
    return float(np.mean((s >= threshold).astype(np.int64) == y))


def class_accuracies(y_true, scores, threshold: float) -> tuple[float, float]:
    """Accuracy on the real images and on the fake images separately at ``threshold``.

    ``acc_real`` is the share of real images scored below the threshold (true-negative rate,
    specificity); ``acc_fake`` the share of fakes at or above it (true-positive rate, recall).
    Their mean is the balanced accuracy, which equals ``accuracy`` on the balanced test sets of a
    transfer matrix; apart they show which way a threshold that does not transfer errs.
    """
    y, s = _check(y_true, scores)
    fake = s >= threshold
    return float(np.mean(~fake[y == 0])), float(np.mean(fake[y == 1]))


def equal_error_rate(y_true, scores) -> float:
    """Error rate where the false-positive and false-negative rates are equal, interpolated on the ROC."""
    y, s = _check(y_true, scores)
    fpr, tpr, _ = roc_curve(y, s)
    # fpr - fnr never decreases along the ROC: -1 at the strictest threshold, +1 at the loosest.
    diff = fpr - (1.0 - tpr)
    hit = int(np.flatnonzero(diff >= 0)[0])
    if diff[hit] == 0:
        return float(fpr[hit])
    # Linear interpolation between the ROC points on either side of the crossing.
    lo = hit - 1
    t = -diff[lo] / (diff[hit] - diff[lo])
    return float(fpr[lo] + t * (fpr[hit] - fpr[lo]))


def tpr_at_fpr(y_true, scores, max_fpr: float = 0.05) -> float:
    """Highest true-positive rate reachable with one threshold whose false-positive rate is <= ``max_fpr``."""
    y, s = _check(y_true, scores)
    fpr, tpr, _ = roc_curve(y, s)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def choose_threshold(y_val, scores_val) -> float:
    """Threshold that maximises balanced accuracy (Youden's J) on validation scores.

    Candidates are midpoints between consecutive distinct scores (plus one below the lowest and
    one above the highest); among equally good cuts the one nearest to 0.5 wins.
    """
    # Attribution labels (k > 0 = k-th fake source) count as fake here.
    y, s = _check((np.asarray(y_val).reshape(-1) > 0).astype(np.int64), scores_val)
    u, inv = np.unique(s, return_inverse=True)
    # cands[i] sits just below u[i] (cands[-1] above all), so "score >= cands[i]" flags u[i:] as fake.
    cands = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-6]])
    pos = np.bincount(inv, weights=y, minlength=u.size)
    neg = np.bincount(inv, weights=1 - y, minlength=u.size)
    tp = np.concatenate([np.cumsum(pos[::-1])[::-1], [0.0]])
    tn = np.concatenate([[0.0], np.cumsum(neg)])
    j = tp / pos.sum() + tn / neg.sum()
    best = np.flatnonzero(j >= j.max() - 1e-12)
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])


def evaluate(y_true, scores, threshold: float | None = None) -> dict[str, float]:
    """AP, ROC-AUC, accuracy at 0.5, accuracy at ``threshold`` overall and on real and fake images
    apart (NaN without a threshold), EER and TPR at 5 % FPR."""
    y, s = _check(y_true, scores)
    acc_real, acc_fake = class_accuracies(y, s, threshold) if threshold is not None else (math.nan, math.nan)
    return {
        "ap": float(average_precision_score(y, s)),
        "auc": float(roc_auc_score(y, s)),
        "acc": accuracy(y, s, 0.5),
        "acc_cal": accuracy(y, s, threshold) if threshold is not None else math.nan,
        "acc_real": acc_real,
        "acc_fake": acc_fake,
        "eer": equal_error_rate(y, s),
        "tpr_at_5fpr": tpr_at_fpr(y, s, 0.05),
    }


def oracle_accuracy(y_true, scores) -> float:
    """Best accuracy of any one threshold on these very scores (the "oracle" threshold; not a deployable number).

    UniversalFakeDetect and SIDBench report it beside accuracy at 0.5 to show how much of a low
    accuracy is a badly placed threshold rather than badly ranked scores. Every cut between two
    distinct scores (and below all, above all) is tried, on all images at once.
    """
    y, s = _check(y_true, scores)
    u, inv = np.unique(s, return_inverse=True)
    pos = np.bincount(inv, weights=y, minlength=u.size)
    neg = np.bincount(inv, weights=1 - y, minlength=u.size)
    # Cut k flags u[k:] as fake: fakes at or above it are right, reals below it are right.
    tp = np.concatenate([np.cumsum(pos[::-1])[::-1], [0.0]])
    tn = np.concatenate([[0.0], np.cumsum(neg)])
    return float((tp + tn).max() / y.size)


def bench_metrics(y_true, scores, threshold: float) -> dict[str, float]:
    """The :data:`BENCH_METRICS` of one test source: AP, ROC-AUC, accuracies at 0.5 and at ``threshold``, oracle accuracy."""
    y, s = _check(y_true, scores)
    real_05, fake_05 = class_accuracies(y, s, 0.5)
    real_cal, fake_cal = class_accuracies(y, s, threshold)
    return {
        "ap": float(average_precision_score(y, s)),
        "auc": float(roc_auc_score(y, s)),
        "acc": accuracy(y, s, 0.5),
        "acc_real_05": real_05,
        "acc_fake_05": fake_05,
        "acc_cal": accuracy(y, s, threshold),
        "acc_real_cal": real_cal,
        "acc_fake_cal": fake_cal,
        "acc_oracle": oracle_accuracy(y, s),
    }
