"""The registry of model families (timm's ``@register_model`` pattern).

A family is one module in this package that decorates an estimator class with
``@register("name")`` plus ``fer_lab/configs/<name>.yaml`` with its defaults and search space.
Beyond scikit-learn's ``fit``/``predict_proba``, an estimator may have ``uses_torch()``
(its logged model needs torch), ``has_views()`` (test-time augmentation applies to it) and
``with_tta(tta)`` (a copy predicting with augmentation ``tta``) and ``view_probas(X)``
(its probabilities with every augmentation at once): the networks do, and an ensemble does
as its members do. ``uses_torch``, ``has_views``, ``with_tta`` and ``view_probas`` below ask
any estimator, those without the method included.
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


def uses_torch(estimator) -> bool:
    """Whether the estimator predicts with torch (its logged model then requires it)."""
    return getattr(estimator, "uses_torch", lambda: False)()


def has_views(estimator) -> bool:
    """Whether test-time augmentation applies to the estimator (``with_tta`` changes how
    it predicts)."""
    return getattr(estimator, "has_views", lambda: False)()


def with_tta(estimator, tta: str):
    """A shallow copy of the estimator predicting with test-time augmentation ``tta``
    (``fer_lab.training.inference.TTA_MODES``); one it does not apply to, as it is."""
    method = getattr(estimator, "with_tta", None)
    return method(tta) if method is not None else estimator


from fer_lab.pyfunc import TTA_MODES  # noqa: E402 - fer_lab.training's, without torch


def view_probas(estimator, X) -> dict:
    """The estimator's probabilities of ``X`` with each test-time augmentation
    (``{"none": ..., "flip": ..., "crops": ...}``): from one pass of a network's views
    where it can, else one prediction per mode (the same three for an estimator without
    views)."""
    method = getattr(estimator, "view_probas", None)
    if method is not None:
        return method(X)
    if not has_views(estimator):
        return dict.fromkeys(TTA_MODES, estimator.predict_proba(X))
    return {mode: with_tta(estimator, mode).predict_proba(X) for mode in TTA_MODES}


# Importing the family modules fills the registry.
from fer_lab.models import (  # noqa: E402, F401
    cnn, decision_tree, ensemble, knn, logistic, random_forest, svm)
