"""From stored pixels to the networks' input: uint8 batches in, normalised floats out."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fer_lab.nets import SIDE

CLASS_WEIGHTINGS = ("none", "balanced", "sqrt")
EVAL_BATCH = 512  # images per inference batch


def to_images(X: np.ndarray) -> Tensor:
    """Flat ``(N, 2304)`` uint8 pixels as a ``(N, 1, 48, 48)`` uint8 tensor, sharing memory
    with ``X`` when it is already contiguous uint8."""
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.uint8)).view(-1, 1, SIDE, SIDE)


def to_input(images: Tensor, mean: float, std: float, channels_last: bool) -> Tensor:
    """A uint8 batch as the normalised float input the networks take."""
    x = (images.float() - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def class_weights(y: np.ndarray, how: str, n_classes: int) -> Tensor | None:
    """Loss weights of the ``n_classes`` classes: ``balanced`` is n / (k * n_c), ``sqrt``
    its square root (a milder correction); classes absent from ``y`` get 0."""
    if how not in CLASS_WEIGHTINGS:
        raise ValueError(f"class_weighting must be one of {CLASS_WEIGHTINGS}, not {how!r}")
    if how == "none":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.divide(len(y), n_classes * counts, out=np.zeros(n_classes), where=counts > 0)
    return torch.tensor(np.sqrt(weights) if how == "sqrt" else weights, dtype=torch.float32)
