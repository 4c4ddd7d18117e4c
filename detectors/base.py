"""The contract every classifier behind a detector follows (scikit-learn's shape, torch inputs)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Classifier(Protocol):
    """A classifier over feature tensors.

    ``input_kind`` is ``"vector"`` for (N, D) features (scikit-learn estimators) or ``"image"``
    for (N, C, H, W) features (CNNs on pixels or on the 2D spectrum). The constructor only
    stores parameters; ``fit`` learns; labels are integers 0..K-1 with 0 = real, 1 = fake in
    the binary case (K > 2 for attribution: 0 = real, k = k-th fake source).
    """

    input_kind: ClassVar[str]

    def fit(self, X: torch.Tensor, y: np.ndarray, X_val: torch.Tensor | None = None,
            y_val: np.ndarray | None = None) -> Classifier: ...

    def predict_proba(self, X: torch.Tensor) -> np.ndarray:
        """(N, K) class probabilities; column 1 is P(fake) in the binary case."""
        ...

    def save(self, folder: Path) -> None:
        """Write the fitted state into ``folder`` in a format that loads without running code."""
        ...

    @classmethod
    def load(cls, folder: Path) -> Classifier: ...


# name -> classifier class; filled by detectors.classical, detectors.cnn and detectors.sad.
CLASSIFIERS: dict[str, type] = {}


def register_classifier(name: str):
    """Class decorator that adds a Classifier implementation to the registry under ``name``."""

    def wrap(cls: type) -> type:
        CLASSIFIERS[name] = cls
        return cls

    return wrap
