"""Label sets as data (``fer_lab.labels``): FER+'s majority rule, loading its votes beside the
pixels, 8-class models end to end, and a champion gate that keeps label sets apart.

Everything runs on tiny generated files; the real-data test reads the shared FER+ votes and
FER2013 CSV, and is skipped when they are absent.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import REAL_CSV
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from fer_lab import cli, labels, pyfunc, registry
from fer_lab.config import TuneConfig, load_family
from fer_lab.data import EMOTIONS, USAGES, DataError, load, split
from fer_lab.labels import DROPPED, FER2013, FERPLUS, majority
from fer_lab.models import create

REAL_VOTES = REAL_CSV.parent / labels.VOTES_FILE
FERPLUS_HEADER = "Usage,Image name," + ",".join(labels.VOTE_COLUMNS)


def votes(**counts: int) -> list[int]:
    """A vote row from counts by column name (``happiness=8, NF=2``); the rest 0."""
    return [counts.get(name, 0) for name in labels.VOTE_COLUMNS]


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("row, expected", [
    # a clear majority is kept, as its FER+ class
    (votes(happiness=10), FERPLUS.classes.index("happy")),
    (votes(neutral=2, sadness=8), FERPLUS.classes.index("sad")),
    # contempt is a class of its own: label 7
    (votes(anger=2, contempt=6, unknown=1, NF=1), 7),
    # single votes are dropped as outliers: 4 of the 4 votes left is a majority
    (votes(neutral=4, happiness=1, surprise=1, sadness=1, anger=1, disgust=1, fear=1), 0),
    # ... but votes of 2 stay: 4 of the 8 votes left is no majority
    (votes(fear=4, surprise=2, sadness=2, anger=1, disgust=1), None),
    # a tie, or exactly half, is no majority: dropped
    (votes(neutral=4, sadness=4, anger=2), None),
    (votes(neutral=5, happiness=5), None),
    # unknown and NF votes count in the total: 6 of 12 is no majority
    (votes(neutral=6, unknown=4, NF=2), None),
    # an unknown or not-a-face majority is dropped
    (votes(neutral=2, unknown=8), None),
    (votes(NF=10), None),
    (votes(happiness=3, NF=7), None),
    # nothing left after dropping single votes: unknown, dropped
    ([1] * 10, None),
])
def test_majority_rule_on_hand_made_votes(row, expected):
    assert majority(np.array([row]))[0] == (DROPPED if expected is None else expected)


def microsoft_majority(row: list[int]) -> int:
    """Microsoft's FERPlus code, transcribed: ``_process_data(mode='majority')`` then
    ``load_folders``' test ``idx < emotion_count`` (8); -1 for a dropped image."""
    raw = [float(v) for v in row]
    size = len(raw)
    unknown = [0.0] * size
    unknown[-2] = 1.0
    for i in range(size):
        if raw[i] < 1.0 + sys.float_info.epsilon:
            raw[i] = 0.0
    total = sum(raw)
    emotion = [0.0] * size
    peak = max(raw)
    if peak > 0.5 * total:
        emotion[int(np.argmax(raw))] = peak
    else:
        emotion = unknown
    idx = int(np.argmax(emotion))
    return idx if idx < 8 else -1


@given(st.lists(st.lists(st.integers(0, 10), min_size=10, max_size=10), min_size=1,
                max_size=30))
@settings(max_examples=200, deadline=None)
def test_majority_rule_is_microsofts(rows):
    np.testing.assert_array_equal(majority(np.array(rows)),
                                  [microsoft_majority(r) for r in rows])


def test_labels_translate_by_name():
    y = np.array([0, 3, 6])  # angry, happy, neutral in FER2013's order
    np.testing.assert_array_equal(labels.translate(y, FER2013.classes, FERPLUS.classes),
                                  [4, 1, 0])
    with pytest.raises(DataError, match="faces labelled contempt: not among"):
        labels.translate(np.array([7]), FERPLUS.classes, FER2013.classes)


def test_label_spec_parsing():
    assert labels.parse("fer2013") == labels.LabelSpec("fer2013")
    assert labels.parse("ferplus") == labels.LabelSpec("ferplus")
    assert labels.parse("ferplus:/data/fer2013new.csv").votes == Path("/data/fer2013new.csv")
    with pytest.raises(ValueError, match="unknown label set 'fer2014'; known: fer2013, ferplus"):
        labels.parse("fer2014")
    with pytest.raises(ValueError, match="only ferplus reads a file"):
        labels.parse("fer2013:/x.csv")
    with pytest.raises(ValueError, match="give the votes file"):
        labels.parse("ferplus:")


