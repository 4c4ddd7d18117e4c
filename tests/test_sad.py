"""Deep-SAD detector: centre clamping, the loss on hand-made embeddings, the S_CD transform, learning, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import checkerboard_task
from sklearn.metrics import average_precision_score

from detectors.base import CLASSIFIERS
from detectors.sad import DistanceScore, SADClassifier, init_center, sad_loss


def test_registered():
    assert CLASSIFIERS["sad"] is SADClassifier
    assert SADClassifier().input_kind == "image" and SADClassifier().lam == 0.1


def test_center_small_coordinates_are_clamped_with_their_sign():
    emb = torch.tensor([[0.5, -0.05, 0.0, -0.3, 0.02], [0.5, -0.05, 0.0, -0.3, 0.02]])
    c = init_center(emb, eps=0.1)
    torch.testing.assert_close(c, torch.tensor([0.5, -0.1, 0.1, -0.3, 0.1]))
    # large coordinates are the plain mean
    c2 = init_center(torch.tensor([[1.0, -2.0], [3.0, -4.0]]), eps=0.1)
    torch.testing.assert_close(c2, torch.tensor([2.0, -3.0]))


def test_sad_loss_on_hand_made_embeddings():
    c = torch.tensor([1.0, -1.0])
    real, fake = torch.tensor([False]), torch.tensor([True])
    at_c = c[None].clone()
    assert float(sad_loss(at_c, c, real)) == 0.0  # a real image at the centre costs nothing
    near, far = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 2.0]])  # d^2 = 1 and 9
    assert float(sad_loss(near, c, real)) == pytest.approx(1.0)
    assert float(sad_loss(far, c, real)) == pytest.approx(9.0)
    assert float(sad_loss(near, c, fake, eps=1e-6)) == pytest.approx(1 / (1 + 1e-6))
    assert float(sad_loss(far, c, fake)) < float(sad_loss(near, c, fake))  # fakes farther away cost less
    # a batch averages the per-sample terms
    both = sad_loss(torch.cat([near, far]), c, torch.tensor([False, True]))
    assert float(both) == pytest.approx(0.5 * (1.0 + 1 / 9), rel=1e-5)


def test_sad_loss_gradients_pull_real_in_and_push_fake_out():
    c = torch.tensor([0.2, 0.4, -0.1])
    z = torch.tensor([[1.0, 0.0, 0.5], [1.0, 0.0, 0.5]], requires_grad=True)
    sad_loss(z, c, torch.tensor([False, True])).backward()
    away = z.detach() - c
    # gradient descent moves along -grad: towards c for the real sample, away from c for the fake
    assert float((z.grad[0] * away[0]).sum()) > 0
    assert float((z.grad[1] * away[1]).sum()) < 0
    # and exactly along the line through c: d/dz of d^2 is 2 (z - c), times 1/2 for the batch mean
    torch.testing.assert_close(z.grad[0], away[0])


def test_distance_score_is_monotone_and_in_unit_range():
    rng = np.random.default_rng(0)
    d_real, d_fake = rng.gamma(2.0, 1.0, 200), rng.gamma(2.0, 1.0, 200) * 4
    d = np.concatenate([d_real, d_fake])
    lab = np.r_[np.zeros(200), np.ones(200)]
    grid = np.linspace(0, 60, 500)
    for kind in ("logistic", "ratio"):
        t = DistanceScore.fit(d, lab, kind)
        s = t(grid)
        assert t.kind == kind
        assert np.all(np.diff(s) >= 0) and s.min() >= 0 and s.max() <= 1
        # the transform only rescales: the ranking (hence AP) of the raw distances is kept
        assert average_precision_score(lab, t(d)) == pytest.approx(average_precision_score(lab, d))
    ratio = DistanceScore.fit(d, lab, "ratio")
    assert ratio(np.array([np.median(d_real)]))[0] == pytest.approx(0.5)
    logistic = DistanceScore.fit(d, lab, "logistic")
    assert logistic.a > 0
    # a useful threshold: most reals below 0.5, most fakes above
    assert (logistic(d_real) < 0.5).mean() > 0.6 and (logistic(d_fake) >= 0.5).mean() > 0.6


def test_distance_score_falls_back_to_ratio_when_fakes_sit_closer():
    d = np.r_[np.full(50, 5.0), np.full(50, 1.0)]
    lab = np.r_[np.zeros(50), np.ones(50)]
    t = DistanceScore.fit(d, lab, "logistic")
    assert t.kind == "ratio"  # never an inverted (decreasing) map
    assert np.all(np.diff(t(np.linspace(0, 10, 50))) > 0)


def test_sad_learns_the_checkerboard_task_with_both_scores():
    X, y = checkerboard_task(96, seed=0)
    Xv, yv = checkerboard_task(32, seed=1)
    Xt, yt = checkerboard_task(64, seed=2)
    clf = SADClassifier(backbone="smallcnn", lam=0.1, epochs=6, batch_size=16, patience=6, seed=0)
    clf.fit(X, y, Xv, yv)
    center = clf.network_.center
    assert "center" not in dict(clf.network_.named_parameters())  # fixed, not trained
    assert bool((center.abs() >= clf.center_eps - 1e-7).all())
    scores = clf.predict_scores(Xt)
    assert average_precision_score(yt, scores["sl"]) > 0.95
    assert average_precision_score(yt, scores["cd"]) > 0.95
    np.testing.assert_allclose(clf.predict_proba(Xt)[:, 1], scores["sl"], atol=1e-6)
    # S_CD is a monotone function of the distance to c
    d = clf.distances(Xt)
    order = np.argsort(d)
    assert np.all(np.diff(scores["cd"][order]) >= -1e-12)


def test_save_load_keeps_both_scores(tmp_path):
    X, y = checkerboard_task(32, seed=0)
    clf = SADClassifier(backbone="smallcnn", score_kind="cd", lam=1.0, epochs=1, batch_size=8).fit(X, y)
    clf.save(tmp_path / "sad")
    back = SADClassifier.load(tmp_path / "sad")
    assert back.score_kind == "cd" and back.lam == 1.0
    torch.testing.assert_close(back.network_.center, clf.network_.center)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    p = back.predict_proba(X)
    np.testing.assert_allclose(p[:, 1], back.predict_scores(X)["cd"])
    with pytest.raises(ValueError, match="holds a 'sad' classifier"):
        CLASSIFIERS["smallcnn"].load(tmp_path / "sad")


def test_resnet18_backbone_one_step():
    X, y = checkerboard_task(8, seed=0)
    clf = SADClassifier(epochs=1, batch_size=4).fit(X, y)
    assert clf.network_.center.shape == (512,)
    s = clf.predict_scores(X)
    assert s["sl"].shape == s["cd"].shape == (8,)
    assert np.all((s["cd"] >= 0) & (s["cd"] <= 1))


def test_bad_settings_are_refused():
    X, y = checkerboard_task(12, seed=0)
    with pytest.raises(ValueError, match="score_kind"):
        SADClassifier(backbone="smallcnn", score_kind="xx", epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="lam"):
        SADClassifier(backbone="smallcnn", lam=-1, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="Unknown backbone"):
        SADClassifier(backbone="vgg", epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="attribution"):
        SADClassifier(backbone="smallcnn", score_kind="cd", epochs=1).fit(X, np.arange(12) % 3)
