"""An Optuna study per family, tracked in MLflow; the same path for every family.

Data is loaded once per study (optuna-examples' callable objective). Each trial fits on
growing training fractions (the config's ``rungs``) and is pruned early when it trails;
the best configuration is then refit on the whole training split and evaluated once on
the test splits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
from sklearn.model_selection import train_test_split

from fer_lab import (
    calibration,
    evaluation,
    explain,
    labels,
    parallel,
    pyfunc,
    registry,
    tracking,
)
from fer_lab import data as fer_data
from fer_lab.config import FamilyConfig, TuneConfig
from fer_lab.models import create, has_views, view_probas
from fer_lab.models.stored import kept, rows_digest

log = logging.getLogger(__name__)
LEAD_WAIT = 120.0  # seconds a worker waits for the study's lead to open the study run
AUTO = "auto"  # a parameter value the fit resolves (fit_settings_), e.g. the CNN's precision
SEARCH_SECONDS_ATTR = "search_seconds"  # an unfinished search's time so far (study attr)
# The study attr naming the study run that refit, evaluated and registered the study's best,
# with the configuration and number of trials it did that for.
RESULT_ATTR = "fer.result"
# The study attr holding the models its trials read from the store (an ensemble's members, a
# student's teacher), pinned to registered versions when the study started.
PINNED_ATTR = "fer.pinned"


class Reporter:
    """Takes a trial's validation metrics step by step: logs them, reports, prunes."""

    def __init__(self, trial: optuna.Trial, objective: str):
        self.trial = trial
        self.objective = objective
        self.step = 0

    def __call__(self, metrics: Mapping[str, float], prune: bool = True) -> None:
        mlflow.log_metrics(dict(metrics), step=self.step)
        self.trial.report(metrics[f"val_{self.objective}"], self.step)
        self.step += 1
        if prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {self.step - 1}")


class Objective:
    """The study's objective; holds the splits so trials never reload data.

    Args:
        config: the resolved configuration.
        splits: the protocol's splits.
        parent_run: the study run to nest trial runs under, for a worker process that
            has no active run of its own; None nests them in the active run.
    """

    def __init__(self, config: TuneConfig, splits: fer_data.Splits,
                 parent_run: str | None = None):
        self.config = config
        self.splits = splits
        self.family = config.model.family
        self.parent_run = parent_run

    def params(self, trial: optuna.Trial) -> dict[str, Any]:
        chosen = dict(self.config.model.params)
        for param in self.config.model.search_space:
            value = param.suggest(trial, chosen)
            if value is not None:
                chosen[param.name] = value
        return chosen

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:  # a failed trial, not a lost one (parallel.lost)
            trial.set_user_attr(parallel.ERROR_ATTR, f"{type(err).__name__}: {err}"[:1000])
            raise

    def _run(self, trial: optuna.Trial) -> float:
        rungs = self.config.model.study.rungs
        trial.set_user_attr(parallel.WORKER_ATTR, parallel.worker_identity())
        with tracking.trial_run(self.family, trial.number, trial.study.study_name,
                                self.parent_run, self.config.label_set):
            params = self.params(trial)
            # "auto" values are resolved by the fit, on this machine: logged once known.
            mlflow.log_params({k: v for k, v in params.items() if v != AUTO})
            settings_logged = False
            report = Reporter(trial, self.config.model.study.objective)
            for i, fraction in enumerate(rungs):
                X, y = subsample(self.splits.train, fraction, self.config.seed)
                model = create(self.family, **params, seed=self.config.seed)
                if getattr(model, "checkpoint_trials", False):  # an ensemble's members
                    model.set_params(checkpoint_dir=str(study_checkpoints(
                        self.config, trial.study.study_name)))
                before = report.step
                try:
                    model.fit(X, y, eval_set=(self.splits.val.X, self.splits.val.y),
                              report=report, class_names=self.splits.classes)
                finally:  # a trial pruned mid-fit shows what it resolved too
                    if not settings_logged and getattr(model, "fit_settings_", None):
                        mlflow.log_params(model.fit_settings_)
                        settings_logged = True
                y_pred = eval_set_proba(model, self.splits.val.X).argmax(1)
                val = {f"val_{k}": v for k, v in evaluation.scores(
                    self.splits.val.y, y_pred, classes=self.splits.classes).items()}
                if report.step == before:  # the family has no epochs: one report per rung
                    report(val, prune=i < len(rungs) - 1)
                else:  # epochs were reported; these are the restored best epoch's scores
                    mlflow.log_metrics(val, step=report.step)
            tracking.log_predictions("val", self.splits.val.y, y_pred,
                                     classes=self.splits.classes)
            return val[f"val_{self.config.model.study.objective}"]


