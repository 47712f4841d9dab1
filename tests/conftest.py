"""Shared fixtures: every test's outputs go to temporary folders, never the working tree."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

# The real FER2013 for the real-data tests (marker real_data): $FER_LAB_REAL_DATA, else the
# shared folder beside the checkout; those tests skip when the file is not there.
REAL_CSV = Path(os.environ.get("FER_LAB_REAL_DATA")
                or Path(__file__).resolve().parents[2] / "shared/data/fer2013/fer2013.csv.gz")


def pytest_configure(config):
    """Under pytest-xdist (``-n N``) the workers share the cores: each computes with its
    share of them, it and its subprocesses, so N workers do not oversubscribe the CPU."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(name, threads)
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The longest modules first, so that under xdist the two workers finish together instead
# of one running the main job alone at the end.
LONGEST_FIRST = ("test_compare.py", "test_environments.py", "test_parallel.py",
                 "test_real_data.py", "test_tuning.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable otherwise


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """The session's own fer-lab cache (parsed data, hardware decisions), never the user's."""
    previous = os.environ.get("FER_LAB_CACHE")
    os.environ["FER_LAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("FER_LAB_CACHE", None)
    else:
        os.environ["FER_LAB_CACHE"] = previous


@pytest.fixture(scope="session")
def tracking_uri(empty_store, tmp_path_factory):
    """One tracking store for the session's tests that need no store of their own."""
    return own_store(empty_store, tmp_path_factory.mktemp("mlflow"))


def _track_into(uri, tmp_path, monkeypatch):
    """Points MLflow at ``uri`` and runs the test from its own temp folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    # set_experiment exports MLFLOW_EXPERIMENT_ID; setting it first makes monkeypatch
    # remove it after the test, so no later process inherits it.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(tmp_path.name)  # the last test's experiment id means nothing here
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty SQLite tracking store with MLflow's schema made once (seconds), to copy."""
    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def own_store(empty_store: Path, folder: Path) -> str:
    """A copy of the empty store in ``folder``: a tracking store of its own, made in ms."""
    shutil.copyfile(empty_store, folder / "mlflow.db")
    return f"sqlite:///{folder}/mlflow.db"


@pytest.fixture
def tracking(tracking_uri, tmp_path, monkeypatch):
    """The session's shared tracking store."""
    yield from _track_into(tracking_uri, tmp_path, monkeypatch)


@pytest.fixture
def fresh_tracking(empty_store, tmp_path, monkeypatch):
    """A tracking store of the test's own (the model registry is global to a store)."""
    yield from _track_into(own_store(empty_store, tmp_path), tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def module_tracking(empty_store, tmp_path_factory):
    """A tracking store shared by one module's tests that only read what its fixtures wrote
    (a registered model takes seconds to log: once per module, not per test)."""
    folder = tmp_path_factory.mktemp("module-store")
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _track_into(own_store(empty_store, folder), folder, monkeypatch)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(args: list[str], health: str, log: Path, env: dict | None = None,
                  cwd: Path | None = None, timeout: float = 120) -> Iterator[str]:
    """Runs ``mlflow ARGS --host 127.0.0.1 --port P`` from this venv until the block ends;
    yields its URL once ``health`` answers."""
    bin_dir = Path(sys.executable).parent  # mlflow starts `uvicorn` from PATH
    env = {**os.environ, **(env or {}),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = free_port()
    proc = subprocess.Popen([str(bin_dir / "mlflow"), *args, "--host", "127.0.0.1",
                             "--port", str(port)], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + health, timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"mlflow {args[0]} not up in {timeout} s"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def champion(module_tracking):
    """A small registered, promoted knn (``models:/fer-emotion@champion``) in the module's
    store, calibrated with a temperature of 2; returns the validation split it was not
    trained on."""
    from fer_lab import pyfunc, registry
    from fer_lab.data import load, split
    from fer_lab.models import create

    splits = split(load("synthetic:10"), val_fraction=0.2, seed=0)
    model = create("knn", features="pca", pca_components=0.9).fit(splits.train.X, splits.train.y)
    with mlflow.start_run(tags={"fer.family": "knn"}) as run:
        uri = pyfunc.log_model(model, splits.val.X[:2], temperature=2.0)
    registry.register(uri, "knn", {"val_accuracy": 0.5},
                      {"fer.data_digest": "d", "fer.protocol": "p", "fer.objective": "accuracy",
                       "fer.run_id": run.info.run_id})
    registry.promote()
    return splits.val


def check_study(family: str, parent, trials: list, parts) -> None:
    """What every study run records, checked on one: ``parent`` is the study's run,
    ``trials`` its trial runs, ``parts`` the data's splits (``fer_lab.data.split``). Used
    by test_tuning (one family) and the main job's test (every family)."""
    import json

    import numpy as np
    import pandas as pd

    from fer_lab import calibration
    from fer_lab.data import EMOTIONS

    assert parent.data.tags["fer.family"] == family
    assert parent.data.tags["mlflow.runName"] == f"{family} · study"
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert sorted(int(t.data.tags["fer.trial"]) for t in trials) == list(range(len(trials)))
    for t in trials:
        assert t.data.params and t.data.tags["fer.trial_state"] in ("COMPLETE", "PRUNED")
        if t.data.tags["fer.trial_state"] == "COMPLETE":
            assert "val_accuracy" in t.data.metrics
    # test_all is PublicTest + PrivateTest: its accuracy is their size-weighted mean
    m = parent.data.metrics
    assert m["test_all_accuracy"] == pytest.approx(
        (m["test_private_accuracy"] * len(parts.test_private)
         + m["test_public_accuracy"] * len(parts.test_public)) / len(parts.test_all))
    client = mlflow.MlflowClient()
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    for name in ("val", "test_private", "test_public", "test_all"):
        assert {f"evaluation/confusion_{name}.png", f"evaluation/confusion_{name}.json",
                f"evaluation/confusion_{name}_normalized.png",
                f"evaluation/report_{name}.txt", f"evaluation/report_{name}.json",
                f"evaluation/reliability_{name}.png", f"evaluation/reliability_{name}.json",
                f"evaluation/predictions_{name}.csv"} <= files
        # intervals around every split's scores, calibration measured before and after
        for measure in ("accuracy", "macro_f1"):
            assert m[f"{name}_{measure}_ci95_low"] <= m[f"{name}_{measure}"] \
                <= m[f"{name}_{measure}_ci95_high"]
        assert {f"{name}_ece", f"{name}_nll", f"{name}_brier", f"{name}_ece_uncalibrated"} \
            <= set(m)
    # the temperature minimises the validation NLL: calibrated is never worse there
    assert m["calibration_temperature"] > 0
    local = Path(client.download_artifacts(parent.info.run_id, "evaluation/reliability_val.json"))
    numbers = json.loads(local.read_text())
    assert numbers["calibrated"]["ece"] == pytest.approx(m["val_ece"])
    assert numbers["uncalibrated"]["ece"] == pytest.approx(m["val_ece_uncalibrated"])
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "optuna", "explanations"} <= top
    assert {"explanations/class_means.png", "explanations/confident_mistakes.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "explanations")}
    first = min(trials, key=lambda t: int(t.data.tags["fer.trial"]))
    if family == "cnn":  # trains in epochs: curves, checkpoint and per-epoch refit metrics
        training = {a.path for a in client.list_artifacts(parent.info.run_id, "training")}
        assert training == {"training/curves.png", "training/best.pt"}
        assert len(client.get_metric_history(parent.info.run_id, "refit_val_accuracy")) >= 2
        assert "val_loss" in first.data.metrics and "lr" in first.data.metrics
    trial_files = {a.path for a in client.list_artifacts(first.info.run_id, "evaluation")}
    assert "evaluation/confusion_val.png" in trial_files
    model = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/model")
    pixels = [" ".join(map(str, img)) for img in parts.test_all.X[:3]]
    out = model.predict(pd.DataFrame({"pixels": pixels}))
    assert list(out.columns[:2]) == ["emotion", "emotion_id"] and len(out) == 3
    # calibrated by default (the study's temperature); the estimator's own on request
    raw = model.predict(pd.DataFrame({"pixels": pixels}), params={"calibrated": False})
    raw_p, cal_p = raw[list(EMOTIONS)].to_numpy(), out[list(EMOTIONS)].to_numpy()
    np.testing.assert_allclose(cal_p, calibration.scale(raw_p, m["calibration_temperature"]),
                               atol=1e-6)
    np.testing.assert_array_equal(raw["emotion_id"], out["emotion_id"])
    if family == "cnn":  # each test-time augmentation a user asks for has its temperature
        temps = {tta: m[f"calibration_temperature_tta_{tta}"] for tta in ("none", "flip", "crops")}
        own = parent.data.params["tta"]
        assert m["calibration_temperature"] == temps[own]
        # the logged model carries them (test_calibration: predict picks the mode's)
        assert model.unwrap_python_model().temperatures == pytest.approx(temps)
        other = "crops" if own != "crops" else "none"
        frame = pd.DataFrame({"pixels": pixels})
        raw_other = model.predict(frame, params={"tta": other, "calibrated": False})
        cal_other = model.predict(frame, params={"tta": other})
        np.testing.assert_allclose(cal_other[list(EMOTIONS)].to_numpy(), calibration.scale(
            raw_other[list(EMOTIONS)].to_numpy(), temps[other]), atol=1e-6)
