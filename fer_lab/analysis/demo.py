"""A video to try ``fer-lab analyze`` on without a camera, and to test and time it with:
a real face (scikit-image's astronaut photograph, shipped in its package) pasted up to
three times, mirrored and walking, onto a scene that pans sideways."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def portrait() -> np.ndarray:
    """The astronaut's head, BGR, 132x192 pixels (a face of about 90 px)."""
    import cv2
    from skimage import data as skimage_data

    head = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)[40:260, 150:300]
    return cv2.resize(head, (132, 192))


def write_video(path: str | Path, frames: int = 60, fps: float = 25.0, faces: int = 2,
                gone: range = range(0)) -> Path:
    """Writes a 640x480 MPEG-4 video of ``frames`` frames with ``faces`` faces (1 to 3):
    the first walks right by 2 px a frame, the others stand still; nobody is in view in
    the frames of ``gone``."""
    import cv2
    from skimage import data as skimage_data

    if not 1 <= faces <= 3:
        raise ValueError(f"faces must be 1 to 3, not {faces}")
    face = portrait()
    mirrored = cv2.flip(face, 1)
    scene = cv2.resize(cv2.cvtColor(skimage_data.coffee(), cv2.COLOR_RGB2BGR), (640, 480))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for i in range(frames):
        frame = np.roll(scene, 4 * i, axis=1)
        if i not in gone:
            h, w = face.shape[:2]
            x = 40 + (2 * i) % 200
            frame[60:60 + h, x:x + w] = face
            if faces > 1:
                frame[240:240 + h, 460:460 + w] = mirrored
            if faces > 2:
                frame[270:270 + h, 250:250 + w] = face
        writer.write(frame)
    writer.release()
    return Path(path)
