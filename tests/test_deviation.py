"""deviation: a cross-fitted, two-sided, real-anchored detector that catches departures in mean and in spread."""

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from detectors.detector import Detector
from detectors.deviation import DeviationClassifier, RealDeviation, _halves

N, D = 400, 6


def _family(kind: str, rng: np.random.Generator, n: int = N, d: int = D) -> np.ndarray:
    """Real ~ N(0, I); 'shift' moves components 0-1 up by 2.5, 'excess' doubles every spread, 'deficit' shrinks it to 0.3x."""
    x = rng.normal(size=(n, d))
    if kind == "shift":
        x[:, :2] += 2.5
    elif kind == "excess":
        x *= 2.0
    elif kind == "deficit":
        x *= 0.3  # the same mean as the reals: only the spread departs
    return x


FAMILIES = ("shift", "excess", "deficit")


def _labels(n_real: int, n_fake: int) -> np.ndarray:
    return np.r_[np.zeros(n_real), np.ones(n_fake)].astype(int)


def _auc(clf, real: np.ndarray, fake: np.ndarray) -> float:
    return roc_auc_score(_labels(len(real), len(fake)), clf.predict_proba(np.r_[real, fake])[:, 1])


def test_the_deficit_family_really_has_the_real_mean_and_less_spread():
    rng = np.random.default_rng(5)
    x = _family("deficit", rng, n=20_000)
    np.testing.assert_allclose(x.mean(0), 0, atol=0.01)
    np.testing.assert_allclose(x.std(0), 0.3, rtol=0.03)


@pytest.mark.parametrize("train", [None, *FAMILIES])
def test_trained_on_any_family_or_on_reals_alone_it_catches_all_three(train):
    rng = np.random.default_rng(0)
    real, test_real = rng.normal(size=(N, D)), rng.normal(size=(N, D))
    if train is None:
        clf = DeviationClassifier().fit(real, np.zeros(N, int))
    else:
        clf = DeviationClassifier().fit(np.r_[real, _family(train, rng)], _labels(N, N))
    aucs = {kind: _auc(clf, test_real, _family(kind, rng)) for kind in FAMILIES}
    assert aucs["shift"] > 0.85 and aucs["excess"] > 0.85 and aucs["deficit"] > 0.97, aucs


def test_a_linear_classifier_ranks_the_deficit_family_as_more_real_than_real():
    # The failure deviation exists to avoid: a learned direction does not transfer.
    rng = np.random.default_rng(1)
    real, shift = rng.normal(size=(N, D)), _family("excess", rng)
    lr = LogisticRegression().fit(np.abs(np.r_[real, shift]), _labels(N, N))  # |x|: a spread detector
    test_real, deficit = rng.normal(size=(N, D)), _family("deficit", rng)
    assert _auc(lr, np.abs(test_real), np.abs(deficit)) < 0.05
    dev = DeviationClassifier().fit(np.r_[real, shift], _labels(N, N))
    assert _auc(dev, test_real, deficit) > 0.97


@pytest.mark.parametrize("n", [300, 1200])
def test_fakes_equal_in_distribution_to_the_reals_are_not_separated(n):
    # 109 features, as the fingerprint vector at 32 px; before cross-fitting 88 % of test reals were called fake.
    rng = np.random.default_rng(n)
    d = 109
    X = rng.normal(size=(2 * n, d))
    clf = DeviationClassifier().fit(X, _labels(n, n))
    test_real, test_fake = rng.normal(size=(2000, d)), rng.normal(size=(2000, d))
    assert 0.45 <= _auc(clf, test_real, test_fake) <= 0.55
    assert (clf.predict_proba(test_real)[:, 1] >= 0.5).mean() <= 0.55


def test_real_only_calls_about_five_percent_of_test_reals_fake():
    rng = np.random.default_rng(2)
    clf = DeviationClassifier().fit(rng.normal(size=(2000, D)), np.zeros(2000, int))
    called = (clf.predict_proba(rng.normal(size=(4000, D)))[:, 1] >= 0.5).mean()
    assert 0.02 <= called <= 0.09
    with pytest.raises(ValueError, match="without grid"):
        DeviationClassifier(grid=True).fit(rng.normal(size=(40, D)), np.zeros(40, int))


