"""Neural classifiers on image-shaped features: a small CPU CNN and torchvision ResNet-18/50.

Each classifier takes ``(N, C, H, W)`` inputs — pixels in [0, 1], a 2D log spectrum, log |DCT|
— and integer labels (0 real, 1 fake, k > 1 the k-th fake source for attribution).

Two ways to feed it (see :meth:`CNNClassifier.set_feature_fn`):

* **features**: float ``X`` that are already features; used as given, no augmentation;
* **raw images**: after ``set_feature_fn(fn)``, ``fit``/``predict_proba`` take raw image
  batches (uint8), and every training batch is augmented (Wang et al., :mod:`detectors.augment`)
  *before* ``fn`` turns it into features, so spectral CNNs see blurred and JPEG'd images too.
  A uint8 ``X`` without a feature function is treated the same way with the ``pixels`` feature.

ResNets follow the CIFAR adaptation for inputs of at most 64 px (3x3 stride-1 first
convolution, no max-pool) and are trained from scratch unless ``pretrained`` names a local
torchvision ImageNet weights file; nothing is ever downloaded.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights, resnet18, resnet50

from detectors.augment import Augmentation
from detectors.base import register_classifier
from detectors.features import validate_batch
from plumbing.devices import resolve_device
from plumbing.files import atomic_path, write_json
from plumbing.progress import progress_bar

__all__ = [
    "BACKBONES",
    "CNNClassifier",
    "Network",
    "build_network",
    "imagenet_weights_file",
    "load_pretrained",
    "register_backbone",
]

# Inputs up to this size get the CIFAR-style stem (no early downsampling).
SMALL_INPUT = 64
FORMAT = "forgelab-neural-classifier"
FORMAT_VERSION = 1

# name -> builder(in_channels, input_size) -> (body mapping (N, C, H, W) to (N, D), D)
BACKBONES: dict[str, Callable[[int, int], tuple[nn.Module, int]]] = {}

# torchvision's ImageNet files, named only so an offline user knows what to fetch.
IMAGENET_URLS = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1.url,
    "resnet50": ResNet50_Weights.IMAGENET1K_V2.url,
}


def register_backbone(name: str) -> Callable[[Callable], Callable]:
    """Add a backbone builder ``(in_channels, input_size) -> (module, embedding_dim)`` to the registry."""

    def wrap(fn):
        BACKBONES[name] = fn
        return fn

    return wrap


def check_backbone(name: str) -> str:
    """Return ``name`` if it is a registered backbone, else raise a ValueError listing them."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.")
    return name


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@register_backbone("smallcnn")
def small_cnn(in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    """Four 3x3 conv-BN-ReLU layers (first two at full resolution) and global average pooling."""
    body = nn.Sequential(
        # Full resolution first: upsampling artefacts live at the highest frequencies.
        _conv_bn_relu(in_channels, 32, 1),
        _conv_bn_relu(32, 32, 1),
        _conv_bn_relu(32, 64, 2),
        _conv_bn_relu(64, 128, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return body, 128


def _adapted_resnet(ctor: Callable[..., nn.Module], in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    net = ctor(weights=None)
    if input_size <= SMALL_INPUT:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


@register_backbone("resnet18")
def resnet18_body(in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    """torchvision ResNet-18 without its fc layer, small-input stem for inputs <= 64 px."""
    return _adapted_resnet(resnet18, in_channels, input_size)


@register_backbone("resnet50")
def resnet50_body(in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    """torchvision ResNet-50 without its fc layer, small-input stem for inputs <= 64 px."""
    return _adapted_resnet(resnet50, in_channels, input_size)


class Network(nn.Module):
    """Per-channel (or per-element) input standardisation, a backbone to (N, D) embeddings, a linear head."""

    def __init__(
        self, backbone: str, input_shape: tuple[int, int, int], num_classes: int, input_norm: str = "channel"
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.body, self.dim = BACKBONES[check_backbone(backbone)](c, min(h, w))
        self.head = nn.Linear(self.dim, num_classes)
        shape = (1, c, 1, 1) if input_norm == "channel" else (1, c, h, w)
        # Buffers, so the training statistics travel with the state dict.
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) features -> (N, D) embeddings."""
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) features -> (N, K) logits."""
        return self.head(self.embed(x))


def imagenet_weights_file(arch: str) -> str:
    """File name of torchvision's ImageNet weights for ``arch`` (e.g. resnet18-f37072fd.pth)."""
    if arch not in IMAGENET_URLS:
        raise ValueError(f"No ImageNet weights exist for {arch!r}; pretrained weights are for: {', '.join(IMAGENET_URLS)}.")
    return IMAGENET_URLS[arch].rsplit("/", 1)[-1]


def resolve_pretrained(arch: str, pretrained: str | Path | None) -> Path | None:
    """Turn a ``pretrained`` option into a local weights file (or None); never downloads."""
    if pretrained is None or str(pretrained) == "":
        return None
    fname = imagenet_weights_file(arch)
    if str(pretrained).lower() == "imagenet":
        # torchvision's own cache is used when the file is already there; nothing is fetched.
        cached = Path(torch.hub.get_dir()) / "checkpoints" / fname
        if cached.is_file():
            return cached
        raise ValueError(
            f"ImageNet weights for {arch} are not on this machine and nothing is downloaded; fetch "
            f"torchvision's {fname} ({IMAGENET_URLS[arch]}) and pass its path with --pretrained PATH."
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Pretrained weights file {path} does not exist; pass the path of torchvision's {fname} with --pretrained PATH."
        )
    return path


def _adapt_first_conv(w: torch.Tensor, target: torch.Size) -> torch.Tensor:
    """Fit an ImageNet first-conv kernel (64, 3, k, k) to (64, C, k', k') keeping its response to flat input."""
    out_c, in_c, kh, kw = target
    if w.shape[1] != in_c:
        # Each new channel gets the channel-mean filter, scaled so a grey input gives the same response.
        w = w.sum(dim=1, keepdim=True).expand(-1, in_c, -1, -1) / in_c
    if w.shape[2:] != (kh, kw):
        total = w.sum(dim=(2, 3), keepdim=True)
        small = F.adaptive_avg_pool2d(w, (kh, kw))
        # Shift every tap equally so each filter's sum (its DC gain) is unchanged.
        small = small + (total - small.sum(dim=(2, 3), keepdim=True)) / (kh * kw)
        w = small
    return w.contiguous()


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """torch.load a plain state dict (weights_only) or raise one readable sentence."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; the user needs one sentence
        raise ValueError(f"{what} {path} is damaged or not a plain tensor file ({type(e).__name__}); save it again.") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} {path} does not hold a state dict of tensors; give a file written by torch.save(model.state_dict()).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(body: nn.Module, arch: str, path: Path) -> None:
    """Copy torchvision ImageNet weights from ``path`` into ``body`` (first conv adapted, fc dropped)."""
    state = _read_state_dict(path, "Pretrained weights file")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    target = body.state_dict()
    if "conv1.weight" in state and "conv1.weight" in target and state["conv1.weight"].ndim == 4:
        state["conv1.weight"] = _adapt_first_conv(state["conv1.weight"], target["conv1.weight"].shape)
    # Old torchvision files predate BatchNorm's step counter; it carries no weights.
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in state if k in target and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        example = (missing + unexpected + wrong)[0]
        raise ValueError(
            f"Pretrained weights file {path} does not fit {arch} ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(wrong)} mis-shaped tensors, e.g. {example!r}); pass torchvision's "
            f"{imagenet_weights_file(arch)}."
        )
    body.load_state_dict(state, strict=False)


def build_network(
    backbone: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    input_norm: str = "channel",
    pretrained: str | Path | None = None,
) -> Network:
    """Build a :class:`Network`; ``pretrained`` (a local file or "imagenet" from torch's cache) seeds a ResNet."""
    check_backbone(backbone)
    if pretrained not in (None, "") and backbone not in IMAGENET_URLS:
        raise ValueError(f"Backbone {backbone!r} has no pretrained weights; drop --pretrained or use one of: {', '.join(IMAGENET_URLS)}.")
    path = resolve_pretrained(backbone, pretrained) if backbone in IMAGENET_URLS else None
    net = Network(backbone, input_shape, num_classes, input_norm)
    if path is not None:
        load_pretrained(net.body, backbone, path)
    return net


def _macro_ap(y: np.ndarray, proba: np.ndarray) -> float:
    """AP of P(fake) for two classes; mean one-vs-rest AP over classes for attribution."""
    if proba.shape[1] == 2:
        return float(average_precision_score(y > 0, proba[:, 1]))
    onehot = np.eye(proba.shape[1], dtype=np.int64)[y]
    present = onehot.sum(0) > 0
    return float(average_precision_score(onehot[:, present], proba[:, present], average="macro"))


def _nll(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    return float(-np.log(np.clip(proba[np.arange(y.size), y], 1e-12, None)).mean())


class CNNClassifier:
    """A neural classifier (see the module docstring); subclasses fix the backbone by name."""

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
        input_norm: str = "channel",
        pretrained: str | None = None,
        device: str = "auto",
        amp: bool = True,
        seed: int = 0,
        eval_batch_size: int = 256,
        progress: bool = False,
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
        self.feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.network_: Network | None = None

    # ----------------------------------------------------------------- parameters
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters and their current values (scikit-learn style)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def backbone_name(self) -> str:
        """The registered backbone this classifier trains."""
        return self.arch

    def validate_params(self) -> None:
        """Raise a ValueError naming the first invalid constructor parameter (fit calls this)."""
        ints = {"epochs": 1, "batch_size": 2, "patience": 1, "eval_batch_size": 1}
        for key, lo in ints.items():
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{key} must be an integer >= {lo}, got {v!r}.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.input_norm not in ("channel", "element"):
            raise ValueError(f"Unknown input_norm {self.input_norm!r}; choose 'channel' or 'element'.")
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
        """Make fit/predict_proba take raw image batches: each batch is (augmented in fit and) passed to ``fn``.

        ``fn`` maps an (N, 3, H, W) uint8 batch on some device to (N, C, H', W') float features
        on the same device. It is not saved; set it again after :meth:`load`.
        """
        if fn is not None and not callable(fn):
            raise TypeError("set_feature_fn needs a callable images -> features, or None.")
        self.feature_fn = fn
        return self

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

    @staticmethod
    def _batches(n: int, size: int) -> Iterator[slice]:
        for i in range(0, n, size):
            yield slice(i, min(i + size, n))

    @torch.no_grad()
    def _input_stats(self, X: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the un-augmented training features, per channel or per element."""
        dims = (0, 2, 3) if self.input_norm == "channel" else (0,)
        s = s2 = None
        count = 0
        for sl in self._batches(X.shape[0], self.eval_batch_size):
            f = self._features(X[sl].to(device)).double()
            bs, bs2 = f.sum(dim=dims, keepdim=True), f.square().sum(dim=dims, keepdim=True)
            s, s2 = (bs, bs2) if s is None else (s + bs, s2 + bs2)
            count += f.numel() // bs.numel()
        mean = s / count
        std = (s2 / count - mean.square()).clamp_min(0).sqrt()
        # A constant input (e.g. a DC coefficient) must not blow up the standardised value.
        std = std.clamp_min(1e-6 + 1e-3 * float(std.mean()))
        return mean.float(), std.float()

    # ----------------------------------------------------------------- hooks for subclasses
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
        # Weights are drawn from the classifier's own seed without disturbing the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = build_network(self.backbone_name(), input_shape, num_classes, self.input_norm, self.pretrained)
        self._init_network(net)
        net.to(device)
        mean, std = self._input_stats(X, device)
        net.mean.copy_(mean)
        net.std.copy_(std)
        self.network_, self.num_classes_, self.input_shape_ = net, num_classes, input_shape
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            self._prepare(net, X, y, device)

        use_amp = bool(self.amp) and device.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else nullcontext
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        y_t = torch.as_tensor(y)

        self.history_: list[dict[str, float]] = []
        best_key, best_state, self.best_epoch_, bad = (-math.inf, -math.inf), None, self.epochs, 0
        n = X.shape[0]
        n_batches = math.ceil(n / self.batch_size)
        with progress_bar(self.progress, f"training {self.name}", self.epochs * n_batches) as bar:
            for epoch in range(1, self.epochs + 1):
                net.train()
                perm = torch.randperm(n, generator=gen)
                total, seen = 0.0, 0
                for sl in self._batches(n, self.batch_size):
                    idx = perm[sl]
                    bar.advance()
                    if idx.numel() < 2:  # BatchNorm cannot train on a single sample
                        continue
                    with torch.no_grad():
                        feats = self._features(X[idx].to(device), gen)
                    yb = y_t[idx].to(device)
                    with autocast():
                        loss = self._loss(net, feats, yb)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    total += float(loss.detach()) * idx.numel()
                    seen += idx.numel()
                record = {"epoch": epoch, "loss": total / max(seen, 1)}
                if has_val:
                    out = self._predict(net, X_val, device)
                    record["val_ap"] = self._val_ap(y_val, out)
                    record["val_nll"] = _nll(y_val, out[:, :num_classes])
                    # Ties in AP (often 1.0 on easy data) go to the lower validation loss.
                    key = (record["val_ap"], -record["val_nll"])
                    if key > best_key:
                        best_key, bad, self.best_epoch_ = key, 0, epoch
                        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    else:
                        bad += 1
                self.history_.append(record)
                if has_val and bad >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self._finish(net, X, y, device)
        return self

    def _val_ap(self, y_val: np.ndarray, outputs: np.ndarray) -> float:
        """Validation AP of the score this classifier returns (early stopping's criterion)."""
        return _macro_ap(y_val, outputs[:, : self.num_classes_])

    def _check_num_classes(self, num_classes: int) -> None:
        """Subclasses refuse label sets they cannot score."""

    # ----------------------------------------------------------------- inference
    def _outputs(self, net: Network, feats: torch.Tensor) -> torch.Tensor:
        """Per-batch outputs for inference: softmax probabilities (subclasses append columns)."""
        return torch.softmax(net(feats).float(), dim=1)

    @torch.no_grad()
    def _predict(self, net: Network, X: torch.Tensor, device: torch.device) -> np.ndarray:
        """Run :meth:`_outputs` over X in eval mode, batch by batch."""
        net.eval()
        use_amp = bool(self.amp) and device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp and torch.cuda.is_bf16_supported() else nullcontext()
        outs = []
        for sl in self._batches(X.shape[0], self.eval_batch_size):
            feats = self._features(X[sl].to(device))
            if tuple(feats.shape[1:]) != tuple(self.input_shape_):
                raise ValueError(
                    f"The classifier was trained on features of shape {tuple(self.input_shape_)} but got "
                    f"{tuple(feats.shape[1:])}; give images at the training resolution."
                )
            with autocast:
                outs.append(self._outputs(net, feats).float().cpu())
        return torch.cat(outs).double().numpy()

    def _fitted(self) -> Network:
        if self.network_ is None:
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
        params = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.get_params().items()}
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "classifier": self.name,
            "backbone": self.backbone_name(),
            "params": params,
            "num_classes": self.num_classes_,
            "input_shape": list(self.input_shape_),
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
            net = build_network(backbone, input_shape, num_classes, clf.input_norm)
        except ValueError as e:
            raise ValueError(f"{cfg_path} is inconsistent ({e}); save the classifier again.") from None
        if device is not None:
            clf.device = str(resolve_device(device))
        elif str(clf.device).startswith("cuda") and not torch.cuda.is_available():
            clf.device = "auto"  # fitted on a GPU machine, scored wherever it is loaded
        clf._init_network(net)
        state = _read_state_dict(w_path, "Weights file")
        target = net.state_dict()
        mismatch = [k for k in target if k not in state or state[k].shape != target[k].shape] + [k for k in state if k not in target]
        if mismatch:
            raise ValueError(
                f"{w_path} does not match the {backbone} network described in config.json (e.g. tensor {mismatch[0]!r}); "
                "the folder mixes files of different classifiers, fit and save again."
            )
        net.load_state_dict(state)
        net.eval()
        clf.network_, clf.num_classes_, clf.input_shape_ = net, num_classes, input_shape
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
