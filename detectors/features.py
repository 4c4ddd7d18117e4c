"""Batched spectral and pixel features of image batches, on whatever device the images are on.

Images arrive as ``(N, 3, H, W)`` tensors: ``uint8`` in 0..255 or floating point. uint8 is
scaled to [0, 1]; floating-point input is used as given, so a generator's tanh output can be
passed straight in and gradients flow through every feature (the spectral discriminator and
the spectral regulariser in ``gans/`` call :func:`radial_profile` on fake batches).

One radius index is precomputed per (height, width, device) and the azimuthal mean is a
single matrix product, so no per-image sorting or Python loop is involved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch

# ITU-R BT.601 luma, the usual RGB -> grayscale weights.
from detectors import gridstats, residuals
from detectors.batches import checked_float_batch, validate_batch  # noqa: F401  (re-exported)

LUMA = (0.299, 0.587, 0.114)
EPS = 1e-8

FEATURES: dict[str, Callable[..., torch.Tensor]] = {}


def register_feature(name: str):
    """Add a feature function ``(images, **options) -> (N, ...)`` to the registry."""

    def wrap(fn):
        FEATURES[name] = fn
        return fn

    return wrap


def _no_grad_needed(x: torch.Tensor) -> bool:
    """True when ``x`` needs no autograd history, so in-place ops (fewer large allocations) are safe."""
    return not (torch.is_grad_enabled() and x.requires_grad)


@lru_cache(maxsize=32)
def _luma_weights(device: str, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """The (3,) luma weights times ``scale`` on ``device``: built once, since copying them from the
    host on every call would make the host wait for a GPU (2 n_dis + 2 times per spectral-D step)."""
    return (torch.tensor(LUMA, dtype=dtype) * scale).to(device)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 3|1, H, W) -> (N, H, W) luma, float (uint8 scaled to [0, 1])."""
    x = validate_batch(images)
    # uint8 -> float without a separate division pass: 1/255 is folded into the weights.
    scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
    x = x.float() if x.dtype in (torch.uint8, torch.float16, torch.bfloat16) else x
    n, c, h, w = x.shape
    if c == 1:
        return x[:, 0] * scale if scale != 1.0 else x[:, 0]
    weights = _luma_weights(str(x.device), x.dtype, scale)
    # One (3,) @ (3, H*W) product per image; several times faster on CPU than einsum here.
    return (weights @ x.reshape(n, c, h * w)).view(n, h, w)


def _log_of_power(f: torch.Tensor) -> torch.Tensor:
    """log(|f|^2 + EPS) of a complex tensor, in place when no gradient is needed."""
    if _no_grad_needed(f):
        p = f.real.square()
        return p.addcmul_(f.imag, f.imag).add_(EPS).log_()
    return torch.log(f.real.square() + f.imag.square() + EPS)


def log_power(x: torch.Tensor, onesided: bool = False, centred: bool = True) -> torch.Tensor:
    """Log power spectrum of the last two dims: fft2 (centred unless ``centred=False``) or rfft2 (one-sided)."""
    if onesided:
        return _log_of_power(torch.fft.rfft2(x, norm="ortho"))
    p = _log_of_power(torch.fft.fft2(x, norm="ortho"))
    return torch.fft.fftshift(p, dim=(-2, -1)) if centred else p


def radius_grid(height: int, width: int) -> torch.Tensor:
    """Integer frequency radius (rounded) of each bin of a one-sided rfft2 of an H x W image."""
    fy = torch.fft.fftfreq(height, d=1.0 / height)
    fx = torch.fft.rfftfreq(width, d=1.0 / width)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).round().long()