# --------------------------------------------------------------------------- loading

# A tiny FER2013: per usage, rows of each FER+ class (as many as the usage asks), then rows
# FER+ drops (a tie, an unknown majority, not a face). Kaggle's order: Training first.
PER_CLASS = {"Training": 12, "PublicTest": 3, "PrivateTest": 3}
DROPS = [votes(neutral=4, sadness=4, anger=2), votes(neutral=2, unknown=8), votes(NF=10)]


def ferplus_rows() -> tuple[list[str], list[int], list[list[int]]]:
    """Usage, FER+ label (``DROPPED`` for a dropped row) and votes of every row."""
    usages, wanted, vote_rows = [], [], []
    for usage, n in PER_CLASS.items():
        for k in range(len(FERPLUS.classes)):
            for i in range(n):
                row = [0] * len(labels.VOTE_COLUMNS)
                row[k] = 8 - i % 3  # 8, 7 or 6 votes: a majority
                row[(k + 1 + i) % len(labels.VOTE_COLUMNS)] += 2  # and a minority vote
                usages.append(usage)
                wanted.append(k)
                vote_rows.append(row)
        for row in DROPS:
            usages.append(usage)
            wanted.append(DROPPED)
            vote_rows.append(row)
    return usages, wanted, vote_rows


def write_ferplus(folder: Path, votes_name: str = labels.VOTES_FILE, seed: int = 0):
    """A fer2013-layout ``fer2013.csv`` (FER2013 labels: row number mod 7) and a matching
    FER+ votes file in ``folder``; returns the CSV, the images and the wanted FER+ labels."""
    usages, wanted, vote_rows = ferplus_rows()
    images = np.random.default_rng(seed).integers(0, 256, (len(usages), 48 * 48), np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n" + "".join(
        f"{i % 7},{' '.join(map(str, img))},{usage}\n"
        for i, (img, usage) in enumerate(zip(images, usages))))
    names = [f"fer{i:07d}.png" if w != DROPPED else "" for i, w in enumerate(wanted)]
    (folder / votes_name).write_text(FERPLUS_HEADER + "\n" + "".join(
        f"{usage},{name},{','.join(map(str, row))}\n"
        for usage, name, row in zip(usages, names, vote_rows)))
    return csv, images, np.array(wanted)


@pytest.fixture
def ferplus_csv(tmp_path):
    return write_ferplus(tmp_path / "data")


def test_ferplus_loads_the_votes_beside_the_pixels(ferplus_csv, tmp_path):
    csv, images, wanted = ferplus_csv
    own = load(csv, tmp_path / "cache")
    data = labels.load(csv, "ferplus", tmp_path / "cache")
    keep = wanted != DROPPED
    np.testing.assert_array_equal(data.images.reshape(len(data.images), -1), images[keep])
    np.testing.assert_array_equal(data.labels, wanted[keep])
    np.testing.assert_array_equal(data.usage, own.usage[keep])
    assert data.classes == FERPLUS.classes and data.label_set == "ferplus"
    assert (own.classes, own.label_set) == (EMOTIONS, "fer2013")
    assert data.digest != own.digest  # never the same study, cache entry or champion
    counts = data.counts()
    assert counts == {u: [n] * 8 for u, n in PER_CLASS.items()}
    # the same splits as FER2013's: Usage kept, a stratified seeded carve of Training
    parts = split(data, val_fraction=0.2, seed=0)
    assert parts.classes == FERPLUS.classes
    assert len(parts.train) + len(parts.val) == 8 * PER_CLASS["Training"]
    assert np.bincount(parts.val.y, minlength=8).min() >= 2
    assert len(parts.test_public) == len(parts.test_private) == 8 * 3
    assert set(parts.test_private.y) == set(range(8))


def test_a_votes_file_named_anywhere(tmp_path):
    csv, _, wanted = write_ferplus(tmp_path / "data", votes_name="votes.csv")
    moved = tmp_path / "elsewhere" / "my-votes.csv"
    moved.parent.mkdir()
    (tmp_path / "data" / "votes.csv").rename(moved)
    data = labels.load(csv, f"ferplus:{moved}", tmp_path / "cache")
    np.testing.assert_array_equal(data.labels, wanted[wanted != DROPPED])


