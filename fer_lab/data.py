"""FER2013 loading: Kaggle CSV (plain or gzip), image folders, the archives Kaggle hands out
(zip, tar.gz; see ``fer_lab.archives``), or generated faces.

A source is parsed once and cached as arrays keyed by its content digest (nanoGPT's
``prepare.py`` idea), so every later load of the same bytes reads arrays instead of parsing text.
The data inside an archive gets the digest its extracted file would have, so an archive and
what it holds share one cache entry.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from fer_lab import archives

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
USAGES = ("Training", "PublicTest", "PrivateTest", "Test")
SIDE = 48
N_PIXELS = SIDE * SIDE
COLUMNS = ("emotion", "pixels", "Usage")
# Bump when the cached layout or parsing changes, so stale caches are never read.
CACHE_VERSION = "1"
# An image folder's digest also names how its images become faces (``face_image``): "2"
# frames a crop that is not square instead of stretching it. Changing it re-reads folders
# (their digests change) but not CSVs, whose digests models and studies are matched by.
FOLDER_VERSION = "2"
# The adjectives the common image-folder exports of FER2013 name some class folders with.
# Other collections' names for FER2013's classes (CK+: anger, happiness, sadness, ...).
FOLDER_ALIASES = {"disgusted": "disgust", "fearful": "fear", "surprised": "surprise",
                  "anger": "angry", "happiness": "happy", "sadness": "sad"}
# FER+'s eight classes, in FER+'s order under fer-lab's names (``fer_lab.labels.FERPLUS``):
# the classes of an image folder that has a contempt/ folder (CK+ has one).
FERPLUS_CLASSES = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
# What an image folder's class folders can name; a folder read labels image i with
# FOLDER_CLASSES' index (cached so), and FerData turns contempt's into FER+'s labels.
FOLDER_CLASSES = EMOTIONS + ("contempt",)
_FOLDER_NAMES = {**{name: name for name in FOLDER_CLASSES}, **FOLDER_ALIASES}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
_USE_INSTEAD = "use fer2013.csv (inside fer2013.tar.gz) or icml_face_data.csv"
# Kaggle's download has files with some of FER2013's columns: what such a file holds.
_KAGGLE_PARTS = {("Usage",): "the training part only, like Kaggle's train.csv",
                 ("emotion", "Usage"): "unlabelled test images only, like Kaggle's test.csv"}
# A cache entry naming the digest of the data inside an archive, so a later load of the same
# archive finds its arrays without unpacking it; for an image folder (not a CSV) the digest
# is followed by " folders". Bump if archives.search picks differently or the content changes
# (".archive3": FOLDER_VERSION 2).
_ARCHIVE_ALIAS = ".archive3"
_FOLDERS = "folders"

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # images, labels, usage


class DataError(ValueError):
    """A data source that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class FerData:
    """The whole data set as arrays.

    Attributes:
        images: ``(N, 48, 48)`` uint8 grey images.
        labels: ``(N,)`` class ids: label ``i`` is ``classes[i]``.
        usage: ``(N,)`` indices into ``USAGES``.
        digest: content digest of the source (and of the labels, for a label set other
            than the source's own), used as cache key and logged with runs.
        source: where the data came from.
        classes: the class names, FER2013's seven unless a label set
            (``fer_lab.labels``) relabelled the images.
        label_set: the label set's name: ``fer2013``, or e.g. ``ferplus``.
        folders: the labels are the names of the images' class folders (an image folder
            or collection), not FER2013's rows: FER+'s votes do not apply to them.
    """

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    digest: str
    source: str
    classes: tuple[str, ...] = EMOTIONS
    label_set: str = "fer2013"
    folders: bool = False

    def counts(self) -> dict[str, list[int]]:
        """Per-usage class counts, for ``fer-lab data check``."""
        return {
            name: np.bincount(self.labels[self.usage == i], minlength=len(self.classes)).tolist()
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
    classes: tuple[str, ...] = EMOTIONS  # the class names: label i is classes[i]

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


def image_errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises for bytes it cannot decode: unknown formats and truncated files
    (``OSError``), bad values, a damaged PNG chunk after the first IDAT (``SyntaxError``),
    and images too large to be anything but an attack."""
    from PIL import Image

    return OSError, ValueError, SyntaxError, Image.DecompressionBombError


def upright_grey(image):
    """A decoded ``PIL.Image`` as 8-bit grey, the way it is shown: its EXIF orientation
    applied (phones store portraits on their side), and 16-bit or float samples scaled to
    0..255 (Pillow's own conversion clips them, turning a 16-bit face white)."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and values.max() > 255):
            values = values / 257.0  # 16 bits: 65535 -> 255
        elif image.mode == "F" and values.max() <= 1.0:
            values = values * 255.0  # floats in 0..1
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("L")


def face_image(image) -> np.ndarray:
    """A grey ``PIL.Image`` of a face crop, of any size and shape, as the network's input
    (48x48 uint8): resized with Lanczos filtering so that its longer side is 48, and, when
    it is not square, padded to a square about its centre with its edges replicated, as
    the face detector's crops are framed (stretching it would squash the face). Padded
    after resizing: a 1x60000 image costs what a 48x48 one does."""
    from PIL import Image

    w, h = image.size
    if (w, h) == (SIDE, SIDE):
        return np.asarray(image, dtype=np.uint8)
    longer = max(w, h)
    size = (max(1, round(w * SIDE / longer)), max(1, round(h * SIDE / longer)))
    if size != (w, h):
        image = image.resize(size, Image.Resampling.LANCZOS)
    grey = np.asarray(image, dtype=np.uint8)
    top, left = (SIDE - size[1]) // 2, (SIDE - size[0]) // 2
    return np.pad(grey, ((top, SIDE - size[1] - top), (left, SIDE - size[0] - left)),
                  mode="edge")


def default_cache_dir() -> Path:
    """fer-lab's cache folder: ``$FER_LAB_CACHE``, else ``~/.cache/fer-lab``."""
    return Path(os.environ.get("FER_LAB_CACHE") or Path.home() / ".cache" / "fer-lab")


def load(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> FerData:
    """Loads a data set, from the cache when its bytes were parsed before.

    Args:
        source: ``synthetic`` (or ``synthetic:N`` for N images per class), a Kaggle
            ``fer2013.csv`` / ``.csv.gz`` (or ``icml_face_data.csv``), a folder with
            ``train/<emotion>/*`` and ``test/<emotion>/*`` images, a folder of
            ``<emotion>/*`` images only (a labelled collection such as CK+: all test
            rows), or a zip / tar(.gz) holding a CSV or a train/test folder, such as
            the competition's zip or its ``fer2013.tar.gz``.
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
    cache = Path(cache_dir or default_cache_dir())
    if path.is_file() and _is_archive(path):
        return _load_archive(path, source, cache)
    digest = _digest(path)
    arrays = _cached(cache, digest)
    if arrays is None:
        arrays = _read_folder(path) if path.is_dir() else _read_csv(path)
        _save(cache, digest, arrays)
    return _folder_data(arrays, digest, source) if path.is_dir() else FerData(*arrays, digest,
                                                                              source)


def _folder_data(arrays: Arrays, digest: str, source: str) -> FerData:
    """An image folder's data: FER2013's classes, or FER+'s when it has contempt images."""
    images, labels, usage = arrays
    contempt = FOLDER_CLASSES.index("contempt")
    if not (labels == contempt).any():
        return FerData(images, labels, usage, digest, source, folders=True)
    to_ferplus = np.array([FERPLUS_CLASSES.index(name) for name in FOLDER_CLASSES])
    return FerData(images, to_ferplus[labels], usage, digest, source, FERPLUS_CLASSES,
                   "ferplus", folders=True)


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
                  part(other), data.classes)


def _is_archive(path: Path) -> bool:
    try:
        return archives.kind(path) is not None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err})") from err


