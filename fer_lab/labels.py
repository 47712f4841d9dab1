"""Label sets: which classes the images are labelled with, and where the labels come from.

- ``fer2013`` (the default): the competition's own labels, 7 classes, read with the pixels.
- ``ferplus``: Microsoft's FER+ relabelling (``fer2013new.csv``, Barsoum et al. 2016): ten
  crowd votes per image over 8 emotions, ``unknown`` and ``NF`` (not a face), turned into
  one label by FER+'s majority rule (``majority``). Images without a majority, or whose
  majority is unknown or not a face, are dropped. Its 8 classes keep FER+'s order under
  fer-lab's names: neutral, happy, surprise, sad, angry, disgust, fear, contempt.

The votes file has one row per row of ``fer2013.csv``, in the same order, so the two are
joined by position (its ``Image name`` column has empty and repeated names). ``load`` finds
it beside the data (``fer2013new.csv`` in the same folder) unless ``--labels`` names it:
``ferplus:/path/to/fer2013new.csv``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fer_lab import data as fer_data
from fer_lab.data import USAGES, DataError, FerData


@dataclass(frozen=True)
class LabelSet:
    """A named list of classes: label ``i`` is ``classes[i]``."""

    name: str
    classes: tuple[str, ...]


FER2013 = LabelSet("fer2013", fer_data.EMOTIONS)
FERPLUS = LabelSet("ferplus", fer_data.FERPLUS_CLASSES)
LABEL_SETS = {s.name: s for s in (FER2013, FERPLUS)}
DEFAULT = FER2013.name
VOTES_FILE = "fer2013new.csv"
# fer2013new.csv's vote columns, in FER+'s order: its 8 emotions, then unknown and NF.
VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                "contempt", "unknown", "NF")
DROPPED = -1  # ``majority``'s label for an image FER+ leaves out
# Bump when the rule or the votes' reading changes: the relabelled data's digest changes.
FERPLUS_VERSION = "1"


def smallest_set(class_names) -> LabelSet:
    """The label set with the fewest classes that has all of ``class_names``: FER2013's
    for its seven emotions, FER+'s once ``contempt`` is among them."""
    for label_set in sorted(LABEL_SETS.values(), key=lambda s: len(s.classes)):
        if set(class_names) <= set(label_set.classes):
            return label_set
    raise DataError(f"no label set has all of {', '.join(sorted(set(class_names)))}")


@dataclass(frozen=True)
class LabelSpec:
    """What ``--labels`` asks for: a label set, and for FER+ the votes file when named."""

    name: str
    votes: Path | None = None


def parse(text: str) -> LabelSpec:
    """``--labels``' value: ``fer2013``, ``ferplus`` or ``ferplus:/path/to/fer2013new.csv``.

    Raises:
        ValueError: an unknown label set, or a file given to one that reads none.
    """
    name, colon, path = str(text).partition(":")
    if name not in LABEL_SETS:
        raise ValueError(f"--labels {text!r}: unknown label set {name!r}; known: "
                         f"{', '.join(LABEL_SETS)} (ferplus:FILE names the votes file)")
    if colon and name != FERPLUS.name:
        raise ValueError(f"--labels {text!r}: only ferplus reads a file of its own")
    if colon and not path:
        raise ValueError(f"--labels {text!r}: give the votes file after the colon")
    return LabelSpec(name, Path(path) if path else None)


def classes_of(name: str | None) -> tuple[str, ...]:
    """The classes of label set ``name``; FER2013's for None (records from before label
    sets)."""
    return LABEL_SETS[name or DEFAULT].classes


