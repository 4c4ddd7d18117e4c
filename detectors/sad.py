"""The thesis detector: a CNN trained with cross-entropy plus lambda times the Deep-SAD loss.

Deep SAD (Ruff et al., "Deep Semi-Supervised Anomaly Detection", ICLR 2020) maps normal data
close to a fixed centre c in embedding space and labelled anomalies far from it. Here real
images are the normal class and fakes the labelled anomalies:

    L = CE(head(phi(x)), y) + lambda * mean_i [ ||phi(x_i) - c||^2            if real
                                                 1 / (||phi(x_i) - c||^2 + eps) if fake ]

c is the mean embedding of the real training images under the initial network, with
coordinates closer to 0 than ``center_eps`` moved to +-center_eps (a centre at 0 lets the
network collapse onto it by zeroing its last layer), and stays fixed during training.

Two fakeness scores: S_SL, the softmax of the classification head, and S_CD, the squared
distance to c mapped to [0, 1] by a monotone transform fitted on the training data.
``score_kind`` chooses which one ``predict_proba`` returns; :meth:`SADClassifier.predict_scores`
gives both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from detectors.backbones import Network
from detectors.base import register_classifier
from detectors.cnn import CNNClassifier
from detectors.neural_training import batches
from plumbing.devices import resolve_device

__all__ = ["SCORE_KINDS", "DistanceScore", "SADClassifier", "init_center", "sad_loss", "squared_distance"]

SCORE_KINDS = ("sl", "cd")


def init_center(real_embeddings: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """Mean of (N, D) real embeddings with every |c_i| < eps set to +-eps (sign kept, 0 -> +eps)."""
    if real_embeddings.ndim != 2 or real_embeddings.shape[0] == 0:
        raise ValueError(f"init_center needs (N, D) embeddings with N >= 1, got {tuple(real_embeddings.shape)}.")
    c = real_embeddings.double().mean(dim=0)
    small = c.abs() < eps
    sign = torch.where(c < 0, -1.0, 1.0).to(c)
    return torch.where(small, sign * eps, c).to(real_embeddings.dtype)


def squared_distance(embeddings: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """(N,) squared Euclidean distance of each embedding to the centre."""
    return (embeddings - center).square().sum(dim=1)


def sad_loss(
    embeddings: torch.Tensor, center: torch.Tensor, is_fake: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Deep-SAD loss: mean of d^2 over real samples' terms and 1/(d^2 + eps) over fake samples' terms."""
    d2 = squared_distance(embeddings.float(), center.float())
    terms = torch.where(is_fake.bool(), 1.0 / (d2 + eps), d2)
    return terms.mean()


