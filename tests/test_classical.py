"""Classical classifiers: scikit-learn references, Platt monotonicity, k-means labelling, safe persistence."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from detectors.base import CLASSIFIERS
from detectors.classical import MODEL_FILE, fit_platt, sigmoid

KINDS = ("svm", "lr", "rf", "kmeans")


def blobs(rng: np.random.Generator, n: int = 40, d: int = 6, gap: float = 4.0, k: int = 2):
    """k unit Gaussian blobs of n points each, centres ``gap`` apart along a random direction per class."""
    dirs = rng.normal(0, 1, (k, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    X = np.concatenate([rng.normal(0, 1, (n, d)) + dirs[c] * gap * c for c in range(k)])
    y = np.repeat(np.arange(k), n)
    return X, y


def make(name: str, **params):
    return CLASSIFIERS[name](**({"n_estimators": 20} if name == "rf" else {}), **params)


@pytest.mark.parametrize("name", KINDS)
def test_separable_blobs_are_classified(name, rng):
    X, y = blobs(rng)
    clf = make(name).fit(torch.as_tensor(X), y)
    p = clf.predict_proba(X)
    assert p.shape == (len(y), 2)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert ((p >= 0) & (p <= 1)).all()
    assert np.mean(p.argmax(1) == y) >= 0.97


def test_lr_equals_a_plain_sklearn_pipeline(rng):
    X, y = blobs(rng, gap=1.0)
    ours = make("lr", C=0.3).fit(X, y).predict_proba(X)
    ref = Pipeline([("s", StandardScaler()), ("c", LogisticRegression(C=0.3, max_iter=2000))]).fit(X, y)
    np.testing.assert_allclose(ours, ref.predict_proba(X), atol=1e-6)


def test_svm_probability_is_monotone_in_the_decision_value(rng):
    X, y = blobs(rng, gap=1.5)
    clf = make("svm").fit(X, y)
    d = clf.model.decision_function(X)
    p = clf.predict_proba(X)[:, 1]
    a, b = clf.platt_
    assert a > 0
    np.testing.assert_allclose(p, sigmoid(a * d + b), atol=1e-12)
    order = np.argsort(d)
    assert np.all(np.diff(p[order]) >= -1e-12)


def test_svm_uses_sklearn_decision_function_and_kernel_option(rng):
    X, y = blobs(rng, gap=1.5)
    for kernel in ("rbf", "linear"):
        clf = make("svm", kernel=kernel, C=2.0).fit(X, y)
        ref = Pipeline([("s", StandardScaler()), ("c", SVC(kernel=kernel, C=2.0))]).fit(X, y)
        np.testing.assert_allclose(clf.model.decision_function(X), ref.decision_function(X), atol=1e-6)


def test_svm_cross_validated_probability(rng):
    X, y = blobs(rng, gap=3.0)
    p = make("svm", probability=True).fit(X, y).predict_proba(X)
    assert ((p >= 0) & (p <= 1)).all() and np.mean(p.argmax(1) == y) >= 0.95


def test_platt_recovers_a_known_sigmoid(rng):
    d = rng.normal(0, 2, 20000)
    y = (rng.random(d.size) < sigmoid(1.5 * d - 0.5)).astype(int)
    a, b = fit_platt(d, y)
    assert a == pytest.approx(1.5, abs=0.1) and b == pytest.approx(-0.5, abs=0.1)
    # Perfectly separated data: Platt's smoothed targets keep the slope finite.
    a, _ = fit_platt(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0, 0, 1, 1]))
    assert 0 < a < 100


def test_kmeans_names_clusters_by_majority_label(rng):
    X, y = blobs(rng, gap=6.0)
    clf = make("kmeans").fit(X, y)
    assert np.mean(clf.predict_proba(X).argmax(1) == y) == 1.0
    # The same data with the labels swapped: clusters take the swapped names.
    flipped = make("kmeans").fit(X, 1 - y)
    assert np.mean(flipped.predict_proba(X).argmax(1) == 1 - y) == 1.0
    # Probabilities are the softmax of negative scaled distances to the two centres.
    dist = clf.model.transform(X) / clf.scale_
    e = np.exp(-dist)
    cluster_p = e / e.sum(1, keepdims=True)
    expect = np.zeros_like(cluster_p)
    for c, label in enumerate(clf.cluster_labels_):
        expect[:, label] += cluster_p[:, c]
    np.testing.assert_allclose(clf.predict_proba(X), expect, atol=1e-9)


@pytest.mark.parametrize("name", KINDS)
def test_multiclass_attribution(name, rng):
    X, y = blobs(rng, n=30, k=3, gap=6.0)
    clf = make(name).fit(X, y)
    p = clf.predict_proba(X)
    assert p.shape == (90, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert np.mean(p.argmax(1) == y) >= 0.95


def test_hyper_parameters_reach_the_estimator(rng):
    X, y = blobs(rng)
    assert make("svm", C=7.0, kernel="linear").fit(X, y).model.named_steps["clf"].C == 7.0
    assert make("rf", max_depth=3).fit(X, y).model.named_steps["clf"].max_depth == 3
    assert make("lr", C=0.01).fit(X, y).model.named_steps["clf"].C == 0.01


def test_grid_search_matches_sklearn(rng):
    X, y = blobs(rng, gap=1.0)
    grid = {"C": [0.01, 1.0, 100.0]}
    clf = make("lr", grid=grid, cv=3, seed=5).fit(X, y)
    ref = GridSearchCV(
        Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=2000, random_state=5))]),
        {"clf__C": grid["C"]}, cv=StratifiedKFold(3, shuffle=True, random_state=5), scoring="roc_auc",
    ).fit(X, y)
    assert clf.best_params_ == {"C": ref.best_params_["clf__C"]}
    assert clf.model.named_steps["clf"].C == ref.best_params_["clf__C"]
    # grid=True searches the default grid.
    assert set(make("svm", grid=True, cv=2).fit(X, y).best_params_) == {"C", "gamma"}


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("k", [2, 3])
def test_save_load_round_trip(name, k, tmp_path, rng):
    X, y = blobs(rng, n=25, k=k, gap=2.0)
    clf = make(name).fit(X, y)
    clf.save(tmp_path)
    back = type(clf).load(tmp_path)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.params == clf.params


class NotAnEstimator:
    """A type no forgelab model contains."""

    def __init__(self):
        self.x = 1


def test_load_refuses_untrusted_types(tmp_path, rng):
    X, y = blobs(rng)
    clf = make("lr").fit(X, y)
    clf.save(tmp_path)
    sio.dump({"model": clf.model, "classes": clf.classes_, "evil": NotAnEstimator()}, tmp_path / MODEL_FILE)
    with pytest.raises(ValueError, match="does not trust.*NotAnEstimator"):
        type(clf).load(tmp_path)


def test_load_refuses_damaged_and_missing_files(tmp_path, rng):
    X, y = blobs(rng)
    clf = make("svm").fit(X, y)
    clf.save(tmp_path)
    (tmp_path / MODEL_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="damaged"):
        type(clf).load(tmp_path)
    (tmp_path / MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        type(clf).load(tmp_path)
    clf.save(tmp_path)
    with pytest.raises(ValueError, match="holds a 'svm' classifier"):
        CLASSIFIERS["lr"].load(tmp_path)


def test_bad_parameters_and_input(rng):
    with pytest.raises(ValueError, match="Unknown parameter.*gama.*choose from: C"):
        make("svm", gama=1)
    X, y = blobs(rng)
    # The constructor only stores parameters (scikit-learn's contract); fit checks them.
    with pytest.raises(ValueError, match="not parameters"):
        make("lr", grid={"alpha": [1]}).fit(X, y)
    with pytest.raises(ValueError, match="no hyper-parameters"):
        make("kmeans", grid=True).fit(X, y)
    with pytest.raises(ValueError, match="kernel"):
        make("svm", kernel="cubic").fit(X, y)
    with pytest.raises(ValueError, match="not fitted"):
        make("lr").predict_proba(X)
    with pytest.raises(ValueError, match="only one class"):
        make("lr").fit(X, np.zeros(len(X), int))
    with pytest.raises(ValueError, match="one label per image"):
        make("lr").fit(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        make("lr").fit(np.full_like(X, np.nan), y)
    with pytest.raises(ValueError, match="fitted on 6 features but got 5"):
        make("lr").fit(X, y).predict_proba(X[:, :5])
