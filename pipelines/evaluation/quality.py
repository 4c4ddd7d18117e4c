"""Generator quality: FID, KID, IS and precision/recall through torch-fidelity, plus spectral fidelity.

The Inception (and VGG) metrics are computed by ``torch_fidelity.calculate_metrics`` itself;
this module only brings our inputs to it and names the results:

* Folders go through :func:`pipelines.data.images.load_data` (the lab's one preprocessing path), so
  real and fake images reach the feature extractor alike; uint8 tensors (N, 3, R, R) and
  :class:`pipelines.data.images.ImageSet` go straight in as a ``torch.utils.data.Dataset`` that
  yields uint8 CHW tensors, which is what torch-fidelity's extractors expect (no PNG round trip).
* torch-fidelity's convention is ``input1`` = generated, ``input2`` = real (precision is the
  share of *generated* samples on the real manifold; IS is computed on ``input1``), so the
  fake set is ``input1`` and the real set ``input2``.
* Real-set features and FID statistics are cached with torch-fidelity's own cache
  (``input2_cache_name`` in ``cache_root``). The cache name is ``forgelab-<key>``, where the
  key is ``cache_key`` when given, else a SHA-256 of the real set's pixels and shape plus,
  when custom weights are used, the weights file's name, size and time; so a changed real
  set or other weights never reads stale statistics. The default cache folder is
  ``<forgelab cache>/fidelity`` (``$FORGELAB_CACHE`` or ``~/.cache/forgelab``). Because
  torch-fidelity reads its cache files with full unpickling, every cache file of the entry
  is first checked to hold nothing but tensors and numpy arrays.
* Offline machines: torch-fidelity downloads ``weights-inception-2015-12-05-6726825d.pth``
  (and ``vgg16-397923af.pth`` for precision/recall) on first use. Where that fails the call
  stops with one sentence naming the file, the option ``--feature-extractor-weights PATH``
  (``--prc-weights PATH``) and torch's hub folder where the file can be put instead. Weights
  files given by path are checked to load with ``torch.load(weights_only=True)`` before
  torch-fidelity opens them.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import socket
import urllib.error
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch_fidelity
from PIL import Image
from torch.utils.data import Dataset
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from detectors.fidelity import spectral_fidelity
from gans.networks import RESOLUTIONS
from pipelines.data.images import (
    EMBEDDED,
    ImageSet,
    cache_root,
    check_resolution,
    list_images,
    load_data,
    resolve_data,
)
from pipelines.runfolder import fingerprint_files
from plumbing.devices import resolve_device
from plumbing.digests import tensor_digest

ImagesLike = str | os.PathLike | torch.Tensor | ImageSet

# torch-fidelity's result keys -> the short names forgelab reports.
METRIC_NAMES: dict[str, str] = {
    torch_fidelity.KEY_METRIC_FID: "fid",
    torch_fidelity.KEY_METRIC_KID_MEAN: "kid",
    torch_fidelity.KEY_METRIC_KID_STD: "kid_std",
    torch_fidelity.KEY_METRIC_ISC_MEAN: "isc",
    torch_fidelity.KEY_METRIC_ISC_STD: "isc_std",
    torch_fidelity.KEY_METRIC_PRECISION: "precision",
    torch_fidelity.KEY_METRIC_RECALL: "recall",
    torch_fidelity.KEY_METRIC_F_SCORE: "f_score",
}
SPECTRAL_NAMES = ("radial_l1", "x_l1", "y_l1", "cloaking")
# Feature extractors torch-fidelity picks when none is named (see torch_fidelity.utils).
DEFAULT_EXTRACTOR = "inception-v3-compat"
DEFAULT_PRC_EXTRACTOR = "vgg16"
DEFAULT_KID_SUBSET_SIZE = 1000
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PretrainedWeights:
    """A weights file that torch-fidelity downloads on first use, and the option that replaces it."""

    file: str
    url: str
    option: str


PRETRAINED: dict[str, PretrainedWeights] = {
    DEFAULT_EXTRACTOR: PretrainedWeights(
        file="weights-inception-2015-12-05-6726825d.pth",
        url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        option="--feature-extractor-weights",
    ),
    DEFAULT_PRC_EXTRACTOR: PretrainedWeights(
        file="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        option="--prc-weights",
    ),
}

# Pickle globals that torch.save writes for dicts of numpy arrays (FID statistics); nothing else
# may appear in a cache file that torch-fidelity will unpickle.
_SAFE_CACHE_GLOBALS = frozenset({
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.dtypes.Float64DType",
    "numpy.dtypes.Float32DType",
})
# What a failed download raises (no DNS, no route, refused, timed out, HTTP error).
_NETWORK_ERRORS = (
    urllib.error.URLError,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    socket.herror,
    http.client.HTTPException,
)


class UInt8Images(Dataset):
    """A uint8 (N, 3, H, W) tensor as a Dataset of uint8 (3, H, W) images, for torch-fidelity."""

    def __init__(self, images: torch.Tensor):
        self.images = images.detach().cpu().contiguous()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def hub_checkpoint_dir() -> Path:
    """The folder where torch.hub (and so torch-fidelity) looks for downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def default_cache_dir() -> Path:
    """Where real-set features and statistics are cached by default."""
    return cache_root() / "fidelity"


