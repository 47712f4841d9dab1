"""Models from the tracking store inside other models (an ensemble's members, a
distilled network's teacher): loading them, and checking that they were trained on the
rows the new model trains on, so that its validation faces stay unseen. And models kept
on disk while a long study runs (``kept``), so an interrupted one does not train them
again."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")

log = logging.getLogger(__name__)
PROVENANCE_TAGS = ("fer.data_digest", "fer.protocol")


def rows_digest(X: np.ndarray) -> str:
    """A digest of an array's bytes: the same rows give the same key."""
    return hashlib.blake2b(np.ascontiguousarray(X).data, digest_size=16).hexdigest()


def kept(path: Path, make: Callable[[], T], what: str) -> T:
    """``make()``'s result, pickled to ``path`` (atomically) when it returns; when ``path``
    already holds one (an interrupted run made it), that is loaded instead."""
    import cloudpickle

    if path.is_file():
        log.warning("%s: loaded from %s, made by an interrupted run", what, path)
        with open(path, "rb") as f:
            return cloudpickle.load(f)
    made = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as f:
        cloudpickle.dump(made, f)
    os.replace(partial, path)
    return made


def load_member(uri: str, tta: str | None = None):
    """A logged model's estimator and calibration temperature (of its test-time
    augmentation ``tta``; ``None``: its own), after checking, inside a study, that it was
    trained on the study's data and carve."""
    from fer_lab import registry

    model = registry.load_model(uri).unwrap_python_model()
    check_provenance(uri)
    return model.estimator, model.temperature_for(tta)


def check_provenance(uri: str) -> None:
    """Raises ValueError when the model's study ran on other data or another validation
    carve than the active study run's (both read from their tags); warns when either is
    unknown."""
    ours = active_study_tags()
    theirs = _member_tags(uri)
    if ours is None or theirs is None:
        why = ("no record of the data it was trained on" if ours is not None
               else "used outside a study")
        log.warning("%s: %s, so whether it saw the validation faces is not checked", uri, why)
        return
    for tag in PROVENANCE_TAGS:
        if ours.get(tag) != theirs.get(tag):
            raise ValueError(
                f"{uri} was trained with {tag} {theirs.get(tag)!r}, this study "
                f"runs with {ours.get(tag)!r}: its training rows may hold this study's "
                "validation faces, which must stay unseen (ensemble votes and early "
                "stopping are fitted on them)")


def active_study_tags() -> dict[str, str] | None:
    """The provenance tags of the active run or of its nearest ancestor that has them."""
    import mlflow

    run = mlflow.active_run()
    client = mlflow.MlflowClient()
    while run is not None:
        tags = client.get_run(run.info.run_id).data.tags
        if all(t in tags for t in PROVENANCE_TAGS):
            return tags
        parent = tags.get("mlflow.parentRunId")
        run = client.get_run(parent) if parent else None
    return None


def _member_tags(uri: str) -> dict[str, str] | None:
    """A registered version's tags, or the tags of the run that logged the model."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from fer_lab import registry

    client = mlflow.MlflowClient()
    try:
        version = registry.model_version(uri, client)
        if version is not None and all(t in version.tags for t in PROVENANCE_TAGS):
            return dict(version.tags)
        run_id = version.run_id if version is not None else registry.model_run_id(uri, client)
        return dict(client.get_run(run_id).data.tags) if run_id else None
    except MlflowException:
        return None
