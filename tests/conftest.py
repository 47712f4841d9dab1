"""Shared fixtures: every test's outputs go to temporary folders, never the working tree."""

import mlflow
import pytest


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    # One SQLite store for the session: creating MLflow's schema costs seconds per database.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def tracking(tracking_uri, tmp_path, monkeypatch):
    """Points MLflow at the session's store and runs the test from its own temp folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(tracking_uri)
    yield tracking_uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def fresh_tracking(tmp_path, monkeypatch):
    """A tracking store of the test's own (the model registry is global to a store)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("FER_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
