"""Spectral fidelity: distances between mean spectra and the cloaking score, against known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import smooth_images

from detectors.features import minmax, radial_profile, xy_projections
from detectors.fidelity import QUANTISATION_FLOOR, cloaking_score, mean_profiles, spectral_fidelity
from gans.upsamplers import bed_of_nails

KEYS = {"radial_l1", "x_l1", "y_l1", "cloaking"}


@pytest.fixture(scope="module")
def upsampled():
    """32 px reference images and x2 nearest / zero-insertion upsamplings of the same scenes at 16 px.

    smooth_images draws gratings in cycles per image, so the same seed at 16 px and 32 px
    gives the same scenes sampled at two resolutions.
    """
    real = smooth_images(64, 32, seed=3)
    small = smooth_images(64, 16, seed=3)
    return real, F.interpolate(small, scale_factor=2, mode="nearest"), bed_of_nails(small)


def test_identical_sets_have_zero_distance_and_full_cloaking(real_images):
    r = spectral_fidelity(real_images, real_images.clone())
    assert set(r) == KEYS
    assert r["radial_l1"] == r["x_l1"] == r["y_l1"] == 0.0
    # Each held-out image has its twin with the other label in the training folds: accuracy
    # falls below chance, which must not read as "distinguishable".
    assert r["cloaking"] == 1.0


def test_distances_are_symmetric(real_images, upsampled):
    _, nearest, _ = upsampled
    a = spectral_fidelity(real_images, nearest)
    b = spectral_fidelity(nearest, real_images)
    for k in ("radial_l1", "x_l1", "y_l1"):
        assert a[k] == pytest.approx(b[k], rel=1e-6)


def test_distance_matches_a_hand_computed_l1(real_images, upsampled):
    _, _, bon = upsampled
    floor = QUANTISATION_FLOOR

    def norm(p):
        return minmax(p.clamp_min(floor))

    want = (norm(radial_profile(real_images)).mean(0) - norm(radial_profile(bon)).mean(0)).abs().mean()
    xy_r, xy_f = xy_projections(real_images), xy_projections(bon)
    want_y = (norm(xy_r[:, 32:]).mean(0) - norm(xy_f[:, 32:]).mean(0)).abs().mean()
    got = spectral_fidelity(real_images, bon)
    assert got["radial_l1"] == pytest.approx(float(want), rel=1e-6)
    assert got["y_l1"] == pytest.approx(float(want_y), rel=1e-6)
    assert 0.0 <= got["radial_l1"] <= 1.0


def test_zero_insertion_is_further_than_nearest(upsampled):
    real, nearest, bon = upsampled
    d_nearest = spectral_fidelity(real, nearest)["radial_l1"]
    d_bon = spectral_fidelity(real, bon)["radial_l1"]
    # Zero insertion mirrors the whole spectrum into the high frequencies; nearest only damps them.
    assert d_bon > 3 * d_nearest > 0


def test_cloaking_near_one_for_one_distribution_and_zero_for_zero_insertion(upsampled):
    real, _, bon = upsampled
    other = smooth_images(64, 32, seed=11)
    assert spectral_fidelity(real, other)["cloaking"] > 0.7
    assert spectral_fidelity(real, bon)["cloaking"] < 0.1


def test_cloaking_score_matches_known_accuracies():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 5))
    # Perfectly separable profiles: every fold classifies everything right.
    assert cloaking_score(a, a + 100.0) == 0.0
    # Balancing: a much larger fake set is subsampled, the score stays in [0, 1].
    s = cloaking_score(a, rng.normal(size=(400, 5)))
    assert 0.0 <= s <= 1.0


def test_mean_profiles_are_the_means_of_normalised_profiles(real_images):
    m = mean_profiles(real_images)
    assert set(m) == {"radial", "x", "y"}
    assert m["radial"].shape == (radial_profile(real_images).shape[1],)
    assert m["x"].shape == m["y"].shape == (32,)
    # Every normalised profile lies in [0, 1] and reaches both ends, so its mean starts at 1 (DC).
    assert m["radial"][0] == pytest.approx(1.0)
    assert np.all((m["radial"] >= 0) & (m["radial"] <= 1))


def test_bad_inputs_name_the_problem(real_images):
    with pytest.raises(ValueError, match="same resolution"):
        spectral_fidelity(real_images, smooth_images(8, 16))
    with pytest.raises(ValueError, match="fake"):
        spectral_fidelity(real_images, torch.zeros(0, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least 2"):
        spectral_fidelity(real_images, real_images[:1])
