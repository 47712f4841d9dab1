"""``Analyzer``: a registered model turned into emotion analytics on images and videos.

    from fer_lab import Analyzer
    a = Analyzer("models:/fer-emotion@champion")
    a.detect("photo.jpg")          # [{"box": (x, y, w, h), "emotion": "happy", ...}, ...]
    frames = a.analyze("ad.mp4")   # one row per face per analysed frame

Faces are found by a detector (``fer_lab.analysis.detect``), followed from frame to frame
by a tracker (``fer_lab.analysis.tracks``) and classified in batches: on video, detection
runs a few times a second and the boxes are held in between, while every analysed frame's
faces are classified.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_lab.analysis import detect, sources
from fer_lab.analysis.tracks import Tracker
from fer_lab.data import EMOTIONS, upright_grey
from fer_lab.pyfunc import classes_of

DEFAULT_MODEL = "models:/fer-emotion@champion"
# On video, detect this often (seconds of video) and hold the boxes in between: the
# detector costs several times what classifying a face does, and faces move little in
# a fifth of a second.
DETECT_INTERVAL = 0.2
# The smallest face looked for in video frames: from 80 px dlib's detector runs at the
# frame's own size, four times faster than for the 40 px faces looked for in photos, which
# keeps a 640x480 video in real time (experiments/video_speed.py).
VIDEO_MIN_FACE = 80
# Frames whose faces are classified together (a batch is several times faster per face
# than one face at a time); a webcam's frames are classified as they come.
BATCH_FRAMES = 8

# A face's columns of the frames table, then one probability column per class of the model.
FACE_COLUMNS = ["face_id", "x", "y", "w", "h", "emotion", "confidence"]
FRAME_COLUMNS = ["source", "file", "frame", "time_s"]


@dataclass
class Face:
    """A face in a frame: its box ``(x, y, w, h)``, its track id (videos), the emotion
    with the highest probability, that probability, and every class's."""

    box: tuple[int, int, int, int]
    emotion: str = ""
    confidence: float = float("nan")
    emotions: dict[str, float] = field(default_factory=dict)
    id: int | None = None


@dataclass
class FrameResult:
    """One analysed frame: where it is in its source, its picture, the faces in it."""

    source: str
    index: int
    time: float | None
    image: np.ndarray
    faces: list[Face]
    file: str = ""

    def rows(self) -> list[dict[str, Any]]:
        """The frame's rows of the frames table: one per face, or one with no face."""
        base = {"source": self.source, "file": self.file, "frame": self.index,
                "time_s": np.nan if self.time is None else self.time}
        if not self.faces:
            return [{**base, **{c: None for c in FACE_COLUMNS}}]  # classes: NaN in the table
        return [{**base, "face_id": f.id, "x": f.box[0], "y": f.box[1], "w": f.box[2],
                 "h": f.box[3], "emotion": f.emotion, "confidence": f.confidence, **f.emotions}
                for f in self.faces]