def _check_tensor(images: torch.Tensor, name: str) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{name} images must be a uint8 tensor of shape (N, 3, H, W), got {images.dtype} "
            f"{tuple(images.shape)}; convert generator output with (x + 1) * 127.5 rounded to uint8."
        )
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"{name} images must be square, got {tuple(images.shape[-2:])}; crop them first.")
    return images


def _manifest_resolution(folder: Path) -> int | None:
    """The resolution recorded in a fake set's manifest.json, if any."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        value = json.loads(manifest.read_text(encoding="utf-8")).get("resolution")
    except (OSError, ValueError, AttributeError):
        return None
    # Only a size a generator can have: an edited manifest must not make the loader allocate for 10^5 px.
    return int(value) if isinstance(value, int) and value in RESOLUTIONS else None


def _first_image_side(folder: Path) -> int | None:
    """The side of the first image of a folder when it is square (fake sets), else None."""
    files = list_images(folder) if folder.is_dir() else []
    if not files:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(files[0]) as img:
                w, h = img.size
    except (OSError, Image.DecompressionBombError):  # unreadable: the loader names the file later
        return None
    if Image.MAX_IMAGE_PIXELS is not None and w * h > Image.MAX_IMAGE_PIXELS:
        return None  # a decompression bomb's size is not a working resolution
    return w if w == h else None


def resolve_resolution(real: ImagesLike, fake: ImagesLike, resolution: int | None) -> int:
    """The working resolution: given, else that of a tensor input, else the fake set's."""
    if resolution is not None:
        return check_resolution(resolution)
    for x in (fake, real):
        if isinstance(x, ImageSet):
            return x.resolution
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            return int(x.shape[-1])
    for x in (fake, real):
        if isinstance(x, (str, os.PathLike)):
            where = resolve_data(x)  # a missing folder is named before anything else
            found = None if where == EMBEDDED else _manifest_resolution(Path(where)) or _first_image_side(Path(where))
            if found:
                return found
    raise ValueError("Cannot tell the image resolution from the inputs; pass --resolution R (e.g. 64).")


def as_images(x: ImagesLike, name: str, resolution: int, limit: int | None = None,
              progress: bool = False) -> torch.Tensor:
    """A folder, 'embedded', ImageSet or uint8 tensor as a uint8 (N, 3, R, R) tensor."""
    if isinstance(x, ImageSet):
        x = x.images
    if isinstance(x, torch.Tensor):
        images = _check_tensor(x, name)
        if images.shape[-1] != resolution:
            raise ValueError(
                f"{name} images are {images.shape[-1]} px but the metrics run at {resolution} px; "
                "pass tensors of one size or folders (which are resized)."
            )
        return images[:limit] if limit is not None else images
    if isinstance(x, (str, os.PathLike)):
        return load_data(x, resolution, limit=limit, progress=progress).images
    raise TypeError(f"{name} must be a folder, 'embedded', an ImageSet or a uint8 tensor, got {type(x).__name__}.")


def _check_extractor(name: str) -> str:
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(
            f"Unknown feature extractor {name!r}; choose one of: {', '.join(FEATURE_EXTRACTORS_REGISTRY)} "
            "(or register one with torch_fidelity.register_feature_extractor)."
        )
    return name