def eval_set_proba(model, X: np.ndarray) -> np.ndarray:
    """The fitted model's probabilities for the ``eval_set`` it was fitted with: reused
    when the fit already made them (a CNN choosing its test-time augmentation), else
    predicted."""
    proba = getattr(model, "eval_set_proba_", None)
    return model.predict_proba(X) if proba is None else proba


def tta_temperatures(model, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """For a model with test-time augmentation, the temperature of each mode a user may
    ask for (``params={"tta": ...}``), fitted on the validation set ``X, y``: one view is
    more confident than the mean of ten, so one temperature does not calibrate both. The
    fit's scores of each mode are reused (a CNN's ``tta="auto"`` made them from one pass
    of the 10 views, an ensemble's out of fold, as its own); else they are predicted, in
    one pass of the views. Empty for other models."""
    if not has_views(model):
        return {}
    known = getattr(model, "eval_set_probas_", None) or view_probas(model, X)
    return {mode: calibration.fit_temperature(known[mode], y) for mode in pyfunc.TTA_MODES}


def subsample(split: fer_data.Split, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, seeded fraction of a split; the same rows for the same arguments."""
    if fraction >= 1.0:
        return split.X, split.y
    idx, _ = train_test_split(np.arange(len(split)), train_size=fraction, random_state=seed,
                              stratify=split.y)
    idx.sort()
    return split.X[idx], split.y[idx]


# Parameters that change what a study's trials are scored on: another value is another
# study (an ensemble's members, a distilled network's teacher).
STUDY_DEFINING = ("members", "teacher")


def study_name(config: TuneConfig, digest: str) -> str:
    """The given study name, else ``<family>-<budget>-<data digest>``, with the label set
    after the budget when it is not FER2013's own (``cnn-default-ferplus-<digest>``), plus
    a digest of the members or teacher where the family has them: re-running the same
    command resumes its study, and another data set, label set, budget, member list or
    teacher never joins it."""
    if config.study_name:
        return config.study_name
    labelled = "" if config.label_set == labels.DEFAULT else f"-{config.label_set}"
    name = f"{config.model.family}-{config.budget}{labelled}-{digest[:16]}"
    defining = {k: config.model.params[k] for k in STUDY_DEFINING
                if config.model.params.get(k)}
    if defining:
        name += "-" + _json_digest(defining, 4)
    return name


def open_study(config: TuneConfig, dataset: fer_data.FerData | None = None,
               worker: int = 0) -> tuple[optuna.Study, fer_data.FerData, fer_data.Splits]:
    """Creates or resumes the persisted study, with the data it runs on.

    Args:
        config: the resolved configuration.
        dataset: already loaded data (with the config's label set); loaded from
            ``config.data`` with ``config.labels`` when None.
        worker: 0 for the lead; other workers seed their sampler apart from it, or they
            would propose the very same parameters at the same time.

    Returns:
        The study, the data set and its protocol splits.

    Raises:
        ValueError: the storage cannot take the workers asked for (before any data is
            read), or the study exists and was run on other data or another protocol.
    """
    storage = parallel.storage(config.storage, config.workers, config.heartbeat,
                               joining=worker != 0)
    dataset = dataset or labels.load(config.data, config.labels)
    if dataset.label_set != config.label_set:
        raise ValueError(f"the data given is labelled {dataset.label_set}, the config asks for "
                         f"{config.label_set}")
    splits = fer_data.split(dataset, config.val_fraction, config.seed)
    digest = dataset.digest
    settings = config.model.study
    name = study_name(config, digest)
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(
            seed=config.seed if worker == 0 else config.seed * 7919 + worker),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials,
                                           n_warmup_steps=settings.warmup_steps),
    )
    identity = {"data_digest": digest, "protocol": config.protocol,
                "objective": settings.objective, "labels": dataset.label_set}
    for key, value in identity.items():
        recorded = study.user_attrs.get(key)
        if recorded is None:
            study.set_user_attr(key, value)
        elif recorded != value:
            raise ValueError(f"study {name!r} in {config.storage} has {key} {recorded!r}, "
                             f"this run {value!r}: its trials don't compare; give another "
                             "--study-name")
    return study, dataset, splits


def tune(config: TuneConfig, dataset: fer_data.FerData | None = None,
         progress: bool = True) -> dict[str, float]:
    """Runs (or resumes) a family's study, refits the best, evaluates it on the tests.

    The process that leads the study owns the study run, runs trials itself beside
    ``config.workers - 1`` worker processes (and any ``join``-ed from elsewhere), then
    refits, evaluates and registers the best once. When another live process already
    leads it (the same command started twice, e.g. by a job array), this one works as
    ``join`` does.

    Args:
        config: the resolved configuration.
        dataset: already loaded data; loaded from ``config.data`` when None.
        progress: show a progress bar of the study's trials.

    Returns:
        The study run's metrics (validation and test scores of the refit best); empty
        when this process joined another's lead. A study that already ran to its end with
        this very configuration is not refit again: its run's metrics are returned (a
        main job re-run after an interruption goes on from the family it stopped in).
    """
    tracking.configure()
    study, dataset, splits = open_study(config, dataset)
    done = result_run(study, config)
    if done is not None:
        log.warning("study %s already ran to its end with this configuration (run %s): "
                    "nothing to do; --trials N adds trials, --study-name starts another "
                    "study", study.study_name, done.info.run_id)
        if os.environ.get("MLFLOW_RUN_ID") and mlflow.active_run() is None:
            mlflow.MlflowClient().set_tag(os.environ["MLFLOW_RUN_ID"], "fer.same_as",
                                          done.info.run_id)  # the `mlflow run` run: empty
        return dict(done.data.metrics)
    if not parallel.claim_lead(study, config.storage, config.heartbeat):
        ran = join(config)
        log.warning("study %s has a live lead elsewhere: this process joined it and ran %d "
                    "trial(s); the lead refits and registers", study.study_name, ran)
        return {}
    settings = config.model.study
    family = config.model.family
    tags = {"fer.study": study.study_name, "fer.data_digest": dataset.digest,
            "fer.objective": settings.objective, "fer.protocol": config.protocol,
            "fer.budget": config.budget, tracking.LABELS_TAG: dataset.label_set}
    if config.model.params.get("teacher"):
        tags[tracking.TEACHER_TAG] = str(config.model.params["teacher"])
    with tracking.study_run(family, config.experiment, tags) as run, \
            parallel.leading(study, config.storage, run, config.heartbeat):
        tracking.log_config(config.to_dict())
        # Prefixed: `mlflow run` has already logged its raw entry-point parameters.
        mlflow.log_params({"study.data": config.data, "study.labels": config.labels,
                           "study.classes": ",".join(dataset.classes),
                           "study.seed": config.seed,
                           "study.trials": settings.trials, "study.timeout": settings.timeout,
                           "study.rungs": list(settings.rungs),
                           "study.objective": settings.objective,
                           "study.workers": config.workers})
        lost = parallel.close_lost_runs(study, run.info.experiment_id, run.info.run_id)
        if lost:
            log.warning("study %s: %d run(s) of lost workers closed as KILLED",
                        study.study_name, len(lost))
        # Workers get ``config`` (its study name is the unpinned one's) and read the pins.
        pinned = pin_models(config, study, lead=True)
        if pinned.model.params.get("teacher"):  # the run's and the registered version's
            tags[tracking.TEACHER_TAG] = str(pinned.model.params["teacher"])
            mlflow.set_tag(tracking.TEACHER_TAG, tags[tracking.TEACHER_TAG])
        objective = Objective(pinned, splits)
        parallel.run_orphans(study, objective)
        # An interrupted search (a killed lead) resumes with the time it had left.
        spent = float(study.user_attrs.get(SEARCH_SECONDS_ATTR) or 0.0)
        started = time.perf_counter()
        deadline = time.monotonic() + max(settings.timeout - spent, 0.0) \
            if settings.timeout else None
        helpers = parallel.spawn_workers(config.workers - 1, join, config, deadline)

        def search_seconds() -> float:
            return spent + time.perf_counter() - started

        with _progress(study, settings.trials, progress) as advance:
            def finished_trial() -> None:
                advance()
                study.set_user_attr(SEARCH_SECONDS_ATTR, search_seconds())

            try:
                while True:
                    parallel.work(study, objective, config.storage, settings.trials, deadline,
                                  first_trials(config.model), finished_trial)
                    # Trials of workers elsewhere (--join) end before the best is picked;
                    # those lost meanwhile are run again while there is time.
                    parallel.wait_for_running(study)
                    if parallel.counted(study) >= settings.trials or \
                            (deadline is not None and time.monotonic() >= deadline):
                        break
            finally:
                for helper in helpers:
                    helper.join()
                    if helper.exitcode:
                        log.warning("study %s: worker process %s exited with code %s",
                                    study.study_name, helper.name, helper.exitcode)
        # Runs of workers lost during the search (their trials failed above) end too.
        parallel.close_lost_runs(study, run.info.experiment_id, run.info.run_id)
        searched = search_seconds()
        # Kept until the model is registered: a lead killed (or failing) during the refit,
        # its evaluation or the registration resumes the refit from its checkpoints and
        # still reports the search's seconds.
        study.set_user_attr(SEARCH_SECONDS_ATTR, searched)
        counts = _trial_counts(study)
        if not counts["trials_complete"]:
            raise RuntimeError(
                f"study {study.study_name}: no trial completed ({counts['trials_failed']} "
                f"failed, {counts['trials_pruned']} pruned); a failed trial's run holds its "
                "error (tag fer.error)")
        best = study.best_trial
        params = {**pinned.model.params, **best.params, **settings.refit_params}
        checkpoints = study_checkpoints(config, study.study_name)
        metrics, model_uri = refit_and_evaluate(family, params, splits, config.seed,
                                                dataset.label_set, checkpoints)
        metrics.update(search_seconds=searched, best_trial=best.number, **counts)
        mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
        mlflow.log_metrics(metrics)
        log_study_plots(study)
        mlflow.set_tag("fer.run_id", run.info.run_id)
        if config.register:
            decision = registry.register(model_uri, family, metrics,
                                         {**tags, "fer.run_id": run.info.run_id})
            mlflow.set_tags({"fer.registered_model": f"{decision.name}/{decision.version}",
                             "fer.champion_decision": decision.reason})
            log.warning("registry: %s", decision.reason)
        shutil.rmtree(checkpoints, ignore_errors=True)  # the model is logged: nothing to resume
        study.set_user_attr(SEARCH_SECONDS_ATTR, None)  # done: a re-run searches afresh
        study.set_user_attr(RESULT_ATTR, {"run": run.info.run_id, "config": _digest(config),
                                          "trials": parallel.counted(study)})
    return metrics


def pin_models(config: TuneConfig, study: optuna.Study, lead: bool = False,
               wait: float = LEAD_WAIT) -> TuneConfig:
    """The config with the models its trials read from the store, ``members`` (``champions``
    expanded) and ``teacher``, pinned to the registered versions they named when the study
    first started (``models:/fer-cnn@champion`` -> ``models:/fer-cnn/4``): a champion
    promoted during the study, or before it resumes, does not change its later trials and
    refit. The pins are the study's (attr ``fer.pinned``): its lead records them, inside its
    study run (``champions`` keeps the champions trained on the run's data and carve); a
    worker waits up to ``wait`` seconds for them.

    Raises:
        LookupError: a worker found no pins in time.
    """
    from fer_lab import registry
    from fer_lab.models import ensemble

    params = config.model.params
    wanted = {k: params[k] for k in STUDY_DEFINING if params.get(k)}
    if not wanted:
        return config
    # The lead pins right after opening its study run; workers wait for that.
    pins = study.user_attrs.get(PINNED_ATTR) if lead \
        else parallel.awaited_attr(study, PINNED_ATTR, wait)
    if pins is None and not lead:
        raise LookupError(f"study {study.study_name!r}: its lead has not pinned the models "
                          f"its trials use (waited {wait:.0f} s)")
    if pins is None:
        def pin(spec):
            version = registry.model_version(spec) if isinstance(spec, str) else None
            return spec if version is None else f"models:/{version.name}/{version.version}"

        pins = {}
        if "members" in wanted:
            pins["members"] = [pin(spec) for spec in ensemble.expand(wanted["members"])]
        if "teacher" in wanted:
            pins["teacher"] = pin(wanted["teacher"])
        study.set_user_attr(PINNED_ATTR, pins)
        named = [*pins.get("members", []), *([pins["teacher"]] if "teacher" in pins else [])]
        log.warning("study %s: its trials use %s", study.study_name,
                    ", ".join(ensemble.member_name(spec) for spec in named))
    model = dataclasses.replace(config.model, params={**params, **pins})
    return dataclasses.replace(config, model=model)


def _json_digest(value: Any, size: int) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def _digest(config: TuneConfig) -> str:
    return _json_digest(config.to_dict(), 8)


def result_run_id(config: TuneConfig, digest: str) -> str | None:
    """The study run that refit and registered the best of ``config``'s study on the data
    of ``digest`` (``tune``'s, this one or an earlier one's); None before it has."""
    study = optuna.load_study(study_name=study_name(config, digest),
                              storage=parallel.storage(config.storage))
    return (study.user_attrs.get(RESULT_ATTR) or {}).get("run")


def result_run(study: optuna.Study, config: TuneConfig):
    """The finished study run that refit and registered ``study``'s best with ``config``
    and the trials the study holds now; None when there is none (another configuration,
    trials added since, or the run did not finish)."""
    from mlflow.exceptions import MlflowException

    done = study.user_attrs.get(RESULT_ATTR)
    if not done or done.get("config") != _digest(config) or \
            done.get("trials") != parallel.counted(study):
        return None
    try:
        run = mlflow.MlflowClient().get_run(done["run"])
    except MlflowException:  # deleted, or another tracking store
        return None
    return run if run.info.status == "FINISHED" else None


def study_checkpoints(config: TuneConfig, study: str) -> Path:
    """The folder where a study's long fits keep their state while they run (families
    with a ``checkpoint_dir`` parameter: the CNN's refit, an ensemble's trained members),
    in fer-lab's cache, per study and storage: re-running an interrupted study's command
    resumes them. ``tune`` removes it when the study ends."""
    where = hashlib.blake2b(config.storage.encode(), digest_size=4).hexdigest()
    return fer_data.default_cache_dir() / "checkpoints" / f"{study}-{where}"


def first_trials(model: FamilyConfig) -> list[dict[str, Any]]:
    """The parameters of a study's first trials: the config's defaults (a known-good
    baseline), then the study's ``first_trials`` (e.g. each of the ensemble's votes, which a
    sampler could otherwise miss in a few trials); sampling starts after them."""
    names = {p.name for p in model.search_space}
    defaults = {k: v for k, v in model.params.items() if k in names}
    return [defaults, *(dict(t) for t in model.study.first_trials)]


def join(config: TuneConfig, deadline: float | None = None, worker: int | None = None) -> int:
    """A worker for a study that a lead (``tune``) runs: trials only, nested under the
    lead's study run; no refit, no registration. Returns the number of trials it ran.

    Args:
        config: the same configuration as the lead's.
        deadline: ``time.monotonic()`` after which no trial starts; default the config's
            timeout from now.
        worker: this worker's number (1, 2, ...); default one drawn from the process id.

    Raises:
        LookupError: no lead opened the study's run within ``LEAD_WAIT`` seconds.
    """
    tracking.configure()
    study, _, splits = open_study(config, worker=worker or 1 + os.getpid())
    if parallel.counted(study) >= config.model.study.trials:
        return 0  # the study already has its trials: nothing to join
    parent = parallel.lead_run(study, LEAD_WAIT)
    if parent is None:
        raise LookupError(f"study {study.study_name!r} has no lead: start `fer-lab tune` "
                          f"(without --join) too; waited {LEAD_WAIT:.0f} s for one")
    timeout = config.model.study.timeout
    if deadline is None and timeout:
        deadline = time.monotonic() + timeout
    ran = []
    objective = Objective(pin_models(config, study), splits, parent_run=parent)
    parallel.work(study, objective, config.storage, config.model.study.trials, deadline,
                  first_trials(config.model), on_trial=lambda: ran.append(1))
    return len(ran)


@contextlib.contextmanager
def _progress(study: optuna.Study, total: int, show: bool):
    """A progress bar of the study's finished trials, whoever ran them (those lost with
    their worker are run again: not counted)."""
    from tqdm.auto import tqdm

    def finished() -> int:
        return sum(t.state.is_finished() and not parallel.lost(t)
                   for t in study.get_trials(deepcopy=False))

    with tqdm(total=total, initial=finished(), disable=not show, desc=study.study_name,
              unit="trial") as bar:
        yield lambda: bar.update(max(finished() - bar.n, 0))


def refit_and_evaluate(family: str, params: dict[str, Any], splits: fer_data.Splits,
                       seed: int, label_set: str = labels.DEFAULT,
                       checkpoint_dir: Path | None = None) -> tuple[dict[str, float], str]:
    """Fits ``params`` on the whole training split, scores val and every test split, logs
    their files and the model (which records ``label_set``, the name of the splits'
    labels) into the active run.

    Args:
        checkpoint_dir: for families with a ``checkpoint_dir`` parameter: where the fit
            keeps its state while it runs, and resumes from after an interruption.

    Returns:
        The scores and timings (``fit_seconds`` counts the training time of the fits it
        resumed), and the logged model's URI. With ``checkpoint_dir``, the fitted model is
        kept there too: a re-run after an interruption while evaluating does not fit again.
    """
    model = create(family, **params, seed=seed)
    if checkpoint_dir is not None and "checkpoint_dir" in model.get_params():
        model.set_params(checkpoint_dir=str(checkpoint_dir))

    def fit() -> tuple[Any, float]:
        started = time.perf_counter()
        model.fit(splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y),
                  class_names=splits.classes)
        resumed = getattr(model, "fit_metrics_", {}).get("resumed_seconds", 0.0)
        return model, time.perf_counter() - started + resumed

    if checkpoint_dir is None:
        model, seconds = fit()
    else:  # kept until the study ends: a run killed while evaluating does not refit
        what = f"{family} {sorted(params.items())} {seed} {rows_digest(splits.train.X)}"
        name = hashlib.blake2b(what.encode(), digest_size=8).hexdigest()
        model, seconds = kept(Path(checkpoint_dir) / f"refit-{name}.pkl", fit, "the refit")
    metrics = {"fit_seconds": seconds, **getattr(model, "fit_metrics_", {})}
    mlflow.log_params(getattr(model, "fit_settings_", {}))
    if hasattr(model, "write_artifacts"):  # families that train in epochs: curves, weights
        with tempfile.TemporaryDirectory() as tmp:
            series = model.write_artifacts(Path(tmp))
            mlflow.log_artifacts(tmp, artifact_path="training")
        for step in range(len(next(iter(series.values()), []))):
            mlflow.log_metrics({f"refit_{k}": v[step] for k, v in series.items()}, step=step)
    predictions = predict_splits(model, splits)
    y_val, raw_val, _ = predictions["val"]
    temperature = calibration.fit_temperature(raw_val, y_val)
    metrics["calibration_temperature"] = temperature
    temperatures = tta_temperatures(model, splits.val.X, y_val)
    metrics.update({f"calibration_temperature_tta_{m}": t for m, t in temperatures.items()})
    faces = {"test_all": np.concatenate([p.X for p in splits.test_parts().values()])} \
        if splits.test_parts() else {}  # in predict_splits' order
    for name, (y_true, raw, seconds) in predictions.items():
        metrics[f"{name}_predict_seconds"] = seconds
        metrics.update({f"{name}_{k}": v for k, v in tracking.log_evaluation(
            name, y_true, raw, temperature, X=faces.get(name), classes=splits.classes).items()})
    if "test_all" in faces:
        y_true, raw, _ = predictions["test_all"]
        with tempfile.TemporaryDirectory() as tmp:
            explain.write_study_explanations(model, faces["test_all"], y_true, raw, Path(tmp),
                                             classes=splits.classes)
            mlflow.log_artifacts(tmp, artifact_path="explanations")
    return metrics, pyfunc.log_model(model, splits.val.X[:2], temperature, label_set,
                                     temperatures)


def predict_splits(model, splits: fer_data.Splits
                   ) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Labels, probabilities (the model's own, uncalibrated) and predict seconds of val and
    every test split, each image predicted once: val comes from the fit when it made them,
    and test_all is the concatenation of its disjoint parts (its scores do not depend on
    the rows' order)."""
    started = time.perf_counter()
    out = {"val": (splits.val.y, eval_set_proba(model, splits.val.X),
                   time.perf_counter() - started)}
    for name, part in splits.test_parts().items():
        started = time.perf_counter()
        out[name] = (part.y, model.predict_proba(part.X), time.perf_counter() - started)
    parts = [out[name] for name in splits.test_parts()]
    if parts:
        y_true, proba, seconds = zip(*parts)
        out["test_all"] = (np.concatenate(y_true), np.concatenate(proba), sum(seconds))
    return {name: out[name] for name in ("val", *splits.tests()) if name in out}


def _trial_counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.trials]
    S = optuna.trial.TrialState
    return {"trials_complete": states.count(S.COMPLETE), "trials_pruned": states.count(S.PRUNED),
            "trials_failed": states.count(S.FAIL)}


def log_study_plots(study: optuna.Study) -> None:
    """Optuna's optimisation history and parameter importances, as PNGs."""
    from optuna.visualization import matplotlib as ovm

    plots: dict[str, Callable] = {"optuna/optimization_history.png": ovm.plot_optimization_history,
                                  "optuna/param_importances.png": ovm.plot_param_importances}
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as err:  # e.g. importances need 2+ complete trials
                log.info("skipping %s: %s", name, err)
                continue
        tracking.log_figure(ax.figure, name)
        ax.figure.clf()