@lru_cache(maxsize=32)
def _ring_matrix(height: int, width: int, device: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H * (W//2+1), R) matrix whose product with a one-sided spectrum gives ring means.

    The one-sided spectrum holds the columns 1..ceil(W/2)-1 for both +fx and -fx, so they
    weigh twice; with these weights a ring mean equals the mean over the full 2D spectrum.
    """
    r = radius_grid(height, width)
    wr = r.shape[1]
    col_w = torch.full((wr,), 2.0, dtype=torch.float64)
    col_w[0] = 1.0
    if width % 2 == 0:
        col_w[-1] = 1.0
    w = col_w.expand_as(r).reshape(-1)
    idx = r.reshape(-1)
    n_rings = int(idx.max()) + 1
    m = torch.zeros(idx.numel(), n_rings, dtype=torch.float64)
    m[torch.arange(idx.numel()), idx] = w
    m /= m.sum(0, keepdim=True)
    return m.to(device=device, dtype=dtype)


def nyquist_radius(height: int, width: int) -> int:
    """The largest radius whose ring lies inside the spectrum on both axes: min(H, W) // 2."""
    return min(height, width) // 2


def n_radii(height: int, width: int, nyquist: bool = False) -> int:
    """Number of integer radii in the azimuthal profile of an H x W image (to Nyquist with ``nyquist``)."""
    if nyquist:
        return nyquist_radius(height, width) + 1
    return int(radius_grid(height, width).max()) + 1


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Scale each row of (N, D) to [0, 1]."""
    lo = x.amin(dim=1, keepdim=True)
    hi = x.amax(dim=1, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(EPS)


def resample_1d(x: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample each row of (N, D) to ``length`` values."""
    if x.shape[1] == length:
        return x
    return torch.nn.functional.interpolate(
        x[:, None], size=length, mode="linear", align_corners=True
    )[:, 0]


@register_feature("radial")
def radial_profile(
    images: torch.Tensor, length: int | None = None, normalize: str = "none", nyquist: bool = False
) -> torch.Tensor:
    """Azimuthal average of the grayscale log power spectrum, one value per integer radius.

    ``length`` resamples the profile to a fixed size (to compare resolutions);
    ``normalize`` is ``"none"`` or ``"minmax"`` (per image, as Jung & Keuper and Durall et al.);
    ``nyquist`` stops at the Nyquist radius min(H, W) // 2: the rings beyond it hold only the
    corners of the spectrum (1 to 4 frequencies each at 32 px, against ~100 at Nyquist), so
    their means are noise that a per-image min-max scaling would otherwise be anchored on.
    Differentiable with respect to floating-point input.
    """
    g = grayscale(images)
    h, w = g.shape[-2:]
    p = log_power(g, onesided=True).reshape(g.shape[0], -1)
    rings = _ring_matrix(h, w, str(g.device), p.dtype)
    if nyquist:
        rings = rings[:, : n_radii(h, w, nyquist=True)]
    prof = p @ rings
    if length is not None:
        prof = resample_1d(prof, length)
    return _normalize(prof, normalize)


def xy_profile(plane: torch.Tensor) -> torch.Tensor:
    """(N, H, W) float plane -> (N, W + H): its centred log spectrum averaged over rows, then over columns."""
    h, w = plane.shape[-2:]
    # Work on the one-sided rfft2 (half the FFT and logs). A real image's power is symmetric,
    # P[fy, fx] = P[-fy, -fx], so the column means of the missing half (-fx) mirror those of +fx,
    # and row fy of the full spectrum is the one-sided row fy plus the mirrored interior columns of
    # row -fy. Means commute with the centring shift, so only the 1D profiles are shifted.
    p = log_power(plane, onesided=True)  # (N, H, W//2 + 1), uncentred
    half = p.mean(dim=1)  # column means for fx = 0 .. W//2
    n_mirror = (w - 1) // 2  # columns 1 .. n_mirror reappear as -fx
    cols = torch.cat([half, half[:, 1 : n_mirror + 1].flip(-1)], dim=1)  # fx = 0 .. W-1 in fft order
    interior = p[..., 1 : n_mirror + 1].sum(dim=-1)
    row_sums = p.sum(dim=-1) + torch.roll(interior.flip(-1), 1, dims=-1)  # interior at -fy
    rows = row_sums / w
    return torch.cat([torch.fft.fftshift(cols, dim=-1), torch.fft.fftshift(rows, dim=-1)], dim=1)


@register_feature("xy")
def xy_projections(images: torch.Tensor, normalize: str = "none") -> torch.Tensor:
    """Means of the centred log spectrum over rows (length W) and over columns (length H), concatenated."""
    return _normalize(xy_profile(grayscale(images)), normalize)


@register_feature("spectrum")
def full_spectrum(images: torch.Tensor, flatten: bool = True) -> torch.Tensor:
    """The centred grayscale log power spectrum: (N, H*W), or (N, 1, H, W) with flatten=False."""
    p = log_power(grayscale(images))
    return p.reshape(p.shape[0], -1) if flatten else p[:, None]


@lru_cache(maxsize=32)
def dct_matrix(n: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n x n): ``D @ x`` is scipy.fft.dct(x, norm='ortho')."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2D DCT-II over the last two dims (equals scipy.fft.dctn(norm='ortho'))."""
    h, w = x.shape[-2:]
    dh = dct_matrix(h, str(x.device), x.dtype)
    dw = dct_matrix(w, str(x.device), x.dtype)
    return dh @ x @ dw.T


@register_feature("dct")
def dct_features(images: torch.Tensor, flatten: bool = True) -> torch.Tensor:
    """Log magnitude of the per-channel orthonormal 2D DCT-II (Frank et al. 2020).

    Per-coefficient standardisation with training-set statistics is the detector's scaler.
    """
    x = checked_float_batch(images)
    c = dct2(x)
    d = c.abs_().add_(1e-6).log_() if _no_grad_needed(c) else torch.log(c.abs() + 1e-6)
    return d.reshape(d.shape[0], -1) if flatten else d


@register_feature("pixels")
def pixels(images: torch.Tensor, flatten: bool = False) -> torch.Tensor:
    """The image itself as float in [0, 1]: (N, 3, H, W), or (N, 3*H*W) with flatten=True."""
    x = checked_float_batch(images)
    return x.reshape(x.shape[0], -1) if flatten else x


# Features of the 2x2 upsampling grid (detectors.residuals), registered beside the spectra.
register_feature("npr")(residuals.npr)
register_feature("dwt")(residuals.dwt_hh)
register_feature("periodicity")(residuals.periodicity)
register_feature("haargrid")(gridstats.haargrid)


@register_feature("fingerprint")
def fingerprint(images: torch.Tensor) -> torch.Tensor:
    """The upsampling fingerprint as one short vector: ``xy`` spectra, ``radial`` profile and ``periodicity``.

    Concatenated, per image: the horizontal and vertical log-power projections (how much power
    at each frequency, per axis), the azimuthal profile, and the 2x2-grid phase energies and
    Nyquist ratios of the predictor residual. The learned and the interpolating upsamplers move
    different entries in opposite directions; paired with the two-sided ``deviation``
    classifier, a detector trained on one family also flags the other.
    """
    return torch.cat([xy_projections(images), radial_profile(images), residuals.periodicity(images)], dim=1)


@register_feature("gridprint")
def gridprint(images: torch.Tensor) -> torch.Tensor:
    """The ``xy`` spectra and the ``haargrid`` statistics in one vector: how much power per frequency, and where the 2x2 grid is.

    The spectra see the excess or lack of high frequencies; the grid statistics see whether the
    image's own 2x2 grid differs from the shifted ones. Paired with ``deviation`` fitted on real
    images alone it measured a little better than ``fingerprint`` on the lab's ImageWoof fakes
    (README, issue 16: 0.929 against 0.925 mean ROC-AUC over transposed and nearest).
    """
    return torch.cat([xy_projections(images), gridstats.haargrid(images)], dim=1)


def opponent_chroma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 2, H, W): the two chroma planes of the opponent colour space.

    ``O1 = (R - G) / sqrt(2)`` (red-green) and ``O2 = (R + G - 2B) / sqrt(6)`` (yellow-blue), the
    orthonormal opponent axes of van de Sande et al. (TPAMI 2010), on [0, 1] values; their third
    axis, (R + G + B) / sqrt(3), is the intensity that :func:`grayscale` already covers. Both are
    zero on every grey pixel whatever its brightness.
    """
    x = checked_float_batch(images)
    if x.shape[1] != 3:
        raise ValueError(f"Chroma needs RGB images (N, 3, H, W), got {x.shape[1]} channel(s).")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return torch.stack([(r - g) / math.sqrt(2.0), (r + g - 2.0 * b) / math.sqrt(6.0)], dim=1)


@register_feature("colorprint")
def colorprint(images: torch.Tensor) -> torch.Tensor:
    """``fingerprint`` (of the luma) and the ``xy`` spectra of the two opponent chroma planes.

    A generator paints its three output channels with one last convolution of its upsampled
    feature maps, so what the upsampler leaves in the spectrum can sit in the colour differences
    as well as in the brightness; ``fingerprint`` looks at the luma alone (a test builds a trace
    in the chroma alone that ``colorprint`` sees and ``fingerprint`` does not). This feature adds, per chroma plane (:func:`opponent_chroma`), the row and
    column means of its log power spectrum (:func:`xy_profile`, both halves, as ``fingerprint``
    keeps them for the luma): 109 + 2 x 64 = 237 numbers at 32 px. Paired with ``deviation``
    (``-p reals_per_component=9``) it is the lab's best detector across upsamplers on losslessly
    stored images (README, issue 16's protocol: 0.979 mean off-diagonal ROC-AUC).

    With real and fake images both stored as JPEG (4:2:0) the advantage over ``fingerprint`` is
    gone (README: 0.807 against 0.835 at quality 95). A codec difference between the sets reaches
    these numbers too, and with ``svm`` even a first compression that ``--align`` keeps
    (``tests/test_align.py``); compare sets stored alike and pair it with ``deviation``.
    """
    x = validate_batch(images, channels=(3,))
    h, w = x.shape[-2:]
    chroma = opponent_chroma(x)
    n = chroma.shape[0]
    prof = xy_profile(chroma.reshape(n * 2, h, w)).reshape(n, 2 * (w + h))
    return torch.cat([fingerprint(x), prof], dim=1)


def _normalize(prof: torch.Tensor, normalize: str) -> torch.Tensor:
    if normalize == "none":
        return prof
    if normalize == "minmax":
        return minmax(prof)
    raise ValueError(f"Unknown normalize {normalize!r}; choose 'none' or 'minmax'.")


def check_feature(name: str) -> str:
    """Return ``name`` if it is a registered feature, else raise a ValueError listing them."""
    if name not in FEATURES:
        raise ValueError(f"Unknown feature {name!r}; choose one of: {', '.join(FEATURES)}.")
    return name


# Images per chunk inside extract() on the CPU: a whole set at once is slower than small chunks,
# whose FFT buffers stay in cache. radial on 2,000 images at 64 px in one call, 2 threads on a
# quiet 2-core machine, speed-up over the per-image NumPy reference (medians of 7 runs):
# chunks of 32: 19.9x, 64: 20.9-22.8x, 128: 17.7x, 256: 19.3-19.9x, 512: 13.3x, 1024: 7.7x.
# On a GPU there is no such cache effect and large chunks keep it busy; they only bound memory.
EXTRACT_CHUNK = 64
CUDA_EXTRACT_CHUNK = 4096


def extract(name: str, images: torch.Tensor, batch_size: int | None = None, **options) -> torch.Tensor:
    """Compute feature ``name`` of a batch, ``batch_size`` images at a time.

    The default is :data:`EXTRACT_CHUNK` on the CPU and :data:`CUDA_EXTRACT_CHUNK` on a GPU, so
    callers pass whole sets and never chunk themselves.
    """
    fn = FEATURES[check_feature(name)]
    if not isinstance(images, torch.Tensor):
        checked_float_batch(images)  # raises the readable TypeError before any slicing
    if batch_size is None:
        batch_size = CUDA_EXTRACT_CHUNK if images.is_cuda else EXTRACT_CHUNK
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of images (or None for {EXTRACT_CHUNK}), got {batch_size!r}.")
    if images.shape[0] <= batch_size:
        return fn(images, **options)
    return torch.cat([fn(images[i : i + batch_size], **options) for i in range(0, images.shape[0], batch_size)])
