"""FER2013 loading: Kaggle CSV (plain or gzip), image folders, or generated faces.

A source is parsed once and cached as arrays keyed by its content digest (nanoGPT's
``prepare.py`` idea), so every later load of the same bytes reads arrays instead of parsing text.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
USAGES = ("Training", "PublicTest", "PrivateTest", "Test")
SIDE = 48
N_PIXELS = SIDE * SIDE
COLUMNS = ("emotion", "pixels", "Usage")
# Bump when the cached layout or parsing changes, so stale caches are never read.
CACHE_VERSION = "1"
# Folder names used by the common image-folder exports of FER2013.
_FOLDER_NAMES = {
    **{name: i for i, name in enumerate(EMOTIONS)},
    "angry": 0, "disgusted": 1, "fearful": 2, "surprised": 5,
}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


class DataError(ValueError):
    """A data source that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class FerData:
    """The whole data set as arrays.

    Attributes:
        images: ``(N, 48, 48)`` uint8 grey images.
        labels: ``(N,)`` emotion ids 0..6.
        usage: ``(N,)`` indices into ``USAGES``.
        digest: content digest of the source, used as cache key and logged with runs.
        source: where the data came from.
    """

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    digest: str
    source: str

    def counts(self) -> dict[str, list[int]]:
        """Per-usage class counts, for ``fer-lab data check``."""
        return {
            name: np.bincount(self.labels[self.usage == i], minlength=len(EMOTIONS)).tolist()
            for i, name in enumerate(USAGES)
            if (self.usage == i).any()
        }


@dataclass(frozen=True)
class Split:
    """One named part of the data: flat pixels ``X`` (N, 2304) uint8 and labels ``y``."""

    X: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    """The evaluation protocol's splits.

    ``val`` is a stratified, seeded carve of Training; the test splits are never used to
    choose anything. ``test_all`` is PublicTest + PrivateTest (the seed's 7,178 images).
    """

    train: Split
    val: Split
    test_public: Split
    test_private: Split
    test_all: Split
    test_other: Split | None = None  # "Test" rows of image-folder data: in test_all only

    def test_parts(self) -> dict[str, Split]:
        """The non-empty disjoint parts of ``test_all``: test_private, test_public and the
        rest ("test_other")."""
        named = {"test_private": self.test_private, "test_public": self.test_public,
                 "test_other": self.test_other}
        return {name: split for name, split in named.items() if split is not None and len(split)}

    def tests(self) -> dict[str, Split]:
        """The non-empty test splits by name."""
        named = {"test_private": self.test_private, "test_public": self.test_public,
                 "test_all": self.test_all}
        return {name: split for name, split in named.items() if len(split)}


def default_cache_dir() -> Path:
    """fer-lab's cache folder: ``$FER_LAB_CACHE``, else ``~/.cache/fer-lab``."""
    return Path(os.environ.get("FER_LAB_CACHE") or Path.home() / ".cache" / "fer-lab")


