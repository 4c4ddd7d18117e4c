"""A real-anchored, two-sided detector: fakes are images whose feature vectors depart from real ones.

Spectral detectors of 2020 learn the *direction* in which the training generator departs from
real images. Learned upsamplers (transposed convolution, pixel shuffle, zero insertion) add
high-frequency power; interpolating ones (nearest, bilinear, bicubic) remove it. A linear or
kernel classifier trained on one family therefore scores the other family as *more real than
real photos* (ROC-AUC far below 0.5 across families in this lab's transfer matrices).

``deviation`` cannot learn a direction. It models the real images as a Gaussian (Ledoit-Wolf
shrinkage covariance, as in Mahalanobis out-of-distribution detection, Lee et al. 2018),
whitens every feature vector against it, and measures the weighted whitened energy

    ``E(x) = sum_k w_k z_k(x)^2 / sum_k w_k``,   ``D(x) = log E(x)``.

Which departures it sees, exactly:

* **two-sided in energy.** The score is ``|D(x) - m| / s``, where ``m`` and ``s`` (median and
  1.4826 x MAD) are those of ``D`` on real images the Gaussian never saw. A mean shift and an
  excess of spread raise ``E`` (``D`` above the real range); a *deficit* of spread — fakes that
  sit closer to the real mean than real images do, as interpolating upsamplers' smoothed
  spectra may — lowers it (``D`` below the real range). Both count.
* **blind spots.** A departure that leaves the weighted energy where real images have it is
  not seen: e.g. some components spread more and others equally less, or a change confined to
  components whose weight is small. Per image the deficit side is weaker than the excess side
  (a single real image's ``z_k^2`` is often near 0), so a deficit is seen when it spans many
  components.
* **weights.** ``w = w_fit / mean(w_fit) + floor``: ``w_fit`` comes from a ridge regression of
  the label on ``z^2`` (or on ``-z^2`` when the training fakes' energy lies *below* the reals'),
  constrained to ``w_fit >= 0``, so the training fakes choose the components that matter
  most; the floor keeps every component in play, so a generator that departs where the
  training one did not still moves ``E``. ``floor = 0`` trusts the training fakes alone; a
  large floor tends to the plain Mahalanobis distance, which ignores the fakes.

**Cross-fitting.** The real training images (and the fakes) are split in two halves by
``random_state``. Fold ``f`` fits the standardisation, the dimension reduction and the Gaussian
on real half ``f``, and the weights and ``m, s`` on the other half (reals and fakes). Platt
scaling (``P(fake) = sigmoid(a |T| + b)``, ``a >= 0``) is fitted on the out-of-fold scores of
every training image, so training reals are scored exactly as test reals will be (fitting
everything on the same images put training reals inside a shrunken covariance that test reals
do not share: 88 % of test reals were called fake with fakes equal in distribution to the
reals). A test image's ``|T|`` is the mean over the two folds.

**Dimension.** A Gaussian of D numbers needs well over D real images. When D is more than
``n_half // reals_per_component`` (by default a quarter of a real half, ``n_half // 4``: e.g.
``npr``/``dwt`` with thousands of numbers), the standardised features are projected on the first
``k = n_half // reals_per_component`` principal components of the real half (PCA fitted on reals
only), and one more coordinate, the log of the mean squared residual outside those components
(the SPE / Q statistic of PCA monitoring), keeps the remaining directions in play.
``components`` sets ``k`` by hand; ``reals_per_component`` scales it with the number of real
images (``colorprint``, 237 numbers, is used with 9: 100 components from 900 reals per half;
README). Nothing ever returns constant scores silently: a fit whose training scores are all equal raises a ValueError.

**Real-only.** ``fit`` with real images alone (labels all 0) is allowed
(``supports_real_only``): the weights are the floor alone (the two-sided Mahalanobis energy)
and, lacking fakes for Platt scaling, ``P(fake) = sigmoid((|T| - t95) / c)``, with ``t95`` the
95th percentile of the out-of-fold ``|T|`` of the real images and ``c`` such that their
median maps to 0.25: about 5 % of real images score at least 0.5. The same calibration serves
when training fakes give no evidence at all (Platt slope 0, which would score every image 0.5).

It is a binary detector (real vs fake): attribution needs a classifier that tells sources
apart (``svm``, ``lr``, ``rf``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import Ridge
from sklearn.utils import ClassifierTags, Tags

from detectors.base import register_classifier
from detectors.classical import SklearnClassifier, fit_platt, sigmoid, to_numpy

EPS = 1e-12
MAD_TO_SD = 1.4826  # median absolute deviation -> standard deviation of a normal distribution
REAL_ONLY_QUANTILE = 0.95  # real-only: share of out-of-fold real images scored below 0.5


def _halves(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Two disjoint, sorted halves of ``range(n)`` (sizes differ by at most one)."""
    perm = rng.permutation(n)
    return [np.sort(perm[0::2]), np.sort(perm[1::2])]