def test_large_floor_is_the_two_sided_mahalanobis_energy_of_each_half():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(N, D)) @ rng.normal(size=(D, D)), _family("shift", rng)
    X, y = np.r_[real, fake], _labels(N, N)
    est = RealDeviation(floor=1e9, random_state=7).fit(X, y)
    halves = _halves(N, np.random.default_rng(7))
    t = []
    for f in (0, 1):
        part, held = real[halves[f]], real[halves[1 - f]]
        mean, sd = part.mean(0), part.std(0)
        lw = LedoitWolf().fit((part - mean) / sd)
        e_held, e_all = (np.log(lw.mahalanobis((Z - mean) / sd) / D) for Z in (held, X))
        loc = np.median(e_held)
        spread = 1.4826 * np.median(np.abs(e_held - loc))
        t.append(np.abs(e_all - loc) / spread)
    np.testing.assert_allclose(est.decision_function(X), (t[0] + t[1]) / 2, rtol=1e-5)


def test_long_features_are_reduced_on_the_reals_and_never_give_constant_scores():
    # npr / dwt give thousands of numbers per image, far more than the real images.
    rng = np.random.default_rng(4)
    n, d = 200, 3000
    basis = rng.normal(size=(20, d))
    real = rng.normal(size=(n, 20)) @ basis + 0.1 * rng.normal(size=(n, d))
    fake = rng.normal(size=(n, 20)) @ basis + 0.3 * rng.normal(size=(n, d))  # excess outside the real subspace
    est = RealDeviation().fit(np.r_[real, fake], _labels(n, n))
    assert est.n_components_ == 25 and est.bases_.shape == (2, d, 25)  # n_half // 4 = 100 // 4
    test_real = rng.normal(size=(n, 20)) @ basis + 0.1 * rng.normal(size=(n, d))
    test_fake = rng.normal(size=(n, 20)) @ basis + 0.3 * rng.normal(size=(n, d))
    s = est.predict_proba(np.r_[test_real, test_fake])[:, 1]
    assert np.ptp(s) > 0 and roc_auc_score(_labels(n, n), s) > 0.99
    assert RealDeviation(components=5).fit(real, np.zeros(n, int)).bases_.shape == (2, d, 5)
    with pytest.raises(ValueError, match="components must be between 1 and"):
        RealDeviation(components=500).fit(real, np.zeros(n, int))
    with pytest.raises(ValueError, match="all equal"):
        RealDeviation().fit(np.ones((40, 3)), np.zeros(40, int))


def test_probability_is_monotone_in_the_deviation_and_weights_are_non_negative():
    rng = np.random.default_rng(2)
    real, a = rng.normal(size=(N, D)), _family("shift", rng)
    X, y = np.r_[real, a], _labels(N, N)
    est = RealDeviation(floor=0.0).fit(X, y)
    assert (est.weights_ >= 0).all() and (est.weights_[:, :2].sum(1) > est.weights_[:, 2:].sum(1)).all()
    order = np.argsort(est.decision_function(X))
    assert np.all(np.diff(est.predict_proba(X)[order, 1]) >= -1e-12)


def test_refuses_attribution_and_bad_parameters():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(N, D)), _family("shift", rng), _family("deficit", rng)]
    y = np.r_[np.zeros(N), np.ones(N), 2 * np.ones(N)].astype(int)
    with pytest.raises(ValueError, match="binary detector"):
        DeviationClassifier().fit(X, y)
    with pytest.raises(ValueError, match="floor must be a number >= 0"):
        DeviationClassifier(floor=-1).fit(X[:800], y[:800])
    with pytest.raises(ValueError, match="components must be a positive integer"):
        DeviationClassifier(components=0).fit(X[:800], y[:800])
    with pytest.raises(ValueError, match="reals_per_component must be a number >= 1"):
        DeviationClassifier(reals_per_component=0.5).fit(X[:800], y[:800])


@pytest.mark.parametrize(("per", "d", "expect"), [(4.0, 30, 25), (9.0, 30, 11), (9.0, 11, 11), (9.0, 10, 10)])
def test_reals_per_component_caps_the_gaussian_at_one_dimension_per_that_many_reals(per, d, expect):
    # 200 reals: 100 per cross-fitting half. A feature longer than 100 // per is reduced to that many components.
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(200, d)), rng.normal(size=(200, d)) * 1.5
    est = RealDeviation(reals_per_component=per).fit(np.r_[real, fake], _labels(200, 200))
    assert est.n_components_ == expect
    assert (est.bases_ is None) == (expect == d)


def test_detector_round_trip_through_save_and_load(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(96, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    smooth = torch.nn.functional.avg_pool2d(real.float(), 3, 1, 1).to(torch.uint8)
    det = Detector("xy:deviation").fit(real[:64], smooth[:64])
    scores = det.score(torch.cat([real[64:], smooth[64:]]))
    assert roc_auc_score(np.r_[np.zeros(32), np.ones(32)], scores) > 0.95
    det.save(tmp_path / "d")
    np.testing.assert_allclose(Detector.load(tmp_path / "d").score(real[64:]), scores[:32])
