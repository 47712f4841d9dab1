"""The cnn family: its networks, its training module and its estimator, on tiny settings."""

import copy
import warnings

import cloudpickle
import numpy as np
import optuna
import pytest
import torch

from fer_lab import machine, nets, training
from fer_lab.data import load, split
from fer_lab.models import create

# Narrow nets and a few short epochs: these check mechanics, not accuracy.
TINY = dict(width=8, epochs=2, batch_size=16, min_steps=0)


@pytest.fixture(scope="module")
def splits():
    return split(load("synthetic:10"), val_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def fitted(splits):
    return create("cnn", **TINY).fit(splits.train.X, splits.train.y,
                                     eval_set=(splits.val.X, splits.val.y))


@pytest.mark.parametrize("arch", list(nets.ARCHITECTURES))
def test_network_maps_images_to_logits(arch):
    net = nets.build(arch, width=8, dropout=0.1)
    assert net(torch.randn(3, 1, 48, 48)).shape == (3, nets.N_CLASSES)
    eight = nets.build(arch, width=8, n_classes=8)  # a label set's classes, e.g. FER+
    assert eight(torch.randn(3, 1, 48, 48)).shape == (3, 8) and nets.n_outputs(eight) == 8


@pytest.mark.parametrize("arch", list(nets.ARCHITECTURES))
def test_training_steps_change_weights_and_lower_the_loss(arch):
    torch.manual_seed(0)
    net = nets.build(arch, width=8, dropout=0.0)
    module = training.FerModule(net, pixel_mean=128.0, pixel_std=64.0,
                                augment=training.Augment(flip=False, shift=0, rotate=0, scale=0))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batch = (torch.randint(0, 256, (8, 1, 48, 48), dtype=torch.uint8), torch.arange(8) % 7)
    before = [p.detach().clone() for p in net.parameters()]
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log() warns outside a Trainer
        for _ in range(5):
            loss = module.training_step(batch, 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_seed_cnn_is_the_seed_teams_keras_net():
    assert nets.count_parameters(nets.build("seed_cnn")) == 1_732_103
    assert nets.count_parameters(nets.build("seed_cnn", dropout=0.5)) == 1_732_103


def test_unknown_architecture_fails_loudly():
    with pytest.raises(KeyError, match="known: .*vgg"):
        nets.build("alexnet")


def test_flip_only_augmentation_mirrors_whole_images():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 48, 48)
    out = training.Augment(flip=True, shift=0, rotate=0, scale=0, erase=0)(x)
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-4
    mirrored = (out - x.flip(3)).abs().amax(dim=(1, 2, 3)) < 1e-4
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


def test_augmentation_keeps_shape_and_erases_to_the_mean():
    x = torch.ones(64, 1, 48, 48)
    out = training.Augment(flip=True, shift=0.1, rotate=10, scale=0.1, erase=1.0)(x)
    assert out.shape == x.shape
    assert ((out == 0).flatten(1).any(1)).all()  # every image has an erased box


def test_augmentation_resamples_to_a_smaller_side_for_progressive_resizing():
    x = torch.randn(4, 1, 48, 48)
    assert training.Augment()(x, side=32).shape == (4, 1, 32, 32)
    plain = training.Augment(flip=False, shift=0, rotate=0, scale=0, erase=0)
    assert plain(x, side=24).shape == (4, 1, 24, 24)  # resized even with no augmentation
    assert torch.equal(plain(x), x)


def test_train_sides_take_equal_shares_of_progress_and_end_at_full_size():
    module = training.FerModule(nets.build("vgg", width=8), pixel_mean=0.0, pixel_std=1.0,
                                train_sides=(32, 40, 48))
    module._planned_steps = 90
    assert [module.train_side(s) for s in (0, 29, 30, 59, 60, 89, 90)] == \
        [32, 32, 40, 40, 48, 48, 48]


def test_progressive_resizing_trains_and_predicts_at_full_size(splits):
    model = create("cnn", **{**TINY, "train_sides": [32, 48]}).fit(
        splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    assert model.predict_proba(splits.val.X).shape == (len(splits.val), 7)
    # seed_cnn's dense layer takes 48x48 only: it trains at full size throughout
    seed = create("cnn", **{**TINY, "arch": "seed_cnn", "train_sides": [32, 48]}).fit(
        splits.train.X, splits.train.y)
    assert np.isfinite(seed.history_[-1]["train_loss"])


def test_one_cycle_shape():
    assert training.one_cycle(0.0) == pytest.approx(1 / 25)
    assert training.one_cycle(0.25) == pytest.approx(1.0)
    assert training.one_cycle(1.0) == pytest.approx(0.0)
    assert training.cosine(0.0) == 1.0 and training.cosine(1.0) == pytest.approx(0.0)


def test_class_weights():
    y = np.array([0] * 8 + [1] * 2)
    balanced = training.class_weights(y, "balanced", 7)
    assert balanced[0] == pytest.approx(10 / (7 * 8)) and balanced[1] == pytest.approx(10 / 14)
    assert balanced[2] == 0  # absent class
    assert torch.allclose(training.class_weights(y, "sqrt", 7), balanced.sqrt())
    assert training.class_weights(y, "none", 7) is None
    assert len(training.class_weights(y, "balanced", 8)) == 8  # FER+'s eight


def test_report_gets_every_epochs_metrics_and_best_epoch_is_kept(fitted):
    assert len(fitted.history_) == TINY["epochs"]
    assert set(fitted.history_[0]) == {"train_loss", "train_accuracy", "val_loss",
                                       "val_accuracy", "val_macro_f1", "lr"}
    accuracies = [h["val_accuracy"] for h in fitted.history_]
    assert fitted.best_epoch_ == int(np.argmax(accuracies))


def first_bn(net):
    return next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_the_weights_average_follows_training_and_is_what_the_fit_keeps():
    net = nets.build("vgg", width=8, dropout=0.0)
    module = training.FerModule(net, pixel_mean=128.0, pixel_std=64.0, ema=0.9)
    assert module.scored_net() is module.averaged
    first = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        first_bn(net).running_mean.add_(2.0)
        first_bn(net).num_batches_tracked.fill_(5)
    module._update_average(step=1000)  # past the warm-up: the decay itself
    for mean, before, now in zip(module.averaged.parameters(), first, net.parameters()):
        assert torch.allclose(mean, 0.9 * before + 0.1 * now)
    averaged_bn = first_bn(module.averaged)
    assert torch.allclose(averaged_bn.running_mean, torch.full_like(averaged_bn.running_mean, 0.2))
    assert int(averaged_bn.num_batches_tracked) == 5
    module._update_average(step=0)  # the warm-up: the first step keeps a tenth
    assert torch.allclose(next(module.averaged.parameters()),
                          0.1 * (0.9 * first[0] + 0.1 * (first[0] + 1)) + 0.9 * (first[0] + 1))
    # the best epoch's copy is the average's, not the trained weights
    module.epoch_metrics = {"val_accuracy": 0.5}
    best = training.BestEpoch()
    best.on_validation_end(None, module)
    for key, value in module.averaged.state_dict().items():
        assert torch.equal(best.best_state[key], value)
    key, weight = next(iter(net.state_dict().items()))
    assert not torch.equal(best.best_state[key], weight)
    plain = training.FerModule(nets.build("vgg", width=8), pixel_mean=0.0, pixel_std=1.0)
    assert plain.scored_net() is plain.net and plain.averaged is None
    with pytest.raises(ValueError, match="ema"):
        training.FerModule(net, pixel_mean=0.0, pixel_std=1.0, ema=1.0)


def test_a_fit_with_a_weights_average_trains_it_and_keeps_it(splits):
    torch.manual_seed(0)
    net = nets.build("vgg", width=8, dropout=0.0)
    start = copy.deepcopy(net.state_dict())
    module = training.FerModule(net, pixel_mean=128.0, pixel_std=64.0, ema=0.9)
    data = training.ArrayDataModule((splits.train.X, splits.train.y),
                                    (splits.val.X, splits.val.y), 16, False)
    best = training.fit(module, data, epochs=1)  # one epoch: it is the best
    kept, averaged = net.state_dict(), module.averaged.state_dict()
    assert any(not torch.equal(averaged[k], start[k]) for k in start)  # it followed training
    assert all(torch.equal(kept[k], averaged[k]) for k in kept)  # and is what the net holds
    assert set(best.history[0]) >= {"val_accuracy", "val_accuracy_raw"}


def test_trial_pruned_raised_by_report_propagates_out_of_fit(splits):
    seen = []

    def report(metrics):
        seen.append(metrics)
        raise optuna.TrialPruned("pruned at step 0")

    model = create("cnn", **TINY)
    with pytest.raises(optuna.TrialPruned):
        model.fit(splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y),
                  report=report)
    assert len(seen) == 1 and "val_accuracy" in seen[0]


def test_predict_proba_is_a_distribution(fitted, splits):
    proba = fitted.predict_proba(splits.val.X)
    assert proba.dtype == np.float64 and proba.shape == (len(splits.val), 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(fitted.predict(splits.val.X), proba.argmax(axis=1))


def test_tta_modes_keep_shapes_and_change_predictions(fitted, splits):
    proba = {mode: copy.deepcopy(fitted).set_params(tta=mode).predict_proba(splits.val.X)
             for mode in training.TTA_MODES}
    assert {p.shape for p in proba.values()} == {(len(splits.val), 7)}
    # the extra views do count
    assert not np.array_equal(proba["none"], proba["flip"])
    assert not np.array_equal(proba["flip"], proba["crops"])


def test_tta_views_are_mirrors_and_shifts():
    x = torch.arange(2 * 48 * 48, dtype=torch.float32).view(2, 1, 48, 48)
    views = training.tta_views(x, "crops")
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x) and torch.equal(views[5], x.flip(3))
    assert torch.equal(views[1][..., :-2, :], x[..., 2:, :])  # shifted by 2 rows


def test_auto_tta_is_chosen_on_validation(splits):
    model = create("cnn", **TINY, tta="auto").fit(splits.train.X, splits.train.y,
                                                   eval_set=(splits.val.X, splits.val.y))
    scores = {m: model.fit_metrics_[f"val_accuracy_tta_{m}"] for m in training.TTA_MODES}
    assert model.tta_ in training.TTA_MODES and scores[model.tta_] == max(scores.values())
    accuracy = np.mean(model.predict(splits.val.X) == splits.val.y)
    assert accuracy == pytest.approx(scores[model.tta_])
    # none and flip are derived from the crops' views: the same as predicting with them
    for mode in training.TTA_MODES:
        other = copy.deepcopy(model).set_params(tta=mode)
        assert np.mean(other.predict(splits.val.X) == splits.val.y) == pytest.approx(scores[mode])
        # and each mode's probabilities are kept, for that mode's temperature
        np.testing.assert_allclose(model.eval_set_probas_[mode],
                                   other.predict_proba(splits.val.X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.eval_set_proba_, model.predict_proba(splits.val.X),
                               rtol=1e-5, atol=1e-6)


def test_fitted_estimator_survives_cloudpickle(fitted, splits):
    restored = cloudpickle.loads(cloudpickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(splits.val.X),
                                  fitted.predict_proba(splits.val.X))


def test_patience_stops_a_run_that_stops_improving(splits):
    # lr 0 on a net without batch norm: the validation accuracy never changes.
    model = create("cnn", **{**TINY, "arch": "seed_cnn", "epochs": 6, "lr": 0.0, "patience": 1})
    model.fit(splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    assert len(model.history_) == 2 and model.best_epoch_ == 0


def test_max_minutes_ends_training_on_time_after_a_validation(splits):
    model = create("cnn", **{**TINY, "epochs": 50, "max_minutes": 1e-4})
    model.fit(splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    assert len(model.history_) == 1
    assert model.history_[0]["lr"] == pytest.approx(0.0)


def test_holds_out_validation_without_eval_set(splits):
    model = create("cnn", **{**TINY, "epochs": 1}).fit(splits.train.X, splits.train.y)
    assert len(model.history_) == 1


def test_balanced_sampling_excludes_class_weighting(splits):
    model = create("cnn", **TINY, balanced_sampling=True, class_weighting="balanced")
    with pytest.raises(ValueError, match="balanced_sampling"):
        model.fit(splits.train.X, splits.train.y)


def test_a_diverging_fit_fails_loudly_instead_of_training_on_nan(splits):
    model = create("cnn", **{**TINY, "arch": "seed_cnn", "lr": 1e12, "optimizer": "sgd"})
    with pytest.raises(FloatingPointError, match="training loss is"):
        model.fit(splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(nets.ARCHITECTURES))
def test_every_architecture_runs_a_study_tracked_in_mlflow(arch, tracking, tmp_path):
    import dataclasses

    import mlflow

    from fer_lab.config import StudySettings, TuneConfig, load_family
    from fer_lab.tuning import tune

    model = load_family("cnn")
    model = dataclasses.replace(
        model, params={**model.params, **TINY, "arch": arch, "tta": "none"},
        search_space=tuple(p for p in model.search_space if p.name != "arch"),
        study=StudySettings(trials=2, rungs=(1.0,), startup_trials=1, warmup_steps=0,
                            refit_params={"epochs": 1}))
    config = TuneConfig(model=model, data="synthetic:20", experiment=tmp_path.name,
                        storage=f"sqlite:///{tmp_path}/optuna.db", study_name=arch,
                        register=False)
    metrics = tune(config, progress=False)
    study = optuna.load_study(study_name=arch, storage=config.storage)
    runs = mlflow.search_runs(experiment_names=[tmp_path.name], output_format="list")
    trials = {r.data.tags["fer.trial"]: r for r in runs if r.data.tags["fer.role"] == "trial"}
    assert len(study.trials) == 2 and set(trials) == {"0", "1"}
    for trial in study.trials:  # a pruned trial shows as pruned, with its epochs so far
        run = trials[str(trial.number)]
        assert trial.state.name in ("COMPLETE", "PRUNED")  # no architecture fails
        assert run.data.tags["fer.trial_state"] == trial.state.name
        assert run.data.params["arch"] == arch
        # the machine and the settings it resolved are on every trial
        assert run.data.tags["fer.isa"] == machine.isa()
        assert run.data.params["mixed_precision"] in ("fp32", "bf16")  # "auto", resolved
        assert run.data.params["channels_last"] in ("True", "False")
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")
        assert len(history) >= 1 and "train_loss" in run.data.metrics
    study_run, = [r for r in runs if r.data.tags["fer.role"] == "study"]
    assert study_run.data.tags["fer.cpu"] == machine.current().cpu
    assert study_run.data.params["mixed_precision"] in ("fp32", "bf16")
    # test_all is its two parts' predictions put together
    parts = split(load(config.data), config.val_fraction, config.seed)
    assert metrics["test_all_accuracy"] == pytest.approx(
        (metrics["test_private_accuracy"] * len(parts.test_private)
         + metrics["test_public_accuracy"] * len(parts.test_public)) / len(parts.test_all))


def test_pyfunc_tta_param_picks_the_views_per_call(fitted, splits):
    from fer_lab.pyfunc import FerModel

    model = FerModel(fitted)
    for mode in training.TTA_MODES:
        out = model.predict(None, splits.val.X, params={"tta": mode})
        expected = copy.deepcopy(fitted).set_params(tta=mode).predict_proba(splits.val.X)
        np.testing.assert_allclose(out[["angry", "neutral"]].to_numpy(), expected[:, [0, 6]])


def test_evaluate_scores_a_chosen_tta_with_its_temperature(fresh_tracking, fitted, splits,
                                                            capsys):
    import mlflow

    from fer_lab import cli, evaluate, pyfunc

    with mlflow.start_run():
        uri = pyfunc.log_model(fitted, splits.val.X[:2], 1.3,
                               temperatures={"none": 2.0, "flip": 1.3, "crops": 0.9})
    faces = evaluate.Faces(X=splits.test_all.X, y=splits.test_all.y, source="synthetic:10",
                           digest="d", split="test_all")
    for tta, temperature in (("none", 2.0), ("model", 1.3), ("crops", 0.9)):
        m = evaluate.evaluate(uri, faces, tta=tta)
        assert m["calibration_temperature"] == temperature
        views = fitted if tta == "model" else copy.deepcopy(fitted).set_params(tta=tta)
        assert m["test_all_accuracy"] == pytest.approx(
            np.mean(views.predict(faces.X) == faces.y))
    run = mlflow.search_runs(search_all_experiments=True, order_by=["start_time DESC"],
                             max_results=1, output_format="list")[0]
    assert run.data.params["tta"] == "crops"
    assert cli.main(["evaluate", uri, "synthetic:10", "--tta", "none"]) == 0
    assert "(test_all, tta none)" in capsys.readouterr().out


def test_a_teacher_drives_the_distilled_net(fresh_tracking, splits):
    """A teacher that calls every face happy, given the whole loss, makes a student that
    calls every face happy too; with no share of the loss it changes nothing."""
    import mlflow
    from sklearn.dummy import DummyClassifier

    from fer_lab import pyfunc
    from fer_lab.models.cnn import teacher_targets

    happy = DummyClassifier(strategy="constant", constant=3).fit(
        splits.train.X, np.arange(len(splits.train.y)) % 7)
    with mlflow.start_run():
        uri = pyfunc.log_model(happy, splits.val.X[:2])
    targets = teacher_targets(uri, splits.train.X)
    assert targets.dtype == np.float32 and (targets.argmax(1) == 3).all()
    params = dict(TINY, epochs=6, lr=3e-3, tta="none", seed=0)
    taught = create("cnn", **params, teacher=uri, distill=1.0).fit(
        splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    assert (taught.predict(splits.test_all.X) == 3).all()
    unmoved = create("cnn", **params, teacher=uri, distill=0.0).fit(
        splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    plain = create("cnn", **params).fit(splits.train.X, splits.train.y,
                                        eval_set=(splits.val.X, splits.val.y))
    np.testing.assert_allclose(unmoved.predict_proba(splits.val.X),
                               plain.predict_proba(splits.val.X), atol=1e-5)
    with pytest.raises(ValueError, match="distill must be within"):
        create("cnn", **params, teacher=uri, distill=1.5).fit(splits.train.X, splits.train.y)


def fit_args(splits) -> dict:
    return {"X": splits.train.X, "y": splits.train.y, "eval_set": (splits.val.X, splits.val.y)}


class Interrupted(Exception):
    """Stands for the process being killed during an epoch."""


@pytest.fixture
def one_thread():
    """Deterministic CPU kernels: oneDNN's multi-threaded reductions may sum in another
    order when the machine is busy, which moves a tiny net's later epochs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("patience, ema", [(None, 0.0), (1, 0.0), (None, 0.9)])
def test_an_interrupted_fit_resumes_from_its_checkpoint(splits, tmp_path, caplog,
                                                      one_thread, patience, ema):
    """With ``patience``, the kill comes in the epoch before early stopping ends the
    uninterrupted fit: the resumed one must stop there too. With ``ema``, the weights'
    average must carry over too."""
    # A fixed setting: `auto` measures, and under load two fits may choose differently.
    params = {**TINY, "epochs": 6 if patience else 4, "mixed_precision": "fp32",
              "channels_last": False, "patience": patience, "ema": ema}
    data = fit_args(splits)
    whole = create("cnn", **params).fit(**data)
    assert len(whole.history_) >= 2
    done = min(2, len(whole.history_) - 1)  # epochs saved before the kill
    checkpoint = tmp_path / "fit.ckpt"  # in checkpoint_dir

    def stop_after_the_saved_epochs(metrics):
        if len(seen) == done:
            raise Interrupted
        seen.append(metrics)

    seen = []
    with pytest.raises(Interrupted):
        create("cnn", **params, checkpoint_dir=str(tmp_path)).fit(
            **data, report=stop_after_the_saved_epochs)
    assert checkpoint.is_file()  # the epochs done survive the process
    resumed = create("cnn", **params, checkpoint_dir=str(tmp_path)).fit(**data)
    assert f"{done} epoch(s) done" in caplog.text
    assert resumed.fit_metrics_["resumed_epochs"] == done
    assert not checkpoint.exists()  # removed once training ends
    assert resumed.history_[:done] == seen
    # the same training goes on: weights, optimizer, schedule, batch order and augmentation
    # carried over, so every later epoch and the final weights are the uninterrupted fit's
    assert resumed.history_ == whole.history_
    assert ("val_accuracy_raw" in whole.history_[0]) == bool(ema)
    for mine, theirs in zip(resumed.net_.state_dict().values(),
                            whole.net_.state_dict().values()):
        assert torch.equal(mine, theirs)


def test_a_resumed_fit_keeps_what_the_interrupted_one_resolved(splits, tmp_path, monkeypatch):
    """The probe's rate moves with the machine's day: a fit resumed the next morning keeps
    the precision, layout and recipe it started with instead of switching mid-fit."""
    from fer_lab.training import hardware

    params = {**TINY, "epochs": 4, "max_minutes": 10.0, "long_epochs": 4,
              "long_params": {"dropout": 0.3}, "checkpoint_dir": str(tmp_path)}
    monkeypatch.setattr(hardware, "resolve", lambda *a, **k: hardware.Setting("fp32", False))
    monkeypatch.setattr(hardware, "probed_rate", lambda *a: 1e6)  # fast: the long recipe

    seen = []

    def stop_in_the_second_epoch(metrics):  # the first epoch is saved
        if seen:
            raise Interrupted
        seen.append(metrics)

    with pytest.raises(Interrupted):
        create("cnn", **params).fit(**fit_args(splits), report=stop_in_the_second_epoch)
    monkeypatch.setattr(hardware, "resolve", lambda *a, **k: hardware.Setting("fp32", True))
    monkeypatch.setattr(hardware, "probed_rate", lambda *a: 1e-3)  # slow now: default
    resumed = create("cnn", **params).fit(**fit_args(splits))
    assert resumed.fit_metrics_["resumed_epochs"] == 1
    assert resumed.fit_settings_ == {"mixed_precision": "fp32", "channels_last": False,
                                     "recipe": "long"}
    assert resumed.net_.head[2].p == 0.3  # the long recipe's dropout


def test_a_fit_killed_while_choosing_its_tta_is_not_trained_again(splits, tmp_path,
                                                                  monkeypatch):
    from fer_lab.models.cnn import CNNClassifier

    params = {**TINY, "mixed_precision": "fp32", "channels_last": False, "tta": "auto",
              "checkpoint_dir": str(tmp_path)}
    choose = CNNClassifier._choose_tta

    def killed(self, *args):
        raise Interrupted

    monkeypatch.setattr(CNNClassifier, "_choose_tta", killed)
    with pytest.raises(Interrupted):
        create("cnn", **params).fit(**fit_args(splits))
    assert (tmp_path / "fit.ckpt").is_file()  # the trained epochs outlive the kill
    monkeypatch.setattr(CNNClassifier, "_choose_tta", choose)
    again = create("cnn", **params).fit(**fit_args(splits))
    assert again.fit_metrics_["resumed_epochs"] == TINY["epochs"]
    assert len(again.history_) == TINY["epochs"] and again.tta_ in ("none", "flip", "crops")
    assert not (tmp_path / "fit.ckpt").exists()


def test_a_checkpoint_of_other_parameters_is_not_resumed_from(splits, tmp_path, caplog):
    data = fit_args(splits)
    checkpoint = tmp_path / "fit.ckpt"  # in checkpoint_dir
    epochs = []

    def stop_in_the_second_epoch(metrics):
        epochs.append(metrics)
        if len(epochs) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        create("cnn", **TINY, lr=1e-3, checkpoint_dir=str(tmp_path)).fit(
            **data, report=stop_in_the_second_epoch)
    assert checkpoint.is_file()
    other = create("cnn", **TINY, checkpoint_dir=str(tmp_path)).fit(**data)
    assert "another fit's state" in caplog.text
    assert other.fit_metrics_["resumed_epochs"] == 0
    assert len(other.history_) == TINY["epochs"] and not checkpoint.exists()


@pytest.mark.parametrize("max_minutes, rate, recipe", [
    (None, None, "long"),  # its planned epochs reach long_epochs: no rate needed
    (10.0, 1e6, "long"),  # the time cap allows them all at the probe's rate
    (10.0, 1e-3, "default"),  # too slow a machine for them in the minutes
    (10.0, None, "default"),  # an explicit setting: no probe, no rate to plan with
])
def test_a_fit_long_enough_takes_the_long_recipe(splits, monkeypatch, max_minutes, rate,
                                                 recipe):
    from fer_lab.training import hardware

    asked = []
    monkeypatch.setattr(hardware, "probed_rate", lambda *a: asked.append(a) or rate)
    long = {"dropout": 0.45, "erase": 0.0, "train_sides": [48]}
    model = create("cnn", **{**TINY, "dropout": 0.05, "train_sides": [32, 48],
                             "max_minutes": max_minutes, "long_epochs": TINY["epochs"],
                             "long_params": long}).fit(
        splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    assert model.fit_settings_["recipe"] == recipe
    dropouts = {m.p for m in model.net_.modules() if isinstance(m, torch.nn.Dropout)}
    assert dropouts == {0.45 if recipe == "long" else 0.05}
    assert model.get_params()["dropout"] == 0.05  # the parameters stay as given
    assert len(asked) == (max_minutes is not None)



def test_a_long_recipe_names_only_what_it_can_change(splits):
    model = create("cnn", **TINY, long_epochs=1, long_params={"lr": 0.1})
    with pytest.raises(ValueError, match="long_params sets only"):
        model.fit(splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
