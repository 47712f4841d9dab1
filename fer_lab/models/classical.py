"""The shared base of the classical families: a features → classifier ``Pipeline``."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

from fer_lab import labels
from fer_lab.features import make_features


class ClassicalClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn estimator contract over a ``Pipeline``; subclasses name the classifier.

    Subclasses list their parameters in ``__init__`` (scikit-learn's rule) including the
    feature-step ones read here: ``features``, ``pca_components``, ``hog_cell``, ``seed``.
    """

    def _classifier(self) -> BaseEstimator:
        raise NotImplementedError

    def fit(self, X, y, eval_set=None, report=None, class_names=None):
        """Fits features and classifier on flat ``(N, 2304)`` pixels.

        Args:
            X: flat pixels.
            y: labels.
            eval_set: ``(X_val, y_val)``; unused here, iterative families stop early on it.
            report: unused here; iterative families call it with validation metrics once
                per epoch.
            class_names: the name of every label (``fer_lab.labels``), default FER2013's
                seven; kept as ``class_names_``, and ``predict_proba`` has a column for
                each, including those ``y`` lacks.
        """
        self.class_names_ = labels.class_names(y, class_names)
        self.classes_ = np.arange(len(self.class_names_))
        features = make_features(self.features, self.pca_components, self.hog_cell, self.seed)
        self.pipeline_ = Pipeline([("features", features), ("classifier", self._classifier())])
        self.pipeline_.fit(X, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, one column per class (0 for a class the fit never saw); for
        margin classifiers a softmax of the decision values."""
        clf = self.pipeline_[-1]
        if hasattr(clf, "predict_proba") and getattr(clf, "probability", True):
            proba = self.pipeline_.predict_proba(X)
        else:
            proba = softmax(self.pipeline_.decision_function(X), axis=1)
        seen = self.pipeline_.classes_
        if len(seen) == len(self.classes_):
            return proba
        full = np.zeros((len(proba), len(self.classes_)))
        full[:, seen] = proba
        return full

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