def test_missing_votes_is_one_line_naming_where_it_looked(tmp_path, capsys):
    csv, _, _ = write_ferplus(tmp_path / "data", votes_name="other.csv")
    assert cli.main(["data", "check", str(csv), "--labels", "ferplus"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    looked = (tmp_path / "data").resolve() / "fer2013new.csv"
    assert "FER+ votes not found" in err and f"looked for {looked}" in err
    assert cli.main(["data", "check", str(csv), "--labels", f"ferplus:{tmp_path}/no.csv"]) == 1
    assert f"no file {tmp_path}/no.csv" in capsys.readouterr().err
    with pytest.raises(DataError, match="generated faces have no FER\\+ votes"):
        labels.load("synthetic:10", "ferplus")


def test_votes_that_do_not_follow_the_data_are_refused(ferplus_csv, tmp_path):
    csv, _, _ = ferplus_csv
    path = csv.parent / labels.VOTES_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # one row short
    with pytest.raises(DataError, match="vote rows, but .* has .* images"):
        labels.load(csv, "ferplus", tmp_path / "cache")
    swapped = lines[:1] + [lines[-1]] + lines[2:-1] + [lines[1]]  # a PrivateTest row first
    path.write_text("\n".join(swapped) + "\n")
    with pytest.raises(DataError, match="line 2: Usage PrivateTest, but row 1 .* is Training"):
        labels.load(csv, "ferplus", tmp_path / "cache")
    path.write_text(lines[0].replace("contempt", "scorn") + "\n")
    with pytest.raises(DataError, match=r"line 1: not FER\+'s votes file.*contempt"):
        labels.read_votes(path)


def test_data_check_prints_the_eight_classes(ferplus_csv, capsys):
    csv, _, _ = ferplus_csv
    assert cli.main(["data", "check", str(csv), "--labels", "ferplus"]) == 0
    out = capsys.readouterr().out
    assert "labels ferplus" in out and f"{8 * (12 + 3 + 3)} images" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["class"] == ["Training", "PublicTest", "PrivateTest"]
    for name in FERPLUS.classes:
        assert rows[name] == ["12", "3", "3"]


# --------------------------------------------------------------------------- 8-class models


@pytest.fixture(scope="module")
def ferplus_splits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ferplus")
    csv, _, _ = write_ferplus(folder / "data")
    return split(labels.load(csv, "ferplus", folder / "cache"), val_fraction=0.2, seed=0)


def test_an_eight_class_tree_gives_eight_named_columns(ferplus_splits, fresh_tracking):
    parts = ferplus_splits
    tree = create("tree", features="pixels").fit(parts.train.X, parts.train.y,
                                                  class_names=parts.classes)
    assert tree.class_names_ == FERPLUS.classes and tree.predict_proba(parts.val.X).shape[1] == 8
    with mlflow.start_run():
        uri = pyfunc.log_model(tree, parts.val.X[:2], label_set="ferplus")
    model = mlflow.pyfunc.load_model(uri)
    out = model.predict(pd.DataFrame({"pixels": pyfunc.pixel_strings(parts.test_all.X)}))
    assert list(out.columns) == ["emotion", "emotion_id", *FERPLUS.classes]
    np.testing.assert_allclose(out[list(FERPLUS.classes)].sum(axis=1), 1.0)
    assert set(out["emotion"]) <= set(FERPLUS.classes)
    assert pyfunc.classes_of(model) == FERPLUS.classes
    assert pyfunc.label_set_of(model) == "ferplus"
    assert list(model.predict(parts.val.X[:0]).columns)[2:] == list(FERPLUS.classes)


def crops(root: Path, faces: np.ndarray, names) -> Path:
    """A collection of face crops in <class>/ folders."""
    from PIL import Image

    for i, (face, name) in enumerate(zip(faces, names)):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(face.reshape(48, 48)).save(root / name / f"{i}.png")
    return root


def test_an_image_folder_is_labelled_by_its_folders(tmp_path):
    """FER+'s votes follow the CSV's rows: an image folder's labels are its folders' names,
    FER+'s classes when contempt/ is among them; asked for another label set, it says which
    to give (or, not strict, keeps its own)."""
    faces = np.zeros((3, 48 * 48), np.uint8)
    seven = crops(tmp_path / "seven", faces, ["happy", "sad", "sad"])
    eight = crops(tmp_path / "eight", faces, ["happy", "contempt", "sad"])
    cache = tmp_path / "cache"
    assert labels.load(seven, "fer2013", cache).classes == FER2013.classes
    assert labels.load(eight, "ferplus", cache).classes == FERPLUS.classes
    with pytest.raises(DataError, match="its class folders' names.*use --labels fer2013"):
        labels.load(seven, "ferplus", cache)
    with pytest.raises(DataError, match="ferplus's classes.*use --labels ferplus"):
        labels.load(eight, "fer2013", cache)
    with pytest.raises(DataError, match="use --labels ferplus"):
        labels.load(eight, f"ferplus:{tmp_path}/fer2013new.csv", cache)
    own = labels.load(seven, "ferplus", cache, strict=False)
    assert own.label_set == "fer2013" and [own.classes[i] for i in own.labels] == [
        "happy", "sad", "sad"]


def test_a_fer_plus_model_is_evaluated_on_an_image_folder_by_name(
        ferplus_splits, fresh_tracking, tmp_path, capsys):
    """No votes asked for: a FER2013-style folder's faces count as the FER+ model's classes
    of the same names; a seven-class model leaves contempt faces out, and says so."""
    parts = ferplus_splits
    tree = create("tree", features="pixels").fit(parts.train.X, parts.train.y,
                                                  class_names=parts.classes)
    with mlflow.start_run():
        ferplus_uri = pyfunc.log_model(tree, parts.val.X[:2], label_set="ferplus")
    names = [parts.classes[i] for i in parts.test_all.y]
    seven = [name for name in names if name != "contempt"]
    folder = crops(tmp_path / "seven", parts.test_all.X[[n != "contempt" for n in names]],
                   seven)
    assert cli.main(["evaluate", ferplus_uri, str(folder)]) == 0, capsys.readouterr().err
    assert f"(test_all): {len(seven)} faces\n" in capsys.readouterr().out
    expected = tree.predict(parts.test_all.X[[n != "contempt" for n in names]])
    predicted_right = np.mean([parts.classes[p] == n for p, n in zip(expected, seven)])
    run = mlflow.search_runs(output_format="list", order_by=["start_time DESC"],
                             filter_string="tags.`fer.role` = 'evaluation'")[0]
    assert run.data.metrics["test_all_accuracy"] == pytest.approx(predicted_right)
    assert run.data.tags["fer.labels"] == "fer2013"

    knn = create("knn", features="pixels").fit(*_seven_classes())
    with mlflow.start_run():
        seven_uri = pyfunc.log_model(knn, parts.val.X[:2])
    eight = crops(tmp_path / "eight", parts.test_all.X, names)
    assert cli.main(["evaluate", seven_uri, str(eight)]) == 0, capsys.readouterr().err
    contempt = names.count("contempt")
    assert contempt and (f"(test_all): {len(seven)} faces ({contempt} more of classes the model "
                         f"lacks left out)") in capsys.readouterr().out
    run = mlflow.search_runs(output_format="list", order_by=["start_time DESC"],
                             filter_string="tags.`fer.role` = 'evaluation'")[0]
    assert run.data.metrics["faces_left_out"] == contempt
    assert run.data.params["classes_left_out"] == f"contempt:{contempt}"


def test_a_class_missing_from_training_still_has_its_column(ferplus_splits):
    parts = ferplus_splits
    seen = parts.train.y != 7  # no contempt in training
    knn = create("knn", features="pixels").fit(parts.train.X[seen], parts.train.y[seen],
                                               class_names=parts.classes)
    proba = knn.predict_proba(parts.val.X)
    assert proba.shape == (len(parts.val), 8) and (proba[:, 7] == 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_labels_outside_the_classes_are_refused(ferplus_splits):
    parts = ferplus_splits
    with pytest.raises(ValueError, match="labels must be 0..6"):
        create("tree").fit(parts.train.X, parts.train.y)  # FER2013's seven by default


def test_models_from_before_label_sets_keep_fer2013s_seven_columns():
    parts = split(load("synthetic:10"), val_fraction=0.2, seed=0)
    knn = create("knn", features="pixels").fit(parts.train.X, parts.train.y)
    old = pyfunc.FerModel(knn)
    del knn.class_names_, old.label_set  # as pickled by fer-lab before label sets
    out = old.predict(None, parts.val.X)
    assert list(out.columns) == ["emotion", "emotion_id", *EMOTIONS]
    assert pyfunc.classes_of(old) == EMOTIONS and pyfunc.label_set_of(old) == "fer2013"


def test_an_eight_class_cnn(ferplus_splits):
    parts = ferplus_splits
    cnn = create("cnn", width=8, epochs=1, batch_size=16, min_steps=0, tta="none",
                 mixed_precision="fp32", channels_last=False).fit(
        parts.train.X, parts.train.y, eval_set=(parts.val.X, parts.val.y),
        class_names=parts.classes)
    from fer_lab import nets

    assert nets.n_outputs(cnn.net_) == 8 and cnn.class_names_ == FERPLUS.classes
    assert cnn.predict_proba(parts.test_all.X).shape == (len(parts.test_all), 8)
    frame = pyfunc.FerModel(cnn, label_set="ferplus").predict(None, parts.test_all.X[:3])
    assert list(frame.columns)[2:] == list(FERPLUS.classes)


# --------------------------------------------------------------------------- registry


def version(number: str, val: float, **tags: str) -> ModelVersion:
    tags = {"fer.data_digest": "d", "fer.protocol": "p", "fer.objective": "accuracy",
            "fer.family": "knn", "val_accuracy": str(val), **tags}
    return ModelVersion("fer-knn", number, 0,
                        tags=[ModelVersionTag(k, v) for k, v in tags.items()])


def test_the_champion_gate_never_compares_label_sets():
    champion = version("1", 0.50)  # registered before label sets: FER2013's 7 classes
    candidate = version("2", 0.90, **{"fer.labels": "ferplus"})
    move, reason = registry.gate(champion, candidate)
    assert not move
    assert "not compared" in reason and "fer2013 (7 classes" in reason \
        and "ferplus (8 classes" in reason and "fer-knn-ferplus" in reason
    # the same label set, spelled or not, is compared on validation as before
    assert registry.gate(champion, version("3", 0.60, **{"fer.labels": "fer2013"}))[0]
    assert not registry.gate(champion, version("4", 0.40))[0]


def test_label_sets_have_registered_models_of_their_own():
    assert registry.model_name("cnn") == "fer-cnn"
    assert registry.model_name("cnn", "ferplus") == "fer-cnn-ferplus"
    assert registry.best_model_name("ferplus") == "fer-emotion-ferplus"
    with pytest.raises(ValueError, match="unknown label set"):
        registry.model_name("cnn", "ferplus:/x.csv")


@pytest.mark.slow
def test_a_ferplus_study_is_tracked_and_registered_apart(ferplus_csv, fresh_tracking, tmp_path):
    """A FER+ tree study: label set on every run, a study name and registered models of
    its own, 8-class evaluation files; FER2013's champion stays where it was."""
    csv, _, _ = ferplus_csv
    fer2013 = create("knn", features="pixels").fit(*_seven_classes())
    with mlflow.start_run() as run:
        uri = pyfunc.log_model(fer2013, np.zeros((2, 48 * 48), np.uint8))
    registry.register(uri, "tree", {"val_accuracy": 0.99},
                      {"fer.data_digest": "d", "fer.protocol": "p", "fer.objective": "accuracy",
                       "fer.run_id": run.info.run_id})
    model = load_family("tree", budget="quick")
    model = dataclasses.replace(model, study=dataclasses.replace(
        model.study, trials=2, timeout=None, rungs=(0.5, 1.0), startup_trials=2))
    config = TuneConfig(model=model, data=str(csv), labels="ferplus",
                        experiment=tmp_path.name, storage=f"sqlite:///{tmp_path}/optuna.db")
    from fer_lab.tuning import tune

    metrics = tune(config, progress=False)
    [study] = optuna.get_all_study_summaries(config.storage)
    assert study.study_name.startswith("tree-default-ferplus-")
    runs = [r for r in mlflow.search_runs(experiment_names=[tmp_path.name], output_format="list")
            if r.data.tags.get("fer.role") in ("study", "trial")]
    assert len(runs) == 3 and {r.data.tags["fer.labels"] for r in runs} == {"ferplus"}
    [parent] = [r for r in runs if r.data.tags["fer.role"] == "study"]
    assert parent.data.params["study.classes"] == ",".join(FERPLUS.classes)
    assert {f"test_all_{c}_f1" for c in FERPLUS.classes} <= set(parent.data.metrics)
    client = MlflowClient()
    confusion = json.loads(Path(client.download_artifacts(
        parent.info.run_id, "evaluation/confusion_test_all.json", str(tmp_path))).read_text())
    assert confusion["labels"] == list(FERPLUS.classes) and len(confusion["counts"]) == 8
    # registered apart: FER2013's champion is not compared with it, nor replaced
    ferplus = client.get_model_version_by_alias("fer-tree-ferplus", "champion")
    assert ferplus.tags["fer.labels"] == "ferplus" and "first champion" in \
        ferplus.tags["fer.champion_decision"]
    assert str(client.get_model_version_by_alias("fer-tree", "champion").version) == "1"
    assert registry.promote("ferplus").name == "fer-emotion-ferplus"
    out = registry.load_champion("fer-emotion-ferplus").predict(np.zeros((1, 2304), np.uint8))
    assert list(out.columns)[2:] == list(FERPLUS.classes)
    assert registry.promote().name == "fer-emotion"  # FER2013's: only fer-tree's champion
    assert metrics["test_all_accuracy"] >= 0
    # evaluated on its own label set by default, or on FER2013's labels by class name
    model = "models:/fer-emotion-ferplus@champion"
    assert cli.main(["evaluate", model, str(csv), "--experiment", tmp_path.name]) == 0
    assert cli.main(["evaluate", model, str(csv), "--labels", "fer2013",
                     "--experiment", tmp_path.name]) == 0
    evaluations = [r for r in mlflow.search_runs(experiment_names=[tmp_path.name],
                                                 output_format="list")
                   if r.data.tags.get("fer.role") == "evaluation"]
    assert sorted(r.data.tags["fer.labels"] for r in evaluations) == ["fer2013", "ferplus"]
    assert {r.data.tags["fer.model_labels"] for r in evaluations} == {"ferplus"}
    faces = {r.data.tags["fer.labels"]: int(r.data.metrics["faces"]) for r in evaluations}
    assert faces == {"ferplus": 8 * 6, "fer2013": 8 * 6 + 2 * len(DROPS)}


def _seven_classes():
    parts = split(load("synthetic:10"), val_fraction=0.2, seed=0)
    return parts.train.X, parts.train.y


# --------------------------------------------------------------------------- real data

# FER+ majority labels of the real fer2013new.csv, per usage and class (FER+'s order:
# neutral, happy, surprise, sad, angry, disgust, fear, contempt), as Microsoft's rule
# gives them (checked against the transcription above): 35,887 rows, 4,475 dropped
# (4,200 without a majority, 99 unknown, 176 not a face).
FERPLUS_COUNTS = {
    "Training": [8740, 7287, 3149, 3014, 2100, 119, 532, 119],
    "PublicTest": [1182, 865, 415, 351, 287, 24, 62, 13],
    "PrivateTest": [1090, 893, 396, 384, 273, 18, 83, 16],
}


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.skipif(not (REAL_CSV.exists() and REAL_VOTES.exists()),
                    reason=f"{REAL_CSV} or {REAL_VOTES} not present")
def test_real_ferplus_counts(tmp_path):
    found = labels.read_votes(REAL_VOTES)
    assert len(found.usage) == 35_887
    np.testing.assert_array_equal(majority(found.counts),
                                  [microsoft_majority(r) for r in found.counts.tolist()])
    data = labels.load(REAL_CSV, "ferplus", tmp_path / "cache")
    assert data.counts() == FERPLUS_COUNTS
    assert {u: sum(c) for u, c in data.counts().items()} == {
        "Training": 25_060, "PublicTest": 3_199, "PrivateTest": 3_153}
    assert len(data.labels) == 31_412 == 35_887 - 4_475
    # the rows kept are FER2013's own, in order: the first kept image is row 0's
    own = load(REAL_CSV, tmp_path / "cache")
    keep = majority(found.counts) != DROPPED
    np.testing.assert_array_equal(data.images, own.images[keep])
    np.testing.assert_array_equal(data.usage, own.usage[keep])
    assert USAGES[data.usage[-1]] == "PrivateTest"
    parts = split(data)
    assert len(parts.train) + len(parts.val) == 25_060 and len(parts.test_all) == 6_352
