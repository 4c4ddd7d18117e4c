"""Spectral fidelity of a fake set against a real set: how far apart their mean spectra are.

No pretrained weights are involved, so these numbers can be computed anywhere, next to FID.

Normalisation (decided here, the same for every number):

* Each image's profile (the log power per frequency bin) is first clamped from below at the
  level of uint8 quantisation noise in a luma profile, -14.87
  (:data:`detectors.profiles.QUANTISATION_FLOOR`, derived there): a uint8 image cannot carry
  structure below that level, and without the floor the exact zeros that nearest
  upsampling leaves at the Nyquist frequency (log of ~0 = -18) would decide the scale of the
  whole profile. Images are taken as uint8 (or float in [0, 1], the same scale).
* Then it is min-max scaled to [0, 1] on its own (as Jung & Keuper and Durall et al. do), so
  that overall contrast does not count, only the *shape* of the spectrum. Brightness still
  counts through the DC ring, which sets the scale (see :mod:`detectors.profiles`).
  Both steps are :func:`detectors.profiles.normalize_profile`, the rule the GAN's spectral
  losses use too.
* The profiles are averaged over each set, and the distance is the mean absolute difference
  of the two mean profiles over the frequency bins (an L1 distance divided by the number of
  bins). It lies in [0, 1] and can be compared across resolutions.
* ``x_l1`` / ``y_l1`` use the horizontal / vertical projections of the centred log spectrum
  (``detectors.features.xy_projections``: the mean over rows is a function of the horizontal
  frequency, the mean over columns of the vertical one), each floored and min-max scaled on
  its own.

The *cloaking score* asks whether single profiles betray the set they come from: a
standardised logistic regression is trained on the per-image (normalised) radial profiles
under stratified k-fold cross-validation with balanced classes, and its mean accuracy
``acc`` becomes ``1 - |acc - 0.5| / 0.5``: 1 when real and fake cannot be told apart, 0 when
every held-out image is classified right. Accuracy *below* chance under cross-validation is
an artefact of finite samples (with two identical sets each held-out image has its twin,
labelled the other way, in the training folds), not evidence that the sets differ, so
``acc`` is floored at 0.5 first.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from detectors.features import radial_profile, validate_batch, xy_projections
from detectors.profiles import QUANTISATION_FLOOR, normalize_profile

__all__ = ["QUANTISATION_FLOOR", "normalize_profile", "profiles", "mean_profiles", "cloaking_score",
           "spectral_fidelity"]


def _check_set(images: torch.Tensor, name: str) -> torch.Tensor:
    """Validate one image set, naming it in the error."""
    try:
        validate_batch(images)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: {e}") from None
    if images.shape[1] != 3:
        raise ValueError(f"{name} must be RGB images of shape (N, 3, H, W), got {tuple(images.shape)}.")
    return images


def profiles(images: torch.Tensor, batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """Per-image normalised radial, horizontal (x) and vertical (y) spectral profiles."""
    width = images.shape[-1]
    parts: dict[str, list[torch.Tensor]] = {"radial": [], "x": [], "y": []}
    # Batches bound the memory of the complex spectra for large sets.
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        xy = xy_projections(chunk)
        parts["radial"].append(normalize_profile(radial_profile(chunk)))
        parts["x"].append(normalize_profile(xy[:, :width]))
        parts["y"].append(normalize_profile(xy[:, width:]))
    return {k: torch.cat(v) for k, v in parts.items()}


def mean_profiles(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Mean normalised radial, x and y profiles of an image set, as numpy arrays for reports."""
    _check_set(images, "images")
    with torch.no_grad():
        return {k: v.mean(0).double().cpu().numpy() for k, v in profiles(images).items()}


def cloaking_score(real_profiles: np.ndarray, fake_profiles: np.ndarray, cv: int = 5, seed: int = 0) -> float:
    """1 - |acc - 0.5| / 0.5 of a cross-validated logistic regression on per-image profiles."""
    rng = np.random.default_rng(seed)
    n = min(len(real_profiles), len(fake_profiles))
    if n < 2:
        raise ValueError(
            f"The cloaking score needs at least 2 images per set, got {len(real_profiles)} real and "
            f"{len(fake_profiles)} fake; give more images."
        )
    # Balanced classes, so that accuracy 0.5 means chance whatever the set sizes are.
    real = real_profiles[rng.choice(len(real_profiles), n, replace=False)]
    fake = fake_profiles[rng.choice(len(fake_profiles), n, replace=False)]
    x = np.concatenate([real, fake])
    y = np.concatenate([np.zeros(n, dtype=int), np.ones(n, dtype=int)])
    folds = StratifiedKFold(n_splits=min(cv, n), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    acc = float(cross_val_score(model, x, y, cv=folds, scoring="accuracy").mean())
    acc = max(acc, 0.5)  # below chance is a cross-validation artefact, see the module docstring
    return float(min(1.0, 1.0 - abs(acc - 0.5) / 0.5))


def spectral_fidelity(real: torch.Tensor, fake: torch.Tensor, cv: int = 5, seed: int = 0) -> dict:
    """Radial/x/y L1 distances of mean normalised spectra and the cloaking score of real vs fake."""
    _check_set(real, "real")
    _check_set(fake, "fake")
    if real.shape[-2:] != fake.shape[-2:]:
        raise ValueError(
            f"real images are {tuple(real.shape[-2:])} px and fake images {tuple(fake.shape[-2:])} px; "
            "load both at the same resolution."
        )
    with torch.no_grad():
        pr, pf = profiles(real), profiles(fake)
    out = {
        f"{k}_l1": float((pr[k].mean(0) - pf[k].mean(0)).abs().mean())
        for k in ("radial", "x", "y")
    }
    out["cloaking"] = cloaking_score(
        pr["radial"].double().cpu().numpy(), pf["radial"].double().cpu().numpy(), cv=cv, seed=seed
    )
    return out
