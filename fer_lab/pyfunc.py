"""The MLflow pyfunc form of any fitted family: pixels in, emotions and probabilities out."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from fer_lab.data import EMOTIONS, N_PIXELS


class InputError(ValueError):
    """Input the model cannot take; the message names the row."""


def to_pixels(model_input) -> np.ndarray:
    """Turns a DataFrame with a ``pixels`` column, or an (N, 48, 48) / (N, 2304) array, into
    flat uint8 pixels."""
    if isinstance(model_input, pd.DataFrame):
        if "pixels" not in model_input.columns:
            raise InputError(f"expected a 'pixels' column, got {list(model_input.columns)}")
        rows = []
        for i, text in enumerate(model_input["pixels"]):
            try:
                values = np.array(str(text).split(), dtype=np.int64)
            except ValueError:
                raise InputError(f"row {i}: pixels must be integers 0..255") from None
            if values.size != N_PIXELS or values.min() < 0 or values.max() > 255:
                raise InputError(f"row {i}: expected {N_PIXELS} integers in 0..255, "
                                 f"got {values.size} in {values.min()}..{values.max()}")
            rows.append(values)
        return np.stack(rows).astype(np.uint8) if rows else np.empty((0, N_PIXELS), np.uint8)
    array = np.asarray(model_input)
    if array.ndim == 3:
        array = array.reshape(len(array), -1)
    if array.ndim != 2 or array.shape[1] != N_PIXELS:
        raise InputError(f"expected shape (N, 48, 48) or (N, {N_PIXELS}), got {array.shape}")
    return array.astype(np.uint8)


def predictions_frame(proba: np.ndarray) -> pd.DataFrame:
    """The output table: ``emotion``, ``emotion_id`` and one probability column per class."""
    ids = proba.argmax(axis=1)
    frame = pd.DataFrame({"emotion": [EMOTIONS[i] for i in ids], "emotion_id": ids})
    for i, name in enumerate(EMOTIONS):
        frame[name] = proba[:, i].astype(np.float64)
    return frame


class FerModel(mlflow.pyfunc.PythonModel):
    """Wraps a fitted estimator of any family; its preprocessing travels inside it."""

    def __init__(self, estimator):
        self.estimator = estimator

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        return predictions_frame(self.estimator.predict_proba(to_pixels(model_input)))


def log_model(estimator, example: np.ndarray) -> str:
    """Logs a fitted estimator as a pyfunc model with signature and input example."""
    frame = pd.DataFrame({"pixels": [" ".join(map(str, row)) for row in example]})
    output = FerModel(estimator).predict(None, frame)
    info = mlflow.pyfunc.log_model(name="model", python_model=FerModel(estimator),
                                   signature=infer_signature(frame, output), input_example=frame)
    return info.model_uri
