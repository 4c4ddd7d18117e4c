"""A real-anchored, one-sided detector: fakes are images that deviate from real ones, in any direction.

Spectral detectors of 2020 learn the *direction* in which the training generator departs from
real images. Learned upsamplers (transposed convolution, pixel shuffle, zero insertion) add
high-frequency power; interpolating ones (nearest, bilinear, bicubic) remove it. A linear or
kernel classifier trained on one family therefore scores the other family as *more real than
real photos* (ROC-AUC far below 0.5 across families in this lab's transfer matrices).

``deviation`` cannot learn a direction. It models the real images alone as a Gaussian
(Ledoit-Wolf shrinkage covariance, as in Mahalanobis out-of-distribution detection, Lee et
al. 2018), whitens every feature vector against it, and scores the weighted sum of squared
whitened deviations ``d(x) = sum_k w_k z_k(x)^2 / sum_k w_k``. The weights are non-negative:
``w = w_fit / mean(w_fit) + floor``, where ``w_fit`` comes from a ridge regression of the label
on the squared deviations constrained to ``w_fit >= 0`` (so the training fakes choose the
components that matter most), and the floor keeps every component in play, so that a generator
that departs from real images where the training generator did not still raises the score.
``floor = 0`` trusts the training fakes alone; a large floor tends to the plain Mahalanobis
distance from the real images, which ignores the fakes. P(fake) is a Platt sigmoid of
``log d`` with a non-negative slope, so probabilities are monotone in the deviation.

It is a binary detector (real vs fake): attribution needs a classifier that tells sources
apart (``svm``, ``lr``, ``rf``). Best with short feature vectors that describe the spectrum and
the 2x2 grid (``fingerprint``, ``xy``, ``radial``, ``periodicity``): the real-image covariance
of a D-dimensional feature needs well over D real training images.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import Ridge
from sklearn.utils import ClassifierTags, Tags

from detectors.base import register_classifier
from detectors.classical import SklearnClassifier, fit_platt, sigmoid

EPS = 1e-12


class RealDeviation(ClassifierMixin, BaseEstimator):
    """scikit-learn estimator behind ``deviation``: labels 0 = real, 1 = fake."""

    def __init__(self, floor: float = 3.0, alpha: float = 1.0) -> None:
        self.floor = floor
        self.alpha = alpha

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _squared(self, X: np.ndarray) -> np.ndarray:
        """(N, D) squared deviations from the real mean, standardised and whitened by the real covariance."""
        z = ((X - self.mean_) / self.scale_ - self.center_) @ self.whiten_
        return z * z

    def fit(self, X: np.ndarray, y: np.ndarray) -> RealDeviation:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if not np.array_equal(self.classes_, [0, 1]):
            raise ValueError("deviation is a binary detector (0 = real, 1 = fake); use svm, lr or rf to attribute sources.")
        real = X[y == 0]
        if real.shape[0] < 3:
            raise ValueError(f"deviation models the real images and needs at least 3 of them, got {real.shape[0]}.")
        self.mean_ = real.mean(axis=0)
        self.scale_ = real.std(axis=0) + EPS
        lw = LedoitWolf().fit((real - self.mean_) / self.scale_)
        evals, evecs = np.linalg.eigh(lw.covariance_)
        self.center_ = lw.location_
        self.whiten_ = evecs / np.sqrt(np.maximum(evals, EPS * max(evals.max(), EPS)))
        q = self._squared(X)
        fake = (y == 1).astype(np.float64)
        # Real and fake count equally, whatever their numbers.
        weight = np.where(fake == 1, 0.5 / max(fake.sum(), 1), 0.5 / max((1 - fake).sum(), 1)) * len(y)
        w = Ridge(alpha=self.alpha, positive=True).fit(q, fake, sample_weight=weight).coef_
        w = w / w.mean() if w.sum() > 0 else np.zeros_like(w)
        self.weights_ = w + self.floor
        if not self.weights_.sum() > 0:
            raise ValueError("deviation learned no weight from these fakes; use a floor above 0.")
        self.platt_ = np.array(fit_platt(self.decision_function(X), y.astype(np.int64)))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """log of the weighted mean squared whitened deviation from the real images."""
        d = self._squared(np.asarray(X, dtype=np.float64)) @ self.weights_ / self.weights_.sum()
        return np.log(d + EPS)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = sigmoid(self.platt_[0] * self.decision_function(X) + self.platt_[1])
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


@register_classifier("deviation")
class DeviationClassifier(SklearnClassifier):
    """One-sided: models the real images and scores how far an image departs from them, in any direction; binary only."""

    name = "deviation"
    default_grid: ClassVar[dict[str, list]] = {"floor": [0.0, 1.0, 3.0, 10.0], "alpha": [0.1, 1.0, 10.0]}

    def __init__(self, floor: float = 3.0, alpha: float = 1.0,
                 grid: bool | dict[str, list] = False, cv: int = 5, seed: int = 0) -> None:
        self.floor = floor
        self.alpha = alpha
        self.grid = grid
        self.cv = cv
        self.seed = seed

    def validate_params(self) -> None:
        """Raise a ValueError naming the first invalid parameter (fit calls this)."""
        super().validate_params()
        for name in ("floor", "alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"deviation's {name} must be a number >= 0, got {value!r}.")

    def __sklearn_tags__(self) -> Tags:
        # A classifier of two classes only: scikit-learn's own checks then give it binary labels.
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags(multi_class=False)
        return tags

    def estimator(self, params: dict[str, Any], n_classes: int) -> BaseEstimator:
        if n_classes != 2:
            raise ValueError("deviation is a binary detector (real vs fake); use svm, lr or rf to attribute sources.")
        return RealDeviation(floor=float(params["floor"]), alpha=float(params["alpha"]))
