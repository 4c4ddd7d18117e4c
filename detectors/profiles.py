"""How a spectral profile is normalised, one rule for the GAN losses and the fidelity metric.

The profiles are log power per frequency bin of images that end up as uint8. Two steps:

* Clamp from below at the level that uint8 rounding noise alone gives a profile ring, -14.87.
  The profile is of luma (ITU-R BT.601 weights w),
  and each channel's rounding error is uniform with variance q^2 / 12 (q = 1/255 on the [0, 1]
  scale), independent across channels, so luma's rounding noise has variance
  ``g * q^2 / 12`` with ``g = sum(w_c^2) = 0.447``. With the orthonormal FFT of
  :mod:`detectors.features` each bin of white noise has that variance as its *mean power*; a
  ring averages the *log* of the power (plus the ``EPS`` = 1e-8 of :func:`detectors.features.log_power`),
  and the power P of a complex bin of noise is exponential with that mean m, so a ring's
  expected value is ``E[log(P + EPS)] = log(EPS) + exp(EPS/m) * E1(EPS/m)`` (E1 the exponential
  integral; without EPS this is ``log(m) - gamma``, Euler's gamma 0.577). Pure rounding noise
  therefore sits at -14.87 in every ring but DC (``tests/test_profiles.py``); the floor
  before this release, ``log(q^2 / 12)`` = -13.57, was 3.6x (1.30 in log) too high.
  A uint8 image cannot carry structure below that level: a generator's float output holds
  arbitrarily small power that rounding to uint8 replaces by this noise, and without the floor
  near-empty bins (log of ~0 = -18, e.g. nearest upsampling's zeros at Nyquist) would decide
  the scale of the whole profile. The floor is what uint8 rounding does to a spectrum,
  applied without rounding, so the losses stay differentiable (the gradient is zero below it).
* Min-max scale each profile to [0, 1] on its own (Jung & Keuper; Durall et al.), so that
  the overall level of the spectrum (contrast) does not count, only its shape.

The DC ring (ring 0) is kept, as in the papers' profiles. It holds the image's mean brightness
(its log power is ``log(H * W * mean^2)``), and for any image that is not nearly black it is the
largest value of the profile, so min-max maps it to 1 and it sets the scale: brightness *does*
count, through that scale — the same rings of a darker copy of an image come out higher after
normalisation (``tests/test_profiles.py`` pins this). Dropping or clamping the DC ring would
change the profile length or every profile the spectral discriminator has learned, so it is
documented here rather than changed.

:func:`gans.spectral.spectral_profile` (spectral discriminator, spectral regulariser) and
:mod:`detectors.fidelity` both call :func:`normalize_profile`.
"""

from __future__ import annotations

import math

import torch
from scipy.special import exp1

from detectors.features import EPS, LUMA, minmax

# Variance of luma's rounding noise relative to one channel's: sum of the squared luma weights.
LUMA_NOISE_GAIN = sum(w * w for w in LUMA)
# Mean power of one orthonormal-FFT bin of luma's uint8 rounding noise on the [0, 1] scale.
ROUNDING_NOISE_POWER = LUMA_NOISE_GAIN * (1.0 / 255.0) ** 2 / 12.0


def mean_log_power_of_noise(power: float, eps: float = EPS) -> float:
    """E[log(P + eps)] for P exponential with mean ``power``: a ring of white noise in a log-power profile."""
    a = eps / power
    return math.log(eps) + math.exp(a) * float(exp1(a))


# Mean log power of a ring of pure uint8 rounding noise in the luma profile (see above).
QUANTISATION_FLOOR = mean_log_power_of_noise(ROUNDING_NOISE_POWER)


def normalize_profile(profile: torch.Tensor) -> torch.Tensor:
    """Clamp (N, D) log-power profiles at the uint8 quantisation floor, then min-max each row."""
    return minmax(profile.clamp_min(QUANTISATION_FLOOR))
