"""A fake-image detector: a feature extractor composed with a classifier, named ``FEATURE:CLASSIFIER``.

``Detector("radial:svm").fit(real, fake)`` computes the feature of uint8 image batches (batched,
on the detector's device), trains the classifier on labels 0 = real and 1 = fake (1..K for
attribution), and picks a decision threshold on validation data. ``score(images)`` returns the
fakeness P(fake) = 1 - P(real) in [0, 1]. ``save(folder)`` / ``Detector.load(folder)`` round-trip
the detector through files that load without executing code.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import sys
import warnings
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detectors.base import CLASSIFIERS
from detectors.features import FEATURES, extract, validate_batch
from detectors.metrics import choose_threshold, evaluate
from detectors.patches import aggregate, check_patches, crop_patches
from plumbing.devices import resolve_device
from plumbing.files import write_text
from plumbing.progress import progress_bar

FORMAT = "forgelab-detector"
FORMAT_VERSION = 1
META_FILE = "detector.json"
# A real-only detector's threshold: the share of validation reals it calls fake.
REAL_ONLY_FPR = 0.05
CLASSIFIER_DIR = "classifier"

# Features that exist as (N, C, H, W) maps and can feed an image classifier (CNN); every feature
# can feed a vector classifier (maps are flattened).
IMAGE_FEATURES = ("pixels", "spectrum", "dct", "npr", "dwt")
# Modules that register classifiers; imported on first use so that importing detectors stays cheap.
CLASSIFIER_MODULES = ("detectors.classical", "detectors.deviation", "detectors.cnn", "detectors.sad", "detectors.nprnet")
_loaded_modules: set[str] = set()


def load_classifier_modules(need: str | None = None) -> None:
    """Import the modules that fill the classifier registry, stopping once ``need`` is registered."""
    for module in CLASSIFIER_MODULES:
        if need is not None and need in CLASSIFIERS:
            return
        if module in _loaded_modules:
            continue
        _loaded_modules.add(module)
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                warnings.warn(f"{module} needs {e.name}, which is not installed; its classifiers are unavailable.", stacklevel=2)
        except Exception as e:  # a broken optional module must not take the classical detectors down
            warnings.warn(f"{module} could not be imported ({type(e).__name__}: {e}); its classifiers are unavailable.", stacklevel=2)


def classifier_kind(name: str) -> str:
    """The ``input_kind`` ("vector" or "image") of a registered classifier."""
    load_classifier_modules(name)
    if name not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier {name!r}; choose one of: {', '.join(sorted(CLASSIFIERS))}.")
    return CLASSIFIERS[name].input_kind


def pair_is_valid(feature: str, classifier: str) -> bool:
    """True when ``feature`` can feed ``classifier`` (image classifiers need a 2D feature map)."""
    return classifier_kind(classifier) == "vector" or feature in IMAGE_FEATURES


def valid_pairs() -> list[str]:
    """Every ``FEATURE:CLASSIFIER`` spec that can be fitted."""
    load_classifier_modules()
    return [f"{f}:{c}" for c in sorted(CLASSIFIERS) for f in FEATURES if pair_is_valid(f, c)]


def check_spec(spec: str) -> tuple[str, str]:
    """Split ``FEATURE:CLASSIFIER`` into its names, with errors that list what is valid."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"Detector spec {spec!r} must look like FEATURE:CLASSIFIER, e.g. radial:svm; valid: {', '.join(valid_pairs())}.")
    feature, classifier = (part.strip() for part in spec.split(":"))
    load_classifier_modules(classifier)  # neural modules (torchvision) load only when asked for
    if feature not in FEATURES:
        raise ValueError(f"Unknown feature {feature!r} in {spec!r}; choose one of: {', '.join(FEATURES)}.")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier {classifier!r} in {spec!r}; choose one of: {', '.join(sorted(CLASSIFIERS))}.")
    if not pair_is_valid(feature, classifier):
        ok = [p for p in valid_pairs() if p.endswith(f":{classifier}")]
        raise ValueError(
            f"Classifier {classifier!r} works on images and cannot take the 1D feature {feature!r}; use one of: {', '.join(ok)}."
        )
    return feature, classifier