def _load_archive(path: Path, source: str, cache: Path) -> FerData:
    """Loads the FER2013 CSV or image folder inside a zip or tar, cached under the digest the
    extracted CSV or folder has."""
    alias = cache / f"{_digest(path)}{_ARCHIVE_ALIAS}"
    if alias.exists():  # unpacked before: the arrays may be cached
        digest, _, kind = alias.read_text().strip().partition(" ")
        arrays = _cached(cache, digest)
        if arrays is not None:
            return (_folder_data(arrays, digest, source) if kind == _FOLDERS
                    else FerData(*arrays, digest, source))
    try:
        found = archives.search(path, _archive_note)
    except archives.READ_ERRORS as err:
        raise DataError(f"{path}: cannot be read ({err})") from err
    if found.csv is not None:
        digest = _digest_bytes(found.csv)
    elif found.folder:
        digest = _digest_files(found.folder)
    else:
        raise DataError(f"{path}: no FER2013 data inside; it holds {_listing(found.listing)}; "
                        f"{_USE_INSTEAD}, or an image folder with train/<emotion>/ and "
                        f"test/<emotion>/")
    arrays = _cached(cache, digest)
    if arrays is None:
        if found.csv is not None:
            arrays = _parse_csv(found.csv_name, _gunzip(found.csv_name, found.csv))
        else:
            arrays = _read_images(found.folder_name, _folder_tree(found.folder))
        _save(cache, digest, arrays)
    if found.csv is not None:
        write_atomic(alias, lambda fh: fh.write(digest.encode()))
        return FerData(*arrays, digest, source)
    write_atomic(alias, lambda fh: fh.write(f"{digest} {_FOLDERS}".encode()))
    return _folder_data(arrays, digest, source)


