"""Feature steps for the classical families: scaled pixels, PCA, HOG and their union.

Each returns a scikit-learn transformer that takes flat ``(N, 2304)`` uint8 pixels, so a
fitted pipeline carries its whole preprocessing.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import cache

import joblib
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from fer_lab.data import SIDE

FEATURE_KINDS = ("pixels", "pca", "hog", "hog_pca", "pca_hog")


def _to_unit(X: np.ndarray) -> np.ndarray:
    return np.asarray(X, dtype=np.float32) / 255.0


GRADIENT = 255  # a uint8 image's central differences lie within -255..255
HOG_CHUNK = 4096  # faces per vectorised pass: a few hundred MB of temporaries


@cache
def _gradient_tables(orientations: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, column) gradient pair's magnitude and orientation bin, computed as
    scikit-image's ``hog`` computes them per pixel (float64 ``hypot``; degrees of
    ``arctan2`` modulo 180; bin ``i`` holds ``[180 i / n, 180 (i + 1) / n)``): a uint8
    image has only 511 x 511 such pairs, so looking them up gives the same numbers as
    computing them for each of a face's 2,304 pixels."""
    g = np.arange(-GRADIENT, GRADIENT + 1, dtype=np.float64)
    g_row, g_col = np.meshgrid(g, g, indexing="ij")
    magnitude = np.hypot(g_col, g_row)
    angle = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    starts = (180.0 / orientations) * np.arange(orientations)
    bins = np.searchsorted(starts, angle, side="right") - 1
    return magnitude.ravel(), bins.ravel().astype(np.intp)


def hog_features(images: np.ndarray, cell: int = 8, orientations: int = 9) -> np.ndarray:
    """Histogram-of-oriented-gradients descriptors of ``(N, H, W)`` uint8 images, a row
    each: scikit-image's ``hog(img, orientations, pixels_per_cell=(cell, cell),
    cells_per_block=(2, 2))`` (L2-Hys blocks), for a batch at once (~10x faster than
    calling it per face; tests/test_models.py holds them equal)."""
    images = np.asarray(images, dtype=np.uint8)
    magnitude_of, bin_of = _gradient_tables(orientations)
    return np.concatenate([_hog_chunk(images[i:i + HOG_CHUNK], cell, orientations,
                                      magnitude_of, bin_of)
                           for i in range(0, len(images), HOG_CHUNK)] or
                          [np.zeros((0, _hog_width(images.shape[1:], cell, orientations)),
                                    np.float32)])


def _hog_width(shape: tuple[int, ...], cell: int, orientations: int) -> int:
    blocks = [side // cell - 1 for side in shape]
    return blocks[0] * blocks[1] * 4 * orientations


def _hog_chunk(images: np.ndarray, cell: int, orientations: int, magnitude_of: np.ndarray,
               bin_of: np.ndarray) -> np.ndarray:
    n, rows, cols = images.shape
    pixels = images.astype(np.int16)
    # Central differences, zero on the border rows/columns (scikit-image's convention).
    g_row = np.zeros_like(pixels)
    g_col = np.zeros_like(pixels)
    g_row[:, 1:-1, :] = pixels[:, 2:, :] - pixels[:, :-2, :]
    g_col[:, :, 1:-1] = pixels[:, :, 2:] - pixels[:, :, :-2]
    cells_r, cells_c = rows // cell, cols // cell  # whole cells only
    pair = ((g_row[:, :cells_r * cell, :cells_c * cell].astype(np.intp) + GRADIENT)
            * (2 * GRADIENT + 1) + g_col[:, :cells_r * cell, :cells_c * cell] + GRADIENT)
    cell_r = np.arange(cells_r * cell) // cell
    cell_c = np.arange(cells_c * cell) // cell
    slot = ((np.arange(n)[:, None, None] * cells_r + cell_r[None, :, None]) * cells_c
            + cell_c[None, None, :]) * orientations + bin_of[pair]
    hist = np.bincount(slot.ravel(), weights=magnitude_of[pair].ravel(),
                       minlength=n * cells_r * cells_c * orientations)
    hist = hist.reshape(n, cells_r, cells_c, orientations) / (cell * cell)
    # Blocks of 2x2 cells, one step apart, each L2-Hys normalised.
    br, bc = cells_r - 1, cells_c - 1
    blocks = np.empty((n, br, bc, 2, 2, orientations))
    for dr in (0, 1):
        for dc in (0, 1):
            blocks[:, :, :, dr, dc, :] = hist[:, dr:dr + br, dc:dc + bc, :]
    eps = 1e-5
    blocks /= np.sqrt((blocks ** 2).sum(axis=(3, 4, 5), keepdims=True) + eps ** 2)
    np.minimum(blocks, 0.2, out=blocks)
    blocks /= np.sqrt((blocks ** 2).sum(axis=(3, 4, 5), keepdims=True) + eps ** 2)
    return blocks.reshape(n, -1).astype(np.float32)


class HOG(TransformerMixin, BaseEstimator):
    """Histogram-of-oriented-gradients descriptors (``hog_features``) of 48x48 faces.

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
        out = hog_features(X.reshape(-1, SIDE, SIDE), self.cell, self.orientations)
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


class ShapedPCA(PCA):
    """PCA by the covariance's eigen-decomposition when rows outnumber features (~5x
    faster than a full SVD on FER2013's 28,709 x 2,304 pixels; it takes a variance fraction
    like "full" does), by an SVD of the rows otherwise: on a few hundred faces the
    2,304 x 2,304 covariance costs ~2 s, their SVD milliseconds."""

    def _fit_full(self, X, *args):
        if self._fit_svd_solver == "covariance_eigh" and X.shape[0] < X.shape[1]:
            self._fit_svd_solver = "full"
        return super()._fit_full(X, *args)


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
        return ShapedPCA(n_components=n, svd_solver="covariance_eigh", random_state=seed)

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
