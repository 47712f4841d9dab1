"""The model registry: the champion gate, promotion, and loading by name with plain MLflow."""

import base64
import io

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image

from fer_lab import pyfunc, registry
from fer_lab.data import EMOTIONS, load, split
from fer_lab.models import create

PROTOCOL = {"fer.data_digest": "d1", "fer.protocol": "val 0.1 of Training, seed 0",
            "fer.objective": "accuracy", "fer.study": "s"}


@pytest.fixture(scope="module")
def splits():
    return split(load("synthetic:10"), val_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def estimator(splits):
    return create("knn", features="pca", pca_components=0.9).fit(splits.train.X, splits.train.y)


def logged(estimator, splits, family="knn") -> tuple[str, str]:
    with mlflow.start_run() as run:
        mlflow.set_tag("fer.family", family)
        uri = pyfunc.log_model(estimator, splits.val.X[:2])
    return uri, run.info.run_id


def register(estimator, splits, family, val_accuracy, **tags):
    uri, run_id = logged(estimator, splits, family)
    metrics = {"val_accuracy": val_accuracy, "test_all_accuracy": 0.5}
    return registry.register(uri, family, metrics, {**PROTOCOL, "fer.run_id": run_id, **tags})


def champion(name):
    return MlflowClient().get_model_version_by_alias(name, registry.CHAMPION).version


@pytest.mark.slow
def test_champion_moves_only_to_a_better_model_on_the_same_data(fresh_tracking, estimator, splits):
    first = register(estimator, splits, "knn", 0.50)
    assert first.champion and "first champion" in first.reason
    worse = register(estimator, splits, "knn", 0.40)
    assert not worse.champion and "does not beat" in worse.reason
    assert champion("fer-knn") == first.version
    better = register(estimator, splits, "knn", 0.60)
    assert better.champion and "beats" in better.reason
    assert champion("fer-knn") == better.version
    other_data = register(estimator, splits, "knn", 0.99, **{"fer.data_digest": "d2"})
    assert not other_data.champion and "not compared" in other_data.reason
    assert champion("fer-knn") == better.version
    version = MlflowClient().get_model_version("fer-knn", worse.version)
    assert version.tags["val_accuracy"] == "0.400000"
    assert version.tags["fer.data_digest"] == "d1" and version.tags["fer.code_version"]
    assert "does not beat" in version.tags["fer.champion_decision"]


@pytest.mark.slow
def test_promote_points_fer_emotion_at_the_best_champion_and_is_idempotent(
        fresh_tracking, estimator, splits):
    with pytest.raises(LookupError, match="no family has a champion"):
        registry.promote()
    register(estimator, splits, "knn", 0.50)
    svm = register(estimator, splits, "svm", 0.55)
    first = registry.promote()
    assert first.changed and first.name == registry.BEST_MODEL
    best = MlflowClient().get_model_version_by_alias(registry.BEST_MODEL, registry.CHAMPION)
    assert best.tags["fer.source"] == f"models:/fer-svm/{svm.version}"
    description = MlflowClient().get_registered_model(registry.BEST_MODEL).description
    assert "fer-svm" in description and "val_accuracy" in description
    again = registry.promote()
    assert not again.changed and again.version == first.version
    assert len(MlflowClient().search_model_versions(f"name='{registry.BEST_MODEL}'")) == 1
    register(estimator, splits, "knn", 0.70)  # a new knn champion, now the best
    third = registry.promote()
    assert third.changed and "fer-knn" in third.reason


@pytest.fixture(scope="module")
def by_name(module_tracking, estimator, splits):
    register(estimator, splits, "knn", 0.5)
    registry.promote()
    return mlflow.pyfunc.load_model(f"models:/{registry.BEST_MODEL}@{registry.CHAMPION}")


def encoded(image: np.ndarray, fmt: str, size=(48, 48), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.reshape(48, 48)).convert(mode).resize(size).save(buffer, fmt)
    return buffer.getvalue()


def test_every_input_form_gives_the_same_table(by_name, estimator, splits):
    X = splits.val.X[:4]
    expected = estimator.predict(X)
    forms = {
        "pixels": pd.DataFrame({"pixels": pyfunc.pixel_strings(X)}),
        "flat array": X,
        "square array": X.reshape(-1, 48, 48),
        "png bytes": pd.DataFrame({"image": [encoded(x, "PNG") for x in X]}),
        "base64 png": pd.DataFrame({"image": [base64.b64encode(encoded(x, "PNG")).decode()
                                              for x in X]}),
    }
    for name, form in forms.items():
        out = by_name.predict(form)
        assert list(out.columns) == ["emotion", "emotion_id", *EMOTIONS], name
        np.testing.assert_array_equal(out["emotion_id"], expected, err_msg=name)
        np.testing.assert_allclose(out[list(EMOTIONS)].sum(axis=1), 1.0, err_msg=name)
    # any size, colour or grey, JPEG too: decoded and taken as one face each
    photos = pd.DataFrame({"image": [encoded(X[0], "JPEG", (200, 160), "RGB"),
                                     encoded(X[1], "PNG", (31, 31), "RGB")]})
    out = by_name.predict(photos)
    assert len(out) == 2 and set(out["emotion"]) <= set(EMOTIONS)


@pytest.mark.parametrize("bad, message", [
    (pd.DataFrame({"pixels": ["1 2 3"]}), "row 0: expected 2304 pixel values, got 3"),
    (pd.DataFrame({"pixels": ["0 " * 2303 + "256"]}), "row 0: pixel values must be in 0..255"),
    (pd.DataFrame({"pixels": ["0 " * 2303 + "x"]}), "row 0: pixels must be integers"),
    (pd.DataFrame({"image": [b"\x89PNG broken"]}), "row 0: cannot decode the image"),
    (pd.DataFrame({"image": ["not base64!"]}), "row 0: image text must be base64"),
    (pd.DataFrame({"image": [12]}), "row 0: image must be encoded image bytes"),
    (pd.DataFrame({"face": ["1"]}), "expected a 'pixels' or an 'image' column"),
    (np.zeros((2, 47, 48)), "expected shape"),
    (np.full((1, 2304), -1), "row 0: pixel values must be in 0..255"),
    (np.full((1, 2304), 0.5), "row 0: pixel values must be whole numbers"),
    (np.full((1, 2304), np.nan), "row 0: pixel values must be finite"),
    (np.array([["a"] * 2304]), "numeric pixel array"),
    ("a string", "expected a DataFrame"),
])
def test_malformed_input_raises_one_clear_error(by_name, bad, message):
    with pytest.raises(pyfunc.InputError) as caught:
        by_name.predict(bad)
    assert message in str(caught.value)


def test_second_row_is_named(by_name, splits):
    rows = pyfunc.pixel_strings(splits.val.X[:1]) + ["1 2"]
    with pytest.raises(pyfunc.InputError, match="row 1: expected 2304"):
        by_name.predict(pd.DataFrame({"pixels": rows}))


def test_tta_param_is_refused_for_models_without_it(by_name, splits):
    assert len(by_name.predict(splits.val.X[:2], params={"tta": "model"})) == 2
    with pytest.raises(pyfunc.InputError, match="tta applies to models with test-time"):
        by_name.predict(splits.val.X[:2], params={"tta": "none"})


def test_a_registry_outage_fails_the_registration_and_leaves_the_champion(
        fresh_tracking, estimator, splits, monkeypatch):
    first = register(estimator, splits, "knn", 0.5)

    def outage(self, name, alias):
        raise mlflow.exceptions.MlflowException("API request failed: connection refused",
                                                error_code="TEMPORARILY_UNAVAILABLE")

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", outage)
    with pytest.raises(mlflow.exceptions.MlflowException, match="connection refused"):
        register(estimator, splits, "knn", 0.1)  # worse: must not be crowned by the outage
    monkeypatch.undo()
    assert champion("fer-knn") == first.version


def test_only_a_missing_model_or_alias_means_no_champion(fresh_tracking):
    client = MlflowClient()
    assert registry.champion_version(client, "fer-nothing") is None  # no such model
    client.create_registered_model("fer-empty")
    assert registry.champion_version(client, "fer-empty") is None  # no alias yet


def test_loading_a_model_that_is_not_there_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(LookupError, match=r"no tracking store at sqlite:///mlflow.db.*mlflow run"):
        registry.load_model("models:/fer-emotion@champion")
    assert not (tmp_path / "mlflow.db").exists()  # nothing half-made left behind
    store = f"sqlite:///{tmp_path}/other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    MlflowClient(store).search_experiments()  # an existing, empty store
    with pytest.raises(LookupError, match=f"not found in {store}.*fer-lab tune"):
        registry.load_model("models:/fer-emotion@champion")
