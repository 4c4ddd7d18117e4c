"""How a spectral profile is normalised, one rule for the GAN losses and the fidelity metric.

The profiles are log power per frequency bin of images that end up as uint8. Two steps:

* Clamp from below at the power of uint8 quantisation noise, ``log((1/255)^2 / 12)``
  (uniform rounding noise of variance q^2 / 12, q = 1/255 on the [0, 1] scale; with the
  orthonormal FFT of :mod:`detectors.features` each bin of white noise carries that variance).
  A uint8 image cannot carry structure below that level: a generator's float output holds
  arbitrarily small power that rounding to uint8 replaces by this noise, and without the floor
  near-empty bins (log of ~0 = -18, e.g. nearest upsampling's zeros at Nyquist) would decide
  the scale of the whole profile. The floor is what uint8 rounding does to a spectrum,
  applied without rounding, so the losses stay differentiable (the gradient is zero below it).
* Min-max scale each profile to [0, 1] on its own (Jung & Keuper; Durall et al.), so that
  brightness and contrast do not count, only the shape of the spectrum.

:func:`gans.spectral.spectral_profile` (spectral discriminator, spectral regulariser) and
:mod:`detectors.fidelity` both call :func:`normalize_profile`.
"""

from __future__ import annotations

import math

import torch

from detectors.features import minmax

# Log power of uniform quantisation noise of 8-bit images scaled to [0, 1].
QUANTISATION_FLOOR = math.log((1.0 / 255.0) ** 2 / 12.0)


def normalize_profile(profile: torch.Tensor) -> torch.Tensor:
    """Clamp (N, D) log-power profiles at the uint8 quantisation floor, then min-max each row."""
    return minmax(profile.clamp_min(QUANTISATION_FLOOR))
