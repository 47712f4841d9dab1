"""Learning-rate shapes as functions of training progress in [0, 1]."""

from __future__ import annotations

import math

SCHEDULES = ("onecycle", "cosine")


def one_cycle(progress: float, warmup: float = 0.25, start: float = 1 / 25) -> float:
    """The one-cycle learning-rate factor: a cosine rise from ``start`` to 1 over the
    warm-up, then a cosine fall to 0 (OneCycleLR's shape, as a function of progress)."""
    if progress < warmup:
        return start + (1 - start) * (1 - math.cos(math.pi * progress / warmup)) / 2
    return (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup))) / 2


def cosine(progress: float) -> float:
    """The cosine-annealing learning-rate factor, from 1 to 0."""
    return (1 + math.cos(math.pi * progress)) / 2
