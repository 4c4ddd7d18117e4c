"""Every registered classifier follows scikit-learn's estimator contract (checked by scikit-learn itself)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import checkerboard_task
from sklearn.base import clone
from sklearn.utils import estimator_checks as checks

from detectors.base import CLASSIFIERS
from detectors.detector import load_classifier_modules
from detectors.features import extract

load_classifier_modules()  # the registry is filled lazily; the tests iterate all of it
NAMES = sorted(CLASSIFIERS)
VECTOR = [n for n in NAMES if CLASSIFIERS[n].input_kind == "vector"]
IMAGE = [n for n in NAMES if CLASSIFIERS[n].input_kind == "image"]

# Checks that need only construction, get_params and set_params: they apply to every classifier.
PARAM_CHECKS = (
    checks.check_no_attributes_set_in_init,
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_parameters_default_constructible,
)
# Checks that fit on scikit-learn's small random (N, D) matrices: they apply to vector classifiers.
FIT_CHECKS = (
    checks.check_dont_overwrite_parameters,
    checks.check_estimators_overwrite_params,
    checks.check_fit_idempotent,
)


def test_the_registry_holds_classical_and_neural_classifiers():
    assert {"svm", "lr", "rf", "kmeans"} <= set(VECTOR)
    assert {"smallcnn", "resnet18", "resnet50", "sad"} <= set(IMAGE)


@pytest.mark.parametrize("name", NAMES)
def test_clone_round_trips_the_parameters(name):
    cls = CLASSIFIERS[name]
    default = cls()
    # Change every parameter whose default is a plain number, so the clone must carry real values.
    changed = {k: v + 1 for k, v in default.get_params().items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    est = cls(**changed)
    twin = clone(est)
    assert type(twin) is cls and twin is not est
    assert twin.get_params() == est.get_params()
    assert all(twin.get_params()[k] == v for k, v in changed.items())
    # set_params changes only the named parameter and returns the estimator.
    key = next(iter(changed)) if changed else None
    if key is not None:
        assert twin.set_params(**{key: changed[key] + 1}) is twin
        assert twin.get_params()[key] == changed[key] + 1 and est.get_params()[key] == changed[key]


@pytest.mark.parametrize("check", PARAM_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", NAMES)
def test_sklearn_parameter_checks(name, check):
    check(name, CLASSIFIERS[name]())


@pytest.mark.parametrize("check", FIT_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", VECTOR)
def test_sklearn_fit_checks_on_classical_classifiers(name, check):
    est = CLASSIFIERS[name](**({"n_estimators": 5} if name == "rf" else {}))
    check(name, est)


@pytest.mark.parametrize("name", [n for n in VECTOR if CLASSIFIERS[n].default_grid])
def test_grid_search_keeps_the_parameters_and_stores_its_choice(name, rng):
    cls = CLASSIFIERS[name]
    X = np.concatenate([rng.normal(0, 1, (20, 4)), rng.normal(2, 1, (20, 4))])
    y = np.repeat([0, 1], 20)
    key, values = next(iter(cls.default_grid.items()))
    est = cls(grid={key: values[:2]}, cv=2)
    before = est.get_params()
    est.fit(X, y)
    assert est.get_params() == before
    assert set(est.best_params_) == {key} and est.best_params_[key] in values[:2]


def test_cnn_fit_keeps_the_parameters_and_clone_is_unfitted():
    X, y = checkerboard_task(32, seed=0)
    est = CLASSIFIERS["smallcnn"](epochs=1, batch_size=16, device="cpu")
    before = est.get_params()
    est.fit(X, y)
    assert est.get_params() == before
    twin = clone(est)
    assert not hasattr(twin, "network_")
    with pytest.raises(ValueError, match="not fitted"):
        twin.predict_proba(X)


def test_feature_fn_is_a_parameter_that_clone_carries():
    def spectrum(images: torch.Tensor) -> torch.Tensor:
        return extract("spectrum", images, flatten=False)

    est = CLASSIFIERS["smallcnn"](epochs=1, batch_size=16, device="cpu").set_feature_fn(spectrum)
    assert est.get_params()["feature_fn"] is spectrum and clone(est).feature_fn is spectrum