def supports_real_only(spec: str) -> bool:
    """True when the classifier of ``FEATURE:CLASSIFIER`` can be fitted on real images alone (``fit(real, None)``)."""
    _, classifier = check_spec(spec)
    return bool(getattr(CLASSIFIERS[classifier], "supports_real_only", False))


def supports_attribution(spec: str) -> bool:
    """True when the classifier of ``FEATURE:CLASSIFIER`` can tell several fake sources apart (not binary-only)."""
    _, classifier = check_spec(spec)
    return not getattr(CLASSIFIERS[classifier], "binary_only", False)


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for mod in ("torch", "numpy", "sklearn", "skops"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # an optional library that is missing is simply not recorded
            pass
    return out


def _check_batch(images: Any, what: str) -> torch.Tensor:
    return validate_batch(images, what, channels=(3,))


def _as_list(x: torch.Tensor | Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    items = [x] if isinstance(x, torch.Tensor) else list(x)
    if not items:
        raise ValueError(f"{what} is an empty list; give at least one batch of fake images.")
    return [_check_batch(t, f"{what}[{i}]" if len(items) > 1 else what) for i, t in enumerate(items)]


class Detector:
    """``FEATURE:CLASSIFIER`` detector with scikit-learn's shape: fit, score, save, load.

    ``feature_batch_size`` images go through the feature at a time (default: 512; on 2 CPU threads a
    large batch keeps both busy — measured 1.5x faster than 32 — and on CUDA it fills the device). ``feature_options`` go to the feature (e.g. ``{"length": 32, "normalize": "minmax"}`` for
    radial); other keyword arguments go to the classifier (e.g. ``C=10``, ``grid=True``). The
    classifier also receives ``seed`` and ``device`` when its constructor accepts them (a CNN's own
    training ``batch_size`` is a classifier parameter like any other).

    Vector classifiers get precomputed (N, D) features. Image classifiers that offer
    ``set_feature_fn`` (the CNNs) get the raw uint8 images plus the feature function, so that
    their training augmentation (blur, JPEG) happens on images before the spectrum is taken; they
    standardise their inputs themselves.

    ``patches=K`` (a square) with ``patch_size=R`` scores images of any size >= R through K R px
    crops on an aligned grid (``patch_align``: 2, or 8 for JPEG sources) and aggregates them
    (``patch_reduce``: ``mean`` of logits or ``max``); fitting uses the crops too, with the
    validation split drawn by image (see :mod:`detectors.patches`).
    """

    def __init__(self, spec: str = "radial:svm", feature_options: dict[str, Any] | None = None, *,
                 device: str = "auto", feature_batch_size: int | None = None, seed: int = 0, val_fraction: float = 0.2,
                 patches: int | None = None, patch_size: int | None = None, patch_reduce: str = "mean",
                 patch_align: int = 2, **classifier_params: Any):
        self.feature, self.classifier_name = check_spec(spec)
        self.spec = f"{self.feature}:{self.classifier_name}"
        self.input_kind = classifier_kind(self.classifier_name)
        self.feature_options = self._check_feature_options(dict(feature_options or {}))
        if feature_batch_size is not None and (not isinstance(feature_batch_size, int) or feature_batch_size < 1):
            raise ValueError(
                f"feature_batch_size must be a positive integer (or None for automatic), got {feature_batch_size!r}."
            )
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction!r}.")
        check_patches(patches, patch_reduce, patch_align)
        if patches is not None and (isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 4):
            raise ValueError(f"patches needs patch_size, the crop side in pixels (at least 4), got {patch_size!r}.")
        self.patches, self.patch_size, self.patch_reduce, self.patch_align = patches, patch_size, patch_reduce, patch_align
        self.image_size: int | None = None  # with patches: the side of the images it was fitted on
        self._cropped = False  # True while fit() runs on patches already cropped
        self.device = resolve_device(device)
        self.feature_batch_size = feature_batch_size
        self.seed = seed
        self.val_fraction = val_fraction
        self.classifier_params = dict(classifier_params)
        self.classifier = self._new_classifier()  # validates the parameters now, not after feature extraction
        self.threshold = 0.5
        self.resolution: tuple[int, int] | None = None
        self.classes: list[int] | None = None
        self.class_names: list[str] | None = None
        self.validation: dict[str, float] | None = None
        self.fitted = False

    # -- construction helpers -------------------------------------------------------------
    def _check_feature_options(self, options: dict[str, Any]) -> dict[str, Any]:
        params = inspect.signature(FEATURES[self.feature]).parameters
        allowed = [p for p in params if p not in ("images", "flatten")]
        if "flatten" in options:
            raise ValueError("The feature option 'flatten' is set by the classifier kind; leave it out.")
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"Unknown option(s) {', '.join(unknown)} for feature {self.feature!r}; choose from: {', '.join(allowed) or 'none'}."
            )
        return options

    def _new_classifier(self):
        cls = CLASSIFIERS[self.classifier_name]
        accepted = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        params = dict(self.classifier_params)
        # Pass the detector's seed and device along unless the user set them for the classifier.
        if "seed" in accepted and "seed" not in params:
            params["seed"] = self.seed
        if "device" in accepted and "device" not in params:
            params["device"] = str(self.device)
        if not takes_any:
            unknown = sorted(set(params) - set(accepted) - {"self"})
            if unknown:
                raise ValueError(f"Unknown parameter(s) {', '.join(unknown)} for classifier {self.classifier_name!r}.")
        clf = cls(**params)
        if self.input_kind == "vector":
            # Classical parameters are checked now, not after minutes of feature extraction. (Neural
            # ones are checked by fit: their checks look for weight files a loaded detector needs not.)
            clf.validate_params()
        if self.raw_input:
            clf.set_feature_fn(self.feature_fn())
        return clf

    @property
    def raw_input(self) -> bool:
        """True when the classifier takes raw images and computes the feature itself (CNNs)."""
        return self.input_kind == "image" and hasattr(CLASSIFIERS[self.classifier_name], "set_feature_fn")

    def feature_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """images -> (N, C, H, W) feature maps with this detector's options (for image classifiers)."""
        return partial(extract, self.feature, flatten=False, **self.feature_options)

    # -- features --------------------------------------------------------------------------
    def _checked(self, images: torch.Tensor) -> torch.Tensor:
        """Validate a batch and, once fitted, its size against the training resolution."""
        images = _check_batch(images, "images")
        if self.patches is not None:
            if min(images.shape[-2:]) < self.patch_size:
                raise ValueError(f"This detector scores {self.patch_size} px patches but got {images.shape[-2]}x{images.shape[-1]} "
                                 f"images; give images of at least {self.patch_size} px.")
            return images
        if self.resolution is not None and tuple(images.shape[-2:]) != self.resolution:
            h, w = self.resolution
            raise ValueError(
                f"This detector was fitted on {h}x{w} images but got {images.shape[-2]}x{images.shape[-1]}; "
                f"load the images at resolution {h}."
            )
        return images

    @property
    def load_resolution(self) -> int:
        """The side at which to load images for this detector: the fitting images' with patches, else the resolution."""
        self._require_fitted()
        return int(self.image_size if self.patches is not None and self.image_size else self.resolution[0])

    def _crops(self, images: torch.Tensor) -> torch.Tensor:
        """The K patches of every image (image-major) with ``patches``, else the images themselves."""
        if self.patches is None or self._cropped:
            return images
        return crop_patches(images, self.patch_size, self.patches, self.patch_align)

    def _per_image(self, scores: np.ndarray) -> np.ndarray:
        """Patch scores -> image scores (``patch_reduce`` over each image's K patches); identity without patches."""
        return scores if self.patches is None else aggregate(scores, self.patches, self.patch_reduce)

    def transform(self, images: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """The detector's feature of ``images`` (CPU float32): (N, D) for vector classifiers, else (N, C, H, W).

        With ``patches`` it has N * K rows, image-major; :meth:`score_features` aggregates them.
        """
        return self._raw_features(self._crops(self._checked(images)), progress)

    def _inputs(self, images: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """What the classifier takes: the images (or patches) themselves in raw-input mode, else the features."""
        return self._crops(self._checked(images)) if self.raw_input else self.transform(images, progress)

    def _raw_features(self, images: torch.Tensor, progress: bool) -> torch.Tensor:
        options = dict(self.feature_options)
        if "flatten" in inspect.signature(FEATURES[self.feature]).parameters:
            options["flatten"] = self.input_kind == "vector"
        out = []
        n = images.shape[0]
        with torch.no_grad(), progress_bar(progress, f"{self.feature} features", n) as bar:
            bs = self.feature_batch_size or 512
            for i in range(0, n, bs):
                batch = images[i : i + bs].to(self.device, non_blocking=True)
                out.append(extract(self.feature, batch, **options).float().cpu())
                bar.advance(batch.shape[0])
        return torch.cat(out)

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, real: torch.Tensor, fake: torch.Tensor | Sequence[torch.Tensor] | None,
            val_real: torch.Tensor | None = None, val_fake: torch.Tensor | Sequence[torch.Tensor] | None = None,
            multiclass: bool = False, fake_names: Sequence[str] | None = None, progress: bool = False) -> Detector:
        """Learn real (label 0) versus fake (1, or 1..K per fake batch with ``multiclass``).

        Without ``val_real``/``val_fake`` a stratified ``val_fraction`` of the training images is
        held out; the threshold is chosen there (and neural classifiers stop early there).
        ``fake=None`` fits on real images alone, for classifiers that declare
        ``supports_real_only`` (see :meth:`_fit_real_only`).
        """
        real = _check_batch(real, "real")
        if self.patches is not None and not self._cropped:
            return self._fit_patches(real, fake, val_real, val_fake, multiclass, fake_names, progress)
        if fake is None:
            if multiclass or val_fake is not None:
                raise ValueError("A real-only fit (fake=None) takes no fake validation images and cannot attribute sources.")
            return self._fit_real_only(real, val_real, progress)
        fakes = _as_list(fake, "fake")
        if (val_real is None) != (val_fake is None):
            raise ValueError("Give both val_real and val_fake, or neither (then part of the training data is held out).")
        sizes = {tuple(t.shape[-2:]) for t in [real, *fakes]}
        if val_real is not None:
            val_fakes = _as_list(val_fake, "val_fake")
            sizes |= {tuple(t.shape[-2:]) for t in [_check_batch(val_real, "val_real"), *val_fakes]}
            if multiclass and len(val_fakes) != len(fakes):
                raise ValueError(f"With multiclass, val_fake needs one batch per fake source ({len(fakes)}), got {len(val_fakes)}.")
        if len(sizes) > 1:
            raise ValueError(f"All images must have the same size, got {sorted(sizes)}; load them at one resolution.")
        n_sources = len(fakes) if multiclass else 1
        if fake_names is not None and len(fake_names) != n_sources:
            raise ValueError(f"fake_names needs {n_sources} name(s), got {len(fake_names)}.")

        def labelled(r: torch.Tensor, fs: list[torch.Tensor]) -> tuple[torch.Tensor, np.ndarray]:
            # Raw-input classifiers take the images; the others take features computed here.
            prep = (lambda t: t) if self.raw_input else (lambda t: self._raw_features(t, progress))
            feats = [prep(t) for t in [r, *fs]]
            labels = [np.zeros(r.shape[0], np.int64)] + [
                np.full(f.shape[0], k + 1 if multiclass else 1, np.int64) for k, f in enumerate(fs)
            ]
            return torch.cat(feats), np.concatenate(labels)

        self.resolution = None
        X, y = labelled(real, fakes)
        if val_real is not None:
            X_val, y_val = labelled(val_real, val_fakes)
        else:
            train_idx, val_idx = self._holdout(y)
            X, X_val, y, y_val = X[train_idx], X[val_idx], y[train_idx], y[val_idx]

        self.classifier = self._new_classifier()
        self.classifier.fit(X, y, X_val, y_val)
        self.classes = sorted(int(c) for c in np.unique(y))
        base = list(fake_names) if fake_names is not None else (
            [f"fake_{k + 1}" for k in range(n_sources)] if multiclass else ["fake"]
        )
        self.class_names = ["real", *base]
        self.resolution = (int(real.shape[-2]), int(real.shape[-1]))
        self.fitted = True
        # With patches the validation rows are K per image, image-major: the threshold sees image scores.
        s_val = self._per_image(self._score_features(X_val))
        y_val = y_val if self.patches is None else y_val[:: self.patches]
        self.threshold = choose_threshold(y_val > 0, s_val)
        self.validation = evaluate((y_val > 0).astype(np.int64), s_val, self.threshold)
        return self

    def _fit_patches(self, real, fake, val_real, val_fake, multiclass, fake_names, progress) -> Detector:
        """Fit on the K patches of every image; the validation split (when not given) is drawn by image.

        Crops of one image never sit on both sides of the split, and the threshold is chosen on
        the aggregated image scores of the validation images.
        """
        fakes = None if fake is None else _as_list(fake, "fake")
        val_fakes = None if val_fake is None else _as_list(val_fake, "val_fake")
        if val_real is None:
            if val_fakes is not None:
                raise ValueError("Give both val_real and val_fake, or neither (then part of the training data is held out).")
            real, val_real = self._image_holdout(real, "real")
            if fakes is not None:
                split = [self._image_holdout(f, f"fake[{i}]") for i, f in enumerate(fakes)]
                fakes, val_fakes = [s[0] for s in split], [s[1] for s in split]
        val_real = _check_batch(val_real, "val_real")
        for t in [real, val_real, *(fakes or []), *(val_fakes or [])]:
            self._checked(t)
        self.image_size = int(min(real.shape[-2:]))
        crops = self._crops
        args = (crops(real), None if fakes is None else [crops(f) for f in fakes], crops(val_real),
                None if val_fakes is None else [crops(f) for f in val_fakes])
        self._cropped = True  # fit() below sees the patches as images, and aggregates their validation scores
        try:
            return self.fit(*args, multiclass=multiclass, fake_names=fake_names, progress=progress)
        finally:
            self._cropped = False

    def _image_holdout(self, images: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded ``val_fraction`` of whole images held out for validation."""
        n = images.shape[0]
        n_val = math.ceil(self.val_fraction * n)
        if n_val < 1 or n - n_val < 2:
            raise ValueError(f"Too few {what} images ({n}) to hold out a validation split; give more images or pass val_real.")
        order = torch.from_numpy(np.random.default_rng([self.seed, zlib.crc32(what.encode())]).permutation(n))
        return images[order[n_val:]], images[order[:n_val]]

    def _fit_real_only(self, real: torch.Tensor, val_real: torch.Tensor | None, progress: bool) -> Detector:
        """Fit on real images alone; the threshold calls ``REAL_ONLY_FPR`` of the validation reals fake.

        Without ``val_real`` a ``val_fraction`` of the reals is held out (seeded). No fakes exist to
        choose a balanced threshold, so it is the (1 - REAL_ONLY_FPR) quantile of the validation
        reals' scores; ``validation`` records the reals' accuracy there and their count.
        """
        if not supports_real_only(self.spec):
            ok = sorted(n for n, c in CLASSIFIERS.items() if getattr(c, "supports_real_only", False))
            raise ValueError(f"Classifier {self.classifier_name!r} needs fake images to fit; "
                             f"fit with fakes, or use a real-only classifier: {', '.join(ok)}.")
        if val_real is not None:
            val_real = _check_batch(val_real, "val_real")
            if tuple(val_real.shape[-2:]) != tuple(real.shape[-2:]):
                raise ValueError(f"All images must have the same size, got {tuple(real.shape[-2:])} and "
                                 f"{tuple(val_real.shape[-2:])}; load them at one resolution.")
        self.resolution = None
        prep = (lambda t: t) if self.raw_input else (lambda t: self._raw_features(t, progress))
        X = prep(real)
        if val_real is not None:
            X_val = prep(val_real)
        else:
            n_val = math.ceil(self.val_fraction * X.shape[0])
            if n_val < 2 or X.shape[0] - n_val < 2:
                raise ValueError(f"Too few real images ({X.shape[0]}) to hold out a validation split; "
                                 "give more real images or pass val_real.")
            order = torch.from_numpy(np.random.default_rng(self.seed).permutation(X.shape[0]))
            X, X_val = X[order[n_val:]], X[order[:n_val]]
        self.classifier = self._new_classifier()
        self.classifier.fit(X, np.zeros(X.shape[0], np.int64), X_val, np.zeros(X_val.shape[0], np.int64))
        self.classes, self.class_names = [0, 1], ["real", "fake"]
        self.resolution = (int(real.shape[-2]), int(real.shape[-1]))
        self.fitted = True
        s_val = self._per_image(self._score_features(X_val))  # image scores with patches
        self.threshold = float(np.quantile(s_val, 1.0 - REAL_ONLY_FPR))
        self.validation = {"acc_real": float(np.mean(s_val < self.threshold)), "n_real": int(s_val.size),
                           "real_only": True}
        return self

    def _holdout(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stratified split of training indices into (train, validation)."""
        # Lazy: only fit needs it, and importing detectors stays cheap (start-up time).
        from sklearn.model_selection import train_test_split

        counts = np.bincount(y)
        counts = counts[counts > 0]
        n_val = math.ceil(self.val_fraction * y.size)
        if counts.min() < 2 or n_val < counts.size or y.size - n_val < counts.size:
            raise ValueError(
                f"Too few images to hold out a validation split ({counts.min()} in the smallest class); "
                "give at least 2 images of each class per split, or pass val_real and val_fake."
            )
        idx = np.arange(y.size)
        train_idx, val_idx = train_test_split(idx, test_size=n_val, stratify=y, random_state=self.seed)
        return np.sort(train_idx), np.sort(val_idx)

    # -- scoring ---------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ValueError(f"Detector {self.spec!r} is not fitted; call fit or Detector.load first.")

    def _proba_features(self, X: torch.Tensor) -> np.ndarray:
        p = np.asarray(self.classifier.predict_proba(X), dtype=np.float64)
        return np.clip(p, 0.0, 1.0)

    def _score_features(self, X: torch.Tensor) -> np.ndarray:
        return np.clip(1.0 - self._proba_features(X)[:, 0], 0.0, 1.0)

    def score_features(self, X: torch.Tensor) -> np.ndarray:
        """Fakeness in [0, 1] from what :meth:`transform` returned (lets callers reuse features)."""
        self._require_fitted()
        if self.raw_input:
            raise ValueError(f"Detector {self.spec!r} computes its feature inside the CNN; call score(images).")
        return self._per_image(self._score_features(X))

    def predict_proba(self, images: torch.Tensor, progress: bool = False) -> np.ndarray:
        """(N, K) class probabilities; column 0 is P(real), columns 1.. the fake sources."""
        self._require_fitted()
        p = self._proba_features(self._inputs(images, progress))
        if self.patches is None:
            return p
        if p.shape[1] == 2:
            fake = self._per_image(p[:, 1])
            return np.stack([1.0 - fake, fake], axis=1)
        return p.reshape(-1, self.patches, p.shape[1]).mean(axis=1)  # attribution: mean class probabilities

    def score(self, images: torch.Tensor, progress: bool = False) -> np.ndarray:
        """Fakeness P(fake) = 1 - P(real) of each image, in [0, 1] (aggregated over its patches with ``patches``)."""
        self._require_fitted()
        return self._per_image(self._score_features(self._inputs(images, progress)))

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """1 for images scored at or above the threshold (fake), else 0."""
        return (self.score(images) >= self.threshold).astype(np.int64)

    def attribute(self, images: torch.Tensor) -> np.ndarray:
        """Most probable class of each image (0 = real, k = k-th fake source)."""
        self._require_fitted()
        return np.asarray(self.classes)[self.predict_proba(images).argmax(axis=1)]

    # -- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything detector.json records: spec, options, threshold, resolution, classes, versions."""
        self._require_fitted()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": self.spec,
            "feature": self.feature,
            "classifier": self.classifier_name,
            "input_kind": self.input_kind,
            "feature_options": self.feature_options,
            "classifier_params": self.classifier_params,
            "feature_batch_size": self.feature_batch_size,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "patches": {"k": self.patches, "size": self.patch_size, "reduce": self.patch_reduce, "align": self.patch_align,
                        "image_size": self.image_size},
            "threshold": self.threshold,
            "resolution": list(self.resolution),
            "classes": self.classes,
            "class_names": self.class_names,
            "validation": self.validation,
            "versions": _versions(),
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write detector.json and the classifier's files (under classifier/) into ``folder``."""
        state = self.state()
        try:
            text = json.dumps(state, indent=2, allow_nan=False) + "\n"
        except (TypeError, ValueError) as e:
            raise ValueError(f"Detector parameters cannot be written as JSON ({e}); use plain numbers, strings and lists.") from None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CLASSIFIER_DIR).mkdir(exist_ok=True)
        self.classifier.save(folder / CLASSIFIER_DIR)
        # detector.json goes last: its presence means the folder is complete.
        write_text(folder / META_FILE, text)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "auto") -> Detector:
        """Load a detector written by :meth:`save`; missing or damaged files stop with one sentence."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist or is not a folder; give a folder written by `forgelab detect fit`.")
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder} holds no {META_FILE}; it is not a saved detector, or its fit did not finish.")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT:
                raise KeyError("format")
            version = int(meta["format_version"])
            spec = meta["spec"]
            patch = meta.get("patches") or {"k": None, "size": None, "reduce": "mean", "align": 2}
            det = cls(spec, meta["feature_options"], device=device, feature_batch_size=meta["feature_batch_size"],
                      seed=int(meta["seed"]), val_fraction=float(meta["val_fraction"]), patches=patch["k"],
                      patch_size=patch["size"], patch_reduce=patch["reduce"], patch_align=patch["align"],
                      **meta["classifier_params"])
            det.image_size = patch.get("image_size")
            det.threshold = float(meta["threshold"])
            det.resolution = tuple(int(v) for v in meta["resolution"])
            det.classes = [int(c) for c in meta["classes"]]
            det.class_names = [str(c) for c in meta["class_names"]]
            det.validation = meta.get("validation")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            if isinstance(e, ValueError) and not isinstance(e, json.JSONDecodeError):
                raise
            what = f"missing or bad field {e}" if isinstance(e, KeyError) else type(e).__name__
            raise ValueError(f"{meta_path} is damaged ({what}); fit the detector again.") from None
        if version > FORMAT_VERSION:
            raise ValueError(f"{meta_path} was written by a newer forgelab (format {version}); upgrade forgelab to load it.")
        clf_dir = folder / CLASSIFIER_DIR
        if not clf_dir.is_dir():
            raise FileNotFoundError(f"{clf_dir} is missing; the detector was not saved completely, fit it again.")
        loader = CLASSIFIERS[det.classifier_name].load
        kwargs = {"device": str(det.device)} if "device" in inspect.signature(loader).parameters else {}
        try:
            det.classifier = loader(clf_dir, **kwargs)
            if det.raw_input:
                det.classifier.set_feature_fn(det.feature_fn())
            if "device" not in det.classifier_params and hasattr(det.classifier, "device"):
                # A model fitted on a GPU machine is scored wherever it is loaded.
                det.classifier.device = str(det.device)
        except (ValueError, FileNotFoundError, TypeError):
            raise
        except Exception as e:  # any other failure inside a classifier's loader is damage, said in one line
            raise ValueError(f"{clf_dir} could not be loaded ({type(e).__name__}: {e}); fit the detector again.") from None
        det.fitted = True
        return det

    def __repr__(self) -> str:
        state = f"threshold={self.threshold:.3f}" if self.fitted else "not fitted"
        return f"Detector({self.spec!r}, {state})"
