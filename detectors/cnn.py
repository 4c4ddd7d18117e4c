"""Neural classifiers on image-shaped features: a small CPU CNN and torchvision ResNet-18/50.

Each classifier takes ``(N, C, H, W)`` inputs — pixels in [0, 1], a 2D log spectrum, log |DCT|
— and integer labels (0 real, 1 fake, k > 1 the k-th fake source for attribution).

Two ways to feed it (the ``feature_fn`` parameter, or :meth:`CNNClassifier.set_feature_fn`):

* **features**: float ``X`` that are already features; used as given, no augmentation;
* **raw images**: with ``feature_fn=fn``, ``fit``/``predict_proba`` take raw image
  batches (uint8), and every training batch is augmented (Wang et al., :mod:`detectors.augment`)
  *before* ``fn`` turns it into features, so spectral CNNs see blurred and JPEG'd images too.
  A uint8 ``X`` without a feature function is treated the same way with the ``pixels`` feature.

The classifiers follow scikit-learn's estimator contract (``get_params``/``set_params``,
``sklearn.base.clone``); backbones live in :mod:`detectors.backbones`, the epoch loop in
:mod:`detectors.neural_training`; this module holds the parameters, the hooks subclasses
override (Deep SAD in :mod:`detectors.sad`) and persistence.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from detectors.augment import Augmentation
from detectors.backbones import (
    IMAGENET_URLS,
    Network,
    build_network,
    check_backbone,
    read_state_dict,
    resolve_pretrained,
)
from detectors.base import register_classifier
from detectors.features import validate_batch
from detectors.neural_training import input_stats, macro_ap, nll, predict_outputs, train_network
from plumbing.devices import resolve_device
from plumbing.files import atomic_path, write_json

__all__ = ["CNNClassifier", "ResNet18Classifier", "ResNet50Classifier", "SmallCNNClassifier"]

FORMAT = "forgelab-neural-classifier"
FORMAT_VERSION = 1
# Input standardisation: one mean/std per channel, or per (channel, row, column) coefficient.
INPUT_NORMS = ("auto", "channel", "coefficient", "element")
# Features standardised per coefficient under input_norm="auto" (Frank et al. 2020, Sec. 4:
# every DCT coefficient is scaled by its own training-set mean and standard deviation, since
# the log power of low and high frequencies differs by orders of magnitude).
COEFFICIENT_FEATURES = ("spectrum", "dct")


def feature_name(fn: Callable[..., Any] | None) -> str | None:
    """The registered feature a feature function computes: the name bound in ``partial(extract, NAME, ...)``
    (how :class:`detectors.detector.Detector` builds it) or a ``feature_name`` attribute; else None."""
    if isinstance(fn, partial) and fn.args and isinstance(fn.args[0], str):
        return fn.args[0]
    name = getattr(fn, "feature_name", None)
    return name if isinstance(name, str) else None


def resolve_input_norm(input_norm: str, fn: Callable[..., Any] | None) -> str:
    """"channel" or "coefficient": ``"auto"`` is coefficient for spectrum and DCT features, channel for the rest."""
    if input_norm == "element":  # the earlier name of the same thing
        return "coefficient"
    if input_norm == "auto":
        return "coefficient" if feature_name(fn) in COEFFICIENT_FEATURES else "channel"
    return input_norm

class CNNClassifier(BaseEstimator):
    """A neural classifier (see the module docstring); subclasses fix the backbone by name.

    The constructor only stores its parameters; fitted state ends in an underscore
    (``network_``, ``num_classes_``, ``input_shape_``, ``input_norm_``, ``history_``, ``best_epoch_``).

    ``input_norm`` standardises the network's input with training-set statistics: ``"channel"``
    (one mean/std per channel), ``"coefficient"`` (one per (C, H, W) position; ``"element"`` is
    its earlier name) or ``"auto"`` (default): coefficient for ``spectrum`` and ``dct``
    features (Frank et al. 2020), channel for pixels, ``npr``, ``dwt`` and precomputed features
    (pass ``"coefficient"`` explicitly for precomputed spectra). The statistics are buffers
    of the network, saved and loaded with it.
    """

    input_kind: ClassVar[str] = "image"
    name: ClassVar[str] = "cnn"
    arch: ClassVar[str] = "smallcnn"

    def __init__(
        self,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int = 4,
        augment_p: float = 0.1,
        flip_p: float | None = None,
        input_norm: str = "auto",
        pretrained: str | None = None,
        device: str = "auto",
        amp: bool | str = True,  # True: mixed precision on CUDA; "bf16"/"fp16" force it (CPU too)
        seed: int = 0,
        eval_batch_size: int = 256,
        progress: bool = False,
        feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.augment_p = augment_p
        self.flip_p = flip_p
        self.input_norm = input_norm
        self.pretrained = pretrained
        self.device = device
        self.amp = amp
        self.seed = seed
        self.eval_batch_size = eval_batch_size
        self.progress = progress
        self.feature_fn = feature_fn

    # ----------------------------------------------------------------- parameters

    # Parameters that may be None, mapped to their (CPU, CUDA) defaults (see nprnet).
    DEVICE_DEFAULTS: ClassVar[dict[str, tuple[int, int]]] = {}

    def backbone_name(self) -> str:
        """The registered backbone this classifier trains."""
        return self.arch

    def validate_params(self) -> None:
        """Raise a ValueError naming the first invalid constructor parameter (fit calls this)."""
        ints = {"epochs": 1, "batch_size": 2, "patience": 1, "eval_batch_size": 1}
        for key, lo in ints.items():
            v = getattr(self, key)
            if v is None and key in self.DEVICE_DEFAULTS:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{key} must be an integer >= {lo}, got {v!r}.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.feature_fn is not None and not callable(self.feature_fn):
            raise TypeError("feature_fn must be a callable images -> features, or None.")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"Unknown input_norm {self.input_norm!r}; choose one of: {', '.join(INPUT_NORMS)}.")
        self._augmentation()  # checks the probabilities
        check_backbone(self.backbone_name())
        resolve_device(self.device)
        if self.pretrained not in (None, ""):
            if self.backbone_name() not in IMAGENET_URLS:
                raise ValueError(
                    f"Backbone {self.backbone_name()!r} has no pretrained weights; drop --pretrained or use one of: {', '.join(IMAGENET_URLS)}."
                )
            resolve_pretrained(self.backbone_name(), self.pretrained)  # a missing file stops before any work

    def _augmentation(self) -> Augmentation:
        return Augmentation(p=float(self.augment_p), flip_p=self.flip_p)

    def set_feature_fn(self, fn: Callable[[torch.Tensor], torch.Tensor] | None) -> CNNClassifier:
        """Set the ``feature_fn`` parameter: fit/predict_proba then take raw image batches, each (augmented in fit and) passed to ``fn``.

        ``fn`` maps an (N, 3, H, W) uint8 batch on some device to (N, C, H', W') float features
        on the same device. It is not saved; set it again after :meth:`load`.
        """
        if fn is not None and not callable(fn):
            raise TypeError("set_feature_fn needs a callable images -> features, or None.")
        return self.set_params(feature_fn=fn)

    # ----------------------------------------------------------------- data
    def _raw(self, X: torch.Tensor) -> bool:
        """True when X holds raw images (a feature function is set, or X is uint8)."""
        return self.feature_fn is not None or X.dtype == torch.uint8

    def _features(self, xb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Features of one batch already on the device; raw images are augmented first when a generator is given."""
        if self._raw(xb):
            if generator is not None:
                xb = self._augmentation()(xb, generator)
            fn = self.feature_fn
            feats = fn(xb) if fn is not None else xb.float() / 255.0
        else:
            feats = xb
        if not isinstance(feats, torch.Tensor) or feats.ndim != 4:
            got = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise ValueError(f"The feature function must return (N, C, H, W) tensors for a neural classifier, got {got}.")
        return feats.float()

    @staticmethod
    def _check_X(X: Any, name: str) -> torch.Tensor:
        return validate_batch(X, name, channels=None)

    @classmethod
    def _check_xy(cls, X: Any, y: Any, xname: str, yname: str) -> tuple[torch.Tensor, np.ndarray]:
        X = cls._check_X(X, xname)
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"{xname} has {X.shape[0]} samples but {yname} has {y.shape[0]} labels; give one label per sample.")
        if y.dtype.kind not in "iub" or (y < 0).any():
            raise ValueError(f"{yname} must hold integer labels >= 0 (0 real, 1.. fake), got dtype {y.dtype}.")
        return X, y.astype(np.int64)

    # ----------------------------------------------------------------- hooks for subclasses
    def _schedule(self, device: torch.device) -> tuple[int, int]:
        """(epochs, patience) of a fit on ``device``; a parameter left None takes the subclass's device default."""
        return tuple(getattr(self, k) if getattr(self, k) is not None else self.DEVICE_DEFAULTS[k][device.type == "cuda"]
                     for k in ("epochs", "patience"))

    def _prepare(self, net: Network, X: torch.Tensor, y: np.ndarray, device: torch.device) -> None:
        """Called once before training (the Deep-SAD centre is set here)."""

    def _init_network(self, net: Network) -> None:
        """Add subclass buffers to a freshly built network (before a state dict is loaded into it)."""

    def _loss(self, net: Network, feats: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(feats).float(), yb)

    def _finish(self, net: Network, X: torch.Tensor, y: np.ndarray, device: torch.device) -> None:
        """Called once after training with the best weights restored."""

    def _extra_config(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, config: dict[str, Any]) -> None:
        pass

    # ----------------------------------------------------------------- training
    def fit(
        self,
        X: torch.Tensor,
        y: np.ndarray,
        X_val: torch.Tensor | None = None,
        y_val: np.ndarray | None = None,
    ) -> CNNClassifier:
        """Train from scratch (or from ImageNet weights); early stopping on validation AP when given."""
        self.validate_params()
        X, y = self._check_xy(X, y, "X", "y")
        has_val = X_val is not None or y_val is not None
        if has_val:
            if X_val is None or y_val is None:
                raise ValueError("Give both X_val and y_val, or neither.")
            X_val, y_val = self._check_xy(X_val, y_val, "X_val", "y_val")
            if np.unique(y_val > 0).size < 2:
                raise ValueError("y_val holds only one class; validation needs both real and fake samples.")
        if np.unique(y).size < 2:
            raise ValueError("y holds only one class; training needs both real and fake samples.")
        num_classes = max(int(y.max()) + 1, 2)
        self._check_num_classes(num_classes)
        device = resolve_device(self.device)

        with torch.no_grad():
            probe = self._features(X[:2].to(device))
        input_shape = tuple(int(s) for s in probe.shape[1:])
        norm = resolve_input_norm(self.input_norm, self.feature_fn)
        # Weights are drawn from the classifier's own seed without disturbing the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = build_network(self.backbone_name(), input_shape, num_classes, norm, self.pretrained)
        self._init_network(net)
        net.to(device)
        mean, std = input_stats(X, self._features, norm, self.eval_batch_size, device)
        net.mean.copy_(mean)
        net.std.copy_(std)
        self.network_, self.num_classes_, self.input_shape_, self.input_norm_ = net, num_classes, input_shape, norm
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            self._prepare(net, X, y, device)

        def validate(net: Network) -> dict[str, float]:
            out = self._predict(net, X_val, device)
            return {"val_ap": self._val_ap(y_val, out), "val_nll": nll(y_val, out[:, :num_classes])}

        epochs, patience = self._schedule(device)
        self.history_, self.best_epoch_ = train_network(
            net, X, y, features=self._features, loss=self._loss, epochs=epochs, batch_size=self.batch_size,
            lr=self.lr, weight_decay=self.weight_decay, amp=self.amp, generator=gen, device=device,
            validate=validate if has_val else None, patience=patience, progress=self.progress,
            description=f"training {self.name}",
        )
        self._finish(net, X, y, device)
        return self

    def _val_ap(self, y_val: np.ndarray, outputs: np.ndarray) -> float:
        """Validation AP of the score this classifier returns (early stopping's criterion)."""
        return macro_ap(y_val, outputs[:, : self.num_classes_])

    def _check_num_classes(self, num_classes: int) -> None:
        """Subclasses refuse label sets they cannot score."""

    # ----------------------------------------------------------------- inference
    def _outputs(self, net: Network, feats: torch.Tensor) -> torch.Tensor:
        """Per-batch outputs for inference: softmax probabilities (subclasses append columns)."""
        return torch.softmax(net(feats).float(), dim=1)

    def _predict(self, net: Network, X: torch.Tensor, device: torch.device) -> np.ndarray:
        """Run :meth:`_outputs` over X in eval mode, batch by batch."""
        return predict_outputs(net, X, features=self._features, outputs=self._outputs, batch_size=self.eval_batch_size,
                               amp=self.amp, device=device, input_shape=self.input_shape_)

    def _fitted(self) -> Network:
        if getattr(self, "network_", None) is None:
            raise ValueError(f"This {self.name} classifier is not fitted yet; call fit() or load() first.")
        return self.network_

    def predict_proba(self, X: torch.Tensor) -> np.ndarray:
        """(N, K) class probabilities (softmax); column 1 is P(fake) in the binary case."""
        net = self._fitted()
        X = self._check_X(X, "X")
        device = resolve_device(self.device)
        net.to(device)
        return self._predict(net, X, device)[:, : self.num_classes_]

    # ----------------------------------------------------------------- persistence
    def save(self, folder: Path | str) -> None:
        """Write weights.pt (a plain state dict) and config.json into ``folder``."""
        net = self._fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # The feature function is code, not a parameter value: the caller sets it again after load.
        params = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.get_params().items() if k != "feature_fn"}
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "classifier": self.name,
            "backbone": self.backbone_name(),
            "params": params,
            "num_classes": self.num_classes_,
            "input_shape": list(self.input_shape_),
            "input_norm": self.input_norm_,
            "history": self.history_,
            "best_epoch": self.best_epoch_,
            **self._extra_config(),
        }
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        with atomic_path(folder / "weights.pt") as tmp:
            torch.save(state, tmp)
        write_json(folder / "config.json", config)

    @classmethod
    def load(cls, folder: Path | str, device: str | None = None) -> CNNClassifier:
        """Rebuild a classifier saved by :meth:`save` (on ``device`` if given); refuses missing, damaged or foreign files."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Classifier folder {folder} does not exist; give a folder written by save().")
        cfg_path, w_path = folder / "config.json", folder / "weights.pt"
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} is missing; {folder} is not a saved {cls.name} classifier, save it again.")
        try:
            config = json.loads(cfg_path.read_text())
            kind, backbone, params = config["classifier"], config["backbone"], dict(config["params"])
            num_classes, input_shape = int(config["num_classes"]), tuple(int(s) for s in config["input_shape"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{cfg_path} is damaged (not the JSON that save() writes); save the classifier again.") from None
        if config.get("format") != FORMAT:
            raise ValueError(f"{cfg_path} was not written by a forgelab neural classifier; give a folder written by save().")
        if kind != cls.name:
            raise ValueError(f"{folder} holds a {kind!r} classifier, not {cls.name!r}; load it with CLASSIFIERS[{kind!r}].load().")
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        if set(params) - known:
            raise ValueError(f"{cfg_path} has unknown parameters {sorted(set(params) - known)}; it was written by another version, fit again.")
        try:
            # The constructor reads no files; the weights come from weights.pt, not from `pretrained`.
            clf = cls(**params)
            if backbone != clf.backbone_name():
                raise ValueError(f"{cfg_path} names backbone {backbone!r} but its parameters say {clf.backbone_name()!r}.")
            # The norm fitted with (its statistics are buffers in weights.pt); "auto" was resolved in fit.
            norm = config.get("input_norm") or resolve_input_norm(clf.input_norm, None)
            if norm not in ("channel", "coefficient"):
                raise ValueError(f"input_norm {norm!r} is not 'channel' or 'coefficient'")
            net = build_network(backbone, input_shape, num_classes, norm)
        except ValueError as e:
            raise ValueError(f"{cfg_path} is inconsistent ({e}); save the classifier again.") from None
        if device is not None:
            clf.device = str(resolve_device(device))
        elif str(clf.device).startswith("cuda") and not torch.cuda.is_available():
            clf.device = "auto"  # fitted on a GPU machine, scored wherever it is loaded
        clf._init_network(net)
        state = read_state_dict(w_path, "Weights file")
        target = net.state_dict()
        mismatch = [k for k in target if k not in state or state[k].shape != target[k].shape] + [k for k in state if k not in target]
        if mismatch:
            raise ValueError(
                f"{w_path} does not match the {backbone} network described in config.json (e.g. tensor {mismatch[0]!r}); "
                "the folder mixes files of different classifiers, fit and save again."
            )
        net.load_state_dict(state)
        net.eval()
        clf.network_, clf.num_classes_, clf.input_shape_, clf.input_norm_ = net, num_classes, input_shape, norm
        clf.history_, clf.best_epoch_ = list(config.get("history", [])), config.get("best_epoch")
        clf._load_extra(config)
        return clf


@register_classifier("smallcnn")
class SmallCNNClassifier(CNNClassifier):
    """A four-layer CNN that trains in seconds on CPU (quickstarts, tests)."""

    name = "smallcnn"
    arch = "smallcnn"


@register_classifier("resnet18")
class ResNet18Classifier(CNNClassifier):
    """torchvision ResNet-18, small-input stem for <= 64 px."""

    name = "resnet18"
    arch = "resnet18"


@register_classifier("resnet50")
class ResNet50Classifier(CNNClassifier):
    """torchvision ResNet-50, small-input stem for <= 64 px."""

    name = "resnet50"
    arch = "resnet50"