def load(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> FerData:
    """Loads a data set, from the cache when its bytes were parsed before.

    Args:
        source: ``synthetic`` (or ``synthetic:N`` for N images per class), a Kaggle
            ``fer2013.csv`` / ``.csv.gz``, or a folder with ``train/<emotion>/*`` and
            ``test/<emotion>/*`` images.
        cache_dir: where parsed arrays are kept; default ``$FER_LAB_CACHE`` or
            ``~/.cache/fer-lab``.

    Raises:
        DataError: the source is missing or malformed; nothing is cached then.
    """
    source = str(source)
    if source == "synthetic" or source.startswith("synthetic:"):
        from fer_lab.synthetic import SYNTHETIC_VERSION, make_faces

        per_class = int(source.partition(":")[2] or 500)
        images, labels, usage = make_faces(per_class=per_class, seed=0)
        return FerData(images, labels, usage, f"synthetic-v{SYNTHETIC_VERSION}-{per_class}",
                       source)
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    digest = _digest(path)
    cached = Path(cache_dir or default_cache_dir()) / f"{digest}.npz"
    if cached.exists():
        try:
            with np.load(cached) as arrays:
                return FerData(arrays["images"], arrays["labels"], arrays["usage"], digest,
                               source)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cached.unlink(missing_ok=True)  # damaged (e.g. a disk filled up): parse again
    if path.is_dir():
        images, labels, usage = _read_folder(path)
    else:
        images, labels, usage = _read_csv(path)
    _save_atomic(cached, images=images, labels=labels, usage=usage)
    return FerData(images, labels, usage, digest, source)


def split(data: FerData, val_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Splits per the protocol: train/val from Training, the tests from the rest."""
    X = data.images.reshape(len(data.images), N_PIXELS)
    training = np.flatnonzero(data.usage == USAGES.index("Training"))
    try:
        train_idx, val_idx = train_test_split(
            training, test_size=val_fraction, random_state=seed, stratify=data.labels[training]
        )
    except ValueError as err:  # too few Training rows of a class to stratify
        raise DataError(f"{data.source}: cannot carve a stratified validation split from "
                        f"{len(training)} Training rows ({err})") from err
    public = np.flatnonzero(data.usage == USAGES.index("PublicTest"))
    private = np.flatnonzero(data.usage == USAGES.index("PrivateTest"))
    every_test = np.flatnonzero(data.usage != USAGES.index("Training"))
    other = np.flatnonzero(data.usage == USAGES.index("Test"))

    def part(idx: np.ndarray) -> Split:
        idx = np.sort(idx)
        return Split(np.ascontiguousarray(X[idx]), data.labels[idx].astype(np.int64))

    return Splits(part(train_idx), part(val_idx), part(public), part(private), part(every_test),
                  part(other))


def _digest(path: Path) -> str:
    """sha256 of the file's bytes (or of a folder's names and bytes), plus the cache version."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _save_atomic(target: Path, **arrays: np.ndarray) -> None:
    """Writes to a temporary file in the same folder, then renames: no half-written cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cache must be readable
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot be read ({err})") from err
    return raw


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parses Kaggle's layout; vectorised, with a row-by-row diagnosis only on failure."""
    lines = _read_bytes(path).replace(b"\r\n", b"\n").split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: the file is empty")
    if lines[0].startswith(codecs.BOM_UTF8):  # spreadsheet programs write one
        lines[0] = lines[0][len(codecs.BOM_UTF8):]
    header = [c.strip().strip(b'"').decode("utf-8", "replace") for c in lines[0].split(b",")]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}, line 1: missing column(s) {missing}; the header is {header}, "
                        f"expected {list(COLUMNS)}")
    if len(lines) == 1:
        raise DataError(f"{path}: the file has a header but no rows")
    where = [header.index(c) for c in COLUMNS]
    rows = [line.split(b",") for line in lines[1:]]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {number}: {len(row)} fields, expected {len(header)}")
    emotions, pixels, usages = ([row[i].strip().strip(b'"') for row in rows] for i in where)
    labels = _parse_labels(path, emotions)
    usage = _parse_usage(path, usages)
    images = np.empty((len(pixels), N_PIXELS), dtype=np.uint8)
    chunk = 2048  # rows per vectorised step: keeps the temporaries in a few MB
    for start in range(0, len(pixels), chunk):
        part = _parse_pixels(pixels[start:start + chunk])
        if part is None:
            _diagnose_pixels(path, pixels[start:start + chunk], first_line=start + 2)
        images[start:start + chunk] = part
    return images.reshape(-1, SIDE, SIDE), labels, usage


def _parse_pixels(fields: list[bytes]) -> np.ndarray | None:
    """Parses rows of space-separated 0..255 integers at numpy speed; None if any is bad.

    ``np.fromstring`` or a per-row ``split`` take 3-7 s on the full file; decoding the
    digits from the raw bytes takes well under one.
    """
    buf = np.frombuffer(b" ".join(fields), dtype=np.uint8)
    is_space = buf == ord(" ")
    digit = buf.astype(np.int16) - ord("0")
    if not ((digit >= 0) & (digit <= 9) | is_space).all():
        return None
    if any(field.count(b" ") != N_PIXELS - 1 for field in fields):
        return None
    ends = np.flatnonzero(is_space)
    starts = np.concatenate(([0], ends + 1))
    ends = np.concatenate((ends, [buf.size]))
    length = ends - starts
    if length.min() < 1 or length.max() > 3:
        return None
    last = buf.size - 1
    d0 = digit[starts]
    d1 = digit[np.minimum(starts + 1, last)]
    d2 = digit[np.minimum(starts + 2, last)]
    values = np.where(length == 1, d0, np.where(length == 2, d0 * 10 + d1, d0 * 100 + d1 * 10 + d2))
    if values.max() > 255:
        return None
    return values.astype(np.uint8).reshape(len(fields), N_PIXELS)


