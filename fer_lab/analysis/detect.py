"""Finding faces in frames, and cropping them the way FER2013's faces were cropped.

Two detectors, both with their weights inside a package from PyPI (nothing is downloaded
at run time):

- ``hog``: dlib's HOG detector (``dlib-bin``): five filters (frontal, turned left and
  right, tilted left and right), trained with max-margin object detection. The default:
  on FER2013's faces pasted into scenes (``experiments/detectors.py``) it finds about as
  many upright faces as Haar, twice as many turned ones, fewer dim ones, with a twentieth
  of its false positives, and from 80 px at a quarter of its time.
- ``haar``: OpenCV's bundled frontal-face Haar cascade (``opencv-python-headless``), the
  fallback where dlib is not installed.

Both take the smallest face to find (``min_face`` pixels): the smaller, the slower.

A detection box is ``(x, y, w, h)`` in pixels. FER2013's faces are tight and centred
(brows to chin); :func:`crop` takes a square about the box's centre, ``1 + margin`` times
its side, so both detectors' boxes give FER2013's framing with their own measured margin.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Box = tuple[int, int, int, int]
SIDE = 48

_DETECTORS: dict[str, Callable[[], Detector]] = {}


def register(name: str):
    """Adds a detector class to the registry under ``name``."""
    def add(cls):
        _DETECTORS[name] = cls
        cls.name = name
        return cls
    return add


def detectors() -> list[str]:
    return sorted(_DETECTORS)


MIN_FACE = 40  # px: the smallest face looked for in a photo


class Detector:
    """Finds faces in a grey uint8 image. ``margin`` is the crop margin that matches this
    detector's boxes to FER2013's framing (measured: ``experiments/detectors.py``)."""

    name = "?"
    margin = 0.0

    def __call__(self, grey: np.ndarray, min_face: int = MIN_FACE) -> list[Box]:
        """Boxes of the faces of at least ``min_face`` pixels, largest first."""
        raise NotImplementedError


@register("haar")
class HaarDetector(Detector):
    """OpenCV's frontal-face Haar cascade."""

    margin = 0.1

    def __init__(self):
        import cv2

        self._cascade = cv2.CascadeClassifier(
            cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def __call__(self, grey: np.ndarray, min_face: int = MIN_FACE) -> list[Box]:
        boxes = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                               minSize=(min_face, min_face))
        return _largest_first(tuple(int(v) for v in b) for b in boxes)


@register("hog")
class HogDetector(Detector):
    """dlib's HOG face detector. Its 80-pixel window finds faces from 80 px; for smaller
    faces the image is searched at twice its size (four times the cost)."""

    margin = 0.3

    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise ImportError("the hog detector needs dlib: pip install dlib-bin "
                              "(or use --detector haar)") from None
        self._detect = dlib.get_frontal_face_detector()

    def __call__(self, grey: np.ndarray, min_face: int = MIN_FACE) -> list[Box]:
        upsample = 1 if min_face < 80 else 0
        found = self._detect(np.ascontiguousarray(grey), upsample)
        h, w = grey.shape
        boxes = []
        for r in found:
            x0, y0 = max(r.left(), 0), max(r.top(), 0)
            x1, y1 = min(r.right() + 1, w), min(r.bottom() + 1, h)
            if x1 - x0 >= min_face * 0.8 and y1 > y0:  # a box is a little tighter than a face
                boxes.append((x0, y0, x1 - x0, y1 - y0))
        return _largest_first(boxes)


def _largest_first(boxes) -> list[Box]:
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def create(name: str = "auto") -> Detector:
    """A detector by name; ``auto`` is ``hog`` where dlib is installed, else ``haar``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name == "auto":
        try:
            return _DETECTORS["hog"]()
        except ImportError:
            return _DETECTORS["haar"]()
    if name not in _DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; known: auto, {', '.join(detectors())}")
    return _DETECTORS[name]()


def grey(image: np.ndarray, channels: str = "bgr") -> np.ndarray:
    """A uint8 grey image from a grey, BGR(A) or RGB(A) array of any numeric type."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        if image.dtype.kind == "f" and image.size and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected a grey (H, W) or colour (H, W, 3|4) image, got {image.shape}")
    codes = {("bgr", 3): cv2.COLOR_BGR2GRAY, ("bgr", 4): cv2.COLOR_BGRA2GRAY,
             ("rgb", 3): cv2.COLOR_RGB2GRAY, ("rgb", 4): cv2.COLOR_RGBA2GRAY}
    if (channels, image.shape[2]) not in codes:
        raise ValueError(f"channels must be 'bgr' or 'rgb', not {channels!r}")
    return cv2.cvtColor(image, codes[channels, image.shape[2]])


def crop(grey_image: np.ndarray, box: Box, margin: float = 0.0) -> np.ndarray:
    """The face in ``box`` as the network's input (flat 48x48 uint8): a square about the
    box's centre, ``(1 + margin)`` times its longer side, edges replicated where it leaves
    the image, resized as a served model resizes a face image (``fer_lab.data.face_image``:
    Lanczos), so a face analysed in a photo or a video and the same face sent as an image
    get the same pixels."""
    import cv2
    from PIL import Image

    from fer_lab.data import face_image

    x, y, w, h = box
    side = max(int(round(max(w, h) * (1.0 + margin))), 1)
    x0 = int(round(x + w / 2 - side / 2))
    y0 = int(round(y + h / 2 - side / 2))
    H, W = grey_image.shape
    pad = max(0, -x0, -y0, x0 + side - W, y0 + side - H)
    if pad:
        grey_image = cv2.copyMakeBorder(grey_image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    face = np.ascontiguousarray(grey_image[y0:y0 + side, x0:x0 + side])
    return face_image(Image.fromarray(face)).reshape(SIDE * SIDE)
