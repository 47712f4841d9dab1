"""`fer-lab evaluate`: a registered model scored on other labelled faces, as an MLflow run."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from fer_lab import calibration, cli, evaluate, registry
from fer_lab.data import EMOTIONS, DataError, load

MODEL = f"models:/{registry.BEST_MODEL}@{registry.CHAMPION}"
# One xdist worker runs the module: its tests share one registered champion.
pytestmark = pytest.mark.xdist_group("serving")


def collection(root: Path, faces: np.ndarray, labels: np.ndarray, absent: str) -> Path:
    """A CK+-like collection: <emotion>/<n>.png face crops, one class left out."""
    for i, (face, label) in enumerate(zip(faces, labels)):
        if EMOTIONS[label] == absent:
            continue
        folder = root / EMOTIONS[label].capitalize()  # CK+ capitalises its folder names
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face.reshape(48, 48)).resize((96, 96)).save(folder / f"{i}.png")
    return root


def evaluation_run(experiment: str = "fer-lab"):
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list",
                              filter_string="tags.`fer.role` = 'evaluation'",
                              order_by=["start_time DESC"])
    return runs[0]


def test_a_collection_without_neutral_is_scored_over_all_and_present_classes(
        champion, tmp_path, capsys):
    root = collection(tmp_path / "ck", champion.X, champion.y, absent="neutral")
    assert cli.main(["evaluate", MODEL, str(root)]) == 0
    out = capsys.readouterr().out
    n = int(np.sum(champion.y != EMOTIONS.index("neutral")))
    assert f"({evaluate.DEFAULT_SPLIT}): {n} faces" in out and "accuracy_present" in out

    run = evaluation_run()
    m, tags = run.data.metrics, run.data.tags
    assert tags["fer.model"] == f"{registry.BEST_MODEL}/1" and tags["fer.family"] == "knn"
    assert tags["fer.data_digest"] == load(str(root)).digest and tags["fer.isa"]
    assert run.data.params["classes_present"] == ",".join(e for e in EMOTIONS if e != "neutral")
    assert m["faces"] == n and m["calibration_temperature"] == 2.0
    # restricting the choice to the six classes present can only help
    assert m["test_all_accuracy_present"] >= m["test_all_accuracy"]
    low, high = m["test_all_accuracy_ci95_low"], m["test_all_accuracy_ci95_high"]
    assert low <= m["test_all_accuracy"] <= high
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/confusion_test_all.png", "evaluation/report_test_all.txt",
            "evaluation/reliability_test_all.png", "evaluation/predictions_test_all.csv"} <= files
    # the ECE before calibration is the raw model's, after it the temperature's
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="evaluation/reliability_test_all.json")
    numbers = json.loads(Path(local).read_text())
    assert numbers["uncalibrated"]["ece"] == pytest.approx(m["test_all_ece_uncalibrated"])
    assert numbers["calibrated"]["ece"] == pytest.approx(m["test_all_ece"])


def test_calibrated_probabilities_are_the_raw_ones_at_the_models_temperature(champion):
    model = registry.load_model(MODEL)
    raw = model.predict(champion.X, params={"calibrated": False})[list(EMOTIONS)].to_numpy()
    cal = model.predict(champion.X)[list(EMOTIONS)].to_numpy()
    np.testing.assert_allclose(cal, calibration.scale(raw, 2.0), atol=1e-9)
    assert cal.max(1).mean() < raw.max(1).mean()  # T = 2 tempers the confidence
    with pytest.raises(Exception, match="calibrated"):
        model.predict(champion.X[:1], params={"calibrated": "yes"})


def test_a_fer2013_split_is_chosen_by_name_and_an_unknown_one_is_refused(champion, capsys):
    assert cli.main(["evaluate", MODEL, "synthetic:10", "--split", "test_private"]) == 0
    run = evaluation_run()
    assert run.data.tags["fer.split"] == "test_private"
    assert run.data.metrics["faces"] == len(load("synthetic:10").labels[
        load("synthetic:10").usage == 2])
    assert cli.main(["evaluate", MODEL, "synthetic:10", "--split", "nosuch"]) == 1
    assert "no 'nosuch' split" in capsys.readouterr().err
    # the champion is a k-NN: it has no test-time augmentation to choose
    assert cli.main(["evaluate", MODEL, "synthetic:10", "--tta", "none"]) == 1
    assert "--tta none" in capsys.readouterr().err


def test_photos_without_a_face_are_named_and_skipped(champion, tmp_path, capsys):
    from skimage import data as skimage_data

    happy = tmp_path / "photos" / "happy"
    happy.mkdir(parents=True)
    Image.fromarray(skimage_data.astronaut()).save(happy / "astronaut.jpg")
    Image.fromarray(skimage_data.coffee()).save(happy / "coffee.jpg")  # a cup, no face
    assert cli.main(["evaluate", MODEL, str(tmp_path / "photos"), "--detect-faces"]) == 0
    captured = capsys.readouterr()
    assert "coffee.jpg: no face found (skipped)" in captured.err
    assert "(all): 1 faces" in captured.out
    m = evaluation_run().data.metrics
    assert m["faces"] == 1 and m["faces_skipped"] == 1


def test_photo_folders_name_any_label_sets_class(champion, tmp_path, capsys):
    """A ``contempt/`` folder is FER+'s class: its faces are labelled so, and a model of
    FER2013's seven is scored on the others, counting what it left out; an unknown folder
    name lists the names it could have been."""
    from skimage import data as skimage_data

    photos = tmp_path / "photos"
    for folder in ("Contempt", "happiness"):
        (photos / folder).mkdir(parents=True)
        Image.fromarray(skimage_data.astronaut()).save(photos / folder / "a.jpg")
    faces = evaluate.load_faces(str(photos), detect_faces=True)
    assert faces.label_set == "ferplus"
    assert sorted(faces.classes[i] for i in faces.y) == ["contempt", "happy"]
    assert cli.main(["evaluate", MODEL, str(photos), "--detect-faces"]) == 0
    assert ("(all): 1 faces (1 more of classes the model lacks left out)"
            in capsys.readouterr().out)
    run = evaluation_run()
    assert run.data.metrics["faces_left_out"] == 1 and run.data.metrics["faces"] == 1
    assert run.data.params["classes_left_out"] == "contempt:1"

    (photos / "Contempt" / "a.jpg").rename(photos / "happiness" / "b.jpg")
    (photos / "Contempt").rmdir()
    faces = evaluate.load_faces(str(photos), detect_faces=True)
    assert (faces.label_set, faces.classes) == ("fer2013", EMOTIONS)
    assert [faces.classes[i] for i in faces.y] == ["happy", "happy"]

    (photos / "bored").mkdir()
    with pytest.raises(DataError, match="bored: not an emotion folder.*contempt"):
        evaluate.load_faces(str(photos), detect_faces=True)
