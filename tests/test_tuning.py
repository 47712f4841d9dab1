"""A real 2-trial study per family on synthetic data, checked through MLflow and Optuna."""

import dataclasses

import mlflow
import numpy as np
import optuna
import pytest
from conftest import check_study

from fer_lab.config import Param, TuneConfig, load_family
from fer_lab.data import load, split
from fer_lab.tuning import study_name, tune

STUDY_METRICS = [
    "val_accuracy", "val_macro_f1", "test_private_accuracy", "test_public_accuracy",
    "test_all_accuracy", "test_private_macro_f1", "test_public_macro_f1", "test_all_macro_f1",
    "test_all_happy_precision", "test_all_disgust_recall", "test_all_neutral_f1", "fit_seconds",
]


@pytest.fixture(scope="module")
def dataset():
    return load("synthetic:20")


def quick_config(family: str, tmp_path, trials: int = 2, timeout: float | None = None,
                 **study) -> TuneConfig:
    model = load_family(family, budget="quick")
    study = {"startup_trials": trials, **study}  # no pruning unless a test asks for it
    model = dataclasses.replace(model, study=dataclasses.replace(
        model.study, trials=trials, timeout=timeout, rungs=(0.5, 1.0), **study))
    # The experiment is named after the test's folder: tests share one tracking store.
    return TuneConfig(model=model, data="synthetic:20", experiment=tmp_path.name,
                      storage=f"sqlite:///{tmp_path}/optuna.db", study_name=family)


