"""Ensembles: the vote is fitted on validation only, members come from the store or are
trained, and the result is a family like the others (study, registry, pyfunc)."""

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest

from fer_lab import calibration, pyfunc, registry
from fer_lab.config import TuneConfig, load_family
from fer_lab.data import EMOTIONS, Split, Splits, load, split
from fer_lab.models import create
from fer_lab.models.ensemble import EnsembleClassifier
from fer_lab.tuning import refit_and_evaluate, tune

TWO = [{"family": "tree"}, {"family": "knn"}]


@pytest.fixture(scope="module")
def splits():
    return split(load("synthetic:20"), val_fraction=0.2, seed=0)


def test_weights_minimise_the_validation_log_loss(splits):
    model = create("ensemble", members=TWO, combine="weights").fit(
        splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    assert model.weights_.sum() == pytest.approx(1.0) and (model.weights_ >= 0).all()
    probas = model.member_probas(splits.val.X)
    loss = calibration.nll(model.predict_proba(splits.val.X), splits.val.y)
    # no other split of the votes does better on validation, nor does either member alone
    for w in np.linspace(0, 1, 11):
        mixed = w * probas[0] + (1 - w) * probas[1]
        assert loss <= calibration.nll(mixed, splits.val.y) + 1e-4
    assert model.eval_set_proba_.shape == (len(splits.val), len(EMOTIONS))
    np.testing.assert_allclose(model.eval_set_proba_.sum(1), 1.0)
    assert set(model.fit_metrics_) == {"member0_val_accuracy", "member1_val_accuracy",
                                       "member0_weight", "member1_weight"}


def test_a_fitted_vote_is_scored_out_of_fold():
    """Members that know nothing: stacking fitted on the validation faces scores well on
    them; the score a study compares votes by (``eval_set_proba_``) stays at chance."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    probas = rng.dirichlet(np.ones(7), size=(3, 300))
    model = EnsembleClassifier(combine="stacking", C=100.0)
    views = {"none": rng.dirichlet(np.ones(7), size=(3, 300))}  # another augmentation's
    out_of_fold, out_of_fold_views = model._out_of_fold(probas, y, views)
    model._fit_vote(probas, y)
    assert (model._combine(probas).argmax(1) == y).mean() > 0.25
    assert (out_of_fold.argmax(1) == y).mean() < 0.2
    # the same folds' votes combine the other augmentation's probabilities
    assert (out_of_fold_views["none"].argmax(1) == y).mean() < 0.2
    same, same_views = model._out_of_fold(probas, y, {"none": probas})
    np.testing.assert_allclose(same_views["none"], same)


@pytest.mark.parametrize("combine", ["mean", "stacking"])
def test_other_votes(combine, splits):
    model = create("ensemble", members=TWO, combine=combine).fit(
        splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    proba = model.predict_proba(splits.test_all.X)
    assert proba.shape == (len(splits.test_all), len(EMOTIONS))
    np.testing.assert_allclose(proba.sum(1), 1.0)
    if combine == "mean":
        np.testing.assert_allclose(proba, model.member_probas(splits.test_all.X).mean(0))


def test_an_interrupted_fit_keeps_its_finished_members(splits, tmp_path, monkeypatch, caplog):
    """Members are hours of training each: a fit stopped at the second member loads the
    first when it runs again, in a new process, and trains only the rest."""
    from fer_lab.models import cnn, ensemble

    net = {"family": "cnn", "width": 8, "epochs": 2, "batch_size": 16, "min_steps": 0,
           "max_minutes": None, "tta": "none"}
    data = {"X": splits.train.X, "y": splits.train.y, "eval_set": (splits.val.X, splits.val.y)}
    monkeypatch.setattr(ensemble, "_MEMBERS", {})
    with pytest.raises(ValueError):  # the second member fails: the run stops there
        create("ensemble", members=[net, {"family": "knn", "n_neighbors": 0}],
               checkpoint_dir=str(tmp_path)).fit(**data)
    [kept] = tmp_path.glob("member-*.pkl")
    monkeypatch.setattr(ensemble, "_MEMBERS", {})  # as in a new process

    def no_training(*args, **kwargs):
        raise AssertionError("the finished member was trained again")

    monkeypatch.setattr(cnn.CNNClassifier, "fit", no_training)
    model = create("ensemble", members=[net, {"family": "knn"}],
                   checkpoint_dir=str(tmp_path)).fit(**data)
    assert "loaded from" in caplog.text
    # the network saved its epochs in a folder of its own while it trained
    assert model.members_[0].checkpoint_dir == str(kept.with_suffix(""))
    assert model.predict_proba(splits.val.X).shape == (len(splits.val), len(EMOTIONS))


def test_the_fit_records_what_each_trained_member_did(splits, monkeypatch):
    """An ensemble run shows, per member, how long its network trained and what it
    resolved (recipe, precision, test-time augmentation), not only its score."""
    from fer_lab.models import ensemble

    monkeypatch.setattr(ensemble, "_MEMBERS", {})
    net = {"family": "cnn", "width": 8, "epochs": 2, "batch_size": 16, "min_steps": 0,
           "max_minutes": None, "tta": "auto", "mixed_precision": "fp32",
           "channels_last": False}
    model = create("ensemble", members=[net, {"family": "knn"}]).fit(
        splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    assert model.fit_metrics_["member0_epochs"] == 2
    assert 1 <= model.fit_metrics_["member0_best_epoch"] <= 2
    assert "member1_epochs" not in model.fit_metrics_  # k-NN has no epochs
    settings = model.fit_settings_
    assert settings["member0.recipe"] == "default" and settings["member0.mixed_precision"] == "fp32"
    assert settings["member0.tta"] in ("none", "flip", "crops")
    assert not any(k.startswith("member1.") for k in settings)
    # each test-time augmentation's validation probabilities, out of fold like the vote's
    # own (for its temperature): the network's own augmentation gives the vote's
    assert set(model.eval_set_probas_) == {"none", "flip", "crops"}
    np.testing.assert_allclose(model.eval_set_probas_[settings["member0.tta"]],
                               model.eval_set_proba_, atol=1e-9)


def test_a_study_keeps_the_members_it_trains_until_it_ends(tracking, tmp_path, monkeypatch):
    from fer_lab.models import ensemble
    from fer_lab.tuning import study_checkpoints

    monkeypatch.setattr(ensemble, "_MEMBERS", {})
    kept = []
    train_and_keep = EnsembleClassifier._kept_member

    def spy(self, *args, **kwargs):
        made = train_and_keep(self, *args, **kwargs)
        kept.append(sorted(p.name for p in Path(self.checkpoint_dir).glob("*.pkl")))
        return made

    monkeypatch.setattr(EnsembleClassifier, "_kept_member", spy)
    model = load_family("ensemble", budget="quick")
    model = dataclasses.replace(model, params={**model.params, "members": TWO},
                                study=dataclasses.replace(model.study, trials=2))
    config = TuneConfig(model=model, data="synthetic:20", val_fraction=0.2,
                        experiment=tmp_path.name, storage=f"sqlite:///{tmp_path}/optuna.db",
                        study_name="kept")
    tune(config, progress=False)
    assert len(kept) == 2 and len(kept[-1]) == 2  # each member saved as it finished
    assert not study_checkpoints(config, "kept").exists()  # the study is done: removed


def _scrambled(splits: Splits) -> Splits:
    """The same train and validation rows, the test splits' labels and faces shuffled."""
    rng = np.random.default_rng(1)

    def scramble(part: Split) -> Split:
        return Split(rng.permutation(part.X), rng.permutation(part.y))

    public, private = scramble(splits.test_public), scramble(splits.test_private)
    every = Split(np.concatenate([public.X, private.X]), np.concatenate([public.y, private.y]))
    return dataclasses.replace(splits, test_public=public, test_private=private,
                               test_all=every, test_other=None)


@pytest.mark.slow
def test_the_vote_never_reads_a_test_split(tracking, splits):
    """The study path (refit, evaluation) with the test splits scrambled: what the vote
    learnt must not move, while the test scores do."""
    params = {"members": TWO, "combine": "weights"}
    seen = []
    for parts in (splits, _scrambled(splits)):
        with mlflow.start_run():
            metrics, uri = refit_and_evaluate("ensemble", params, parts, seed=0)
        model = mlflow.pyfunc.load_model(uri).unwrap_python_model().estimator
        seen.append((model.weights_, metrics))
    (w0, m0), (w1, m1) = seen
    np.testing.assert_array_equal(w0, w1)
    assert m0["val_accuracy"] == m1["val_accuracy"]
    assert m0["calibration_temperature"] == m1["calibration_temperature"]
    assert m0["test_all_accuracy"] != m1["test_all_accuracy"]


def _register(family: str, splits, digest: str, val: float = 0.5, **params) -> str:
    model = create(family, **params).fit(splits.train.X, splits.train.y)
    with mlflow.start_run(nested=mlflow.active_run() is not None) as run:
        uri = pyfunc.log_model(model, splits.val.X[:2], temperature=1.5)
    registry.register(uri, family, {"val_accuracy": val},
                      {"fer.data_digest": digest, "fer.protocol": "val 0.2 of Training, seed 0",
                       "fer.objective": "accuracy", "fer.run_id": run.info.run_id})
    return f"models:/fer-{family}@champion"


@pytest.mark.slow
def test_members_from_the_store_and_a_study(fresh_tracking, tmp_path, splits):
    """``champions`` gathers the store's family champions of the study's data; the study
    tries each vote once before sampling and registers fer-ensemble, whose pyfunc predicts
    with every member, calibrated as each was logged; a champion of other data is left
    out."""
    dataset = load("synthetic:20")
    digest = dataset.digest
    _register("tree", splits, digest)
    _register("knn", splits, digest, features="pca", pca_components=0.9)
    _register("logreg", splits, "other-data", features="pca")  # another data set's
    model = load_family("ensemble", budget="quick")
    model = dataclasses.replace(model, study=dataclasses.replace(
        model.study, trials=3, startup_trials=3))
    config = TuneConfig(model=model, data="synthetic:20", val_fraction=0.2,
                        experiment=tmp_path.name, storage=f"sqlite:///{tmp_path}/optuna.db",
                        study_name="votes")
    metrics = tune(config, dataset, progress=False)
    assert 0 <= metrics["val_accuracy"] <= 1
    study = optuna.load_study(study_name="votes", storage=config.storage)
    assert [t.params for t in study.trials] == [
        {"combine": "weights"}, {"combine": "mean"}, {"combine": "stacking", "C": 1.0}]
    version = mlflow.MlflowClient().get_model_version_by_alias("fer-ensemble", "champion")
    loaded = mlflow.pyfunc.load_model(f"models:/fer-ensemble/{version.version}")
    estimator = loaded.unwrap_python_model().estimator
    assert estimator.member_specs_ == ["models:/fer-knn/1", "models:/fer-tree/1"]
    assert estimator.temperatures_ == [1.5, 1.5]
    faces = splits.test_all.X[:4]
    out = loaded.predict(pd.DataFrame({"pixels": pyfunc.pixel_strings(faces)}),
                         params={"calibrated": False})
    members = [calibration.scale(m.predict_proba(faces), 1.5) for m in estimator.members_]
    expected = estimator._combine(np.stack(members))
    np.testing.assert_allclose(out[list(EMOTIONS)].to_numpy(), expected, atol=1e-9)


@pytest.mark.slow
def test_a_study_pins_its_members_when_it_starts(fresh_tracking, tmp_path, splits,
                                                 monkeypatch):
    """A champion promoted while the study runs (another family's study finishing) does not
    change the members of its later trials or of its refit: they are the versions
    ``champions`` and ``@champion`` named when it started, recorded in the study."""
    digest = load("synthetic:20").digest
    _register("tree", splits, digest)
    _register("knn", splits, digest, features="pca", pca_components=0.9)
    used, fit = [], EnsembleClassifier.fit

    def fit_and_promote(self, *args, **kwargs):
        fitted = fit(self, *args, **kwargs)
        used.append(list(fitted.member_specs_))
        if len(used) == 1:  # a better tree is promoted after the first trial
            _register("tree", splits, digest, val=0.9, max_depth=3)
        return fitted

    monkeypatch.setattr(EnsembleClassifier, "fit", fit_and_promote)
    model = load_family("ensemble", budget="quick")
    model = dataclasses.replace(
        model, params={**model.params, "members": ["champions", "models:/fer-tree@champion"]},
        study=dataclasses.replace(model.study, trials=2, startup_trials=2))
    config = TuneConfig(model=model, data="synthetic:20", val_fraction=0.2,
                        experiment=tmp_path.name, storage=f"sqlite:///{tmp_path}/optuna.db",
                        study_name="pinned")
    tune(config, progress=False)
    assert str(registry.champion_version(mlflow.MlflowClient(), "fer-tree").version) == "2"
    pinned = ["models:/fer-knn/1", "models:/fer-tree/1", "models:/fer-tree/1"]
    assert used == [pinned] * 3  # two trials and the refit
    study = optuna.load_study(study_name="pinned", storage=config.storage)
    assert study.user_attrs["fer.pinned"] == {"members": pinned}


@pytest.mark.parametrize("form", ["alias", "number", "latest", "logged model", "run"])
def test_a_member_of_other_data_is_refused_whatever_its_uri(fresh_tracking, splits, form):
    """Whichever URI names it, a member trained on other rows (which may hold this study's
    validation faces) is refused, not let through with a warning."""
    other = {"fer.data_digest": "other-data", "fer.protocol": "val 0.2 of Training, seed 0"}
    model = create("tree").fit(splits.train.X, splits.train.y)
    with mlflow.start_run(tags=other) as run:
        logged = pyfunc.log_model(model, splits.val.X[:2], temperature=1.5)
    registry.register(logged, "tree", {"val_accuracy": 0.5},
                      {**other, "fer.objective": "accuracy", "fer.run_id": run.info.run_id})
    uri = {"alias": "models:/fer-tree@champion", "number": "models:/fer-tree/1",
           "latest": "models:/fer-tree/latest", "logged model": logged,
           "run": f"runs:/{run.info.run_id}/model"}[form]
    with mlflow.start_run(tags={**other, "fer.data_digest": "this-data"}):
        with pytest.raises(ValueError, match="validation faces"):
            EnsembleClassifier(members=[uri]).fit(
                splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))


def test_bad_members():
    X, y = np.zeros((20, 2304), np.uint8), np.arange(20) % 7
    with pytest.raises(ValueError, match="needs members"):
        EnsembleClassifier(members=[]).fit(X, y, eval_set=(X, y))
    with pytest.raises(ValueError, match="needs a family"):
        EnsembleClassifier(members=[{"seed": 1}]).fit(X, y, eval_set=(X, y))
    with pytest.raises(ValueError, match="combine must be"):
        EnsembleClassifier(members=TWO, combine="max").fit(X, y, eval_set=(X, y))