class Analyzer:
    """Finds, follows and classifies the faces in images and videos.

    Args:
        model: an MLflow model URI (read from ``$MLFLOW_TRACKING_URI``, else
            ``sqlite:///mlflow.db``) or a model already loaded with
            ``mlflow.pyfunc.load_model``.
        detector: ``auto`` (``hog`` where dlib is installed, else ``haar``), a name from
            ``fer_lab.analysis.detect.detectors()``, or a detector object.
        margin: the crop margin around a detection; by default the detector's own, which
            reproduces FER2013's framing (``experiments/detectors.py``).
        tta: a CNN's test-time augmentation: ``none`` (the fastest), ``flip``, ``crops``
            or ``model`` (what the model was registered with).
        detect_interval: on video, seconds between detections; the boxes are held in
            between, so a face is found up to this late. 0 detects on every frame.
        min_face: the smallest face to find, in pixels (default: 40 in photos, 80 in
            video frames; the smaller, the slower the detection).
    """

    def __init__(self, model: Any = DEFAULT_MODEL, detector: Any = "auto",
                 margin: float | None = None, tta: str = "none",
                 detect_interval: float = DETECT_INTERVAL, min_face: int | None = None):
        if isinstance(model, str):
            from fer_lab import registry

            self.model_uri = model
            model = registry.load_model(model)
        else:
            self.model_uri = getattr(getattr(model, "metadata", None), "model_uri", "") or ""
        self.model = model
        self.classes = classes_of(model)  # the probability columns, in label order
        self.detector = detect.create(detector) if isinstance(detector, str) else detector
        self.margin = self.detector.margin if margin is None else float(margin)
        if detect_interval < 0:
            raise ValueError(f"detect_interval must be 0 or more seconds, not {detect_interval}")
        self.detect_interval = float(detect_interval)
        if min_face is not None and min_face < 8:
            raise ValueError(f"min_face must be at least 8 pixels, not {min_face}")
        self.min_face = min_face
        from fer_lab.models import has_views

        # the model's own choice where it has none to override (the classical families)
        estimator = getattr(model.unwrap_python_model(), "estimator", None)
        self.tta = tta if has_views(estimator) else "model"
        self._params = {} if self.tta == "model" else {"tta": self.tta}

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities of 48x48 face crops (``(N, 2304)`` uint8)."""
        if not len(faces):
            return np.empty((0, len(self.classes)))
        return self.model.predict(faces, params=self._params)[list(self.classes)].to_numpy()

    def detect(self, image: Any, channels: str = "bgr") -> list[dict[str, Any]]:
        """The faces in one image, largest first, each a dict with ``box`` ``(x, y, w, h)``,
        ``emotion``, ``confidence`` and ``emotions`` (every class's probability).

        Args:
            image: a path, encoded bytes, a PIL image, or a numpy array: grey, or colour
                in ``channels`` order (``bgr`` as OpenCV reads, or ``rgb``), any size.
        """
        grey = _grey(image, channels)
        faces = [Face(box) for box in self.detector(grey, self.min_face or detect.MIN_FACE)]
        self._classify([(grey, faces)])
        return [{"box": f.box, "emotion": f.emotion, "confidence": f.confidence,
                 "emotions": f.emotions} for f in faces]

    def analyze(self, source: Any, every: int = 1, fps: float | None = None,
                max_seconds: float | None = None) -> pd.DataFrame:
        """The frames table of a video file, webcam index, image or folder of images: one
        row per face per analysed frame (``source, file, frame, time_s, face_id, x, y, w,
        h, emotion, confidence`` and each class's probability), and one row with an empty
        face for a frame without one, so that the rows follow the video's time."""
        rows = [row for result in self.frames(source, every, fps, max_seconds)
                for row in result.rows()]
        return frames_table(rows, self.classes)

    def frames(self, source: Any, every: int = 1, fps: float | None = None,
               max_seconds: float | None = None,
               on_open: Callable[[sources.Source], None] | None = None
               ) -> Iterator[FrameResult]:
        """The analysed frames of a source, as they are classified.

        Args:
            source: a video file, a webcam index, an image or a folder of images.
            every: analyse every Nth frame.
            fps: analyse at most this many frames per second of video (instead of every).
            max_seconds: stop after this many seconds of video (a webcam's: of wall time).
            on_open: called with the opened source before its first frame.

        Raises:
            sources.SourceError: the source cannot be opened, or a frame cannot be decoded
                (the frames before it have been given).
        """
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        if fps and every != 1:
            raise ValueError("give every or fps, not both")
        opened = sources.open_source(source)
        if on_open is not None:
            on_open(opened)
        video = opened.kind != "images"
        min_face = self.min_face or (VIDEO_MIN_FACE if video else detect.MIN_FACE)
        # A face keeps its id through two missed rounds, and through the 0.4 s those are
        # at the default interval when detection runs more often (--detect-interval 0).
        tracker = Tracker(max_gap=2 * DETECT_INTERVAL)
        batch_frames = 1 if opened.kind == "webcam" else BATCH_FRAMES
        pending: list[FrameResult] = []
        greys: list[np.ndarray] = []
        boxes: list[detect.Box] = []
        ids: list[int] = []
        next_detection = next_analysis = None
        stopped: BaseException | None = None
        try:
            for frame in opened:
                if max_seconds is not None and frame.time is not None \
                        and frame.time > max_seconds:
                    break
                if fps:
                    # A quarter of the shorter period, the source's or the grid's, of
                    # slack: MKV and WebM keep whole milliseconds (a 30 fps frame at
                    # 0.033 s, before the grid's 0.0333), webcams jitter.
                    slack = 0.25 / max(fps, opened.rate or fps)
                    if frame.time is not None and next_analysis is not None \
                            and frame.time < next_analysis - slack:
                        continue
                    # On a fixed grid of 1/fps from the first frame: stepping from the frame
                    # taken would lose the remainder each time (25 fps at --fps 10 gave 8.3).
                    if frame.time is None or next_analysis is None:
                        next_analysis = (frame.time or 0.0) + 1.0 / fps
                    else:
                        while next_analysis <= frame.time + slack:
                            next_analysis += 1.0 / fps
                elif frame.index % every:
                    continue
                grey = detect.grey(frame.image)
                if not video:
                    boxes = self.detector(grey, min_face)
                    ids = list(range(1, len(boxes) + 1))
                elif next_detection is None or frame.time is None \
                        or frame.time >= next_detection - 1e-6:
                    boxes = self.detector(grey, min_face)
                    ids = tracker.update(boxes, frame.time)
                    next_detection = (frame.time or 0.0) + self.detect_interval
                faces = [Face(box, id=i) for box, i in zip(boxes, ids)]
                pending.append(FrameResult(opened.name, frame.index, frame.time, frame.image,
                                           faces, frame.name))
                greys.append(grey)
                if len(pending) >= batch_frames:
                    yield from self._flush(pending, greys)
        except (sources.SourceError, KeyboardInterrupt) as err:
            stopped = err  # what was read before it is still classified and given
        finally:
            opened.close()
        yield from self._flush(pending, greys)
        if stopped is not None:
            raise stopped

    def _flush(self, pending: list[FrameResult], greys: list[np.ndarray]
               ) -> Iterator[FrameResult]:
        self._classify(list(zip(greys, [p.faces for p in pending])))
        done = list(pending)
        pending.clear()
        greys.clear()
        yield from done

    def _classify(self, frames: list[tuple[np.ndarray, list[Face]]]) -> None:
        """Fills in the emotions of every face of these frames, in one batch."""
        crops = [detect.crop(grey, face.box, self.margin) for grey, faces in frames
                 for face in faces]
        if not crops:
            return
        proba = self.probabilities(np.stack(crops))
        faces = [face for _, faces in frames for face in faces]
        for face, p in zip(faces, proba):
            best = int(p.argmax())
            face.emotion, face.confidence = self.classes[best], float(p[best])
            face.emotions = {e: float(v) for e, v in zip(self.classes, p)}


def frames_table(rows: list[dict[str, Any]],
                 classes: tuple[str, ...] = EMOTIONS) -> pd.DataFrame:
    """Rows as the frames table, with its columns in order (a probability column per class
    of ``classes``, the model's) and integer ids nullable."""
    table = pd.DataFrame(rows, columns=[*FRAME_COLUMNS, *FACE_COLUMNS, *classes])
    for column in ("face_id", "x", "y", "w", "h"):
        table[column] = table[column].astype("Int64")
    for column in ("confidence", *classes):
        table[column] = table[column].astype(float)
    return table


def _grey(image: Any, channels: str) -> np.ndarray:
    """Any image form ``detect`` takes as a grey uint8 array."""
    if isinstance(image, (str, Path)):
        return detect.grey(sources.read_image(Path(image)))
    if isinstance(image, (bytes, bytearray, memoryview)):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(image)) as opened:
                return np.asarray(upright_grey(opened))
        except (UnidentifiedImageError, OSError, ValueError):
            raise sources.SourceError("cannot decode the image bytes") from None
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(upright_grey(image))
    return detect.grey(np.asarray(image), channels)