class DistanceScore:
    """Monotone increasing map from squared distance to a fakeness in [0, 1], fitted on training data.

    ``"logistic"``: sigmoid(a * log d + b), fitted by logistic regression of the labels on log d
    (a > 0 is enforced; if the fit finds no positive slope it falls back to ``"ratio"``).
    ``"ratio"``: d / (d + m) with m the median squared distance of the real training images.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("logistic", "ratio")

    def __init__(self, kind: str = "logistic", a: float = 1.0, b: float = 0.0, median: float = 1.0) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"Unknown distance transform {kind!r}; choose one of: {', '.join(self.KINDS)}.")
        self.kind, self.a, self.b, self.median = kind, float(a), float(b), float(median)

    @classmethod
    def fit(cls, d2: np.ndarray, is_fake: np.ndarray, kind: str = "logistic") -> DistanceScore:
        """Fit the transform on training squared distances and real/fake labels."""
        d2 = np.asarray(d2, dtype=np.float64)
        is_fake = np.asarray(is_fake).astype(bool)
        real = d2[~is_fake]
        median = float(np.median(real)) if real.size else float(np.median(d2))
        score = cls("ratio", median=max(median, 1e-12))
        if kind == "ratio" or np.unique(is_fake).size < 2:
            return score
        if kind not in cls.KINDS:
            raise ValueError(f"Unknown distance transform {kind!r}; choose one of: {', '.join(cls.KINDS)}.")
        lr = LogisticRegression(C=1.0).fit(np.log(d2 + 1e-12)[:, None], is_fake.astype(int))
        a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        if not (a > 0 and math.isfinite(b)):
            return score  # distances do not rank fakes higher: a logistic would invert the order
        return cls("logistic", a=a, b=b, median=score.median)

    def __call__(self, d2: np.ndarray) -> np.ndarray:
        """Map squared distances to fakeness in [0, 1]."""
        d2 = np.maximum(np.asarray(d2, dtype=np.float64), 0.0)
        if self.kind == "ratio":
            return d2 / (d2 + self.median)
        z = self.a * np.log(d2 + 1e-12) + self.b
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # a sigmoid that cannot overflow

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        return {"kind": self.kind, "a": self.a, "b": self.b, "median": self.median}


@register_classifier("sad")
class SADClassifier(CNNClassifier):
    """CNN features + classification head trained with CE + lambda * Deep-SAD; scores S_SL or S_CD."""

    name = "sad"

    def __init__(
        self,
        backbone: str = "resnet18",
        lam: float = 0.1,
        score_kind: str = "sl",
        center_eps: float = 0.1,
        push_eps: float = 1e-6,
        cd_transform: str = "logistic",
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
        feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
            augment_p=augment_p, flip_p=flip_p, input_norm=input_norm, pretrained=pretrained,
            device=device, amp=amp, seed=seed, eval_batch_size=eval_batch_size, progress=progress,
            feature_fn=feature_fn,
        )
        self.backbone = backbone
        self.lam = lam
        self.score_kind = score_kind
        self.center_eps = center_eps
        self.push_eps = push_eps
        self.cd_transform = cd_transform

    def backbone_name(self) -> str:
        """The backbone chosen by the ``backbone`` parameter."""
        return self.backbone

    def validate_params(self) -> None:
        """Raise a ValueError naming the first invalid parameter."""
        super().validate_params()
        if not (isinstance(self.lam, (int, float)) and self.lam >= 0):
            raise ValueError(f"lam must be >= 0 (e.g. 0.001, 0.01, 0.1, 1), got {self.lam!r}.")
        if self.score_kind not in SCORE_KINDS:
            raise ValueError(f"Unknown score_kind {self.score_kind!r}; choose one of: {', '.join(SCORE_KINDS)}.")
        if not (self.center_eps > 0 and self.push_eps > 0):
            raise ValueError("center_eps and push_eps must be > 0.")
        if self.cd_transform not in DistanceScore.KINDS:
            raise ValueError(f"Unknown cd_transform {self.cd_transform!r}; choose one of: {', '.join(DistanceScore.KINDS)}.")

    def _check_num_classes(self, num_classes: int) -> None:
        if self.score_kind == "cd" and num_classes > 2:
            raise ValueError("score_kind 'cd' scores real versus fake only; use score_kind 'sl' for attribution.")

    # ----------------------------------------------------------------- training hooks
    def _init_network(self, net: Network) -> None:
        net.register_buffer("center", torch.zeros(net.dim))

    @torch.no_grad()
    def _prepare(self, net: Network, X: torch.Tensor, y: np.ndarray, device: torch.device) -> None:
        """Set c from the initial network: BatchNorm statistics from all training data, then real embeddings."""
        # Eval-mode BatchNorm with untouched running statistics would give embeddings on another
        # scale than training sees; one cumulative pass over the training data fixes them first.
        bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
        net.train()
        for sl in batches(X.shape[0], self.eval_batch_size):
            if sl.stop - sl.start > 1:
                net.embed(self._features(X[sl].to(device)))
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        net.eval()
        real = X[torch.as_tensor(y == 0)]
        embs = [net.embed(self._features(real[sl].to(device))).float() for sl in batches(real.shape[0], self.eval_batch_size)]
        net.center.copy_(init_center(torch.cat(embs), self.center_eps))

    def _loss(self, net: Network, feats: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        emb = net.embed(feats)
        ce = F.cross_entropy(net.head(emb).float(), yb)
        if self.lam == 0:
            return ce
        return ce + self.lam * sad_loss(emb, net.center, yb > 0, self.push_eps)

    def _val_ap(self, y_val: np.ndarray, outputs: np.ndarray) -> float:
        if self.score_kind == "cd":  # AP only needs the ranking, so the raw distance will do
            return float(average_precision_score(y_val > 0, outputs[:, -1]))
        return super()._val_ap(y_val, outputs)

    def _finish(self, net: Network, X: torch.Tensor, y: np.ndarray, device: torch.device) -> None:
        d2 = self._predict(net, X, device)[:, -1]
        self.distance_score_ = DistanceScore.fit(d2, y > 0, self.cd_transform)

    def _outputs(self, net: Network, feats: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities with the squared distance to c appended as a last column."""
        emb = net.embed(feats)
        proba = torch.softmax(net.head(emb).float(), dim=1)
        return torch.cat([proba, squared_distance(emb.float(), net.center)[:, None]], dim=1)

    # ----------------------------------------------------------------- scores
    def distances(self, X: torch.Tensor) -> np.ndarray:
        """(N,) squared embedding distance to the centre c."""
        return self._all_outputs(X)[:, -1]

    def _all_outputs(self, X: torch.Tensor) -> np.ndarray:
        net = self._fitted()
        X = self._check_X(X, "X")
        device = resolve_device(self.device)
        net.to(device)
        return self._predict(net, X, device)

    def predict_scores(self, X: torch.Tensor) -> dict[str, np.ndarray]:
        """Both fakeness scores in one pass: {"sl": 1 - P(real), "cd": transformed distance}, each (N,)."""
        out = self._all_outputs(X)
        return {"sl": 1.0 - out[:, 0], "cd": self.distance_score_(out[:, -1])}

    def predict_proba(self, X: torch.Tensor) -> np.ndarray:
        """(N, K) softmax of the head (score_kind 'sl'), or (N, 2) [1 - S_CD, S_CD] (score_kind 'cd')."""
        out = self._all_outputs(X)
        if self.score_kind == "cd":
            s = self.distance_score_(out[:, -1])
            return np.stack([1.0 - s, s], axis=1)
        return out[:, : self.num_classes_]

    # ----------------------------------------------------------------- persistence
    def _extra_config(self) -> dict[str, Any]:
        return {"distance_score": self.distance_score_.to_dict()}

    def _load_extra(self, config: dict[str, Any]) -> None:
        try:
            self.distance_score_ = DistanceScore(**config["distance_score"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("config.json lacks a valid 'distance_score' entry; save the classifier again.") from None
