"""Ensembles: several models' probabilities combined, the combination fitted on validation."""

from __future__ import annotations

import copy
import hashlib
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from fer_lab import calibration
from fer_lab.models import (
    TTA_MODES, create, has_views, register, uses_torch, view_probas, with_tta)
from fer_lab.models.stored import (PROVENANCE_TAGS, active_study_tags, kept, load_member,
                                    rows_digest)

COMBINES = ("mean", "weights", "stacking")
VAL_FRACTION = 0.1
VOTE_FOLDS = 5  # folds of the validation set that score a fitted vote out of sample
# Members by key (the spec or URI, and digests of the rows they were fitted and scored
# on): a study's trials differ only in how the votes combine, so each member is trained
# or loaded, and scores the validation set, once per process.
_MEMBERS: dict[tuple, tuple[Any, float, np.ndarray]] = {}
# And, by member, its validation probabilities with each test-time augmentation (for the
# ensemble's temperature of each), made once per process too.
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@register("ensemble")
class EnsembleClassifier(ClassifierMixin, BaseEstimator):
    """Soft voting over member models, with the vote fitted on the validation set.

    Args:
        members: each a model from the tracking store, by URI (``models:/fer-cnn@champion``,
            ``models:/fer-svm/3``, ``runs:/<id>/model``, or a logged model's folder), used
            as it was fitted with its own calibration; ``champions``: every other
            family's champion in the store trained on the same data and carve; or a
            mapping ``{family: cnn, **params}``, a model trained by ``fit`` on its training
            data (the family's defaults from ``fer_lab/configs/<family>.yaml``, then
            ``params``).
        combine: ``mean`` (the members' calibrated probabilities averaged), ``weights``
            (a weighted average, the weights on the simplex minimising the validation
            log-loss) or ``stacking`` (a multinomial logistic regression on the members'
            log-probabilities, fitted on validation).
        C: the inverse regularisation of ``stacking``.
        seed: seeds the trained members (each spec's own ``seed`` wins) and the stacker.
        checkpoint_dir: a folder where each trained member is kept as it finishes, and a
            CNN member saves its state while it trains (its ``checkpoint_dir``): a fit
            interrupted after hours of members loads the finished ones and resumes the
            one it was training. ``fer-lab tune`` gives one per study (the trials train
            the members, so they get it too) and removes it when the study ends.

    Members from the store must come from studies on the same data and validation carve as
    the ensemble's (``fer.data_digest`` and ``fer.protocol``): a member trained on other
    rows may have learnt the validation faces, which would make its weight a lie. ``fit``
    checks this when it runs inside a study; a model folder cannot be checked (a warning
    says so).

    Attributes:
        members_: the fitted member estimators.
        class_names_: the classes it scores, in label order.
        temperatures_: each member's calibration temperature (1 for trained members: their
            validation probabilities are what the vote is fitted on).
        weights_: the members' weights (``mean``/``weights``).
        stacker_: the logistic regression (``stacking``).
        member_specs_: the members as fitted (``champions`` expanded to pinned versions).
        member_names_: a short name per member, for logs and reports.
        fit_metrics_: per member its validation accuracy, and the weights; for a network,
            also the epochs it trained and the best one (``member0_epochs``, ...).
        fit_settings_: what each member's fit resolved, as parameters to log
            (``member0.recipe``, ``member0.tta``, ...).
        eval_set_proba_: the ensemble's probabilities for the ``eval_set``, out-of-fold
            (``VOTE_FOLDS`` folds) for the fitted votes, so that a study comparing
            ``mean``, ``weights`` and ``stacking`` on them compares them fairly.
    """

    # Its first trial trains the members (hours): a resumed study keeps them.
    checkpoint_trials = True

    def __init__(self, members: Sequence[str | Mapping[str, Any]] = (), combine="weights",
                 C=1.0, seed=0, checkpoint_dir=None):
        self.members = members
        self.combine = combine
        self.C = C
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir

    def fit(self, X, y, eval_set=None, report=None, class_names=None):
        """Loads or trains the members, then fits the vote on ``eval_set`` (without it, a
        stratified 10% of ``X`` held out from the trained members).

        Args:
            X: flat ``(N, 2304)`` uint8 pixels, for the trained members.
            y: their labels.
            eval_set: ``(X_val, y_val)``: the validation carve the vote is fitted on.
            report: unused (an ensemble has no epochs); accepted for the study path.
            class_names: the name of every label (``fer_lab.labels``), default FER2013's
                seven; every member must score these classes, in this order.
        """
        from fer_lab import labels

        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, not {self.combine!r}")
        if not self.members:
            raise ValueError("an ensemble needs members: model URIs or {family: ...} specs")
        X, y = np.asarray(X, dtype=np.uint8), np.asarray(y, dtype=np.int64)
        names = labels.class_names(y, class_names)
        if eval_set is None:
            from sklearn.model_selection import train_test_split

            X, X_val, y, y_val = train_test_split(X, y, test_size=VAL_FRACTION,
                                                  random_state=self.seed, stratify=y)
        else:
            X_val, y_val = np.asarray(eval_set[0], dtype=np.uint8), np.asarray(eval_set[1])
        self.members_, self.temperatures_, self.member_names_ = [], [], []
        val_probas = []
        rows = (rows_digest(X), rows_digest(X_val))
        self.member_specs_ = expand(self.members)
        for i, spec in enumerate(self.member_specs_):
            key = (repr(sorted(spec.items())) if isinstance(spec, Mapping) else str(spec),
                   self.seed + i, *rows)
            if key not in _MEMBERS:
                _MEMBERS[key] = self._kept_member(key, spec, i, X, y, X_val, y_val, names)
            member, temperature, proba = _MEMBERS[key]
            theirs = tuple(getattr(member, "class_names_", labels.FER2013.classes))
            if theirs != names:
                raise ValueError(f"member {member_name(spec)} scores {', '.join(theirs)}; "
                                 f"this ensemble's data has {', '.join(names)}")
            self.members_.append(member)
            self.temperatures_.append(float(temperature))
            self.member_names_.append(member_name(spec))
            val_probas.append(calibration.scale(proba, temperature))
        self.class_names_ = names
        self.classes_ = np.arange(len(names))
        probas = np.stack(val_probas)
        # The vote is fitted on the validation faces, so its score there would flatter the
        # votes with more to fit (stacking's 100-odd weights): eval_set_proba_, what a study
        # scores, is out-of-fold; the vote kept is then fitted on all of them.
        # So is each test-time augmentation's (eval_set_probas_, for its temperature): the
        # members predict with it, the vote fitted on their own augmentations' combines them.
        views = self._calibrated_views([
            self._member_views(member, isinstance(spec, Mapping), X_val)
            for member, spec in zip(self.members_, self.member_specs_)]) \
            if self.has_views() else {}
        self.eval_set_proba_, self.eval_set_probas_ = self._out_of_fold(probas, y_val, views)
        self._fit_vote(probas, y_val)
        self.fit_metrics_ = {
            **{f"member{i}_val_accuracy": float(np.mean(p.argmax(1) == y_val))
               for i, p in enumerate(val_probas)},
            **({f"member{i}_weight": float(w) for i, w in enumerate(self.weights_)}
               if self.weights_ is not None else {}),
            **{f"member{i}_{k}": v for i, member in enumerate(self.members_)
               for k, v in _member_fit(member).items()},
        }
        # What each trained member resolved (a network's precision, recipe, test-time
        # augmentation), beside the ensemble's own parameters.
        self.fit_settings_ = {f"member{i}.{k}": v for i, member in enumerate(self.members_)
                              for k, v in getattr(member, "fit_settings_", {}).items()}
        return self

    def _kept_member(self, key: tuple, spec, i: int, X, y, X_val, y_val,
                     names: tuple[str, ...]) -> tuple[Any, float, np.ndarray]:
        """``_member``, kept in ``checkpoint_dir`` when it is trained here: one that an
        interrupted fit finished is loaded instead of trained again."""
        if self.checkpoint_dir is None or not isinstance(spec, Mapping):
            return self._member(spec, i, X, y, X_val, y_val, names)
        name = "member-" + hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()
        folder = Path(self.checkpoint_dir)
        return kept(folder / f"{name}.pkl",
                    lambda: self._member(spec, i, X, y, X_val, y_val, names, folder / name),
                    f"member {i}, {member_name(spec)}")

    def _member(self, spec, i: int, X, y, X_val, y_val, names: tuple[str, ...],
                checkpoint_dir: Path | None = None) -> tuple[Any, float, np.ndarray]:
        """A member, its calibration temperature and its validation probabilities: loaded
        from the store (with the temperature it was logged with), or trained here (1: the
        vote is fitted on its raw validation probabilities)."""
        from fer_lab.config import load_family

        if not isinstance(spec, Mapping):
            member, temperature = load_member(str(spec))
            return member, temperature, member.predict_proba(X_val)
        params = dict(spec)
        family = params.pop("family", None)
        if family is None:
            raise ValueError(f"member {i}: a trained member needs a family, got {spec}")
        member = create(family, **{**load_family(family).params, "seed": self.seed + i,
                                   **params})
        if checkpoint_dir is not None and "checkpoint_dir" in member.get_params():
            member.set_params(checkpoint_dir=str(checkpoint_dir))
        member.fit(X, y, eval_set=(X_val, y_val), class_names=names)
        proba = getattr(member, "eval_set_proba_", None)
        return member, 1.0, member.predict_proba(X_val) if proba is None else proba

    @staticmethod
    def _member_views(member, trained: bool, X_val) -> dict[str, np.ndarray]:
        """A member's probabilities of the validation set ``X_val`` (the one it was
        trained or loaded for) with each test-time augmentation, its temperature not
        applied, made once: a network trained here made them in its fit (when it chose
        its augmentation)."""
        if member not in _VIEWS:
            made = getattr(member, "eval_set_probas_", None) if trained else None
            _VIEWS[member] = made or view_probas(member, X_val)
        return _VIEWS[member]

    def _fit_vote(self, probas: np.ndarray, y: np.ndarray) -> None:
        """``probas``: (members, N, classes) calibrated validation probabilities."""
        self.weights_, self.stacker_ = None, None
        n = len(probas)
        if self.combine == "mean" or n == 1:
            self.weights_ = np.full(n, 1.0 / n)
        elif self.combine == "weights":
            rows = np.arange(len(y))
            picked = probas[:, rows, y]  # (members, N): each member's probability of the truth

            def loss(theta: np.ndarray) -> float:
                return float(-np.log(softmax(theta) @ picked + 1e-12).mean())

            found = minimize(loss, np.zeros(n), method="L-BFGS-B")
            self.weights_ = softmax(found.x)
        else:
            self.stacker_ = LogisticRegression(C=self.C, max_iter=2000,
                                               random_state=self.seed)
            self.stacker_.fit(self._stack_features(probas), y)
            if len(self.stacker_.classes_) != probas.shape[2]:
                raise ValueError("stacking needs every class in the validation set")

    def _out_of_fold(self, probas: np.ndarray, y: np.ndarray, views: dict[str, np.ndarray]
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Each validation face's probabilities from a vote fitted on the other folds'
        ``probas``, and the same vote's of the members' ``views`` (a test-time
        augmentation's probabilities, by mode)."""
        from sklearn.model_selection import StratifiedKFold

        if self.combine == "mean" or len(probas) == 1:
            equal = np.full(len(probas), 1.0 / len(probas))
            return (np.tensordot(equal, probas, axes=1),
                    {mode: np.tensordot(equal, v, axes=1) for mode, v in views.items()})
        out = np.empty(probas.shape[1:])
        out_views = {mode: np.empty(v.shape[1:]) for mode, v in views.items()}
        folds = StratifiedKFold(VOTE_FOLDS, shuffle=True, random_state=self.seed)
        try:
            splits = list(folds.split(np.zeros(len(y)), y))
        except ValueError:  # too few faces of a class for the folds (tiny test sets)
            self._fit_vote(probas, y)
            return self._combine(probas), {mode: self._combine(v) for mode, v in views.items()}
        for fit_rows, held in splits:
            self._fit_vote(probas[:, fit_rows], y[fit_rows])
            out[held] = self._combine(probas[:, held])
            for mode, v in views.items():
                out_views[mode][held] = self._combine(v[:, held])
        return out, out_views

    @staticmethod
    def _stack_features(probas: np.ndarray) -> np.ndarray:
        return np.concatenate(list(calibration.log_probs(p) for p in probas), axis=1)

    def _combine(self, probas: np.ndarray) -> np.ndarray:
        if self.stacker_ is not None:
            return self.stacker_.predict_proba(self._stack_features(probas))
        return np.tensordot(self.weights_, probas, axes=1)

    def member_probas(self, X) -> np.ndarray:
        """Each member's calibrated probabilities, ``(members, N, classes)``."""
        return np.stack([calibration.scale(m.predict_proba(X), t)
                         for m, t in zip(self.members_, self.temperatures_)])

    def predict_proba(self, X) -> np.ndarray:
        """The combined probabilities; each member predicts as it was fitted (a CNN with its
        own test-time augmentation)."""
        return self._combine(self.member_probas(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def inference_setting(self) -> list:
        """Settles how this machine predicts fastest for every member that measures it."""
        return [m.inference_setting() for m in self.members_ if hasattr(m, "inference_setting")]

    def uses_torch(self) -> bool:
        return any(uses_torch(m) for m in self.members_)

    def has_views(self) -> bool:
        return any(has_views(m) for m in self.members_)

    def view_probas(self, X) -> dict[str, np.ndarray]:
        """The combined probabilities with each test-time augmentation of the networks,
        each member predicting its views once."""
        views = self._calibrated_views([view_probas(m, X) for m in self.members_])
        return {mode: self._combine(v) for mode, v in views.items()}

    def _calibrated_views(self, each: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Each member's probabilities by mode (``view_probas``), at its temperature, as
        ``{mode: (members, N, classes)}``: what the vote combines, as ``member_probas``."""
        return {mode: np.stack([calibration.scale(v[mode], t)
                                for v, t in zip(each, self.temperatures_)])
                for mode in TTA_MODES}

    def with_tta(self, tta: str) -> EnsembleClassifier:
        """A shallow copy whose networks predict with test-time augmentation ``tta``."""
        out = copy.copy(self)
        out.members_ = [with_tta(m, tta) for m in self.members_]
        return out


CHAMPIONS = "champions"


def _member_fit(member) -> dict[str, float]:
    """A trained network's length: the epochs it trained and the one it kept (1-based)."""
    history = getattr(member, "history_", None)
    if not history or getattr(member, "best_epoch_", None) is None:
        return {}
    return {"epochs": float(len(history)), "best_epoch": float(member.best_epoch_ + 1)}


def expand(members: Sequence[str | Mapping[str, Any]]) -> list[str | Mapping[str, Any]]:
    """The members with ``champions`` replaced by the pinned versions of every other
    family's champion (``models:/fer-svm/3``) whose data and carve are the active study's.

    Raises:
        ValueError: ``champions`` found none.
    """
    out: list[str | Mapping[str, Any]] = []
    for spec in members:
        if spec != CHAMPIONS:
            out.append(spec)
            continue
        found = champion_uris()
        if not found:
            raise ValueError("ensemble members: `champions` found no family champion trained "
                             "on this data and validation carve in the tracking store: run "
                             "the families' studies first (`mlflow run .` runs them all)")
        out.extend(found)
    return out


def champion_uris() -> list[str]:
    """Pinned URIs of the family champions (ensembles aside) on the active study's data."""
    import mlflow

    from fer_lab import labels, registry, tracking
    from fer_lab.models import families

    client = mlflow.MlflowClient()
    ours = active_study_tags()
    label_set = (ours or {}).get(tracking.LABELS_TAG) or labels.DEFAULT
    uris = []
    for family in families():
        if family == "ensemble":
            continue
        version = registry.champion_version(client, registry.model_name(family, label_set))
        if version is None:
            continue
        if ours is not None and any(version.tags.get(t) != ours.get(t)
                                    for t in PROVENANCE_TAGS):
            continue
        uris.append(f"models:/{version.name}/{version.version}")
    return uris


def member_name(spec) -> str:
    """``models:/fer-cnn@champion`` as it is; ``{family: cnn, seed: 2}`` as ``cnn(seed=2)``."""
    if not isinstance(spec, Mapping):
        return str(spec)
    extra = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "family")
    return f"{spec.get('family')}({extra})"
