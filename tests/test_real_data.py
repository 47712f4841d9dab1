"""The user's path on the real FER2013, end to end: a quick study, the registry, prediction.

Runs when ``$FER_LAB_REAL_DATA`` (default ``../shared/data/fer2013/fer2013.csv.gz``) exists
(CI has it); skipped otherwise.
"""

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import REAL_CSV

from fer_lab import cli, pyfunc, registry
from fer_lab.data import load, split

pytestmark = [pytest.mark.real_data, pytest.mark.slow,
              pytest.mark.skipif(not REAL_CSV.exists(), reason=f"{REAL_CSV} not present")]


def test_quick_study_registers_a_model_that_reads_faces_by_name(fresh_tracking, tmp_path, capsys):
    args = ["tune", "tree", "--data", str(REAL_CSV), "--budget", "quick", "--trials", "1",
            "--storage", f"sqlite:///{tmp_path}/optuna.db"]
    assert cli.main(args) == 0
    assert cli.main(["promote"]) == 0
    capsys.readouterr()
    version = mlflow.MlflowClient().get_model_version_by_alias("fer-tree", "champion")
    assert version.tags["fer.data_digest"] == load(REAL_CSV).digest
    private = split(load(REAL_CSV)).test_private
    model = registry.load_champion()
    out = model.predict(pd.DataFrame({"pixels": pyfunc.pixel_strings(private.X[:500])}))
    accuracy = float(np.mean(out["emotion_id"].to_numpy() == private.y[:500]))
    assert accuracy > 0.25  # a tree on HOG features; chance (always "happy") is ~0.245
    assert accuracy == pytest.approx(float(version.tags["test_private_accuracy"]), abs=0.06)
    csv = tmp_path / "private.csv"
    pd.DataFrame({"emotion": private.y[:20],
                  "pixels": pyfunc.pixel_strings(private.X[:20])}).to_csv(csv, index=False)
    assert cli.main(["predict", str(csv), "--csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 21
    predicted = [r.split(",")[2] for r in rows[1:]]
    assert predicted == out["emotion"][:20].tolist()

