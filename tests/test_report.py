"""The comparison report, from study and evaluation runs made directly in a store."""

import mlflow
import numpy as np
import pytest

from fer_lab import report, tracking
from fer_lab.data import EMOTIONS

N = 2000


def study(family: str, y: np.ndarray, right: float, seed: int, digest: str = "d1") -> str:
    """A finished study run with test_all evaluated: accuracy about ``right``."""
    rng = np.random.default_rng(seed)
    pred = np.where(rng.random(len(y)) < right, y, (y + 1) % 7)
    raw = np.full((len(y), 7), 0.02)
    raw[np.arange(len(y)), pred] = 0.88
    faces = rng.integers(0, 256, (len(y), 48 * 48), dtype=np.uint8)
    with mlflow.start_run(run_name=f"{family} · study") as run:
        mlflow.set_tags({"fer.role": "study", "fer.family": family, "fer.data_digest": digest,
                         **{"fer.isa": "avx2", "fer.cpu": "test cpu"}})
        metrics = tracking.log_evaluation("test_all", y, raw, temperature=1.5, X=faces)
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
    for emotion in EMOTIONS:
        assert f"{emotion} P/R/F1" in markdown
    for column in ("temperature", "test_all ECE before", "test_all ECE after", "predict img/s",
                   "model MB", "machine"):
        assert column in markdown
    assert "1000" in markdown.split("## Cost")[1]  # 2,000 faces in 2 s
    assert (tmp_path / "out" / "confident_mistakes_svm.png").stat().st_size > 5000
    assert page.read_text().count("data:image/png;base64,") >= 5