def runs_of(experiment: str):
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_a_study_is_tracked(tracking, tmp_path, dataset):
    """A tree's study, checked as the main job checks every family's (tests/test_compare.py:
    each family's study runs once in the suite, there)."""
    config = quick_config("tree", tmp_path)
    metrics = tune(config, dataset, progress=False)
    runs = runs_of(config.experiment)
    [parent] = [r for r in runs if r.data.tags.get("fer.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("fer.role") == "trial"]
    assert len(trials) == 2
    check_study("tree", parent, trials, split(dataset, config.val_fraction, config.seed))
    for name in STUDY_METRICS:
        assert parent.data.metrics[name] == pytest.approx(metrics[name])


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


def test_an_interrupted_search_resumes_with_the_time_it_had_left(tracking, tmp_path, dataset):
    from fer_lab.tuning import SEARCH_SECONDS_ATTR

    tune(quick_config("tree", tmp_path, trials=1), dataset, progress=False)
    study = optuna.load_study(study_name="tree", storage=quick_config("tree", tmp_path).storage)
    assert study.user_attrs[SEARCH_SECONDS_ATTR] is None  # a finished search leaves none
    # As a lead killed during its search leaves it, here with the whole hour used.
    study.set_user_attr(SEARCH_SECONDS_ATTR, 3600.0)
    metrics = tune(quick_config("tree", tmp_path, trials=5, timeout=3600), dataset,
                   progress=False)
    assert len(study.trials) == 1  # no time left for the four trials asked
    assert metrics["search_seconds"] >= 3600.0
    # A finished study asked for more trials gets a time of its own again.
    tune(quick_config("tree", tmp_path, trials=2, timeout=3600), dataset, progress=False)
    assert len(study.trials) == 2


def test_a_lead_killed_in_its_refit_reports_the_search_it_did(tracking, tmp_path, dataset,
                                                              monkeypatch):
    from fer_lab import tuning

    config = quick_config("tree", tmp_path, trials=2, timeout=3600)
    refit = tuning.refit_and_evaluate

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning, "refit_and_evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        tune(config, dataset, progress=False)
    study = optuna.load_study(study_name="tree", storage=config.storage)
    searched = study.user_attrs[tuning.SEARCH_SECONDS_ATTR]
    assert searched > 0 and len(study.trials) == 2
    study.set_user_attr(tuning.SEARCH_SECONDS_ATTR, 1800.0)  # as an hour-long search leaves it
    monkeypatch.setattr(tuning, "refit_and_evaluate", refit)
    metrics = tune(config, dataset, progress=False)
    assert len(study.trials) == 2  # the search was done: only the refit runs again
    assert 1800.0 <= metrics["search_seconds"] < 1800.0 + 60
    assert study.user_attrs[tuning.SEARCH_SECONDS_ATTR] is None


def test_a_first_trial_lost_with_its_worker_runs_again_on_resume(tracking, tmp_path, dataset,
                                                                monkeypatch):
    """A one-trial study (the CNN's hour) or an ensemble whose first trial trains its
    members (hours) killed in that trial: the re-run runs it again, with the same
    parameters, instead of finding the trial count met by a trial that never finished."""
    from fer_lab import parallel, tuning

    config = quick_config("tree", tmp_path, trials=1)

    def killed(self, trial):
        trial.suggest_int("max_depth", 3, 30)  # the kill comes after the trial's sampling
        raise KeyboardInterrupt

    run = tuning.Objective._run
    monkeypatch.setattr(tuning.Objective, "_run", killed)
    with pytest.raises(KeyboardInterrupt):
        tune(config, dataset, progress=False)
    study = optuna.load_study(study_name="tree", storage=config.storage)
    [lost] = study.trials
    assert parallel.lost(lost)
    monkeypatch.setattr(tuning.Objective, "_run", run)
    metrics = tune(config, dataset, progress=False)
    first, again = optuna.load_study(study_name="tree", storage=config.storage).trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert again.state == optuna.trial.TrialState.COMPLETE
    defaults = tuning.first_trials(config.model)[0]  # the study's first: the config's defaults
    assert defaults and again.params.items() >= defaults.items()
    assert metrics["trials_complete"] == 1 and metrics["best_trial"] == 1


def test_a_study_whose_trials_all_failed_says_so(tracking, tmp_path, dataset, monkeypatch):
    from fer_lab import parallel, tuning

    def broken(self, trial):
        raise ValueError("a configuration this data cannot fit")

    monkeypatch.setattr(tuning.Objective, "_run", broken)
    with pytest.raises(RuntimeError, match="no trial completed .2 failed"):
        tune(quick_config("tree", tmp_path, trials=2), dataset, progress=False)
    trials = optuna.load_study(study_name="tree", storage=quick_config(
        "tree", tmp_path).storage).trials
    assert len(trials) == 2  # failures count: a trial that raises is not run again
    assert all("a configuration this data cannot fit" in t.user_attrs[parallel.ERROR_ATTR]
               for t in trials)


def test_a_failed_registration_keeps_the_refit_for_the_rerun(tracking, tmp_path, dataset,
                                                             monkeypatch):
    """The study's checkpoints (the refit, an ensemble's members: hours) are removed only
    once the model is registered: a registry outage costs a re-run, not a refit."""
    from fer_lab import registry, tuning
    from fer_lab.models.decision_tree import TreeClassifier

    config = quick_config("tree", tmp_path, trials=1)
    checkpoints = tuning.study_checkpoints(config, "tree")
    register = registry.register

    def outage(*args, **kwargs):
        raise ConnectionError("registry unreachable")

    monkeypatch.setattr(registry, "register", outage)
    with pytest.raises(ConnectionError):
        tune(config, dataset, progress=False)
    assert list(checkpoints.glob("refit-*.pkl"))
    study = optuna.load_study(study_name="tree", storage=config.storage)
    assert study.user_attrs[tuning.SEARCH_SECONDS_ATTR] > 0

    def no_fit(*args, **kwargs):
        raise AssertionError("the kept refit was fitted again")

    monkeypatch.setattr(registry, "register", register)
    monkeypatch.setattr(TreeClassifier, "fit", no_fit)
    tune(config, dataset, progress=False)
    assert not checkpoints.exists()
    assert study.user_attrs[tuning.SEARCH_SECONDS_ATTR] is None
    studies = [r for r in runs_of(config.experiment) if r.data.tags.get("fer.role") == "study"]
    assert [r.info.status for r in studies if r.data.tags.get("fer.registered_model")] == \
        ["FINISHED"]


def test_a_finished_study_run_again_returns_its_result_without_refitting(
        tracking, tmp_path, dataset, monkeypatch):
    from fer_lab.models.decision_tree import TreeClassifier

    config = quick_config("tree", tmp_path, trials=1)
    first = tune(config, dataset, progress=False)
    fit = TreeClassifier.fit

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished study was fitted again")

    monkeypatch.setattr(TreeClassifier, "fit", no_fit)
    again = tune(config, dataset, progress=False)
    assert again["test_all_accuracy"] == first["test_all_accuracy"]
    assert again["fit_seconds"] == first["fit_seconds"]
    studies = [r for r in runs_of(config.experiment) if r.data.tags.get("fer.role") == "study"]
    assert len(studies) == 1
    # Another configuration (here one more trial) is a new result.
    monkeypatch.setattr(TreeClassifier, "fit", fit)
    more = tune(quick_config("tree", tmp_path, trials=2), dataset, progress=False)
    assert more["trials_complete"] == 2
    assert len([r for r in runs_of(config.experiment)
                if r.data.tags.get("fer.role") == "study"]) == 2


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


def test_members_and_teachers_make_studies_of_their_own(tmp_path):
    """An ensemble of other members, or a network taught by another teacher, is scored on
    other predictions: re-running with them must not resume the first study."""
    def name(family: str, **params) -> str:
        config = dataclasses.replace(quick_config(family, tmp_path), study_name=None)
        model = dataclasses.replace(config.model, params={**config.model.params, **params})
        return study_name(dataclasses.replace(config, model=model), "d" * 16)

    assert name("cnn") == "cnn-default-" + "d" * 16  # as before for plain families
    assert name("cnn", teacher=None) == name("cnn")
    taught = {name("cnn", teacher="models:/fer-ensemble/1"),
              name("cnn", teacher="models:/fer-ensemble/2")}
    assert len(taught) == 2 and name("cnn") not in taught
    assert name("ensemble", members=["models:/fer-cnn/1"]) \
        != name("ensemble", members=["models:/fer-cnn/1", "models:/fer-svm/1"])
    assert name("ensemble", members=["a"]) == name("ensemble", members=["a"])


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


def test_a_refit_done_before_an_interruption_is_not_fitted_again(tracking, tmp_path,
                                                                 dataset, monkeypatch):
    """The refit is kept in the study's checkpoints: a run killed while it evaluated (the
    test splits' ten views take minutes) goes straight to the evaluation when re-run."""
    from fer_lab.models.decision_tree import TreeClassifier
    from fer_lab.tuning import refit_and_evaluate

    splits = split(dataset, 0.2, 0)
    with mlflow.start_run():
        first, _ = refit_and_evaluate("tree", {"max_depth": 4}, splits, 0,
                                      checkpoint_dir=tmp_path)
    assert len(list(tmp_path.glob("refit-*.pkl"))) == 1

    def no_fit(*args, **kwargs):
        raise AssertionError("the kept refit was fitted again")

    monkeypatch.setattr(TreeClassifier, "fit", no_fit)
    with mlflow.start_run():
        again, _ = refit_and_evaluate("tree", {"max_depth": 4}, splits, 0,
                                      checkpoint_dir=tmp_path)
    assert again["test_all_accuracy"] == first["test_all_accuracy"]
    assert again["fit_seconds"] == first["fit_seconds"]  # the fit's, not the loading's