def _listing(items: list[str], most: int = 10) -> str:
    """Items for a one-line message: the first ``most``, then how many more."""
    if not items:
        return "no files"
    more = [f"{len(items) - most} more"] if len(items) > most else []
    return "; ".join(items[:most] + more)


def _cached(cache: Path, digest: str) -> Arrays | None:
    """The arrays cached under ``digest``, or None."""
    cached = cache / f"{digest}.npz"
    if cached.exists():
        try:
            with np.load(cached) as arrays:
                return arrays["images"], arrays["labels"], arrays["usage"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cached.unlink(missing_ok=True)  # damaged (e.g. a disk filled up): parse again
    return None


def _save(cache: Path, digest: str, arrays: Arrays) -> None:
    images, labels, usage = arrays
    _save_atomic(cache / f"{digest}.npz", images=images, labels=labels, usage=usage)


def _digest(path: Path) -> str:
    """sha256 of the file's bytes (or of a folder's names and bytes, and how its images are
    read), plus the cache version."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    if path.is_dir():
        h.update(FOLDER_VERSION.encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _digest_bytes(raw: bytes) -> str:
    """What :func:`_digest` gives for a file holding ``raw``."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    h.update(raw)  # not version + raw: that would copy a 300 MB CSV
    return h.hexdigest()[:16]


def _digest_files(files: dict[str, bytes]) -> str:
    """What :func:`_digest` gives for a folder holding ``files`` (by ``/``-separated path)."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    h.update(FOLDER_VERSION.encode())
    for name in sorted(files, key=lambda name: name.split("/")):  # Path order: by parts
        h.update(str(Path(*name.split("/"))).encode())
        h.update(files[name])
    return h.hexdigest()[:16]


def _save_atomic(target: Path, **arrays: np.ndarray) -> None:
    """Writes arrays to ``target`` without ever leaving a half-written file."""
    write_atomic(target, lambda fh: np.savez(fh, **arrays))


def write_atomic(target: Path, write: Callable) -> None:
    """Writes to a temporary file in the same folder, then renames: no half-written cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cache must be readable
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err})") from err
    return _gunzip(path, raw)


