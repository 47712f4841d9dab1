"""FER2013 inside the archives Kaggle hands out, read in memory without extracting them.

The competition's download is a zip holding ``fer2013.tar.gz`` (whose ``fer2013/fer2013.csv``
is the data set) beside ``icml_face_data.csv`` (the same rows, columns in another order),
``train.csv``, ``test.csv`` and ``example_submission.csv``; image-folder exports come as a zip
of ``train/<emotion>/*`` and ``test/<emotion>/*``. :func:`search` walks a zip or a tar
(gzip'd or not, and the archives inside it) once, in storage order, and keeps the FER2013 CSV,
Kaggle's own ``fer2013.csv`` first, or else the image folder. Which CSVs are FER2013 its
caller decides from their first line, so this module knows archives, not columns.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

PREFERRED = ("fer2013.csv", "fer2013.csv.gz")  # Kaggle's own file, inside fer2013.tar.gz
FOLDER_PARTS = ("train", "test")
# What a damaged or unsupported archive raises while it is read (NotImplementedError: a zip
# compression method Python lacks, such as Deflate64).
READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError,
               NotImplementedError)
_HEAD = 1 << 16  # bytes looked at to tell what a member is
_MAX_DEPTH = 3  # archives inside archives: Kaggle's zip > tar.gz > csv needs 1


@dataclass
class Contents:
    """The FER2013 data found in an archive.

    Attributes:
        archive: the archive's path.
        csv_name: where the chosen CSV is, ``archive:member``, one ``:member`` per level.
        csv: that member's bytes as stored (still gzip'd when the member is), or None.
        folder_name: where the image folder holding ``train/`` and ``test/`` is.
        folder: its files under ``train/`` and ``test/`` by path relative to it (e.g.
            ``train/happy/0.png``); empty when a CSV was found or there is no such folder.
        listing: the members not used, each with a note on what it is.
    """

    archive: str
    csv_name: str = ""
    csv: bytes | None = None
    folder_name: str = ""
    folder: dict[str, bytes] = field(default_factory=dict)
    listing: list[str] = field(default_factory=list)


def kind(path: str | Path) -> str | None:
    """``"zip"`` or ``"tar"`` (gzip'd or not), told by the file's first bytes; else None."""
    with open(path, "rb") as fh:
        return _kind(fh.read(_HEAD))


def search(path: str | Path, judge: Callable[[bytes], str | None]) -> Contents:
    """Walks a zip or tar for FER2013 data.

    Args:
        path: a file :func:`kind` recognises.
        judge: takes a member's first line (gunzipped if the member is gzip'd) and returns
            None for a FER2013 CSV, else a few words on what the member is.

    Raises:
        One of ``READ_ERRORS``: the archive (or one inside it) is damaged.
    """
    found = Contents(str(path))
    in_folders: dict[tuple[tuple[str, ...], str], bytes] = {}
    with open(path, "rb") as fh:
        _walk(fh, kind(path), (), judge, found, in_folders, depth=0)
    if found.csv is None:
        found.folder_name, found.folder = _image_folder(str(path), in_folders)
        if in_folders and not found.folder:
            found.listing.append(f"{len(in_folders)} files under train/ or test/ folders, "
                                 f"but no folder holding both")
    return found


def _walk(fh: BinaryIO, archive_kind: str, where: tuple[str, ...],
          judge: Callable[[bytes], str | None], found: Contents, in_folders: dict,
          depth: int) -> bool:
    """Looks at each member of one archive; True once Kaggle's fer2013.csv is kept (stop)."""
    for name, stream in _members(fh, archive_kind):
        if any(part in FOLDER_PARTS for part in name.split("/")[:-1]):
            in_folders[where, name] = stream.read()  # maybe part of an image folder
            continue
        member = io.BufferedReader(stream, _HEAD)
        head = member.peek(_HEAD)
        inner = _kind(head)
        if inner and depth < _MAX_DEPTH:
            fileobj = member if inner == "tar" else io.BytesIO(member.read())  # zip: seeks
            if _walk(fileobj, inner, (*where, name), judge, found, in_folders, depth + 1):
                return True
            continue
        note = judge(_unzipped(head).split(b"\n", 1)[0].rstrip(b"\r"))
        if note is not None:
            found.listing.append(f"{':'.join((*where, name))} ({note})")
            continue
        preferred = PurePosixPath(name).name.lower() in PREFERRED
        if found.csv is None or preferred:
            found.csv_name, found.csv = ":".join((found.archive, *where, name)), member.read()
        if preferred:
            return True
    return False


def _members(fh: BinaryIO, archive_kind: str) -> Iterator[tuple[str, BinaryIO]]:
    """Each file of a zip or tar in storage order, as (its path, a stream of its bytes).

    Tars are read as a stream, so a member's stream is good only until the next is asked
    for. macOS's ``__MACOSX/`` and ``._*`` companions are left out.
    """
    if archive_kind == "zip":
        with zipfile.ZipFile(fh) as archive:
            for info in archive.infolist():
                name = _clean(info.filename)
                if not info.is_dir() and not _junk(name):
                    with archive.open(info) as stream:
                        yield name, stream
    else:
        with tarfile.open(fileobj=fh, mode="r|*") as archive:
            for info in archive:
                name = _clean(info.name)
                if info.isfile() and not _junk(name):
                    yield name, archive.extractfile(info)


def _clean(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def _junk(name: str) -> bool:
    return name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._")


def _kind(head: bytes) -> str | None:
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # the second: an empty zip
        return "zip"
    return "tar" if _unzipped(head)[257:262] == b"ustar" else None


def _unzipped(head: bytes) -> bytes:
    """The start of some bytes, gunzipped when they are gzip'd (b"" when that fails)."""
    if head[:2] != b"\x1f\x8b":
        return head
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, _HEAD)
    except zlib.error:
        return b""


def _image_folder(archive: str, files: dict) -> tuple[str, dict[str, bytes]]:
    """The shallowest folder holding both ``train/`` and ``test/``, and its files below them."""

    def split(name: str) -> tuple[str, str, str]:  # root, "train" or "test", the rest
        parts = name.split("/")
        i = next(i for i, part in enumerate(parts) if part in FOLDER_PARTS)
        return "/".join(parts[:i]), parts[i], "/".join(parts[i:])

    seen: dict[tuple[tuple[str, ...], str], set[str]] = {}
    for where, name in files:
        root, part, _ = split(name)
        seen.setdefault((where, root), set()).add(part)
    roots = [key for key, parts in seen.items() if parts == set(FOLDER_PARTS)]
    if not roots:
        return "", {}
    where, root = min(roots, key=lambda key: (len(key[0]), key[1].count("/"), bool(key[1]), key))
    chosen = {}
    for (w, name), data in files.items():
        r, _, rest = split(name)
        if (w, r) == (where, root):
            chosen[rest] = data
    return ":".join((archive, *where, *([root] if root else []))), chosen
