"""The MLflow pyfunc form of any fitted family: faces in, emotions and probabilities out.

The model takes any of: a DataFrame with a ``pixels`` column (Kaggle's 2,304
space-separated values), a DataFrame with an ``image`` column of encoded images (PNG,
JPEG, ... of any size, colour or grey; raw bytes, or base64 text as JSON carries them), or
a numpy array of shape ``(N, 48, 48)`` or ``(N, 2304)``. Input it cannot take raises one
``InputError`` naming the row, which the MLflow scoring server answers with a 400.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ParamSchema, ParamSpec

from fer_lab import calibration
from fer_lab.data import EMOTIONS, N_PIXELS, face_image, image_errors, upright_grey

# MLflow's advice for other kinds of model, printed on every `tune` and `predict`: our
# input is checked by ``to_pixels``, deliberately not by a schema (see ``log_model``).
warnings.filterwarnings("ignore", message=".*Hint: Inferred schema contains integer",
                        category=UserWarning)


def _show_but_type_hint_advice(message, *args, _shown=warnings.showwarning, **kwargs):
    # MLflow checks a PythonModel's type hints (when FerModel is defined, in this module)
    # under its own `simplefilter("once")`, which overrides any filter: the "Add type
    # hints" advice is dropped where warnings are shown instead.
    if "Add type hints to the `predict` method" not in str(message):
        _shown(message, *args, **kwargs)


warnings.showwarning = _show_but_type_hint_advice

SIDE = 48
MODEL_TTA = "model"  # the ``tta`` param's default: the model's own choice
TTA_MODES = ("none", "flip", "crops")  # as fer_lab.training, without importing torch here


class InputError(MlflowException, ValueError):
    """Input the model cannot take; the message names the row."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def parse_pixels(text: Any, row: int) -> np.ndarray:
    """One Kaggle-style pixel string as 2,304 uint8 values."""
    try:
        values = np.array(str(text).split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise InputError(f"row {row}: pixels must be integers 0..255") from None
    if values.size != N_PIXELS:
        raise InputError(f"row {row}: expected {N_PIXELS} pixel values, got {values.size}")
    if values.min() < 0 or values.max() > 255:
        raise InputError(f"row {row}: pixel values must be in 0..255, "
                         f"got {values.min()}..{values.max()}")
    return values.astype(np.uint8)


def open_grey(data: Any, row: int):
    """An encoded image (bytes, or base64 text) as a grey ``PIL.Image``, decoded in full.

    Raises:
        InputError: not image bytes, not base64, or not decodable.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, str):
        try:
            # Wrapped base64 (`base64` without -w0, encodebytes, openssl) has line breaks.
            data = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"row {row}: image text must be base64-encoded image bytes") from None
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"row {row}: image must be encoded image bytes or base64 text, "
                         f"not {type(data).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return upright_grey(image)
    except UnidentifiedImageError:
        raise InputError(f"row {row}: cannot decode the image: not in a format Pillow reads "
                         "(PNG, JPEG, BMP, GIF, TIFF, WebP, ...)") from None
    except image_errors() as err:
        raise InputError(f"row {row}: cannot decode the image ({err})") from None


def face_pixels(image) -> np.ndarray:
    """A grey ``PIL.Image`` of a face crop, of any size and shape, as the network's input
    (``fer_lab.data.face_image``), flat uint8."""
    return face_image(image).reshape(N_PIXELS)


def decode_image(data: Any, row: int) -> np.ndarray:
    """An encoded image (bytes, or base64 text) as one 48x48 grey face, flat uint8:
    colour becomes luminance and other sizes are resized, so a face crop of any size and
    format gives the network's input."""
    return face_pixels(open_grey(data, row))


def _array_pixels(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "uif":
        raise InputError(f"expected a numeric pixel array, got dtype {array.dtype}")
    if array.shape == (0,):  # [] (JSON {"inputs": []}): no faces, as an empty table gives
        return np.empty((0, N_PIXELS), np.uint8)
    if array.ndim == 3 and array.shape[1:] == (SIDE, SIDE):
        array = array.reshape(len(array), N_PIXELS)
    if array.ndim != 2 or array.shape[1] != N_PIXELS:
        raise InputError(f"expected shape (N, {SIDE}, {SIDE}) or (N, {N_PIXELS}), "
                         f"got {array.shape}")
    for row, values in enumerate(array):
        if array.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise InputError(f"row {row}: pixel values must be finite")
        if values.min(initial=0) < 0 or values.max(initial=0) > 255:
            raise InputError(f"row {row}: pixel values must be in 0..255, "
                             f"got {values.min()}..{values.max()}")
        if array.dtype.kind == "f" and not np.all(values == np.round(values)):
            raise InputError(f"row {row}: pixel values must be whole numbers 0..255 "
                             "(scale 0..1 images by 255 and round)")
    return array.astype(np.uint8)


def to_pixels(model_input: Any) -> np.ndarray:
    """Any accepted input form as flat ``(N, 2304)`` uint8 pixels.

    Raises:
        InputError: the input, or one of its rows, is not a face the model can take.
    """
    if isinstance(model_input, pd.DataFrame):
        # ICML's CSV names its columns "emotion, Usage, pixels": " pixels" is pixels.
        model_input = model_input.rename(columns=lambda c: c.strip() if isinstance(c, str)
                                         else c)
        if "pixels" in model_input.columns:
            rows = [parse_pixels(v, i) for i, v in enumerate(model_input["pixels"])]
        elif "image" in model_input.columns:
            rows = [decode_image(v, i) for i, v in enumerate(model_input["image"])]
        else:
            raise InputError(f"expected a 'pixels' or an 'image' column, "
                             f"got {list(map(str, model_input.columns))}")
        return np.stack(rows) if rows else np.empty((0, N_PIXELS), np.uint8)
    if isinstance(model_input, (np.ndarray, list)):
        try:
            array = np.asarray(model_input)
        except ValueError as err:  # ragged nested lists
            raise InputError(f"expected a rectangular pixel array ({err})") from None
        return _array_pixels(array)
    raise InputError("expected a DataFrame with a 'pixels' or 'image' column, or an array of "
                     f"shape (N, {SIDE}, {SIDE}) or (N, {N_PIXELS}); "
                     f"got {type(model_input).__name__}")


def predictions_frame(proba: np.ndarray, classes: Sequence[str] = EMOTIONS) -> pd.DataFrame:
    """The output table: ``emotion``, ``emotion_id`` and one probability column per class,
    named by ``classes`` (label ``i`` is ``classes[i]``)."""
    if proba.shape[1] != len(classes):
        raise ValueError(f"{proba.shape[1]} probability columns for {len(classes)} classes "
                         f"({', '.join(classes)})")
    ids = proba.argmax(axis=1)
    frame = pd.DataFrame({"emotion": [classes[i] for i in ids], "emotion_id": ids})
    for i, name in enumerate(classes):
        frame[name] = proba[:, i].astype(np.float64)
    return frame


class FerModel(mlflow.pyfunc.PythonModel):
    """Wraps a fitted estimator of any family; its preprocessing travels inside it, and
    so does the temperature that calibrates its probabilities (``fer_lab.calibration``,
    fitted on the validation carve; 1 for models logged before calibration) with its own
    test-time augmentation, the temperature of each other mode (``temperatures``: a
    network's one view is more confident than its ten; empty for other families and for
    models logged before, which use ``temperature`` for every mode), and the name of the
    label set it was trained on (``fer2013`` for models logged before label sets). Its
    output has a probability column per class of the estimator (``classes``)."""

    def __init__(self, estimator, temperature: float = 1.0, label_set: str = "fer2013",
                 temperatures: dict[str, float] | None = None):
        self.estimator = estimator
        self.temperature = float(temperature)
        self.label_set = label_set
        self.temperatures = {mode: float(t) for mode, t in (temperatures or {}).items()}

    def temperature_for(self, tta: str | None = None) -> float:
        """The temperature that calibrates predictions with test-time augmentation ``tta``
        (``None`` or ``model``: the model's own)."""
        if tta in (None, MODEL_TTA):
            return getattr(self, "temperature", 1.0)
        return getattr(self, "temperatures", {}).get(tta, getattr(self, "temperature", 1.0))

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in label order: the estimator's, FER2013's seven for an
        estimator fitted before it kept them."""
        return tuple(getattr(self.estimator, "class_names_", EMOTIONS))

    def load_context(self, context) -> None:
        """On loading, settles how this machine predicts fastest (a CNN measures it once per
        machine), so the first request does not pay for it."""
        settle = getattr(self.estimator, "inference_setting", None)
        if settle is not None:
            settle()

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        """Predicts calibrated probabilities. ``params={"calibrated": False}`` gives the
        estimator's raw ones; ``params={"tta": "none" | "flip" | "crops"}`` overrides a
        CNN's test-time augmentation (the fewer views, the faster) for this call."""
        params = params or {}
        calibrated = params.get("calibrated", True)
        if not isinstance(calibrated, (bool, np.bool_)):
            raise InputError(f"params: calibrated must be true or false, not {calibrated!r}")
        pixels = to_pixels(model_input)
        if not len(pixels):
            return predictions_frame(np.empty((0, len(self.classes))), self.classes)
        tta = params.get("tta") or MODEL_TTA
        proba = self._estimator(tta).predict_proba(pixels)
        if calibrated:
            proba = calibration.scale(proba, self.temperature_for(tta))
        return predictions_frame(proba, self.classes)

    def _estimator(self, tta: str):
        """The estimator, with a CNN's test-time augmentation overridden unless ``model``."""
        from fer_lab.models import has_views, with_tta

        estimator = self.estimator
        if tta != MODEL_TTA:
            if not has_views(estimator):
                raise InputError(f"params: tta applies to models with test-time augmentation "
                                 f"(cnn, an ensemble with networks), not "
                                 f"{type(estimator).__name__}")
            if tta not in TTA_MODES:
                raise InputError(f"params: tta must be one of {TTA_MODES}, not {tta!r}")
            estimator = with_tta(estimator, tta)
        return estimator


def pixel_strings(X: np.ndarray) -> list[str]:
    """Flat pixels as Kaggle-style strings."""
    return [" ".join(map(str, row)) for row in np.asarray(X).reshape(len(X), -1)]


def classes_of(model) -> tuple[str, ...]:
    """The class names of a model loaded with ``mlflow.pyfunc.load_model`` (or of a
    ``FerModel``), in label order: its probability columns."""
    python_model = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") \
        else model
    return python_model.classes


def label_set_of(model) -> str:
    """The label set a loaded model (or a ``FerModel``) was trained on; ``fer2013`` for
    models logged before label sets."""
    python_model = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") \
        else model
    return getattr(python_model, "label_set", "fer2013")


def log_model(estimator, example: np.ndarray, temperature: float = 1.0,
              label_set: str = "fer2013", temperatures: dict[str, float] | None = None) -> str:
    """Logs a fitted estimator, the temperature that calibrates it (and each test-time
    augmentation's, ``temperatures``) and the name of the label set it was trained on, as
    a pyfunc model with a signature and an input example; returns the model's URI. Its
    output columns are the estimator's classes.

    The signature declares the output table; its input side is left open on purpose:
    MLflow enforces an input schema before the model sees the data, and a column schema
    (``pixels: string``) would reject the image column and turn numpy arrays into frames
    of 2,304 unnamed columns. ``to_pixels`` checks every input form instead.
    """
    frame = pd.DataFrame({"pixels": pixel_strings(example)})
    model = FerModel(estimator, temperature, label_set, temperatures)
    output = model.predict(None, frame)
    signature = ModelSignature(inputs=None, outputs=infer_signature(frame, output).outputs,
                               params=ParamSchema([ParamSpec("tta", "string", MODEL_TTA),
                                                   ParamSpec("calibrated", "boolean", True)]))
    with _quiet("mlflow.pyfunc", "mlflow.models.model"):
        info = mlflow.pyfunc.log_model(name="model", python_model=model,
                                       signature=signature, input_example=frame,
                                       pip_requirements=requirements(estimator))
    return info.model_uri


# What loading and predicting with a logged model imports, beside the estimator's own
# framework. Named here rather than inferred: MLflow's inference loads the model in a
# subprocess (about 6 s per logged model) to find what this list already says.
_SERVING_DISTRIBUTIONS = ("mlflow", "cloudpickle", "numpy", "pandas", "scikit-learn", "scipy",
                          "pillow")


def requirements(estimator) -> list[str]:
    """The pinned requirements of a logged model: the serving distributions, torch for a
    network, and fer-lab itself where it is installed (a source checkout has no version
    to pin)."""
    from importlib import metadata

    names = list(_SERVING_DISTRIBUTIONS)
    from fer_lab.models import uses_torch

    if uses_torch(estimator):
        names.append("torch")
    pinned = []
    for name in names + ["fer-lab"]:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return pinned


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Only errors from these loggers meanwhile (MLflow's notes on pickling a Python object
    and validating the input example, printed on every logged model)."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
