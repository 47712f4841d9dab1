"""``fer-lab evaluate``: a model's scores on any labelled faces, tracked as an MLflow run.

The data is anything ``--data`` takes (a FER2013 CSV and its splits, a train/test image
folder, an archive of either) or a labelled collection ``<emotion>/*`` of face crops
(CK+, a photo collection); with ``detect_faces`` the images are full photos and the
largest face in each is classified. The run (``fer.role=evaluation``) holds the same
metrics and files as a study's test evaluation: scores with bootstrap intervals,
calibration before and after the model's temperature, confusion matrices, classification
report, reliability diagram, every face's prediction.

A collection may hold a subset of the classes (CK+ has no neutral): the scores are then
given twice, over all the model's classes (a face called neutral is wrong) and over the
classes present (``*_present``: the prediction is the most probable of those classes, the
macro scores average over them).

Scores are in the model's classes (``fer_lab.pyfunc.classes_of``): faces of another label
set count as the model's class of the same name (FER2013's seven are all among FER+'s
eight); faces of a class the model lacks (CK+'s contempt, for a FER2013 model) are left out
and counted (``faces_left_out``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fer_lab import data as fer_data
from fer_lab import labels as label_sets
from fer_lab.data import EMOTIONS

ROLE = "evaluation"
DEFAULT_SPLIT = "test_all"


@dataclass(frozen=True)
class Faces:
    """Labelled faces to evaluate on: flat pixels ``X``, labels ``y`` (label ``i`` is
    ``classes[i]``, of label set ``label_set``), and where from."""

    X: np.ndarray
    y: np.ndarray
    source: str
    digest: str
    split: str
    skipped: tuple[str, ...] = ()  # photos in which no face was found
    classes: tuple[str, ...] = EMOTIONS
    label_set: str = label_sets.DEFAULT

    def among(self, classes: tuple[str, ...]) -> tuple[Faces, dict[str, int]]:
        """These faces labelled with ``classes``' indices, less those of a class not among
        them (CK+'s contempt for a FER2013 model), and how many of each class were left
        out."""
        names = np.array(self.classes)[self.y]
        keep = np.isin(names, classes)
        left_out = dict(zip(*np.unique(names[~keep], return_counts=True)))
        y = label_sets.translate(self.y[keep], self.classes, classes)
        return (replace(self, X=self.X[keep], y=y, classes=tuple(classes)),
                {str(name): int(n) for name, n in left_out.items()})


def splits_of(dataset: fer_data.FerData, val_fraction: float = 0.1,
              seed: int = 0) -> dict[str, fer_data.Split]:
    """Every split ``--split`` can name: ``all``, the tests, and where Training rows allow
    the studies' carve, ``train`` and ``val`` as the studies cut them."""
    X = dataset.images.reshape(len(dataset.labels), -1)

    def rows(keep: np.ndarray) -> fer_data.Split:
        return fer_data.Split(X[keep], dataset.labels[keep])

    usage = {name: dataset.usage == fer_data.USAGES.index(name) for name in fer_data.USAGES}
    named = {"all": rows(np.ones(len(X), bool)),
             "test_private": rows(usage["PrivateTest"]), "test_public": rows(usage["PublicTest"]),
             "test_all": rows(~usage["Training"])}
    try:
        carved = fer_data.split(dataset, val_fraction, seed)
        named.update(train=carved.train, val=carved.val)
    except fer_data.DataError:  # no (or too few) Training rows: a test-only collection
        pass
    return {name: part for name, part in named.items() if len(part)}


def load_faces(source: str, split: str | None = None, detect_faces: bool = False,
               labels: str = label_sets.DEFAULT, strict: bool = True) -> Faces:
    """The labelled faces of ``source``: its ``split`` (default ``test_all`` where it has
    test rows, else ``all``) with the label set ``labels`` (``fer_lab.labels.load``: an
    image folder has its folders' labels, and unless ``strict`` whatever ``labels`` says),
    or with ``detect_faces`` the largest face of every photo under ``<emotion>/`` folders
    (``data.folder_class``: FER2013's emotions, and FER+'s ``contempt``).

    Raises:
        DataError: the source cannot be read, or has no such split.
    """
    if detect_faces:
        if split not in (None, "all"):
            raise fer_data.DataError("--split applies to data sets with splits, not to "
                                     "photos with --detect-faces")
        return _detected(Path(source))
    dataset = label_sets.load(source, labels, strict=strict)
    available = splits_of(dataset)
    name = split or (DEFAULT_SPLIT if DEFAULT_SPLIT in available else "all")
    if name not in available:
        raise fer_data.DataError(f"{source}: no {name!r} split; it has {sorted(available)}")
    part = available[name]
    return Faces(part.X, part.y, dataset.source, dataset.digest, name,
                 classes=dataset.classes, label_set=dataset.label_set)


def _detected(folder: Path) -> Faces:
    """The largest detected face of every image under ``folder/<emotion>/``."""
    import hashlib

    from fer_lab import predict

    if not folder.is_dir():
        raise fer_data.DataError(f"{folder}: --detect-faces takes a folder of <emotion>/ "
                                 f"folders of photos")
    X, names, skipped, digest = [], [], [], hashlib.sha256()
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = fer_data.folder_class(class_dir.name)
        for path in predict.expand([class_dir]):
            digest.update(path.read_bytes())
            found = next(predict.faces([path], detect=True), None)  # the largest face
            if found is None:
                skipped.append(str(path))
                continue
            X.append(found.pixels)
            names.append(name)
    if not X:
        raise fer_data.DataError(f"{folder}: no face found in any photo of its emotion folders")
    label_set = label_sets.smallest_set(names)
    y = np.array([label_set.classes.index(name) for name in names], dtype=np.int64)
    return Faces(np.stack(X), y, str(folder), digest.hexdigest()[:16], "all", tuple(skipped),
                 classes=label_set.classes, label_set=label_set.name)


def present_scores(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over the classes present in ``y_true`` only: the prediction is
    the most probable present class."""
    from fer_lab import evaluation

    present = np.unique(y_true)
    y_pred = present[proba[:, present].argmax(axis=1)]
    scores = evaluation.scores(y_true, y_pred, labels=list(present))
    return {"accuracy_present": scores["accuracy"], "macro_f1_present": scores["macro_f1"]}


def evaluate(model_uri: str, faces: Faces, experiment: str = "fer-lab",
             model=None, tta: str = "model") -> dict[str, float]:
    """Scores the model on ``faces`` and records it all as a run of ``experiment``.

    Args:
        model_uri: the model's URI.
        faces: the faces; their labels become the model's classes of the same names.
        experiment: the MLflow experiment of the run.
        model: the model, already loaded from ``model_uri``; loaded when None.
        tta: a network's test-time augmentation (``none``, ``flip``, ``crops``; ``model``:
            its own choice), calibrated by that mode's temperature.

    Returns:
        The metrics logged, prefixed with the split's name (``test_all_accuracy``, ...);
        ``faces`` counts the faces scored, ``faces_left_out`` those of classes the model
        does not have (their classes are the run's param ``classes_left_out``).

    Raises:
        DataError: no face is of a class the model scores.
    """
    import mlflow

    from fer_lab import pyfunc, registry, tracking

    if model is None:
        model = registry.load_model(model_uri)
    classes = pyfunc.classes_of(model)
    faces, left_out = faces.among(classes)
    if not len(faces.y):
        raise fer_data.DataError(f"{faces.source}: none of its faces is of a class the model "
                                 f"has ({', '.join(classes)}); they are {', '.join(left_out)}")
    y = faces.y
    temperature = model.unwrap_python_model().temperature_for(tta)
    raw = model.predict(faces.X, params={"calibrated": False, "tta": tta}
                        )[list(classes)].to_numpy()
    tags = {"fer.model_uri": model_uri, "fer.data_digest": faces.digest,
            "fer.data_source": faces.source, "fer.split": faces.split,
            tracking.LABELS_TAG: faces.label_set,
            "fer.model_labels": pyfunc.label_set_of(model), **model_tags(model_uri)}
    name = f"evaluate · {tags.get('fer.model', model_uri)} · {Path(faces.source).name}"
    with tracking.top_run(experiment, name, ROLE, tags):
        metrics = tracking.log_evaluation(faces.split, y, raw, temperature, X=faces.X,
                                          classes=classes)
        metrics.update(present_scores(y, raw))
        metrics = {f"{faces.split}_{k}": v for k, v in metrics.items()}
        metrics.update(faces=len(faces.y), faces_skipped=len(faces.skipped),
                       faces_left_out=sum(left_out.values()),
                       calibration_temperature=temperature)
        mlflow.log_metrics(metrics)
        mlflow.log_params({"tta": tta,
                           "classes_present": ",".join(classes[i] for i in np.unique(y)),
                           "classes_left_out": ",".join(f"{name}:{n}"
                                                        for name, n in left_out.items())})
        if faces.skipped:
            mlflow.log_text("\n".join(faces.skipped) + "\n", "evaluation/no_face_found.txt")
    return metrics


def model_tags(model_uri: str) -> dict[str, str]:
    """``fer.model_run_id`` (the run that logged the model: a study's, which the report
    joins on), and for a registered model's URI (``models:/name/3``, ``models:/name@alias``)
    ``fer.model`` (``name/version``) and ``fer.family``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from fer_lab import registry

    if model_uri.startswith("runs:/"):
        return {"fer.model_run_id": registry.model_run_id(model_uri)}

    client = MlflowClient()
    try:
        version = registry.model_version(model_uri, client)
        if version is None:
            return {}
        family = client.get_run(version.run_id).data.tags.get("fer.family", "") \
            if version.run_id else ""
    except MlflowException:  # e.g. models:/name/latest: the URI itself says enough
        return {}
    return {"fer.model": f"{version.name}/{version.version}", "fer.family": family,
            "fer.model_run_id": version.run_id or ""}