def _parse_labels(path: Path, emotions: list[bytes]) -> np.ndarray:
    allowed = {str(i).encode(): i for i in range(len(EMOTIONS))}
    for number, value in enumerate(emotions, start=2):
        if value not in allowed:
            raise DataError(f"{path}, line {number}: emotion {value.decode(errors='replace')!r} "
                            f"is not a label 0..{len(EMOTIONS) - 1}")
    return np.array([allowed[v] for v in emotions], dtype=np.int64)


def _parse_usage(path: Path, usages: list[bytes]) -> np.ndarray:
    allowed = {u.encode(): i for i, u in enumerate(USAGES[:3])}
    for number, value in enumerate(usages, start=2):
        if value not in allowed:
            raise DataError(f"{path}, line {number}: Usage {value.decode(errors='replace')!r} "
                            f"is not one of {list(USAGES[:3])}")
    return np.array([allowed[v] for v in usages], dtype=np.int8)


def _diagnose_pixels(path: Path, pixels: list[bytes], first_line: int) -> None:
    """Finds the first bad pixel row of a chunk and raises with its line.

    Only runs on a chunk the fast parser rejected, so it must find the fault: its checks
    are the parser's (single spaces, 1-3 digits, 0..255), spelled out per token.
    """
    for number, field in enumerate(pixels, start=first_line):
        n = len(field.split())
        if n != N_PIXELS:
            raise DataError(f"{path}, line {number}: {n} pixels, expected {N_PIXELS}")
        tokens = field.split(b" ")
        if len(tokens) != N_PIXELS:
            raise DataError(f"{path}, line {number}: pixels must be separated by single spaces")
        for k, token in enumerate(tokens, start=1):
            text = token.decode(errors="replace")
            if not re.fullmatch(r"-?[0-9]+", text):
                raise DataError(f"{path}, line {number}: pixel {k} is {text!r}, not an integer")
            if len(text) > 3 or not 0 <= int(text) <= 255:
                raise DataError(f"{path}, line {number}: pixel {k} is {text!r}, outside 0..255")
    raise AssertionError("the fast parser rejected pixels the diagnosis accepts")


def _read_folder(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads ``train/<emotion>/*`` and ``test/<emotion>/*``.

    Test images named ``PublicTest_*`` / ``PrivateTest_*`` keep that Usage; others are
    ``Test`` and count only towards ``test_all``.
    """
    from PIL import Image, UnidentifiedImageError

    images, labels, usage = [], [], []
    for part in ("train", "test"):
        folder = path / part
        if not folder.is_dir():
            raise DataError(f"{path}: no '{part}' folder (expected train/<emotion>/ and "
                            f"test/<emotion>/)")
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            label = _FOLDER_NAMES.get(class_dir.name.lower())
            if label is None:
                raise DataError(f"{class_dir}: not an emotion folder; expected one of "
                                f"{sorted(_FOLDER_NAMES)}")
            for file in sorted(class_dir.iterdir()):
                if file.suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(file) as img:
                        grey = img.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
                except (OSError, UnidentifiedImageError) as err:
                    raise DataError(f"{file}: not a readable image ({err})") from err
                images.append(np.asarray(grey, dtype=np.uint8))
                labels.append(label)
                usage.append(_folder_usage(part, file.name))
    if not images:
        raise DataError(f"{path}: no images under train/ and test/")
    return np.stack(images), np.array(labels, dtype=np.int64), np.array(usage, dtype=np.int8)


def _folder_usage(part: str, name: str) -> int:
    if part == "train":
        return USAGES.index("Training")
    for usage in ("PublicTest", "PrivateTest"):
        if name.startswith(usage + "_"):
            return USAGES.index(usage)
    return USAGES.index("Test")
