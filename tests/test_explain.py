"""Explanations: heat maps from Captum for the CNN (Grad-CAM) and any family (occlusion)."""

import numpy as np
import pytest

from fer_lab import explain
from fer_lab.data import load, split
from fer_lab.models import create

TINY_CNN = dict(arch="vgg", width=8, epochs=2, min_steps=30, max_minutes=None, tta="none",
                train_sides=[48])


@pytest.fixture(scope="module")
def splits():
    return split(load("synthetic:20"), val_fraction=0.2, seed=0)


@pytest.fixture(scope="module", params=["cnn", "knn"])
def fitted(request, splits):
    params = TINY_CNN if request.param == "cnn" else dict(features="pca", pca_components=0.9)
    return create(request.param, **params).fit(splits.train.X, splits.train.y)


@pytest.mark.parametrize("method", ["auto", "occlusion"])
def test_maps_have_the_faces_shape_and_follow_the_face(fitted, splits, method):
    faces = splits.val.X[:6]
    maps = explain.explain(fitted, faces, method=method)
    assert maps.shape == (6, 48, 48) and maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    covered = faces.copy().reshape(6, 48, 48)
    covered[:, :24] = 128  # the upper half greyed out: the evidence moves
    moved = explain.explain(fitted, covered.reshape(6, -1), method=method)
    assert np.abs(moved - maps).mean() > 0.01
    again = explain.explain(fitted, faces, method=method)
    np.testing.assert_allclose(again, maps, atol=1e-6)  # deterministic


def test_auto_is_gradcam_for_a_network_and_gradcam_is_refused_elsewhere(fitted):
    expected = "gradcam" if hasattr(fitted, "net_") else "occlusion"
    assert explain.method_for(fitted) == expected
    if expected == "occlusion":
        with pytest.raises(ValueError, match="gradcam needs a network"):
            explain.method_for(fitted, "gradcam")


def test_a_network_still_explains_after_predicting(splits):
    model = create("cnn", **TINY_CNN).fit(splits.train.X, splits.train.y)
    model.predict(splits.val.X)  # inference mode must not leave the weights unusable
    assert explain.explain(model, splits.val.X[:2]).shape == (2, 48, 48)


def test_gradcam_looks_at_the_feature_map_the_head_pools(splits):
    """A ResNet's last convolution made is its last block's 1x1 shortcut, which skips the
    block: Grad-CAM takes the block's output instead; a VGG's last convolution is right.
    A ResNet's maps are the faces' shape too."""
    from torch import nn

    from fer_lab import nets

    resnet, vgg = nets.build("resnet", width=8), nets.build("vgg", width=8)
    assert explain.cam_layer(resnet) is resnet.features[-1]
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert explain.cam_layer(vgg) is convs[-1]
    model = create("cnn", **{**TINY_CNN, "arch": "resnet", "epochs": 1, "min_steps": 8}).fit(
        splits.train.X, splits.train.y)
    maps = explain.explain(model, splits.val.X[:3])
    assert maps.shape == (3, 48, 48) and np.isfinite(maps).all() and maps.max() > 0