def check_weights_file(path: str | os.PathLike) -> Path:
    """Return ``path`` if it is a weights file that loads with ``weights_only=True``, else raise."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Feature extractor weights {p} do not exist; check the path.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # anything but plain tensors (or a damaged file) is refused
        raise ValueError(
            f"{p} is not a plain state dict of tensors ({type(e).__name__}); "
            "give the .pth weights file as torch-fidelity or torchvision publish it."
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{p} holds a {type(state).__name__}, not a state dict; give the .pth weights file.")
    return p


def _check_cache_entry(cache_dir: Path, cache_name: str) -> None:
    """Refuse cache files of this entry that hold anything but tensors and numpy arrays."""
    if not cache_dir.is_dir():
        return
    for f in cache_dir.glob(f"{cache_name}-*.pt"):
        try:
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(f))
        except Exception:  # a damaged entry is a cache miss: torch-fidelity recomputes it
            f.unlink(missing_ok=True)
            continue
        if not unsafe <= _SAFE_CACHE_GLOBALS:
            raise ValueError(
                f"Cache file {f} holds objects other than tensors and arrays ({', '.join(sorted(unsafe))}); "
                "delete it or choose another --cache-dir."
            )


def _cache_name(real: torch.Tensor, cache_key: str | None, weights: Path | None) -> str:
    if cache_key is not None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", cache_key):
            raise ValueError(
                f"cache_key {cache_key!r} may hold only letters, digits, '.', '_' and '-'; choose another."
            )
        return f"forgelab-{cache_key}"
    key = tensor_digest(real)
    if weights is not None:
        key += "-w" + fingerprint_files([weights])[:8]
    return f"forgelab-{key}"


@contextmanager
def _download_timeout(seconds: float):
    """Bound blocking socket calls (a weights download) so that an offline machine never hangs."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def offline_message(extractor: str, reason: str) -> str:
    """One sentence naming the weights file that could not be fetched and how to supply it."""
    w = PRETRAINED[extractor]
    return (
        f"Could not download the {extractor} weights {w.file} ({reason}); on a machine without internet "
        f"fetch {w.url} elsewhere and pass {w.option} PATH, or put the file into {hub_checkpoint_dir()}."
    )


def _calculate(extractor: str, weights: Path | None, **kwargs: Any) -> dict[str, float]:
    """torch_fidelity.calculate_metrics with readable errors for missing or unfit weights."""
    needs_download = weights is None and extractor in PRETRAINED and not (
        hub_checkpoint_dir() / PRETRAINED[extractor].file
    ).is_file()
    try:
        with _download_timeout(DOWNLOAD_TIMEOUT_S) if needs_download else nullcontext():
            return torch_fidelity.calculate_metrics(
                feature_extractor=extractor,
                feature_extractor_weights_path=None if weights is None else str(weights),
                **kwargs,
            )
    except _NETWORK_ERRORS as e:
        if needs_download:
            raise ValueError(offline_message(extractor, f"{type(e).__name__}: {e}")) from None
        raise
    except RuntimeError as e:
        if weights is not None and "state_dict" in str(e):
            raise ValueError(
                f"The weights {weights} do not fit the feature extractor {extractor}; "
                "give the matching weights file."
            ) from None
        raise


