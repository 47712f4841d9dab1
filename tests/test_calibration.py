"""Calibration (temperature scaling, ECE, NLL, Brier) and the uncertainty of the scores."""

import json

import numpy as np
import pytest
from scipy.special import softmax

from fer_lab import calibration, evaluation


def overconfident(n: int, seed: int = 0, sharpen: float = 4.0):
    """Labels drawn from known probabilities, and those probabilities sharpened: a model
    that is right as often as the true ones say but far more sure of itself."""
    rng = np.random.default_rng(seed)
    true = softmax(rng.normal(0, 1.0, (n, 7)), axis=1)
    y = np.array([rng.choice(7, p=p) for p in true])
    return softmax(np.log(true) * sharpen, axis=1), y, true


def test_temperature_tempers_an_overconfident_model_and_keeps_its_predictions():
    proba, y, _ = overconfident(4000)
    t = calibration.fit_temperature(proba, y)
    assert t == pytest.approx(4.0, rel=0.15)  # undoes the sharpening
    fixed = calibration.scale(proba, t)
    np.testing.assert_array_equal(fixed.argmax(1), proba.argmax(1))
    np.testing.assert_allclose(fixed.sum(1), 1.0)
    assert calibration.nll(fixed, y) < calibration.nll(proba, y) - 0.3
    assert calibration.ece(fixed, y) < calibration.ece(proba, y) / 3
    assert calibration.brier(fixed, y) < calibration.brier(proba, y)


def test_a_calibrated_model_keeps_a_temperature_near_one_and_zero_probabilities_stay_finite():
    _, y, true = overconfident(4000, seed=1)
    assert calibration.fit_temperature(true, y) == pytest.approx(1.0, abs=0.1)
    votes = np.eye(7)[(y + (np.arange(len(y)) % 3 == 0)) % 7]  # a tree's 0/1 votes, 2/3 right
    t = calibration.fit_temperature(votes, y)
    assert np.isfinite(calibration.nll(calibration.scale(votes, t), y))
    assert t > 1  # all-or-nothing votes that are wrong a third of the time get tempered


def test_ece_of_known_bins():
    # Four faces at confidence 0.9 (3 right): gap 0.15; four at 0.65 (all right): gap 0.35.
    proba = np.array([[0.9] + [0.1 / 6] * 6] * 4 + [[0.65] + [0.35 / 6] * 6] * 4)
    y = np.array([0, 0, 0, 1, 0, 0, 0, 0])
    rel = calibration.reliability(proba, y)
    assert rel["ece"] == pytest.approx((4 * 0.15 + 4 * 0.35) / 8)
    counts = {round(b["lower"], 3): b["count"] for b in rel["bins"] if b["count"]}
    assert counts == {round(13 / 15, 3): 4, round(9 / 15, 3): 4}
    assert sum(b["count"] for b in rel["bins"]) == 8


def test_reliability_files_hold_the_bins(tmp_path):
    proba, y, _ = overconfident(500)
    t = calibration.fit_temperature(proba, y)
    png, js = calibration.write_reliability(calibration.scale(proba, t), y,
                                            tmp_path / "reliability_val", "val", raw=proba)
    assert png.stat().st_size > 5000
    numbers = json.loads(js.read_text())
    assert sum(b["count"] for b in numbers["calibrated"]["bins"]) == 500
    assert numbers["uncalibrated"]["ece"] > numbers["calibrated"]["ece"]


def test_interval_holds_the_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)

    def width(n):
        y = rng.integers(0, 7, n)
        pred = np.where(rng.random(n) < 0.6, y, (y + 1) % 7)
        ci = evaluation.intervals(y, pred)
        point = evaluation.scores(y, pred)
        for measure in ("accuracy", "macro_f1"):
            low, high = ci[measure]
            assert low <= point[measure] <= high
        return ci["accuracy"][1] - ci["accuracy"][0]

    small, large = width(500), width(8000)
    assert large < small / 3  # about 1/sqrt(16)
    assert evaluation.intervals(np.arange(7), np.arange(7)) == evaluation.intervals(
        np.arange(7), np.arange(7))  # seeded


def test_paired_test_tells_a_real_gap_from_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 7000)
    a = np.where(rng.random(7000) < 0.70, y, (y + 1) % 7)
    same = np.where(rng.random(7000) < 0.70, y, (y + 1) % 7)
    worse = np.where(rng.random(7000) < 0.65, y, (y + 1) % 7)
    assert evaluation.mcnemar(y, a, worse) < 0.001
    assert evaluation.mcnemar(y, a, same) > 0.05
    assert evaluation.mcnemar(y, a, a) == 1.0


class _Views:
    """An estimator with test-time augmentation whose probabilities depend on the mode."""

    def __init__(self, tta="flip"):
        self.tta = tta

    def has_views(self):
        return True

    def with_tta(self, tta):
        return _Views(tta)

    def predict_proba(self, X):
        sharp = {"none": 4.0, "flip": 2.0, "crops": 1.0}[self.tta]
        return softmax(sharp * np.linspace(0, 1, 7)[None, :].repeat(len(X), 0), axis=1)


def test_each_test_time_augmentation_is_calibrated_by_its_own_temperature():
    from fer_lab.pyfunc import FerModel

    pixels = np.zeros((2, 48, 48), np.uint8)
    model = FerModel(_Views(), 1.5, temperatures={"none": 3.0, "flip": 1.5, "crops": 0.8})

    def proba(**params):
        return model.predict(None, pixels, params=params).iloc[:, 2:].to_numpy()

    for tta, t in (("none", 3.0), ("crops", 0.8), ("flip", 1.5)):
        np.testing.assert_allclose(proba(tta=tta), calibration.scale(
            proba(tta=tta, calibrated=False), t), atol=1e-9)
    np.testing.assert_allclose(proba(), calibration.scale(proba(calibrated=False), 1.5))
    # a model logged before per-mode temperatures uses its one temperature for every mode
    del model.temperatures
    np.testing.assert_allclose(proba(tta="none"), calibration.scale(
        proba(tta="none", calibrated=False), 1.5), atol=1e-9)