def _coords(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """Standardised features, or their k PCA scores plus the log mean squared residual outside the basis."""
    s = (X - mean) / scale
    if basis is None:
        return s
    p = s @ basis
    r = s - p @ basis.T
    return np.concatenate([p, np.log(np.mean(r * r, axis=1, keepdims=True) + EPS)], axis=1)


class RealDeviation(ClassifierMixin, BaseEstimator):
    """scikit-learn estimator behind ``deviation``: labels 0 = real, 1 = fake (or all 0: real-only)."""

    def __init__(self, floor: float = 3.0, alpha: float = 1.0, components: int | None = None,
                 reals_per_component: float = 4.0, random_state: int = 0) -> None:
        self.floor = floor
        self.alpha = alpha
        self.components = components
        self.reals_per_component = reals_per_component
        self.random_state = random_state

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    # -- one fold ------------------------------------------------------------------------
    def _squared(self, f: int, X: np.ndarray) -> np.ndarray:
        """(N, K) squared whitened deviations from fold ``f``'s real Gaussian."""
        basis = None if self.bases_ is None else self.bases_[f]
        z = (_coords(X, self.means_[f], self.scales_[f], basis) - self.centers_[f]) @ self.whitens_[f]
        return z * z

    def _log_energy(self, f: int, X: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.log(self._squared(f, X) @ w / w.sum() + EPS)

    @staticmethod
    def _fit_gaussian(real: np.ndarray, k: int | None) -> tuple:
        """Standardisation, PCA basis (``k`` components, or None) and Ledoit-Wolf whitening of one real half."""
        mean = real.mean(axis=0)
        scale = real.std(axis=0) + EPS
        basis = None
        if k is not None:
            # PCA of the real half: right singular vectors of the centred, standardised features.
            s = (real - mean) / scale
            basis = np.linalg.svd(s - s.mean(axis=0), full_matrices=False)[2][:k].T
        c = _coords(real, mean, scale, basis)
        # Unit spread per coordinate before shrinkage: Ledoit-Wolf shrinks towards a multiple of the
        # identity, which would swamp a coordinate of small spread (the PCA residual) otherwise.
        cscale = c.std(axis=0) + EPS
        lw = LedoitWolf().fit(c / cscale)
        evals, evecs = np.linalg.eigh(lw.covariance_)
        whiten = evecs / np.sqrt(np.maximum(evals, EPS * max(evals.max(), EPS)))
        return mean, scale, basis, lw.location_ * cscale, whiten / cscale[:, None]

    def _fit_weights(self, q_real: np.ndarray, q_fake: np.ndarray | None) -> np.ndarray:
        """Non-negative ridge weights chosen by the fakes (on z^2, or -z^2 for a deficit), plus the floor."""
        k = q_real.shape[1]
        if q_fake is None or q_fake.shape[0] == 0:
            return np.full(k, float(self.floor) if self.floor > 0 else 1.0)
        e_real = np.log(q_real.mean(axis=1) + EPS)
        e_fake = np.log(q_fake.mean(axis=1) + EPS)
        sign = 1.0 if np.median(e_fake) >= np.median(e_real) else -1.0
        q = sign * np.concatenate([q_real, q_fake])
        fake = np.r_[np.zeros(len(q_real)), np.ones(len(q_fake))]
        # Real and fake count equally, whatever their numbers.
        weight = np.where(fake == 1, 0.5 / len(q_fake), 0.5 / len(q_real)) * len(fake)
        w = Ridge(alpha=self.alpha, positive=True).fit(q, fake, sample_weight=weight).coef_
        w = w / w.mean() if w.sum() > 0 else np.zeros_like(w)
        w = w + self.floor
        if not w.sum() > 0:
            raise ValueError("deviation learned no weight from these fakes; use a floor above 0.")
        return w

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> RealDeviation:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        labels = np.unique(y)
        if not (np.array_equal(labels, [0, 1]) or np.array_equal(labels, [0])):
            raise ValueError("deviation is a binary detector (0 = real, 1 = fake); use svm, lr or rf to attribute sources.")
        self.classes_ = np.array([0, 1])
        real, fake = X[y == 0], X[y == 1]
        if real.shape[0] < 4:
            raise ValueError(f"deviation models the real images in two halves and needs at least 4 of them, got {real.shape[0]}.")
        rng = np.random.default_rng(self.random_state)
        r_half = _halves(real.shape[0], rng)
        f_half = _halves(fake.shape[0], rng) if fake.shape[0] >= 2 else None
        n_half = min(len(h) for h in r_half)
        d = X.shape[1]
        if self.components is not None:
            k = int(self.components)
            if not 1 <= k <= min(d, n_half - 2):
                raise ValueError(f"deviation's components must be between 1 and {min(d, n_half - 2)} for "
                                 f"{d} features and {n_half} real images per half, got {k}.")
        else:
            cap = max(1, int(n_half // float(self.reals_per_component)))
            k = cap if d > cap else None
        self.n_components_ = d if k is None else k
        folds = []
        for f in (0, 1):
            folds.append(self._fit_gaussian(real[r_half[f]], k))
        self.means_, self.scales_ = [fo[0] for fo in folds], [fo[1] for fo in folds]
        self.bases_ = None if k is None else [fo[2] for fo in folds]
        self.centers_, self.whitens_ = [fo[3] for fo in folds], [fo[4] for fo in folds]
        self.weights_, self.locs_, self.spreads_ = [], [], []
        oof, oof_y = [], []
        for f in (0, 1):
            held = real[r_half[1 - f]]
            held_fake = fake[f_half[1 - f]] if f_half is not None else None
            w = self._fit_weights(self._squared(f, held), None if held_fake is None else self._squared(f, held_fake))
            e = self._log_energy(f, held, w)
            loc = float(np.median(e))
            spread = float(MAD_TO_SD * np.median(np.abs(e - loc))) + 1e-9
            self.weights_.append(w)
            self.locs_.append(loc)
            self.spreads_.append(spread)
            oof.append(np.abs(e - loc) / spread)
            oof_y.append(np.zeros(len(held), np.int64))
            if held_fake is not None:
                oof.append(np.abs(self._log_energy(f, held_fake, w) - loc) / spread)
                oof_y.append(np.ones(len(held_fake), np.int64))
        t, ty = np.concatenate(oof), np.concatenate(oof_y)
        if np.ptp(t) == 0:
            raise ValueError("deviation's training scores are all equal (the features do not vary across images); "
                             "choose another feature.")
        self.platt_ = np.array(fit_platt(t, ty)) if ty.max() == 1 else np.zeros(2)
        if self.platt_[0] == 0:
            # Real-only, or fakes that give no evidence (Platt slope 0 would score every image 0.5).
            med, hi = np.quantile(t[ty == 0], [0.5, REAL_ONLY_QUANTILE])
            c = max(hi - med, 1e-9) / np.log(3.0)
            self.platt_ = np.array([1.0 / c, -hi / c])
        # Lists of per-fold arrays become stacked arrays: what skops saves and loads.
        self.means_, self.scales_ = np.stack(self.means_), np.stack(self.scales_)
        self.bases_ = None if k is None else np.stack(self.bases_)
        self.centers_, self.whitens_ = np.stack(self.centers_), np.stack(self.whitens_)
        self.weights_, self.locs_, self.spreads_ = np.stack(self.weights_), np.array(self.locs_), np.array(self.spreads_)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Two-sided departure ``|D - m| / s`` of the log weighted whitened energy, averaged over the two folds."""
        X = np.asarray(X, dtype=np.float64)
        t = [np.abs(self._log_energy(f, X, self.weights_[f]) - self.locs_[f]) / self.spreads_[f] for f in (0, 1)]
        return (t[0] + t[1]) / 2

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = sigmoid(self.platt_[0] * self.decision_function(X) + self.platt_[1])
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


@register_classifier("deviation")
class DeviationClassifier(SklearnClassifier):
    """Two-sided, cross-fitted departure from the real images (see the module docstring); binary or real-only."""

    name = "deviation"
    # fit(X, y) accepts labels that are all 0 (real images alone); see the module docstring.
    supports_real_only: ClassVar[bool] = True
    binary_only: ClassVar[bool] = True  # no multi-class attribution (detectors.detector.supports_attribution)
    default_grid: ClassVar[dict[str, list]] = {"floor": [0.0, 1.0, 3.0, 10.0], "alpha": [0.1, 1.0, 10.0]}

    def __init__(self, floor: float = 3.0, alpha: float = 1.0, components: int | None = None,
                 reals_per_component: float = 4.0, grid: bool | dict[str, list] = False, cv: int = 5,
                 seed: int = 0) -> None:
        self.floor = floor
        self.alpha = alpha
        self.components = components
        self.reals_per_component = reals_per_component
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
        r = self.reals_per_component
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not r >= 1:
            raise ValueError(f"deviation's reals_per_component must be a number >= 1, got {r!r}.")
        c = self.components
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ValueError(f"deviation's components must be a positive integer or None (automatic), got {c!r}.")

    def __sklearn_tags__(self) -> Tags:
        # A classifier of two classes only: scikit-learn's own checks then give it binary labels.
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags(multi_class=False)
        return tags

    def estimator(self, params: dict[str, Any], n_classes: int) -> BaseEstimator:
        if n_classes != 2:
            raise ValueError("deviation is a binary detector (real vs fake); use svm, lr or rf to attribute sources.")
        return RealDeviation(floor=float(params["floor"]), alpha=float(params["alpha"]),
                             components=params.get("components"),
                             reals_per_component=float(params.get("reals_per_component", 4.0)),
                             random_state=int(self.seed))

    def fit(self, X, y, X_val=None, y_val=None) -> DeviationClassifier:
        """Fit on features and labels 0 = real, 1 = fake, or on real images alone (every label 0)."""
        labels = np.asarray(y).reshape(-1)
        if labels.size == 0 or np.any(labels != 0):
            return super().fit(X, y, X_val, y_val)
        self.validate_params()
        X = to_numpy(X)
        if labels.size != X.shape[0]:
            raise ValueError(f"Got {X.shape[0]} feature rows but {labels.size} labels; give one label per image.")
        if self.grid:
            raise ValueError("A grid search scores with fakes; fit deviation on real images alone without grid.")
        self.classes_ = np.array([0, 1])
        self.best_params_ = None
        self.model_ = self.pipeline(self.params, 2).fit(X, labels.astype(np.int64))
        return self
