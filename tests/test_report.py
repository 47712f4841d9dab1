"""The comparison report, from study and evaluation runs made directly in a store."""

import mlflow
import numpy as np
import pytest

from fer_lab import report, tracking
from fer_lab.data import EMOTIONS

N = 2000


def study(family: str, y: np.ndarray, right: float, seed: int, digest: str = "d1",
          classes: tuple[str, ...] = EMOTIONS, **tags: str) -> str:
    """A finished study run with test_all evaluated: accuracy about ``right``."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    pred = np.where(rng.random(len(y)) < right, y, (y + 1) % k)
    raw = np.full((len(y), k), 0.12 / (k - 1))
    raw[np.arange(len(y)), pred] = 0.88
    faces = rng.integers(0, 256, (len(y), 48 * 48), dtype=np.uint8)
    with mlflow.start_run(run_name=f"{family} · study") as run:
        mlflow.set_tags({"fer.role": "study", "fer.family": family, "fer.data_digest": digest,
                         **{"fer.isa": "avx2", "fer.cpu": "test cpu"}, **tags})
        metrics = tracking.log_evaluation("test_all", y, raw, temperature=1.5, X=faces,
                                          classes=classes)
        mlflow.log_metrics({f"test_all_{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({"calibration_temperature": 1.5, "test_all_predict_seconds": 2.0,
                            "fit_seconds": 10.0, "search_seconds": 5.0, "trials_complete": 2,
                            "val_accuracy": right})
    return run.info.run_id


@pytest.fixture
def runs(fresh_tracking):
    y = np.random.default_rng(0).integers(0, 7, N)
    best = study("svm", y, 0.70, seed=1)
    study("tree", y, 0.60, seed=2)  # clearly worse on the same images
    study("knn", y, 0.695, seed=3)  # within noise of the best
    with mlflow.start_run(run_name="evaluate") as run:
        mlflow.set_tags({"fer.role": "evaluation", "fer.model_run_id": best,
                         "fer.data_source": "/data/ckplus", "fer.split": "test_all"})
        mlflow.log_metrics({"test_all_accuracy": 0.55, "test_all_accuracy_ci95_low": 0.5,
                            "test_all_accuracy_ci95_high": 0.6})
    with mlflow.start_run(run_name="evaluate --tta none"):  # newer, with one view
        mlflow.set_tags({"fer.role": "evaluation", "fer.model_run_id": best,
                         "fer.data_source": "/data/ckplus", "fer.split": "test_all"})
        mlflow.log_param("tta", "none")
        mlflow.log_metrics({"test_all_accuracy": 0.52, "test_all_accuracy_ci95_low": 0.47,
                            "test_all_accuracy_ci95_high": 0.57})
    return mlflow.get_experiment(run.info.experiment_id).name


def test_report_sections_intervals_paired_verdicts_and_other_data(runs, tmp_path):
    page = report.write_report(tmp_path / "out", runs)
    markdown = (tmp_path / "out" / "report.md").read_text()
    for section in ("## Scores", "## Per class on test_all", "## Calibration", "## Cost",
                    "## Most confident mistakes: svm", "## Confusion matrices (test_all)"):
        assert section in markdown
    cells = [line.removeprefix("| ").removesuffix(" |").split(" | ")
             for line in markdown.split("## Per class")[0].splitlines() if line.startswith("| ")]
    rows = {row[0]: row for row in cells}
    head = rows["model"]
    acc = head.index("test_all acc")
    assert rows["svm"][acc].startswith("0.") and "[" in rows["svm"][acc]  # with its interval
    low, high = map(float, rows["svm"][acc].split("[")[1].rstrip("]").split(","))
    assert low < float(rows["svm"][acc].split()[0]) < high
    verdict = head.index("best vs this (McNemar, test_all)")
    assert rows["svm"][verdict] == "best"
    assert rows["tree"][verdict].startswith("svm holds")
    assert rows["knn"][verdict].startswith("svm not significant")
    other = head.index("acc on ckplus (test_all)")
    assert rows["svm"][other] == "0.5500 [0.5000, 0.6000]" and rows["tree"][other] == ""
    # scored with other views (`fer-lab evaluate --tta none`): a column of its own
    assert rows["svm"][head.index("acc on ckplus (test_all, tta none)")] == \
        "0.5200 [0.4700, 0.5700]"
    for emotion in EMOTIONS:
        assert f"{emotion} P/R/F1" in markdown
    for column in ("temperature", "test_all ECE before", "test_all ECE after", "predict img/s",
                   "model MB", "machine"):
        assert column in markdown
    assert "1000" in markdown.split("## Cost")[1]  # 2,000 faces in 2 s
    assert (tmp_path / "out" / "confident_mistakes_svm.png").stat().st_size > 5000
    assert page.read_text().count("data:image/png;base64,") >= 5


def test_ferplus_studies_have_sections_of_their_own(runs, tmp_path):
    """A FER+ study (8 classes, other test images) is never compared with FER2013's: it
    gets the report's sections again, named for its label set."""
    from fer_lab.labels import FERPLUS

    y = np.random.default_rng(1).integers(0, 8, 1500)
    study("svm", y, 0.80, seed=4, digest="d2", classes=FERPLUS.classes,
          **{"fer.labels": "ferplus"})
    report.write_report(tmp_path / "out", runs)
    markdown = (tmp_path / "out" / "report.md").read_text()
    own, ferplus = markdown.split("## Scores (ferplus labels)")
    assert "Microsoft's relabelling" in markdown.split("## Scores")[0]  # said once, on top
    assert "contempt P/R/F1" not in own and "contempt P/R/F1" in ferplus
    ferplus_scores = ferplus.split("## Per class")[0]
    rows = [line.split(" | ")[0].removeprefix("| ") for line in ferplus_scores.splitlines()
            if line.startswith("| ") and not line.startswith("| model")]
    assert rows == ["svm"]  # alone: the best of its label set, no seed reference rows
    assert "| svm | " in own.split("## Per class")[0]  # FER2013's svm keeps its row
    for section in ("## Per class on test_all (ferplus labels)", "## Calibration (ferplus "
                    "labels)", "## Cost (ferplus labels)", "## Confusion matrices (test_all) "
                    "(ferplus labels)", "## Most confident mistakes: svm (ferplus labels)"):
        assert section in markdown
    for png in ("confusion_matrices_ferplus.png", "per_class_f1_ferplus.png",
                "confident_mistakes_ferplus_svm.png", "confusion_matrices.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000


def test_a_distilled_network_is_shown_beside_its_plain_family(runs, tmp_path):
    """A CNN distilled from an ensemble is the same family as the plain CNN: the report
    shows both (the latest of each) and names the teacher, instead of the newer hiding the
    other. A study recorded before the tag has the teacher as `mlflow run`'s parameter."""
    y = np.random.default_rng(0).integers(0, 7, N)
    study("cnn", y, 0.66, seed=5)
    study("cnn", y, 0.68, seed=6, **{"fer.teacher": "models:/fer-ensemble@champion"})
    report.write_report(tmp_path / "out", runs)
    markdown = (tmp_path / "out" / "report.md").read_text()
    scores = markdown.split("## Per class")[0]
    names = [line.split(" | ")[0].removeprefix("| ") for line in scores.splitlines()
             if line.startswith("| ") and not line.startswith("| model")]
    assert "cnn" in names and "cnn (distilled)" in names
    cost = markdown.split("## Cost")[1].split("\n## ")[0]
    distilled = next(line for line in cost.splitlines() if line.startswith("| cnn (distilled) |"))
    assert "teacher=models:/fer-ensemble@champion" in distilled
    assert "teacher=" not in next(line for line in cost.splitlines()
                                  if line.startswith("| cnn |"))
    assert "## Most confident mistakes: cnn (distilled)" in markdown
    assert (tmp_path / "out" / "confident_mistakes_cnn_distilled.png").exists()
    assert (tmp_path / "out" / "confident_mistakes_cnn.png").exists()

    older_way = study("cnn", y, 0.67, seed=7)  # newer, the teacher as a parameter only
    mlflow.MlflowClient().log_param(older_way, "teacher", "models:/fer-ensemble/3")
    found = {s.name: s for s in report.studies(runs)}
    assert found["cnn (distilled)"].run.info.run_id == older_way
    assert found["cnn (distilled)"].teacher == "models:/fer-ensemble/3"
    assert found["cnn"].teacher == ""
