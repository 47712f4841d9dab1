"""The registry of model families (timm's ``@register_model`` pattern).

A family is one module in this package that decorates an estimator class with
``@register("name")`` plus ``fer_lab/configs/<name>.yaml`` with its defaults and search space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_FAMILIES: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator that adds an estimator class to the registry under ``name``."""

    def add(cls: type) -> type:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is registered twice")
        _FAMILIES[name] = cls
        cls.family = name
        return cls

    return add


def families() -> list[str]:
    """The registered family names, sorted."""
    return sorted(_FAMILIES)


def get(name: str) -> type:
    """The estimator class of a family; fails loudly on an unknown name."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(families())}") from None


def create(name: str, **params: Any):
    """A new, unfitted estimator of family ``name`` with ``params``."""
    return get(name)(**params)


# Importing the family modules fills the registry.
from fer_lab.models import (  # noqa: E402, F401
    cnn, decision_tree, ensemble, knn, logistic, random_forest, svm)
