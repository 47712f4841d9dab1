"""Batched augmentation on the device: one affine resampling and one random erase per batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Augment:
    """Batched augmentation strengths; zero (or False) switches a transform off.

    Attributes:
        flip: mirror half of the images left-right (faces are near-symmetric).
        shift: largest translation, as a fraction of the side (0.1 = 4.8 px).
        rotate: largest rotation in degrees.
        scale: largest zoom in or out, as a fraction (0.1 = 0.9..1.1).
        erase: probability of blanking one random rectangle (2-25% of the image) to the
            mean grey, which makes the net use more than one facial region.
    """

    flip: bool = True
    shift: float = 0.1
    rotate: float = 10.0
    scale: float = 0.1
    erase: float = 0.25

    def __call__(self, x: Tensor, side: int | None = None) -> Tensor:
        """Augments a batch; with ``side``, the output is resampled to ``side`` x ``side``
        in the same pass (progressive resizing trains early epochs on smaller images)."""
        if self.flip or self.shift or self.rotate or self.scale or \
                (side is not None and side != x.shape[-1]):
            x = self._affine(x, side or x.shape[-1])
        if self.erase:
            x = self._erase(x)
        return x

    def _affine(self, x: Tensor, side: int) -> Tensor:
        """Flip, rotation, zoom and shift as one ``grid_sample`` per batch, sampled onto a
        ``side`` x ``side`` grid; reflection padding fills the borders like the reflect-pad
        crop it generalises."""
        b = x.shape[0]
        u = lambda: torch.rand(b, device=x.device) * 2 - 1  # noqa: E731  uniform in [-1, 1]
        angle = u() * math.radians(self.rotate)
        zoom = 1 + u() * self.scale
        mirror = torch.where(torch.rand(b, device=x.device) < 0.5, -1.0, 1.0) if self.flip else 1.0
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # theta maps output to input coordinates in [-1, 1]; the mirror negates input x.
        theta = torch.stack([torch.stack([cos * mirror, -sin * mirror, u() * 2 * self.shift], 1),
                             torch.stack([sin, cos, u() * 2 * self.shift], 1)], 1)
        grid = F.affine_grid(theta, [b, x.shape[1], side, side], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)

    def _erase(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        rand = lambda: torch.rand(b, 1, 1, device=x.device)  # noqa: E731
        area = 0.02 + rand() * 0.23
        aspect = torch.exp((rand() * 2 - 1) * math.log(3.0))
        eh = (area * aspect).sqrt().clamp(max=1.0) * h
        ew = (area / aspect).sqrt().clamp(max=1.0) * w
        top, left = rand() * (h - eh), rand() * (w - ew)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        box = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
        hit = (rand() < self.erase) & box
        return x.masked_fill(hit.unsqueeze(1), 0.0)  # 0 is the mean after normalisation
