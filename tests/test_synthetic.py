"""Tests for the procedural FER2013 stand-in in ``fer_lab.synthetic``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from fer_lab.synthetic import make_faces

PER_CLASS = 100


@pytest.fixture(scope="module")
def faces():
    """One shared data set, since generating it is the slow part of every test."""
    return make_faces(per_class=PER_CLASS, seed=0)


def test_shapes_and_dtypes(faces):
    images, labels, usage = faces
    n = 7 * PER_CLASS
    assert images.shape == (n, 48, 48) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert usage.shape == (n,) and usage.dtype == np.int8


def test_labels_balanced_and_shuffled(faces):
    _, labels, _ = faces
    assert np.bincount(labels, minlength=7).tolist() == [PER_CLASS] * 7
    # Rows are shuffled, not grouped by class.
    assert not np.all(np.diff(labels) >= 0)


def test_usage_split_is_stratified(faces):
    _, labels, usage = faces
    assert set(np.unique(usage).tolist()) == {0, 1, 2}
    for c in range(7):
        counts = np.bincount(usage[labels == c], minlength=3)
        assert counts.tolist() == [80, 10, 10], (c, counts)


def test_small_per_class_still_has_every_usage():
    _, labels, usage = make_faces(per_class=10, seed=3)
    for c in range(7):
        assert set(usage[labels == c].tolist()) == {0, 1, 2}


def test_deterministic(faces):
    again = make_faces(per_class=PER_CLASS, seed=0)
    for a, b in zip(faces, again):
        np.testing.assert_array_equal(a, b)
    other = make_faces(per_class=PER_CLASS, seed=1)
    assert not np.array_equal(faces[0], other[0])
    assert not np.array_equal(faces[1], other[1])


def test_value_range(faces):
    images = faces[0]
    assert images.max() - images.min() > 200
    assert images.std() > 20
    # Each image has contrast of its own, not just the set as a whole.
    per_image = images.reshape(len(images), -1)
    assert np.all(per_image.max(1) - per_image.min(1) > 30)


def test_classes_differ_on_average(faces):
    images, labels, _ = faces
    means = np.stack([images[labels == c].mean(0) for c in range(7)])
    gaps = [np.abs(means[i] - means[j]).max() for i in range(7) for j in range(i + 1, 7)]
    assert min(gaps) > 5


def test_linear_model_learns_but_not_perfectly(faces):
    images, labels, usage = faces
    x = images.reshape(len(images), -1) / 255.0
    train, held = usage == 0, usage != 0
    # One BLAS thread: on a busy machine thread oversubscription makes this 20x slower.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=300).fit(x[train], labels[train])
    accuracy = model.score(x[held], labels[held])
    assert 0.5 < accuracy < 1.0, accuracy