def _gunzip(name: str | Path, raw: bytes) -> bytes:
    """``raw`` decompressed when it is gzip'd (told by its first bytes, not its name)."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{name}: cannot be read ({err})") from err


def _read_csv(path: Path) -> Arrays:
    """Reads and parses a CSV file (plain or gzip'd)."""
    return _parse_csv(path, _read_bytes(path))


def _columns(line: bytes) -> list[str] | None:
    """The column names in a CSV's first line; None when the line is not text."""
    line = line.removeprefix(codecs.BOM_UTF8)  # spreadsheet programs write one
    text = line.decode("utf-8", "replace")
    columns = [c.strip().strip('"') for c in text.split(",")]
    if (b"\x00" in line or "\ufffd" in text) and not set(COLUMNS) & set(columns):
        return None
    return columns


def _archive_note(line: bytes) -> str | None:
    """What an archive member is, from its first line; None for a FER2013 CSV."""
    columns = _columns(line)
    if columns is None:
        return "not a CSV"
    missing = tuple(c for c in COLUMNS if c not in columns)
    if not missing:
        return None
    if missing in _KAGGLE_PARTS:
        return f"no {' or '.join(missing)} column: {_KAGGLE_PARTS[missing]}"
    return f"missing column(s) {list(missing)}"


def _check_header(name: str | Path, line: bytes) -> list[str]:
    """The column names of a FER2013 CSV's first line; else DataError saying what the file
    is and which to use instead."""
    columns = _columns(line)
    if columns is None:
        raise DataError(f"{name}: not a CSV file (nor a zip or tar); expected FER2013's CSV "
                        f"(emotion, pixels, Usage), an archive holding it, or an image folder")
    missing = tuple(c for c in COLUMNS if c not in columns)
    if missing in _KAGGLE_PARTS:
        raise DataError(f"{name}, line 1: missing column(s) {list(missing)}, so it holds "
                        f"{_KAGGLE_PARTS[missing]}; {_USE_INSTEAD}, which hold all three parts")
    if missing:
        shown = str(columns) if len(str(columns)) <= 200 else str(columns)[:200] + "..."
        raise DataError(f"{name}, line 1: missing column(s) {list(missing)}; the header is "
                        f"{shown}, expected {list(COLUMNS)}")
    return columns


def _parse_csv(path: str | Path, raw: bytes) -> Arrays:
    """Parses Kaggle's layout; vectorised, with a row-by-row diagnosis only on failure.

    Args:
        path: the file (or archive member), for messages.
        raw: its bytes, decompressed.
    """
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: the file is empty")
    header = _check_header(path, lines[0])
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


# An image folder's files: {"train" or "test": {class folder: [(file name, read its bytes)]}}.
Tree = dict[str, dict[str, list[tuple[str, Callable[[], bytes]]]]]


def hidden(name: str) -> bool:
    """A file or folder name no image collection means: hidden ones, such as the ``._*``
    files and ``__MACOSX/`` folder a Mac leaves in copies and zips."""
    return name.startswith((".", "__MACOSX"))


def folder_class(folder_name: str) -> str:
    """The class a class folder's name stands for (``happy``, ``Angry``, ``fearful``,
    ``contempt``...): one of ``FOLDER_CLASSES``.

    Raises:
        DataError: not an emotion's name.
    """
    name = _FOLDER_NAMES.get(folder_name.lower())
    if name is None:
        raise DataError(f"{folder_name}: not an emotion folder; expected one of "
                        f"{', '.join(sorted(_FOLDER_NAMES))}")
    return name


def _read_folder(path: Path) -> Arrays:
    """Reads ``train/<emotion>/*`` and ``test/<emotion>/*`` from a folder on disk, or a
    labelled collection ``<emotion>/*`` (CK+, a photo collection): all of it test images."""
    def classes(folder: Path) -> dict[str, list]:
        return {class_dir.name: [(f.name, f.read_bytes) for f in sorted(class_dir.iterdir())
                                 if f.is_file() and not hidden(f.name)]
                for class_dir in sorted(p for p in folder.iterdir()
                                        if p.is_dir() and not hidden(p.name))}

    subfolders = {p.name.lower() for p in path.iterdir() if p.is_dir() and not hidden(p.name)}
    if subfolders and subfolders <= set(_FOLDER_NAMES):
        return _read_images(str(path), {"test": classes(path)})
    tree: Tree = {}
    for part in archives.FOLDER_PARTS:
        folder = path / part
        if not folder.is_dir():
            raise DataError(f"{path}: no '{part}' folder (expected train/<emotion>/ and "
                            f"test/<emotion>/, or only <emotion>/ folders such as "
                            f"{', '.join(EMOTIONS[:3])}, ...)")
        tree[part] = classes(folder)
    return _read_images(str(path), tree)


def _folder_tree(files: dict[str, bytes]) -> Tree:
    """The tree of an image folder's files, given by ``/``-separated path (as in a zip)."""
    tree: Tree = {part: {} for part in archives.FOLDER_PARTS}
    for name in sorted(files, key=lambda name: name.split("/")):
        parts = name.split("/")
        if len(parts) == 3:  # <part>/<class>/<file>; files elsewhere are skipped, as on disk
            tree[parts[0]].setdefault(parts[1], []).append(
                (parts[2], lambda data=files[name]: data))
    return tree


def _read_images(where: str, tree: Tree) -> Arrays:
    """Decodes an image folder's images to 48x48 grey, labelled by their class folder.

    Test images named ``PublicTest_*`` / ``PrivateTest_*`` keep that Usage; others are
    ``Test`` and count only towards ``test_all``.

    Args:
        where: the folder, for messages.
        tree: its files.
    """
    from PIL import Image

    images, labels, usage = [], [], []
    for part, classes in tree.items():
        for class_name, files in classes.items():
            try:
                label = FOLDER_CLASSES.index(folder_class(class_name))
            except DataError as err:
                raise DataError(f"{where}/{part}/{err}") from None
            for name, read in files:
                if Path(name).suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(io.BytesIO(read())) as img:
                        face = face_image(upright_grey(img))
                except image_errors() as err:
                    raise DataError(f"{where}/{part}/{class_name}/{name}: not a readable image "
                                    f"({err})") from err
                images.append(face)
                labels.append(label)
                usage.append(_folder_usage(part, name))
    if not images:
        raise DataError(f"{where}: no images in its emotion folders")
    return np.stack(images), np.array(labels, dtype=np.int64), np.array(usage, dtype=np.int8)


def _folder_usage(part: str, name: str) -> int:
    if part == "train":
        return USAGES.index("Training")
    for usage in ("PublicTest", "PrivateTest"):
        if name.startswith(usage + "_"):
            return USAGES.index(usage)
    return USAGES.index("Test")
