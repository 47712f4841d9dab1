"""Frames from video files, webcams, images and folders of images, each with its index and
its time in seconds (the video's own timestamps; a webcam's clock; none for photos)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_lab.data import hidden, image_errors

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_VIDEO_FPS = 240.0  # above it a video's stated rate is wrong (a WebM's says 1000)


class SourceError(ValueError):
    """A source that cannot be read: the message is one line naming it and why."""


@dataclass(frozen=True)
class Frame:
    index: int
    time: float | None  # seconds from the source's start
    image: np.ndarray  # BGR, as OpenCV decodes
    name: str = ""  # the file a frame of a folder came from


class Source:
    """An opened source. Iterating gives its frames; ``fps`` and ``frames`` are the video's
    (``None`` where unknown); ``kind`` is ``video``, ``webcam`` or ``images``."""

    def __init__(self, name: str, kind: str, fps: float | None = None,
                 frames: int | None = None):
        self.name, self.kind, self.fps, self.frames = name, kind, fps, frames

    @property
    def rate(self) -> float | None:
        """``fps`` where it is believable: None for a rate OpenCV cannot know (a WebM from
        a browser says 1000)."""
        return self.fps if self.fps and self.fps <= MAX_VIDEO_FPS else None

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def open_source(spec: str | int | Path) -> Source:
    """Opens a video file, a webcam (an index such as ``0``), an image or a folder of them.

    Raises:
        SourceError: the source does not exist, is not a kind this reads, or cannot be
            opened or decoded.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()
                                 and not Path(spec).exists()):  # a folder named 2024 is one
        return _Capture(int(spec), f"webcam {int(spec)}", "webcam")
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        files = [p for p in visible_files(path)
                 if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
        videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        if videos:
            raise SourceError(f"{path}: a folder of videos; name each video as a source "
                              f"({videos[0].name}, ...)")
        if not files:
            raise SourceError(f"{path}: no images in this folder "
                              f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        return _Images(str(path), files)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _Images(str(path), [path])
    if suffix in VIDEO_SUFFIXES:
        return _Capture(str(path), str(path), "video")
    raise SourceError(f"{path}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) "
                      f"or an image ({', '.join(sorted(IMAGE_SUFFIXES))})")


def visible_files(folder: Path) -> list[Path]:
    """The files under ``folder``, sorted, hidden ones left out: macOS's ``._IMG_1.jpg``
    beside ``IMG_1.jpg`` (on a zip's or an exFAT drive's copy) and ``__MACOSX/`` hold no
    image."""
    return sorted(p for p in Path(folder).rglob("*")
                  if p.is_file() and not any(map(hidden, p.relative_to(folder).parts)))


class _Images(Source):
    """Photos: one file, or a folder's. A file of a folder that cannot be decoded is
    skipped (named in ``skipped``, with why) and the others go on; a lone file that cannot
    be is the source's error."""

    def __init__(self, name: str, files: list[Path]):
        super().__init__(name, "images", None, len(files))
        self.files = files
        self.skipped: list[str] = []

    def __iter__(self) -> Iterator[Frame]:
        for i, path in enumerate(self.files):
            try:
                image = read_image(path)
            except SourceError as err:
                if len(self.files) == 1:
                    raise
                self.skipped.append(str(err))
                continue
            yield Frame(i, None, image, str(path))
        if self.skipped and len(self.skipped) == len(self.files):
            raise SourceError(f"{self.name}: none of its {len(self.files)} images could be "
                              f"decoded ({self.skipped[0]}, ...)")


def read_image(path: Path) -> np.ndarray:
    """An image file as a BGR array.

    Raises:
        SourceError: unreadable or not an image OpenCV or Pillow decodes.
    """
    import cv2

    try:
        raw = np.frombuffer(Path(path).read_bytes(), np.uint8)
    except OSError as err:
        raise SourceError(f"{path}: cannot read ({err.strerror})") from None
    image = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    if image is None:  # GIF, and formats OpenCV was built without
        from PIL import Image

        try:
            with Image.open(path) as opened:
                image = cv2.cvtColor(np.asarray(opened.convert("RGB")), cv2.COLOR_RGB2BGR)
        except image_errors():
            raise SourceError(f"{path}: cannot decode the image") from None
    return image


class _Capture(Source):
    """A video file or a webcam through OpenCV's FFmpeg (or the system's camera API)."""

    def __init__(self, target: str | int, name: str, kind: str):
        import cv2

        self._cv2 = cv2
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            self.capture.release()
            if kind == "webcam":
                raise SourceError(f"{name}: no such webcam, or it cannot be opened")
            raise SourceError(f"{name}: cannot open the video (not a container and codec "
                              "OpenCV's FFmpeg decodes, or the file is damaged)")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        super().__init__(name, kind, fps if fps and fps > 0 else None,
                         count if count > 0 and kind == "video" else None)

    def __iter__(self) -> Iterator[Frame]:
        cv2 = self._cv2
        start = time.monotonic()
        index = 0
        while True:
            ok, image = self.capture.read()
            if not ok or image is None:
                if index == 0:
                    raise SourceError(f"{self.name}: no frame could be decoded")
                return
            if self.kind == "webcam":
                seconds = time.monotonic() - start
            else:  # the container's presentation time of this frame
                seconds = self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if seconds <= 0 and index and self.fps:
                    seconds = index / self.fps
            yield Frame(index, seconds, image)
            index += 1

    def close(self) -> None:
        self.capture.release()
