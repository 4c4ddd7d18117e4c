"""deviation: a one-sided, real-anchored detector that catches departures from real in any direction."""

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from detectors.detector import Detector
from detectors.deviation import DeviationClassifier, RealDeviation


def _two_families(seed=0, n=400, d=6):
    """Real ~ N(0, I); fakes shift components 0-1 up (family A) or shrink their spread (family B)."""
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, d))
    fam_a = rng.normal(size=(n, d))
    fam_a[:, :2] += 2.5  # excess: like the learned upsamplers' extra high-frequency power
    fam_b = rng.normal(size=(n, d))
    fam_b[:, :2] = -2.5 + 0.3 * fam_b[:, :2]  # deficit, in the opposite direction
    return real, fam_a, fam_b


def test_trained_on_one_direction_it_still_catches_the_opposite_one():
    real, a, b = _two_families()
    X, y = np.r_[real[:200], a[:200]], np.r_[np.zeros(200), np.ones(200)].astype(int)
    dev = DeviationClassifier().fit(X, y)
    lr = LogisticRegression().fit(X, y)
    y_test = np.r_[np.zeros(200), np.ones(200)]
    def auc(clf, fake):
        return roc_auc_score(y_test, clf.predict_proba(np.r_[real[200:], fake[200:]])[:, 1])
    # A linear classifier learns the direction and ranks the opposite family as more real than real.
    assert auc(lr, b) < 0.05
    assert auc(dev, a) > 0.95 and auc(dev, b) > 0.95


def test_large_floor_is_the_mahalanobis_distance_from_the_real_images():
    real, a, _ = _two_families(seed=1)
    X, y = np.r_[real, a], np.r_[np.zeros(len(real)), np.ones(len(a))].astype(int)
    est = RealDeviation(floor=1e9).fit(X, y)
    z = (real - real.mean(0)) / real.std(0)
    lw = LedoitWolf().fit(z)
    xs = (X - real.mean(0)) / real.std(0)
    expected = lw.mahalanobis(xs) / X.shape[1]  # squared distance, averaged over components
    np.testing.assert_allclose(np.exp(est.decision_function(X)), expected, rtol=1e-6)


def test_probability_is_monotone_in_the_deviation_and_weights_are_non_negative():
    real, a, _ = _two_families(seed=2)
    X, y = np.r_[real, a], np.r_[np.zeros(len(real)), np.ones(len(a))].astype(int)
    est = RealDeviation(floor=0.0).fit(X, y)
    assert (est.weights_ >= 0).all() and est.weights_[:2].sum() > est.weights_[2:].sum()
    order = np.argsort(est.decision_function(X))
    assert np.all(np.diff(est.predict_proba(X)[order, 1]) >= -1e-12)


def test_refuses_attribution_and_bad_parameters():
    real, a, b = _two_families()
    X, y = np.r_[real, a, b], np.r_[np.zeros(400), np.ones(400), 2 * np.ones(400)].astype(int)
    with pytest.raises(ValueError, match="binary detector"):
        DeviationClassifier().fit(X, y)
    with pytest.raises(ValueError, match="floor must be a number >= 0"):
        DeviationClassifier(floor=-1).fit(X[:800], y[:800])


def test_detector_round_trip_through_save_and_load(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(64, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    smooth = torch.nn.functional.avg_pool2d(real.float(), 3, 1, 1).to(torch.uint8)
    det = Detector("xy:deviation").fit(real[:48], smooth[:48])
    scores = det.score(torch.cat([real[48:], smooth[48:]]))
    assert roc_auc_score(np.r_[np.zeros(16), np.ones(16)], scores) > 0.95
    det.save(tmp_path / "d")
    np.testing.assert_allclose(Detector.load(tmp_path / "d").score(real[48:]), scores[:16])
