"""Classical classifiers on feature vectors: scikit-learn pipelines (StandardScaler + estimator).

Registered under ``svm``, ``lr``, ``rf`` and ``kmeans`` with ``input_kind = "vector"``. Each
stores its hyper-parameters in the constructor (scikit-learn's contract), learns in ``fit``, can
search a grid with stratified cross-validation, and saves through ``skops.io`` so that loading a
model never runs code from the file: only the types listed in :data:`TRUSTED_TYPES` (beyond the
scikit-learn and NumPy types skops trusts by default) are accepted.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import skops.io as sio
import torch
from scipy.optimize import minimize
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from detectors.base import register_classifier
from plumbing.files import atomic_path, json_safe, write_json

MODEL_FILE = "model.skops"
META_FILE = "classifier.json"

# Types beyond skops' defaults that our own models contain (a random forest's fitted trees, the
# sigmoid calibrator of an SVM with probability=True).
# Anything else found in a file is refused: a model file from elsewhere could name any callable.
TRUSTED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "detectors.deviation.RealDeviation",
})


def to_numpy(X: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, D) features as a float64 NumPy array, with a readable error for bad shapes or values."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().double().numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"Features must be a non-empty (N, D) matrix, got shape {X.shape}; flatten image features first.")
    if not np.isfinite(X).all():
        raise ValueError("Features contain NaN or infinity; check the input images.")
    return X


def check_labels(y: np.ndarray, n: int) -> np.ndarray:
    """Integer labels 0..K-1 (0 = real), one per row, with at least two classes."""
    y = np.asarray(y).reshape(-1)
    if y.size != n:
        raise ValueError(f"Got {n} feature rows but {y.size} labels; give one label per image.")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise ValueError("Labels must be integers (0 = real, 1.. = fake sources).")
    y = y.astype(np.int64)
    if np.unique(y).size < 2:
        raise ValueError("Training data holds only one class; give both real and fake images.")
    return y


def fit_platt(decision: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Fit P(y=1 | d) = sigmoid(a * d + b) with a >= 0 (so the probability rises with d).

    Targets are Platt's (1999) smoothed labels (N+ + 1)/(N+ + 2) and 1/(N- + 2), which keep the
    fit finite even when the training decision values separate the classes perfectly.
    """
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(p: np.ndarray) -> tuple[float, np.ndarray]:
        z = p[0] * decision + p[1]
        # log(1 + e^z) - t z, written stably; its gradient is sigmoid(z) - t.
        nll = np.logaddexp(0.0, z) - t * z
        g = 1.0 / (1.0 + np.exp(-z)) - t
        return float(nll.sum()), np.array([(g * decision).sum(), g.sum()])

    res = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(0.0, None), (None, None)])
    return float(res.x[0]), float(res.x[1])


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, computed without overflow."""
    return np.exp(-np.logaddexp(0.0, -z))


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) scores."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class SklearnClassifier(BaseEstimator):
    """Base for a StandardScaler + estimator pipeline behind the detectors' Classifier protocol.

    A scikit-learn estimator itself: each kind names its hyper-parameters in its constructor,
    which only stores them (plus ``grid``, ``cv`` and ``seed``), so ``get_params``/``set_params``
    and ``sklearn.base.clone`` work. ``fit`` checks them, learns, and never changes them: a grid
    search's choice goes to ``best_params_``, the fitted pipeline to ``model_``.
    """

    input_kind: ClassVar[str] = "vector"
    name: ClassVar[str] = ""
    # The grid searched with grid=True.
    default_grid: ClassVar[dict[str, list]] = {}
    # Constructor parameters that configure the search, not the estimator.
    SEARCH_PARAMS: ClassVar[tuple[str, ...]] = ("grid", "cv", "seed")

    def __new__(cls, *args: Any, **kwargs: Any) -> SklearnClassifier:
        # Python's own error for a misspelt keyword would not list the valid ones.
        valid = cls._get_param_names()
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            hyper = [p for p in valid if p not in cls.SEARCH_PARAMS]
            raise ValueError(
                f"Unknown parameter(s) {', '.join(unknown)} for classifier {cls.name!r}; "
                f"choose from: {', '.join(hyper) or 'none'}, grid, cv, seed."
            )
        return super().__new__(cls)

    @classmethod
    def hyper_parameters(cls) -> list[str]:
        """Names of the estimator's hyper-parameters (the constructor's, less grid, cv and seed)."""
        return [p for p in cls._get_param_names() if p not in cls.SEARCH_PARAMS]

    @property
    def params(self) -> dict[str, Any]:
        """The estimator's hyper-parameters as set (not a grid search's choice: see ``best_params_``)."""
        return {k: getattr(self, k) for k in self.hyper_parameters()}

    @property
    def model(self) -> Pipeline | None:
        """The fitted pipeline (None before fit)."""
        return getattr(self, "model_", None)

    def validate_params(self) -> None:
        """Raise a ValueError naming the first invalid parameter (fit calls this)."""
        if isinstance(self.grid, dict):
            bad = sorted(set(self.grid) - set(self.hyper_parameters()))
            if bad:
                raise ValueError(
                    f"Grid key(s) {', '.join(bad)} are not parameters of {self.name!r}; "
                    f"choose from: {', '.join(self.hyper_parameters())}."
                )
        if isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv < 2:
            raise ValueError(f"cv must be at least 2 folds, got {self.cv}.")

    # -- to be provided by each kind -------------------------------------------------------
    def estimator(self, params: dict[str, Any], n_classes: int) -> BaseEstimator:
        """The scikit-learn estimator for ``params`` (placed after the scaler)."""
        raise NotImplementedError

    def _proba(self, X: np.ndarray) -> np.ndarray:
        """(N, K) probabilities from the fitted pipeline, columns ordered as ``classes_``."""
        return self.model_.predict_proba(X)

    def grid_prefix(self) -> str:
        """Where the estimator's parameters sit inside the pipeline, for GridSearchCV keys."""
        return "clf__"

    def _after_fit(self, X: np.ndarray, y: np.ndarray) -> None:
        """Hook for extra state learned from training data (Platt scaling, cluster labels)."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -- shared behaviour ------------------------------------------------------------------
    def pipeline(self, params: dict[str, Any], n_classes: int) -> Pipeline:
        """StandardScaler followed by the estimator (scaling is part of the model, as in scikit-learn)."""
        return Pipeline([("scale", StandardScaler()), ("clf", self.estimator(params, n_classes))])

    def fit(self, X, y, X_val=None, y_val=None) -> SklearnClassifier:
        """Fit on (N, D) features and labels 0..K-1; validation data is not used by classical models."""
        self.validate_params()
        X = to_numpy(X)
        y = check_labels(y, X.shape[0])
        self.classes_ = np.unique(y)
        k = self.classes_.size
        self.best_params_ = None
        if self.grid:
            self.model_, self.best_params_ = self._grid_search(X, y, k)
        else:
            self.model_ = self.pipeline(self.params, k).fit(X, y)
        self._after_fit(X, y)
        return self

    def _grid_search(self, X: np.ndarray, y: np.ndarray, k: int) -> tuple[Pipeline, dict[str, Any]]:
        grid = self.grid if isinstance(self.grid, dict) else self.default_grid
        if not grid:
            raise ValueError(f"Classifier {self.name!r} has no hyper-parameters to search; fit it without grid.")
        folds = min(self.cv, int(np.unique(y, return_counts=True)[1].min()))
        if folds < 2:
            raise ValueError("Grid search needs at least 2 training images of every class.")
        prefix = self.grid_prefix()
        search = GridSearchCV(
            self.pipeline(self.params, k),
            {f"{prefix}{key}": list(values) for key, values in grid.items()},
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed),
            scoring="roc_auc" if k == 2 else "balanced_accuracy",
            n_jobs=1,
        ).fit(X, y)
        best = {key[len(prefix):]: json_safe(v) for key, v in search.best_params_.items()}
        return search.best_estimator_, best

    def predict_proba(self, X) -> np.ndarray:
        """(N, K) class probabilities; column 1 is P(fake) in the binary case."""
        if self.model is None:
            raise ValueError(f"Classifier {self.name!r} is not fitted; call fit first.")
        X = to_numpy(X)
        n_in = self.model_.named_steps["scale"].n_features_in_
        if X.shape[1] != n_in:
            raise ValueError(f"Classifier was fitted on {n_in} features but got {X.shape[1]}; use the same feature and resolution.")
        return np.clip(self._proba(X), 0.0, 1.0)

    def save(self, folder: Path) -> None:
        """Write model.skops (the pipeline and learned arrays) and classifier.json (parameters)."""
        if self.model is None:
            raise ValueError(f"Classifier {self.name!r} is not fitted; call fit before save.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {"model": self.model_, "classes": self.classes_, **self._extra_state()}
        with atomic_path(folder / MODEL_FILE) as tmp:
            sio.dump(state, tmp)
        meta = {
            "classifier": self.name,
            "params": self.params,
            "grid": self.grid if isinstance(self.grid, dict) else bool(self.grid),
            "cv": self.cv,
            "seed": self.seed,
            "best_params": self.best_params_,
        }
        write_json(folder / META_FILE, meta)

    @classmethod
    def load(cls, folder: Path) -> SklearnClassifier:
        """Load a classifier saved by :meth:`save`, refusing files that hold untrusted types."""
        folder = Path(folder)
        meta_path, model_path = folder / META_FILE, folder / MODEL_FILE
        for p in (meta_path, model_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} is missing; the classifier was not saved completely, fit it again.")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            params, name = dict(meta["params"]), meta["classifier"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise ValueError(f"{meta_path} is damaged; fit the detector again.") from None
        if name != cls.name:
            raise ValueError(f"{folder} holds a {name!r} classifier, not {cls.name!r}; load it with the matching detector.")
        state = load_trusted(model_path)
        if not isinstance(state, dict) or not isinstance(state.get("model"), Pipeline):
            raise ValueError(f"{model_path} does not hold a forgelab classifier; fit the detector again.")
        # Files written before the estimator contract merged a grid search's choice into "params";
        # the fitted pipeline holds the chosen values either way.
        obj = cls(grid=meta.get("grid", False), cv=meta.get("cv", 5), seed=meta.get("seed", 0), **params)
        obj.model_ = state["model"]
        obj.classes_ = np.asarray(state["classes"])
        obj.best_params_ = meta.get("best_params")
        obj._set_extra_state(state)
        return obj


def load_trusted(path: Path) -> Any:
    """Load a skops file after checking that every type it names is one we expect."""
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError, OSError, ValueError):
        raise ValueError(f"{path} is damaged or not a skops model file; fit the detector again.") from None
    unexpected = sorted(set(untrusted) - TRUSTED_TYPES)
    if unexpected:
        raise ValueError(
            f"{path} contains types forgelab does not trust ({', '.join(unexpected)}); refusing to load it."
        )
    try:
        return sio.load(path, trusted=sorted(untrusted))
    except Exception as e:  # skops raises many kinds on damaged content; the user needs one sentence
        raise ValueError(f"{path} could not be read ({type(e).__name__}); fit the detector again.") from None


@register_classifier("svm")
class SVMClassifier(SklearnClassifier):
    """Support vector machine (RBF by default, ``kernel="linear"``) with a monotone probability.

    With ``probability=False`` (default) the decision value goes through a Platt sigmoid fitted on
    the training data, so P(fake) is monotone in the decision value; ``probability=True`` fits the
    sigmoid on out-of-fold decision values instead (CalibratedClassifierCV, one final SVM). Multiclass: softmax over the one-vs-rest
    decision values, with one fitted scale.
    """

    name = "svm"
    default_grid: ClassVar[dict[str, list]] = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": ["scale", 0.01, 0.001]}
    KERNELS: ClassVar[tuple[str, ...]] = ("rbf", "linear", "poly", "sigmoid")

    def __init__(self, C: float = 1.0, kernel: str = "rbf", gamma: str | float = "scale",
                 class_weight: str | dict | None = None, probability: bool = False,
                 grid: bool | dict[str, list] = False, cv: int = 5, seed: int = 0) -> None:
        self.C = C
        self.kernel = kernel
        self.gamma = gamma
        self.class_weight = class_weight
        self.probability = probability
        self.grid = grid
        self.cv = cv
        self.seed = seed

    def validate_params(self) -> None:
        """Raise a ValueError naming the first invalid parameter (fit calls this)."""
        super().validate_params()
        if self.kernel not in self.KERNELS:
            raise ValueError(f"Unknown SVM kernel {self.kernel!r}; choose rbf or linear.")

    def estimator(self, params: dict[str, Any], n_classes: int) -> BaseEstimator:
        svc = SVC(
            C=params["C"], kernel=params["kernel"], gamma=params["gamma"], class_weight=params["class_weight"],
            decision_function_shape="ovr", random_state=self.seed,
        )
        if params["probability"]:
            return CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=self.cv)
        return svc

    def grid_prefix(self) -> str:
        return "clf__estimator__" if self.probability else "clf__"

    def _decision(self, X: np.ndarray) -> np.ndarray:
        return self.model_.decision_function(X)

    def _after_fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.platt_ = None
        if self.probability:
            return
        d = self._decision(X)
        if d.ndim == 1:
            self.platt_ = np.array(fit_platt(d, (y == self.classes_[1]).astype(np.int64)))
        else:
            # One temperature for the one-vs-rest scores, chosen by training log-likelihood.
            idx = np.searchsorted(self.classes_, y)

            def nll(a: np.ndarray) -> float:
                p = softmax(a[0] * d)
                return float(-np.log(p[np.arange(len(y)), idx] + 1e-12).sum())

            res = minimize(nll, x0=np.array([1.0]), method="L-BFGS-B", bounds=[(1e-3, 1e3)])
            self.platt_ = np.array([float(res.x[0]), 0.0])

    def _proba(self, X: np.ndarray) -> np.ndarray:
        if self.probability:
            return self.model_.predict_proba(X)
        d = self._decision(X)
        a, b = self.platt_
        if d.ndim == 1:
            p1 = sigmoid(a * d + b)
            return np.stack([1.0 - p1, p1], axis=1)
        return softmax(a * d)

    def _extra_state(self) -> dict[str, Any]:
        return {"platt": self.platt_} if self.platt_ is not None else {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self.platt_ = np.asarray(state["platt"]) if "platt" in state else None


@register_classifier("lr")
class LogisticClassifier(SklearnClassifier):
    """L2-regularised logistic regression (multinomial for more than two classes)."""

    name = "lr"
    default_grid: ClassVar[dict[str, list]] = {"C": [0.001, 0.01, 0.1, 1.0, 10.0]}

    def __init__(self, C: float = 1.0, max_iter: int = 2000, class_weight: str | dict | None = None,
                 grid: bool | dict[str, list] = False, cv: int = 5, seed: int = 0) -> None:
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.grid = grid
        self.cv = cv
        self.seed = seed

    def estimator(self, params: dict[str, Any], n_classes: int) -> BaseEstimator:
        return LogisticRegression(
            C=params["C"], max_iter=params["max_iter"], class_weight=params["class_weight"], random_state=self.seed
        )


@register_classifier("rf")
class ForestClassifier(SklearnClassifier):
    """Random forest; probabilities are the trees' vote shares."""

    name = "rf"
    default_grid: ClassVar[dict[str, list]] = {"n_estimators": [100, 300], "max_depth": [None, 10], "min_samples_leaf": [1, 3]}

    def __init__(self, n_estimators: int = 200, max_depth: int | None = None, min_samples_leaf: int = 1,
                 max_features: str | int | float | None = "sqrt", class_weight: str | dict | None = None,
                 grid: bool | dict[str, list] = False, cv: int = 5, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.grid = grid
        self.cv = cv
        self.seed = seed

    def estimator(self, params: dict[str, Any], n_classes: int) -> BaseEstimator:
        return RandomForestClassifier(
            n_estimators=params["n_estimators"], max_depth=params["max_depth"],
            min_samples_leaf=params["min_samples_leaf"], max_features=params["max_features"],
            class_weight=params["class_weight"], random_state=self.seed, n_jobs=1,
        )


@register_classifier("kmeans")
class KMeansClassifier(SklearnClassifier):
    """Unsupervised k-means with one cluster per class; each cluster takes its members' majority label.

    Labels are used only after clustering, to name the clusters. Probabilities are a softmax of
    negative distances to the centres (scaled by the mean training distance to the nearest centre),
    summed over the clusters that carry each label.
    """

    name = "kmeans"
    default_grid: ClassVar[dict[str, list]] = {}

    def __init__(self, n_init: int = 10, max_iter: int = 300,
                 grid: bool | dict[str, list] = False, cv: int = 5, seed: int = 0) -> None:
        self.n_init = n_init
        self.max_iter = max_iter
        self.grid = grid
        self.cv = cv
        self.seed = seed

    def validate_params(self) -> None:
        """Raise a ValueError naming the first invalid parameter (fit calls this)."""
        if self.grid:
            raise ValueError("kmeans is unsupervised and has no hyper-parameters to search; fit it without grid.")
        super().validate_params()

    def estimator(self, params: dict[str, Any], n_classes: int) -> BaseEstimator:
        return KMeans(n_clusters=n_classes, n_init=params["n_init"], max_iter=params["max_iter"], random_state=self.seed)

    def fit(self, X, y, X_val=None, y_val=None) -> KMeansClassifier:
        """Cluster the features without labels, then name each cluster by its members' majority label."""
        self.validate_params()
        X = to_numpy(X)
        y = check_labels(y, X.shape[0])
        self.classes_ = np.unique(y)
        self.best_params_ = None
        self.model_ = self.pipeline(self.params, self.classes_.size).fit(X)
        self._after_fit(X, y)
        return self

    def _after_fit(self, X: np.ndarray, y: np.ndarray) -> None:
        members = self.model_.predict(X)
        labels = []
        for c in range(self.classes_.size):
            ys = y[members == c]
            # An empty cluster cannot vote; it keeps the overall majority label.
            labels.append(np.bincount(ys if ys.size else y).argmax())
        self.cluster_labels_ = np.asarray(labels, dtype=np.int64)
        dist = self.model_.transform(X)
        self.scale_ = float(max(dist.min(axis=1).mean(), 1e-12))

    def _proba(self, X: np.ndarray) -> np.ndarray:
        cluster_p = softmax(-self.model_.transform(X) / self.scale_)
        out = np.zeros((X.shape[0], self.classes_.size))
        for c, label in enumerate(self.cluster_labels_):
            out[:, np.searchsorted(self.classes_, label)] += cluster_p[:, c]
        return out

    def _extra_state(self) -> dict[str, Any]:
        return {"cluster_labels": self.cluster_labels_, "scale": np.array([self.scale_])}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self.cluster_labels_ = np.asarray(state["cluster_labels"], dtype=np.int64)
        self.scale_ = float(np.asarray(state["scale"])[0])
