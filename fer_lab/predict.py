"""Classifying images, folders and Kaggle-style CSV files with a logged or registered model.

An image is one face crop unless faces are detected: then the faces of a full photo are
found and cropped as ``fer-lab analyze`` finds and crops them (``fer_lab.analysis.detect``),
and each one is classified with its box.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_lab.analysis import detect as face_detection
from fer_lab.analysis.sources import visible_files
from fer_lab.pyfunc import InputError, classes_of, face_pixels, open_grey, parse_pixels

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CSV_SUFFIXES = (".csv", ".csv.gz")


@dataclass(frozen=True)
class Face:
    """One face to classify: where it came from and its 48x48 grey pixels."""

    source: str
    pixels: np.ndarray
    box: tuple[int, int, int, int] | None = None  # x, y, width, height in the source image


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and the image and CSV files under folders named, in sorted order.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    out: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_dir():
            out += [p for p in visible_files(path) if _is_input(p)]
        else:
            out.append(path)
    return out


def _is_input(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or path.name.lower().endswith(CSV_SUFFIXES)


def faces(paths: Iterable[Path], detect: bool = False,
          no_face: Callable[[Path], None] | None = None,
          detector: str = "auto",
          unreadable: Callable[[Path, InputError], None] | None = None) -> Iterator[Face]:
    """The faces in image files (each a crop, or the detected faces) and CSV files (a
    ``pixels`` column, as Kaggle's files and ICML's ``emotion, Usage, pixels`` have it;
    rows named ``file:row``).

    Args:
        paths: files to read.
        detect: find the faces in each image instead of taking it as one face.
        no_face: called with an image in which detection found no face.
        detector: the face detector's name (``fer_lab.analysis.detect``).
        unreadable: called with a file that cannot be read (an undecodable image, a CSV
            without a ``pixels`` column or with a bad row: its later rows) and why; the
            others go on. None: such a file raises ``InputError``.
    """
    finder = functools.cache(lambda: face_detection.create(detector))  # at its first use
    for path in paths:
        try:
            yield from _faces_of(path, detect, no_face, finder)
        except InputError as err:
            if unreadable is None:
                raise
            unreadable(path, err)


def _faces_of(path: Path, detect: bool, no_face: Callable[[Path], None] | None,
              detector: Callable[[], Any]) -> Iterator[Face]:
    if path.name.lower().endswith(CSV_SUFFIXES):
        try:
            frame = pd.read_csv(path, usecols=lambda c: c.strip() == "pixels")
        except (ValueError, OSError, EOFError, zlib.error) as err:
            # pandas' parser errors, an empty or binary file, a damaged .csv.gz, no access
            raise InputError(f"{path}: not a readable CSV ({err})") from None
        frame.columns = [c.strip() for c in frame.columns]
        if "pixels" not in frame.columns:
            raise InputError(f"{path}: expected a 'pixels' column")
        for i, text in enumerate(frame["pixels"]):
            try:
                yield Face(f"{path}:{i + 2}", parse_pixels(text, i))
            except InputError as err:
                raise InputError(f"{path}, line {i + 2}: "
                                 f"{err.message.removeprefix(f'row {i}: ')}") from None
        return
    try:
        image = open_grey(path.read_bytes(), 0)
    except InputError as err:
        raise InputError(f"{path}: {err.message.removeprefix('row 0: ')}") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if not detect:
        yield Face(str(path), face_pixels(image))
        return
    finder = detector()
    grey = np.asarray(image)
    boxes = finder(grey)
    if not boxes and no_face is not None:
        no_face(path)
    for box in boxes:
        yield Face(str(path), face_detection.crop(grey, box, finder.margin), box)


def classify(model, found: list[Face]) -> pd.DataFrame:
    """One row per face: ``file``, ``box`` (when detected), ``emotion``, ``confidence`` and
    the probability of each of the model's classes."""
    classes = list(classes_of(model))
    columns = ["file", "box", "emotion", "confidence", *classes]
    if not found:
        return pd.DataFrame(columns=columns)
    out = model.predict(np.stack([f.pixels for f in found]))
    out.insert(0, "file", [f.source for f in found])
    out.insert(1, "box", ["" if f.box is None else "{},{},{},{}".format(*f.box) for f in found])
    out["confidence"] = out[classes].max(axis=1)
    return out[columns]


def explain_faces(model, found: list[Face], table: pd.DataFrame, out: Path,
                  method: str = "auto") -> list[Path]:
    """Writes one overlay PNG per classified face into ``out``: the heat map of the class
    it was given (``fer_lab.explain``), named ``<n>_<file>_<emotion>.png``."""
    import re

    from fer_lab import explain

    estimator = model.unwrap_python_model().estimator
    classes = classes_of(model)
    targets = np.array([classes.index(e) for e in table["emotion"]])
    pixels = np.stack([f.pixels for f in found])
    maps = explain.explain(estimator, pixels, targets, method)
    names = [f"{i:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(f.source).name)}_{emotion}"
             for i, (f, emotion) in enumerate(zip(found, table["emotion"]))]
    return explain.write_overlays(pixels, maps, names, Path(out))
