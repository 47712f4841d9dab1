"""Every registered family honours the estimator contract (parametrized over the registry)."""

import numpy as np
import pytest
from sklearn.base import clone

from fer_lab.config import load_family
from fer_lab.data import load, split
from fer_lab.models import create, families, get


@pytest.fixture(scope="module")
def splits():
    return split(load("synthetic:30"), val_fraction=0.2, seed=0)


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: .*svm"):
        create("no-such-model")


# The ensemble's default members are three hour-long CNNs: here two quick families.
CONTRACT_PARAMS = {"ensemble": {"members": [{"family": "tree"}, {"family": "knn"}]}}


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f == "cnn" else f
                                    for f in families()])
def test_fit_predict_contract(family, splits):
    # Budgeted in steps, not minutes: a time cap would leave the fit untrained on a slow
    # machine and make the accuracy check below depend on the machine's speed.
    params = {k: v for k, v in load_family(family).params.items() if k != "max_minutes"}
    params.update(CONTRACT_PARAMS.get(family, {}))
    model = create(family, **params)
    assert clone(model).get_params() == model.get_params()  # __init__ only stores
    assert not hasattr(model, "classes_")
    assert model.fit(splits.train.X, splits.train.y) is model
    proba = model.predict_proba(splits.val.X)
    assert proba.shape == (len(splits.val), 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-4)
    pred = model.predict(splits.val.X)
    assert pred.shape == (len(splits.val),)
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    # Learnable synthetic faces: every family must beat chance (1/7) clearly.
    assert (pred == splits.val.y).mean() > 0.3


@pytest.mark.parametrize("family", families())
def test_config_matches_the_estimator(family):
    config = load_family(family)
    known = set(get(family)().get_params())
    assert set(config.params) <= known
    assert {p.name for p in config.search_space} <= known
    assert config.study.trials > 0 and config.study.rungs[-1] <= 1.0


@pytest.mark.parametrize("cell", [6, 8])
def test_batched_hog_equals_scikit_image_face_by_face(cell):
    """fer-lab's vectorised HOG gives what scikit-image's ``hog`` gives each face: on noise,
    on posterised faces (many zero and axis-aligned gradients, bin edges) and on flat ones."""
    from skimage.feature import hog

    from fer_lab.features import hog_features

    rng = np.random.default_rng(cell)
    faces = rng.integers(0, 256, (40, 48, 48), dtype=np.uint8)
    faces[:15] = faces[:15] // 64 * 64
    faces[15], faces[16] = 0, 255
    faces[17] = np.add.outer(np.arange(48), np.arange(48)).astype(np.uint8) * 5  # 45 degrees
    expected = np.stack([hog(face, orientations=9, pixels_per_cell=(cell, cell),
                             cells_per_block=(2, 2), feature_vector=True) for face in faces])
    got = hog_features(faces, cell)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # Chunks stitch together: a batch split across passes gives the same rows.
    from fer_lab import features
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(features, "HOG_CHUNK", 7)
        np.testing.assert_array_equal(hog_features(faces, cell), got)


@pytest.mark.parametrize("features", ["pixels", "pca", "hog", "hog_pca", "pca_hog"])
def test_feature_kinds(features, splits):
    model = create("logreg", features=features, pca_components=0.9).fit(
        splits.train.X, splits.train.y)
    assert model.predict(splits.val.X[:5]).shape == (5,)

