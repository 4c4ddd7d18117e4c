"""Detection metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    recall_score,
    roc_auc_score,
)

from detectors.metrics import (
    METRICS,
    choose_threshold,
    class_accuracies,
    equal_error_rate,
    evaluate,
    tpr_at_fpr,
)


def test_matches_sklearn_on_random_scores(rng):
    y = rng.integers(0, 2, 300)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    m = evaluate(y, s, threshold=0.45)
    assert set(m) == set(METRICS)
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["acc"] == pytest.approx(np.mean((s >= 0.5) == y))
    assert m["acc_cal"] == pytest.approx(np.mean((s >= 0.45) == y))


def test_class_accuracies_hand_example():
    # Reals 0.1, 0.4, 0.6, 0.7 and fakes 0.3, 0.5, 0.9 at the threshold 0.5 (>= counts as fake):
    # reals below it: 0.1, 0.4 -> 2/4; fakes at or above it: 0.5, 0.9 -> 2/3.
    y = [0, 0, 0, 0, 1, 1, 1]
    s = [0.1, 0.4, 0.6, 0.7, 0.3, 0.5, 0.9]
    assert class_accuracies(y, s, 0.5) == (0.5, pytest.approx(2 / 3))
    m = evaluate(y, s, threshold=0.5)
    assert m["acc_real"] == 0.5 and m["acc_fake"] == pytest.approx(2 / 3)
    assert m["acc_cal"] == pytest.approx(4 / 7)  # plain accuracy: (2 + 2) / 7
    # Every image on one side of the threshold: one class entirely right, the other entirely wrong.
    assert class_accuracies(y, s, 0.0) == (0.0, 1.0) and class_accuracies(y, s, 1.0) == (1.0, 0.0)


def test_class_accuracies_match_sklearn_recall_per_class(rng):
    y = rng.integers(0, 2, 400)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    for t in (0.3, 0.45, 0.6):
        pred = (s >= t).astype(int)
        acc_real, acc_fake = class_accuracies(y, s, t)
        assert acc_real == pytest.approx(recall_score(y, pred, pos_label=0))
        assert acc_fake == pytest.approx(recall_score(y, pred, pos_label=1))
        assert (acc_real + acc_fake) / 2 == pytest.approx(balanced_accuracy_score(y, pred))
    # On balanced sets (as in a transfer matrix) the accuracy at the threshold is their mean.
    yb = np.r_[np.zeros(150, int), np.ones(150, int)]
    sb = np.clip(rng.normal(0.4 + 0.2 * yb, 0.2), 0, 1)
    m = evaluate(yb, sb, threshold=0.45)
    assert m["acc_cal"] == pytest.approx((m["acc_real"] + m["acc_fake"]) / 2)


def test_perfect_separation():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    m = evaluate(y, s, threshold=0.5)
    assert m["ap"] == 1.0 and m["auc"] == 1.0 and m["eer"] == 0.0
    assert m["acc"] == 1.0 and m["acc_cal"] == 1.0 and m["tpr_at_5fpr"] == 1.0


def test_reversed_scores():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.9, 0.8, 0.2, 0.1])
    m = evaluate(y, s)
    assert m["auc"] == 0.0 and m["eer"] == 1.0 and m["acc"] == 0.0 and m["tpr_at_5fpr"] == 0.0
    assert math.isnan(m["acc_cal"])
    assert math.isnan(m["acc_real"]) and math.isnan(m["acc_fake"])  # no threshold, no per-class accuracy


def test_eer_hand_example_on_a_tie():
    # A real and a fake tie at 0.5: between the thresholds 0.9 and 0.5 the ROC runs diagonally
    # from (FPR, TPR) = (0, 0.5) to (0.5, 1); FPR = FNR where 0.5 t = 0.5 - 0.5 t, t = 0.5 -> 0.25.
    assert equal_error_rate([0, 1, 0, 1], [0.2, 0.5, 0.5, 0.9]) == pytest.approx(0.25)


def test_eer_hand_example_on_a_step():
    # Fakes 0.8 and 0.3, reals 0.1, 0.4, 0.7: FNR stays 0.5 while FPR climbs from 0 to 2/3,
    # so the rates meet at 0.5.
    assert equal_error_rate([0, 0, 0, 1, 1], [0.1, 0.4, 0.7, 0.3, 0.8]) == pytest.approx(0.5)


def test_eer_is_a_rate_where_fpr_equals_fnr(rng):
    y = rng.integers(0, 2, 500)
    s = rng.normal(y * 1.0, 1.0)
    eer = equal_error_rate(y, s)
    # Scanning thresholds, the smaller of FPR/FNR never exceeds the EER and the larger never falls below it.
    ts = np.unique(s)
    fpr = np.array([np.mean(s[y == 0] >= t) for t in ts])
    fnr = np.array([np.mean(s[y == 1] < t) for t in ts])
    cross = np.argmin(np.abs(fpr - fnr))
    assert min(fpr[cross], fnr[cross]) - 0.01 <= eer <= max(fpr[cross], fnr[cross]) + 0.01


def test_all_scores_tied():
    y = np.array([0, 0, 0, 1])
    m = evaluate(y, np.full(4, 0.3))
    assert m["auc"] == 0.5 and m["eer"] == pytest.approx(0.5) and m["ap"] == pytest.approx(0.25)
    assert m["acc"] == 0.75  # every image below 0.5 counts as real


def test_tpr_at_5_percent_fpr():
    reals = np.linspace(0.0, 0.19, 20)
    fakes = np.linspace(0.5, 0.59, 10)
    y = np.r_[np.zeros(20), np.ones(10)].astype(int)
    one_high = reals.copy()
    one_high[-1] = 0.99  # one false positive above every fake: FPR 1/20 = 5 % is allowed
    assert tpr_at_fpr(y, np.r_[one_high, fakes]) == 1.0
    two_high = one_high.copy()
    two_high[-2] = 0.98  # two above every fake: 10 % FPR before the first fake is caught
    assert tpr_at_fpr(y, np.r_[two_high, fakes]) == 0.0


def test_choose_threshold_separates_and_maximises_balanced_accuracy(rng):
    y = np.array([0, 0, 0, 1, 1])
    t = choose_threshold(y, [0.1, 0.2, 0.3, 0.7, 0.9])
    assert 0.3 < t < 0.7
    # Unbalanced noisy data: no threshold on the score grid does better.
    y = rng.integers(0, 2, 200)
    y[:150] = 0
    s = rng.normal(y * 0.8, 1.0)
    t = choose_threshold(y, s)
    best = max(balanced_accuracy_score(y, s >= c) for c in np.r_[s, s.max() + 1])
    assert balanced_accuracy_score(y, s >= t) == pytest.approx(best)


def test_choose_threshold_takes_attribution_labels():
    assert 0.3 < choose_threshold([0, 0, 1, 2], [0.1, 0.3, 0.8, 0.9]) < 0.8


@pytest.mark.parametrize(
    ("y", "s", "words"),
    [
        ([0, 1], [0.5], "one score per label"),
        ([1, 1], [0.5, 0.6], "only one class"),
        ([0, 2], [0.5, 0.6], "only 0"),
        ([0, 1], [0.5, np.nan], "NaN"),
        ([], [], "empty"),
    ],
)
def test_bad_input(y, s, words):
    with pytest.raises(ValueError, match=words):
        evaluate(y, s)


def test_oracle_accuracy_is_the_best_threshold_on_scikit_learns_roc():
    from sklearn.metrics import roc_curve

    from detectors.metrics import bench_metrics, oracle_accuracy

    rng = np.random.default_rng(3)
    for n_real, n_fake in ((50, 80), (7, 3)):
        y = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
        s = np.round(rng.random(y.size) * 0.5 + 0.3 * y, 2)  # rounded: ties between classes
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        best = ((tpr * n_fake + (1 - fpr) * n_real) / y.size).max()
        assert oracle_accuracy(y, s) == pytest.approx(best, abs=1e-12)
        m = bench_metrics(y, s, threshold=0.4)
        assert m["acc_oracle"] >= max(m["acc"], m["acc_cal"])
        assert m["acc_real_05"] == np.mean(s[y == 0] < 0.5) and m["acc_fake_cal"] == np.mean(s[y == 1] >= 0.4)
    assert oracle_accuracy([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert oracle_accuracy([0, 1], [0.7, 0.2]) == 0.5  # reversed scores: the best one threshold does is chance
