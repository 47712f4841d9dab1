"""Inference with the training input path, and test-time augmentation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fer_lab.nets import n_outputs
from fer_lab.training.hardware import Setting
from fer_lab.training.inputs import EVAL_BATCH, to_images, to_input

TTA_MODES = ("none", "flip", "crops")
# "crops": the image and its mirror, each also shifted 2 px up, down, left and right
# (reflect-padded, like the training shifts): 10 views, the shifted ones first, then
# their mirrors in the same order.
CROP_SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))
# Which of the crops' views each mode averages: "none" is the image itself, "flip" the
# image and its mirror, so one pass of the 10 views scores all three modes.
CROP_VIEWS = {"none": (0,), "flip": (0, len(CROP_SHIFTS)),
              "crops": tuple(range(2 * len(CROP_SHIFTS)))}
FP32 = Setting("fp32", False)


def tta_views(x: Tensor, mode: str) -> list[Tensor]:
    """The views of a batch whose logits are averaged for test-time augmentation."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, not {mode!r}")
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x.flip(3)]
    pad = max(max(abs(dy), abs(dx)) for dy, dx in CROP_SHIFTS)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    h, w = x.shape[-2:]
    views = [padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w] for dy, dx in CROP_SHIFTS]
    return views + [v.flip(3) for v in views]


def predict_logits(net: nn.Module, X: np.ndarray, *, pixel_mean: float, pixel_std: float,
                   setting: Setting = FP32, tta: str = "none",
                   per_view: bool = False) -> np.ndarray:
    """Float32 logits for flat uint8 pixels, in batches, with the training input path.

    Args:
        setting: the precision and memory layout to compute in (the net is converted to
            its layout in place).
        tta: ``none``, ``flip`` (average with the mirror image) or ``crops`` (average over
            ``tta_views``).
        per_view: return every view's logits, ``(views, N, classes)``, instead of their
            mean.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, not {tta!r}")
    # Outside inference mode: weights converted inside it would become inference tensors,
    # which no later backward pass (an explanation's, a further fit's) could use.
    with torch.no_grad():
        net.eval().to(memory_format=setting.memory_format)
    images = to_images(X)
    out = [torch.empty(len(CROP_VIEWS[tta]) if per_view else 1, 0, n_outputs(net))]
    with torch.inference_mode(), setting.autocast("cpu"):
        for start in range(0, len(images), EVAL_BATCH):
            x = to_input(images[start:start + EVAL_BATCH], pixel_mean, pixel_std, False)
            logits = torch.stack([net(v.contiguous(memory_format=setting.memory_format)).float()
                                  for v in tta_views(x, tta)])
            out.append(logits if per_view else logits.mean(0, keepdim=True))
    logits = torch.cat(out, dim=1).numpy()
    return logits if per_view else logits[0]
