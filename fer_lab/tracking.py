"""The one owner of MLflow runs: a parent run per study, a nested run per trial.

No autologging and no second logger: everything a study records goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import yaml
from mlflow.entities import RunStatus

from fer_lab import calibration, evaluation, machine
from fer_lab.data import EMOTIONS

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# The label set a run's model was trained or scored on (fer_lab.labels): fer2013, ferplus.
# Runs recorded before label sets have none: they are fer2013's.
LABELS_TAG = "fer.labels"
# A distilled network's teacher (its model URI): the report shows it beside the plain family.
TEACHER_TAG = "fer.teacher"


def store_exists(uri: str) -> bool:
    """False only for an SQLite store whose file is not there (opening it would create an
    empty one); other stores are taken to exist."""
    if not uri.startswith("sqlite:///"):
        return True
    path = uri.removeprefix("sqlite:///")
    return path == ":memory:" or Path(path).exists()


def configure() -> str:
    """Uses ``$MLFLOW_TRACKING_URI`` if set, else SQLite in the working folder (never ./mlruns)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    return uri


@contextmanager
def top_run(experiment: str, name: str, role: str,
            tags: Mapping[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """Opens a run that is not a trial: under ``mlflow run`` the run it created, inside an
    active run (``fer-lab compare``) a run nested in it, else a new run in ``experiment``.

    Args:
        experiment: the MLflow experiment.
        name: the run name shown in the UI.
        role: the ``fer.role`` tag (``study``, ``report``, ``compare``).
        tags: more tags; the machine's (``fer.cpu``, ``fer.isa``, ...) are always set.
    """
    nested = mlflow.active_run() is not None
    if not nested and not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(experiment)
    with mlflow.start_run(nested=nested) as run:
        mlflow.set_tags({"mlflow.runName": name, "fer.role": role, **machine.current().tags(),
                         **(tags or {})})
        yield run


def study_run(family: str, experiment: str, tags: Mapping[str, str]):
    """The study's parent run, ``<family> · study``."""
    return top_run(experiment, f"{family} · study", "study", {"fer.family": family, **tags})


def report_run(experiment: str):
    """The run that holds a comparison report."""
    return top_run(experiment, "report", "report")


@contextmanager
def trial_run(family: str, number: int, study: str, parent: str | None = None,
              labels: str = "fer2013") -> Iterator[mlflow.ActiveRun]:
    """Opens a trial's run, nested in the active run, or in run ``parent`` (a worker
    process of a study whose run another process holds); its end state follows how the
    trial ended. ``labels`` is the label set's name (``fer.labels``)."""
    tags = {"fer.family": family, "fer.role": "trial", "fer.trial": str(number),
            "fer.study": study, LABELS_TAG: labels, **machine.current().tags()}
    name = f"{family} · trial {number}"
    if parent is None:
        run = mlflow.start_run(nested=True, run_name=name, tags=tags)
    else:
        experiment = mlflow.MlflowClient().get_run(parent).info.experiment_id
        # Under `mlflow run` (a worker of a job array), start_run would take over the run
        # `mlflow run` made for this process instead of opening the trial's.
        own = os.environ.pop("MLFLOW_RUN_ID", None)
        try:
            run = mlflow.start_run(experiment_id=experiment, parent_run_id=parent,
                                   run_name=name, tags=tags)
        finally:
            if own is not None:
                os.environ["MLFLOW_RUN_ID"] = own
    try:
        yield run
    except BaseException as err:
        state = "PRUNED" if type(err).__name__ == "TrialPruned" else "FAILED"
        mlflow.set_tag("fer.trial_state", state)
        if state == "FAILED":
            mlflow.set_tag("fer.error", f"{type(err).__name__}: {err}"[:5000])
        # Ctrl-C; Lightning turns it into SystemExit after a graceful stop
        killed = isinstance(err, (KeyboardInterrupt, SystemExit))
        mlflow.end_run(RunStatus.to_string(
            RunStatus.FINISHED if state == "PRUNED" else RunStatus.KILLED if killed
            else RunStatus.FAILED))
        raise
    mlflow.set_tag("fer.trial_state", "COMPLETE")
    mlflow.end_run()


def log_scores(prefix: str, values: Mapping[str, float], step: int | None = None) -> None:
    """Logs ``{prefix}_{name}`` metrics."""
    mlflow.log_metrics({f"{prefix}_{k}": float(v) for k, v in values.items()}, step=step)


def log_evaluation(split: str, y_true: np.ndarray, raw: np.ndarray, temperature: float = 1.0,
                   X: np.ndarray | None = None,
                   classes: Sequence[str] = EMOTIONS) -> dict[str, float]:
    """Scores one split's probabilities and logs the files of its evaluation.

    ``raw`` are the model's own probabilities, a column per class of ``classes`` (label
    ``i`` is ``classes[i]``); ``temperature`` calibrates them
    (``fer_lab.calibration``). The scores are of the predictions (which calibration keeps);
    ``ece``, ``nll`` and ``brier`` are of the calibrated probabilities, beside
    ``ece_uncalibrated``; ``{accuracy,macro_f1}_ci95_{low,high}`` are bootstrap intervals.
    Files under ``evaluation/``: confusion matrices, classification report, the
    reliability diagram and its bins, and every image's label, prediction and calibrated
    probabilities (``predictions_<split>.csv``, for paired comparisons of models), and
    given the faces ``X``, a gallery of the most confident mistakes.

    Returns:
        The metrics, without the split's prefix.
    """
    proba = calibration.scale(raw, temperature)
    y_pred = proba.argmax(axis=1)
    metrics = {**evaluation.scores(y_true, y_pred, classes=classes),
               **evaluation.interval_metrics(y_true, y_pred, classes),
               **calibration.measures(proba, y_true, raw)}
    if split == "test_all":
        metrics.update(evaluation.per_class(y_true, y_pred, classes))
    log_predictions(split, y_true, y_pred, proba, raw, classes)
    if X is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"confident_mistakes_{split}.png"
            evaluation.write_mistakes(X, y_true, proba, path, split.replace("_", " "),
                                      classes=classes)
            mlflow.log_artifact(str(path), artifact_path="evaluation")
    return metrics


def log_predictions(split: str, y_true: np.ndarray, y_pred: np.ndarray,
                    proba: np.ndarray | None = None, raw: np.ndarray | None = None,
                    classes: Sequence[str] = EMOTIONS) -> None:
    """Confusion matrices (PNG + JSON) and classification report of one split, as artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        title = split.replace("_", " ")
        evaluation.write_confusion(y_true, y_pred, Path(tmp) / f"confusion_{split}", title,
                                   classes)
        evaluation.write_report(y_true, y_pred, Path(tmp) / f"report_{split}", classes)
        if proba is not None:
            calibration.write_reliability(proba, y_true, Path(tmp) / f"reliability_{split}",
                                          title, raw=raw)
            evaluation.write_predictions(y_true, proba, Path(tmp) / f"predictions_{split}.csv",
                                         classes)
        mlflow.log_artifacts(tmp, artifact_path="evaluation")


def log_config(config: Mapping[str, Any]) -> None:
    """The fully resolved config, as ``config.yaml``."""
    mlflow.log_text(yaml.safe_dump(dict(config), sort_keys=False), "config.yaml")


def log_json(data: Any, name: str) -> None:
    mlflow.log_text(json.dumps(data, indent=1, default=str), name)


def log_figure(fig, name: str) -> None:
    """Logs a matplotlib figure, then closes it (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, name)
    plt.close(fig)
