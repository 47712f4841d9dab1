"""A real 2-trial study per family on synthetic data, checked through MLflow and Optuna."""

import dataclasses
import json
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest

from fer_lab import calibration
from fer_lab.config import Param, TuneConfig, load_family
from fer_lab.data import EMOTIONS, load, split
from fer_lab.models import families
from fer_lab.tuning import study_name, tune

STUDY_METRICS = [
    "val_accuracy", "val_macro_f1", "test_private_accuracy", "test_public_accuracy",
    "test_all_accuracy", "test_private_macro_f1", "test_public_macro_f1", "test_all_macro_f1",
    "test_all_happy_precision", "test_all_disgust_recall", "test_all_neutral_f1", "fit_seconds",
]


@pytest.fixture(scope="module")
def dataset():
    return load("synthetic:20")


def quick_config(family: str, tmp_path, trials: int = 2, **study) -> TuneConfig:
    model = load_family(family, budget="quick")
    study = {"startup_trials": trials, **study}  # no pruning unless a test asks for it
    model = dataclasses.replace(model, study=dataclasses.replace(
        model.study, trials=trials, timeout=None, rungs=(0.5, 1.0), **study))
    # The experiment is named after the test's folder: tests share one tracking store.
    return TuneConfig(model=model, data="synthetic:20", experiment=tmp_path.name,
                      storage=f"sqlite:///{tmp_path}/optuna.db", study_name=family)


def runs_of(experiment: str):
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow)
                                    if f in ("cnn", "logreg") else f for f in families()])