def quality_metrics(
    real: ImagesLike,
    fake: ImagesLike,
    *,
    fid: bool = True,
    kid: bool = True,
    isc: bool = False,
    prc: bool = False,
    spectral: bool = True,
    feature_extractor: str | None = None,
    feature_extractor_weights: str | os.PathLike | None = None,
    prc_weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_key: str | None = None,
    cache: bool = True,
    device: str = "auto",
    batch_size: int = 64,
    kid_subset_size: int | None = None,
    resolution: int | None = None,
    limit: int | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """FID/KID/IS/precision-recall (torch-fidelity) and spectral fidelity of a fake set against a real set.

    ``real``/``fake`` are folders (or ``"embedded"``), ImageSets or uint8 (N, 3, R, R) tensors.
    ``feature_extractor`` names a torch-fidelity extractor for all metrics (default: Inception
    for FID/KID/IS and VGG16 for precision/recall, as torch-fidelity does);
    ``feature_extractor_weights`` / ``prc_weights`` are local weights files for them.
    Returns flat numbers (fid, kid, kid_std, isc, isc_std, precision, recall, f_score,
    radial_l1, x_l1, y_l1, cloaking) with n_real, n_fake, resolution, the extractors used and
    ``notes`` (adjustments such as a clamped KID subset size). ``seed`` (KID subsets, IS
    splits, cloaking folds) defaults to torch-fidelity's own seed and 0 for the cloaking folds,
    so the numbers match ``calculate_metrics`` and ``spectral_fidelity`` called with defaults.
    """
    if not (fid or kid or isc or prc or spectral):
        raise ValueError("No metric chosen; ask for at least one of fid, kid, isc, prc, spectral.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    dev = resolve_device(device)
    # torch-fidelity takes a flag, not a device, and runs on the *current* CUDA device, so the
    # calls below make ``dev`` current (else cuda:N would silently compute on cuda:0).
    cuda = dev.type == "cuda"
    if feature_extractor is not None:
        _check_extractor(feature_extractor)
    weights = check_weights_file(feature_extractor_weights) if feature_extractor_weights else None
    weights_prc = check_weights_file(prc_weights) if prc_weights else None

    res = resolve_resolution(real, fake, resolution)
    real_images = as_images(real, "real", res, limit, progress)
    fake_images = as_images(fake, "fake", res, limit, progress)
    n_real, n_fake = int(real_images.shape[0]), int(fake_images.shape[0])
    out: dict[str, Any] = {"n_real": n_real, "n_fake": n_fake, "resolution": res}
    notes: list[str] = []

    if fid or kid or isc or prc:
        if min(n_real, n_fake) < 2:
            raise ValueError(
                f"FID/KID need at least 2 images per set, got {n_real} real and {n_fake} fake; give more images."
            )
        common: dict[str, Any] = {
            "input1": UInt8Images(fake_images),
            "input2": UInt8Images(real_images),
            "cuda": cuda,
            "batch_size": batch_size,
            "verbose": progress,
            # Images are already in memory: DataLoader worker processes would only copy them.
            "save_cpu_ram": True,
        }
        if seed is not None:
            common["rng_seed"] = seed
        if kid:
            wanted = DEFAULT_KID_SUBSET_SIZE if kid_subset_size is None else int(kid_subset_size)
            if wanted < 2:
                raise ValueError(f"kid_subset_size must be at least 2, got {wanted}.")
            size = min(wanted, n_real, n_fake)
            if size < wanted:
                notes.append(
                    f"KID subset size clamped from {wanted} to {size}, the size of the smaller set."
                )
            common["kid_subset_size"] = size
        if isc:
            splits = min(10, n_fake)
            if splits < 10:
                notes.append(f"Inception Score computed over {splits} splits instead of 10 (few fake images).")
            common["isc_splits"] = splits
        if prc and min(n_real, n_fake) < 5:
            raise ValueError(
                f"Precision/recall need at least 5 images per set (3 nearest neighbours), got {n_real} real "
                f"and {n_fake} fake; give more images."
            )

        cache_root_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        # One call per feature extractor, so that each gets its own weights file.
        calls: list[tuple[str, Path | None, dict[str, bool]]] = []
        main = {"fid": fid, "kid": kid, "isc": isc}
        if feature_extractor is not None:
            calls.append((feature_extractor, weights, {**main, "prc": prc}))
        else:
            if fid or kid or isc:
                calls.append((DEFAULT_EXTRACTOR, weights, {**main, "prc": False}))
            if prc:
                calls.append((DEFAULT_PRC_EXTRACTOR, weights_prc, {"fid": False, "kid": False, "isc": False,
                                                                   "prc": True}))
        if cache:
            cache_root_dir.mkdir(parents=True, exist_ok=True)
        used: dict[str, str] = {}
        for extractor, w, chosen in calls:
            kwargs = dict(common, **chosen)
            if cache:
                name = _cache_name(real_images, cache_key, w)
                _check_cache_entry(cache_root_dir, name)
                kwargs.update(cache=True, cache_root=str(cache_root_dir), input2_cache_name=name)
            else:
                kwargs["cache"] = False
            with torch.cuda.device(dev) if cuda else nullcontext():
                result = _calculate(extractor, w, **kwargs)
            out.update({METRIC_NAMES[k]: float(v) for k, v in result.items() if k in METRIC_NAMES})
            for metric, on in chosen.items():
                if on:
                    used[metric] = extractor
        out["feature_extractors"] = used

    if spectral:
        out.update(spectral_fidelity(real_images, fake_images, seed=0 if seed is None else seed))

    # JSON has no NaN/inf: a degenerate metric becomes null, with a note.
    for k, v in list(out.items()):
        if isinstance(v, float) and not math.isfinite(v):
            notes.append(f"{k} is not finite ({v}); too few or identical images?")
            out[k] = None
    out["notes"] = notes
    return out


def metric_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, formatted value) rows of a quality_metrics result, in reporting order, for tables."""
    rows = []
    for key in (*METRIC_NAMES.values(), *SPECTRAL_NAMES):
        if key in result:
            v = result[key]
            rows.append((key, "n/a" if v is None else f"{v:.6g}"))
    for key in ("n_real", "n_fake", "resolution"):
        rows.append((key, str(result[key])))
    return rows
