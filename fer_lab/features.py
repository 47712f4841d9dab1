"""Feature steps for the classical families: scaled pixels, PCA, HOG and their union.

Each returns a scikit-learn transformer that takes flat ``(N, 2304)`` uint8 pixels, so a
fitted pipeline carries its whole preprocessing.
"""

from __future__ import annotations

from collections import OrderedDict

import joblib
import numpy as np
from skimage.feature import hog
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from fer_lab.data import SIDE

FEATURE_KINDS = ("pixels", "pca", "hog", "hog_pca", "pca_hog")


def _to_unit(X: np.ndarray) -> np.ndarray:
    return np.asarray(X, dtype=np.float32) / 255.0


class HOG(TransformerMixin, BaseEstimator):
    """Histogram-of-oriented-gradients descriptors (scikit-image) of 48x48 faces.

    Args:
        cell: pixels per (square) cell.
        orientations: gradient-orientation bins.
    """

    # A study computes HOG on the same training and validation rows in every trial;
    # remembering the last few results by content saves most of a trial's feature time.
    _memo: OrderedDict[tuple, np.ndarray] = OrderedDict()
    _memo_size = 8

    def __init__(self, cell: int = 8, orientations: int = 9):
        self.cell = cell
        self.orientations = orientations

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.uint8)
        key = (joblib.hash(X), self.cell, self.orientations)
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        out = np.stack([
            hog(img, orientations=self.orientations, pixels_per_cell=(self.cell, self.cell),
                cells_per_block=(2, 2), feature_vector=True)
            for img in X.reshape(-1, SIDE, SIDE)
        ]).astype(np.float32)
        self._memo[key] = out
        if len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return out


class _Weight(TransformerMixin, BaseEstimator):
    """Scales a block so each block of a union weighs the same whatever its width."""

    def fit(self, X, y=None):
        self.scale_ = 1.0 / np.sqrt(np.asarray(X).shape[1])
        return self

    def transform(self, X):
        return np.asarray(X) * self.scale_


def make_features(kind: str, pca_components: float | int = 0.95, hog_cell: int = 8,
                  seed: int = 0) -> Pipeline | FeatureUnion:
    """Builds a feature step.

    Args:
        kind: ``pixels`` (standardised pixels), ``pca`` (standardised pixels → PCA, the
            seed's 253 components at 0.95), ``hog``, ``hog_pca`` (HOG → PCA) or
            ``pca_hog`` (PCA of pixels beside HOG, each block weighted equally).
        pca_components: PCA's ``n_components``: a variance fraction (< 1) or a count.
        hog_cell: HOG pixels per cell.
        seed: PCA's random state.
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown features {kind!r}; known: {', '.join(FEATURE_KINDS)}")
    unit = FunctionTransformer(_to_unit, feature_names_out="one-to-one")

    def pca() -> PCA:
        n = pca_components if pca_components < 1 else int(pca_components)
        # Eigen-decomposing the covariance is ~5x faster than a full SVD when, as here,
        # rows far outnumber features, and it takes a variance fraction like "full" does.
        return PCA(n_components=n, svd_solver="covariance_eigh", random_state=seed)

    if kind == "pixels":
        return make_pipeline(unit, StandardScaler())
    if kind == "pca":
        return make_pipeline(unit, StandardScaler(), pca())
    if kind == "hog":
        return make_pipeline(HOG(hog_cell), StandardScaler())
    if kind == "hog_pca":
        return make_pipeline(HOG(hog_cell), StandardScaler(), pca())
    return FeatureUnion([
        ("pca", make_pipeline(unit, StandardScaler(), pca(), _Weight())),
        ("hog", make_pipeline(HOG(hog_cell), StandardScaler(), _Weight())),
    ])