def test_study_is_tracked(family, tracking, tmp_path, dataset):
    config = quick_config(family, tmp_path)
    metrics = tune(config, dataset, progress=False)
    runs = runs_of(config.experiment)
    parents = [r for r in runs if r.data.tags.get("fer.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("fer.role") == "trial"]
    assert len(parents) == 1 and len(trials) == 2
    parent = parents[0]
    assert parent.data.tags["fer.family"] == family
    assert parent.data.tags["mlflow.runName"] == f"{family} · study"
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert sorted(t.data.tags["fer.trial"] for t in trials) == ["0", "1"]
    for t in trials:
        assert "val_accuracy" in t.data.metrics and t.data.params
        assert t.data.tags["fer.trial_state"] == "COMPLETE"
    for name in STUDY_METRICS:
        assert parent.data.metrics[name] == pytest.approx(metrics[name])
    # test_all is PublicTest + PrivateTest: its accuracy is their size-weighted mean
    parts = split(dataset, config.val_fraction, config.seed)
    m = parent.data.metrics
    assert m["test_all_accuracy"] == pytest.approx(
        (m["test_private_accuracy"] * len(parts.test_private)
         + m["test_public_accuracy"] * len(parts.test_public)) / len(parts.test_all))
    client = mlflow.MlflowClient()
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    for name in ("val", "test_private", "test_public", "test_all"):
        assert {f"evaluation/confusion_{name}.png", f"evaluation/confusion_{name}.json",
                f"evaluation/confusion_{name}_normalized.png",
                f"evaluation/report_{name}.txt", f"evaluation/report_{name}.json",
                f"evaluation/reliability_{name}.png", f"evaluation/reliability_{name}.json",
                f"evaluation/predictions_{name}.csv"} <= files
        # intervals around every split's scores, calibration measured before and after
        for measure in ("accuracy", "macro_f1"):
            assert m[f"{name}_{measure}_ci95_low"] <= m[f"{name}_{measure}"] \
                <= m[f"{name}_{measure}_ci95_high"]
        assert {f"{name}_ece", f"{name}_nll", f"{name}_brier", f"{name}_ece_uncalibrated"} \
            <= set(m)
    # the temperature minimises the validation NLL: calibrated is never worse there
    assert m["calibration_temperature"] > 0
    local = Path(client.download_artifacts(parent.info.run_id, "evaluation/reliability_val.json"))
    numbers = json.loads(local.read_text())
    assert numbers["calibrated"]["ece"] == pytest.approx(m["val_ece"])
    assert numbers["uncalibrated"]["ece"] == pytest.approx(m["val_ece_uncalibrated"])
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "optuna", "explanations"} <= top
    assert {"explanations/class_means.png", "explanations/confident_mistakes.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "explanations")}
    if family == "cnn":  # trains in epochs: curves, checkpoint and per-epoch refit metrics
        training = {a.path for a in client.list_artifacts(parent.info.run_id, "training")}
        assert training == {"training/curves.png", "training/best.pt"}
        assert len(client.get_metric_history(parent.info.run_id, "refit_val_accuracy")) >= 2
        assert "val_loss" in trials[0].data.metrics and "lr" in trials[0].data.metrics
    trial_files = {a.path for a in client.list_artifacts(trials[0].info.run_id, "evaluation")}
    assert "evaluation/confusion_val.png" in trial_files
    model = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/model")
    pixels = [" ".join(map(str, img.ravel())) for img in dataset.images[:3]]
    out = model.predict(pd.DataFrame({"pixels": pixels}))
    assert list(out.columns[:2]) == ["emotion", "emotion_id"] and len(out) == 3
    # calibrated by default (the study's temperature); the estimator's own on request
    raw = model.predict(pd.DataFrame({"pixels": pixels}), params={"calibrated": False})
    raw_p, cal_p = raw[list(EMOTIONS)].to_numpy(), out[list(EMOTIONS)].to_numpy()
    np.testing.assert_allclose(cal_p, calibration.scale(raw_p, m["calibration_temperature"]),
                               atol=1e-6)
    np.testing.assert_array_equal(raw["emotion_id"], out["emotion_id"])


@pytest.mark.slow
def test_resume_reaches_the_requested_trials(tracking, tmp_path, dataset):
    config = quick_config("tree", tmp_path)
    tune(config, dataset, progress=False)
    study = optuna.load_study(study_name="tree", storage=config.storage)
    assert len(study.trials) == 2
    tune(quick_config("tree", tmp_path, trials=3), dataset, progress=False)
    study = optuna.load_study(study_name="tree", storage=config.storage)
    assert len(study.trials) == 3
    trial_runs = [r for r in runs_of(config.experiment) if r.data.tags.get("fer.role") == "trial"]
    assert len(trial_runs) == 3


@pytest.mark.slow
def test_default_study_name_keeps_data_sets_apart(tracking, tmp_path, dataset):
    config = dataclasses.replace(quick_config("tree", tmp_path), study_name=None)
    other = load("synthetic:21")
    tune(config, dataset, progress=False)
    tune(config, other, progress=False)  # other data: a study of its own
    names = {study_name(config, d.digest) for d in (dataset, other)}
    assert {s.study_name for s in optuna.get_all_study_summaries(config.storage)} == names
    assert all(n.startswith("tree-default-") for n in names)
    # a study named by hand refuses data other than its own
    mixed = dataclasses.replace(config, study_name=study_name(config, dataset.digest))
    with pytest.raises(ValueError, match="its trials don't compare"):
        tune(mixed, other, progress=False)


@pytest.mark.slow
def test_pruning_stops_weak_trials_early(tracking, tmp_path, dataset):
    config = quick_config("knn", tmp_path, trials=8, startup_trials=1)
    tune(config, dataset, progress=False)
    study = optuna.load_study(study_name="knn", storage=config.storage)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states
    pruned_runs = [r for r in runs_of(config.experiment) if r.data.tags.get("fer.trial_state") == "PRUNED"]
    assert len(pruned_runs) == states.count(optuna.trial.TrialState.PRUNED)


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tracking, tmp_path, dataset):
    config = quick_config("knn", tmp_path, trials=3)
    # trial 0 runs the defaults; later ones ask for more neighbours than there are rows
    space = tuple(p for p in config.model.search_space if p.name != "n_neighbors") + (
        Param("n_neighbors", low=10_000, high=10_001),)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                   search_space=space))
    metrics = tune(config, dataset, progress=False)
    assert metrics["trials_complete"] == 1 and metrics["trials_failed"] == 2
    runs = [r for r in runs_of(config.experiment) if r.data.tags.get("fer.role") == "trial"]
    failed = [r for r in runs if r.data.tags["fer.trial_state"] == "FAILED"]
    assert len(failed) == 2 and all(r.info.status == "FAILED" for r in failed)
    assert all("n_neighbors" in r.data.tags["fer.error"] for r in failed)


def test_every_test_image_is_predicted_once_and_val_reused_from_the_fit():
    from fer_lab.tuning import predict_splits

    splits = split(load("synthetic:20"), 0.1, 0)

    class Counting:
        seen = 0
        eval_set_proba_ = np.eye(7)[splits.val.y]  # as a fit that scored its eval_set

        def predict_proba(self, X):
            Counting.seen += len(X)
            return np.full((len(X), 7), 1 / 7)

    out = predict_splits(Counting(), splits)
    assert Counting.seen == len(splits.test_private) + len(splits.test_public)
    assert set(out) == {"val", "test_private", "test_public", "test_all"}
    np.testing.assert_array_equal(np.sort(out["test_all"][0]), np.sort(splits.test_all.y))
    np.testing.assert_array_equal(out["val"][1].argmax(1), splits.val.y)