def class_names(y: np.ndarray, names: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """The class names an estimator fits with: ``names`` (label ``i`` is ``names[i]``),
    FER2013's seven when None.

    Raises:
        ValueError: a label in ``y`` has no name.
    """
    names = FER2013.classes if names is None else tuple(names)
    y = np.asarray(y)
    if len(y) and (y.min() < 0 or y.max() >= len(names)):
        raise ValueError(f"labels must be 0..{len(names) - 1} (classes {', '.join(names)}), "
                         f"got {y.min()}..{y.max()}; give the data's class names")
    return names


def translate(y: np.ndarray, classes: tuple[str, ...], to: tuple[str, ...]) -> np.ndarray:
    """Labels of ``classes`` as the labels of the same names in ``to`` (FER2013's seven are
    all among FER+'s eight, for one).

    Raises:
        DataError: a label in ``y`` names a class ``to`` lacks.
    """
    y = np.asarray(y)
    if tuple(classes) == tuple(to):
        return y
    missing = sorted({classes[i] for i in np.unique(y)} - set(to))
    if missing:
        raise DataError(f"faces labelled {', '.join(missing)}: not among the model's classes "
                        f"({', '.join(to)})")
    index = np.array([to.index(c) if c in to else DROPPED for c in classes])
    return index[y]


def majority(votes: np.ndarray) -> np.ndarray:
    """FER+'s majority labels, as Microsoft's FERPlus code makes them (``_process_data``
    in mode ``majority``, then ``load_folders``).

    A count of one vote is dropped (set to 0) as an outlier; the image gets the class with
    the most remaining votes when they are more than half of all remaining votes (unknown
    and NF included), else it is unknown. Images whose label is unknown or NF are dropped.

    Args:
        votes: ``(N, 10)`` vote counts in ``VOTE_COLUMNS`` order.

    Returns:
        ``(N,)`` labels 0..7 (FER+'s order), ``DROPPED`` for images left out.
    """
    votes = np.asarray(votes, dtype=np.int64)
    kept = np.where(votes <= 1, 0, votes)
    top = kept.argmax(axis=1)  # the first of equal counts, as np.argmax in FERPlus
    peak = kept[np.arange(len(kept)), top]
    has_majority = 2 * peak > kept.sum(axis=1)  # maxval > 0.5 * sum, in integers
    emotion = top < len(FERPLUS.classes)  # not unknown, not NF
    return np.where(has_majority & emotion, top, DROPPED)


@dataclass(frozen=True)
class Votes:
    """A FER+ votes file, read: each row's Usage (index into ``USAGES``) and vote counts."""

    path: Path
    usage: np.ndarray
    counts: np.ndarray
    digest: str


def read_votes(path: Path) -> Votes:
    """Reads ``fer2013new.csv``: header ``Usage,Image name,neutral,...,NF``.

    Raises:
        DataError: the file is missing, unreadable or not in FER+'s layout; the message
            names the file and the line.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err})") from err
    lines = raw.decode("utf-8", "replace").lstrip("\ufeff").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    header = [c.strip() for c in lines[0].split(",")] if lines else []
    missing = [c for c in ("Usage", *VOTE_COLUMNS) if c not in header]
    if missing:
        raise DataError(f"{path}, line 1: not FER+'s votes file (fer2013new.csv); missing "
                        f"column(s) {missing}")
    usage_at = header.index("Usage")
    vote_at = [header.index(c) for c in VOTE_COLUMNS]
    usages = {u: i for i, u in enumerate(USAGES[:3])}
    usage = np.empty(len(lines) - 1, dtype=np.int8)
    counts = np.empty((len(lines) - 1, len(VOTE_COLUMNS)), dtype=np.int64)
    for number, line in enumerate(lines[1:], start=2):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(header):
            raise DataError(f"{path}, line {number}: {len(fields)} fields, expected "
                            f"{len(header)}")
        if fields[usage_at] not in usages:
            raise DataError(f"{path}, line {number}: Usage {fields[usage_at]!r} is not one "
                            f"of {list(usages)}")
        usage[number - 2] = usages[fields[usage_at]]
        try:
            counts[number - 2] = [int(fields[i]) for i in vote_at]
        except ValueError:
            raise DataError(f"{path}, line {number}: vote counts must be whole numbers, got "
                            f"{[fields[i] for i in vote_at]}") from None
    if (counts < 0).any():
        raise DataError(f"{path}: negative vote counts")
    return Votes(Path(path), usage, counts, hashlib.sha256(raw).hexdigest()[:16])


def votes_path(spec: LabelSpec, source: str) -> Path:
    """The votes file: the one ``--labels`` names, else ``fer2013new.csv`` beside the data.

    Raises:
        DataError: it is not there; the message says where it looked.
    """
    if spec.votes is not None:
        where = spec.votes
        if not where.is_file():
            raise DataError(f"FER+ votes not found: no file {where} (from --labels "
                            f"ferplus:{where})")
        return where
    if source == "synthetic" or source.startswith("synthetic:"):
        raise DataError("FER+ labels need FER2013's own rows: generated faces have no FER+ "
                        "votes (give --data fer2013.csv.gz)")
    where = Path(source).resolve().parent / VOTES_FILE
    if not where.is_file():
        raise DataError(f"FER+ votes not found: looked for {where} (beside --data); put "
                        f"Microsoft's {VOTES_FILE} there or give --labels ferplus:FILE")
    return where


def relabel(dataset: FerData, votes: Votes) -> FerData:
    """The data set with FER+'s majority labels: images FER+ drops are left out, the rest
    keep their Usage. The digest is new (the data's, the votes' and the rule's), so FER+
    and FER2013 runs never share a study or a champion.

    Raises:
        DataError: the votes do not follow the data's rows (another row count, or another
            Usage on a row): FER+'s file matches fer2013.csv, row for row.
    """
    n = len(dataset.labels)
    if len(votes.usage) != n:
        raise DataError(f"{votes.path}: {len(votes.usage)} vote rows, but {dataset.source} "
                        f"has {n} images; FER+'s votes follow fer2013.csv row for row "
                        "(35,887 rows), so the data must be that file (or an archive of it)")
    differ = np.flatnonzero(votes.usage != dataset.usage)
    if len(differ):
        row = int(differ[0])
        raise DataError(f"{votes.path}, line {row + 2}: Usage {USAGES[votes.usage[row]]}, but "
                        f"row {row + 1} of {dataset.source} is {USAGES[dataset.usage[row]]}: "
                        "the votes do not follow the data's rows")
    labels = majority(votes.counts)
    keep = labels != DROPPED
    digest = hashlib.sha256(f"{dataset.digest}|{FERPLUS.name}|{votes.digest}|"
                            f"{FERPLUS_VERSION}".encode()).hexdigest()[:16]
    return replace(dataset, images=dataset.images[keep], labels=labels[keep],
                   usage=dataset.usage[keep], digest=digest, classes=FERPLUS.classes,
                   label_set=FERPLUS.name)


def load(source: str | os.PathLike, labels: str = DEFAULT,
         cache_dir: str | os.PathLike | None = None, strict: bool = True) -> FerData:
    """Loads a data set (``fer_lab.data.load``) with the label set ``labels`` asks for
    (see ``parse``).

    FER2013's rows take either label set. An image folder is labelled by its class
    folders' names: FER2013's classes, or FER+'s when it has ``contempt/`` images (FER+'s
    votes follow fer2013.csv's rows, not images in folders). ``strict`` refuses another
    label set for it; otherwise it keeps its own (``fer-lab evaluate`` scoring a FER+
    model on CK+'s folders, say: faces are matched to the model's classes by name).

    Raises:
        DataError: the data or, for FER+, the votes cannot be read or do not match; with
            ``strict``, an image folder whose classes are not ``labels``'.
        ValueError: an unknown label set.
    """
    spec = parse(labels)
    if spec.name == FERPLUS.name and str(source).endswith((".csv", ".csv.gz")):
        votes_path(spec, str(source))  # before parsing 300 MB: a missing file fails fast
    dataset = fer_data.load(source, cache_dir)
    if dataset.folders:
        if strict and (spec.name != dataset.label_set or spec.votes is not None):
            raise DataError(
                f"{dataset.source}: an image folder is labelled by its class folders' names, "
                f"here {dataset.label_set}'s classes ({', '.join(dataset.classes)}); --labels "
                f"{labels} does not apply (FER+'s votes follow fer2013.csv's rows, and "
                f"images in contempt/ make a folder FER+'s): use --labels {dataset.label_set}")
        return dataset
    if spec.name == FER2013.name:
        return dataset
    return relabel(dataset, read_votes(votes_path(spec, str(source))))
