"""Procedurally drawn cartoon faces shaped like FER2013 (48x48 grey, 7 emotions).

Used when the real Kaggle CSV is unavailable (tests, CI, smoke runs). The expression
is encoded in face geometry (mouth curve and opening, brow tilt and height, eye
openness, nose wrinkles), while pose, lighting, grey levels, feature strength, noise
and occluders vary per image, so the task is learnable but not trivial.

Everything is drawn with soft signed-distance masks on numpy coordinate grids, for a
whole batch at once; there are no per-pixel Python loops.
"""

from __future__ import annotations

import numpy as np

# Bump when the drawing changes, so runs on different synthetic faces never share a digest.
SYNTHETIC_VERSION = 1

SIDE = 48
# Canonical face units per pixel: the face oval (half-width 0.8, half-height 1.0) fills
# roughly 32x40 px of the 48 px frame at scale 1.
_UNIT = 1.0 / 20.0
# Render in chunks so float temporaries stay at a few tens of MB even for large
# ``per_class`` (the data loader accepts ``synthetic:N``).
_CHUNK = 1024

# Per-emotion expression targets. Columns: mouth curvature (+ smile, - frown), mouth
# opening, mouth half-width, brow tilt (+ inner ends down), brow raise, eye openness,
# nose wrinkle, lip asymmetry. Rows follow FER2013 ids 0..6.
_PARAMS = np.array([
    # curv  open  width  tilt   raise  eye   wrinkle asym
    [-0.6, 0.02, 0.28, 0.13, -0.05, 0.55, 0.3, 0.0],  # 0 angry
    [-0.7, 0.04, 0.30, 0.06, -0.03, 0.50, 1.0, 0.6],  # 1 disgust
    [-0.3, 0.12, 0.40, -0.09, 0.09, 1.50, 0.0, 0.0],  # 2 fear
    [1.10, 0.06, 0.38, 0.00, 0.02, 0.75, 0.0, 0.0],   # 3 happy
    [-0.9, 0.00, 0.30, -0.13, 0.02, 0.80, 0.0, 0.0],  # 4 sad
    [0.00, 0.17, 0.17, -0.02, 0.15, 1.60, 0.0, 0.0],  # 5 surprise
    [0.00, 0.00, 0.32, 0.00, 0.00, 1.00, 0.0, 0.0],   # 6 neutral
], dtype=np.float32)
_NEUTRAL = _PARAMS[6]


def _soft(d: np.ndarray, edge: float = 0.05) -> np.ndarray:
    """Turns a signed distance (negative inside) into a 0..1 mask with a ~1 px edge."""
    return np.clip(0.5 - d / edge, 0.0, 1.0)


def _segment_dist(x, y, x0, y0, x1, y1) -> np.ndarray:
    """Distance from each grid point to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - x0 - t * dx, y - y0 - t * dy)


def _draw_params(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draws every random quantity per image, shaped ``(N, 1, 1)`` for broadcasting."""
    n = len(labels)
    u = lambda lo, hi: rng.uniform(lo, hi, n).astype(np.float32)  # noqa: E731
    # Strength interpolates from neutral to the full expression; low values make the
    # subtle faces that keep the task from being trivial.
    strength = u(0.5, 1.2)[:, None]
    expr = _NEUTRAL + strength * (_PARAMS[labels] - _NEUTRAL)
    expr += rng.normal(0, 1, (n, 8)).astype(np.float32) * np.float32(
        [0.2, 0.015, 0.03, 0.03, 0.03, 0.12, 0.1, 0.1])
    expr[:, 1] = np.maximum(expr[:, 1], 0.0)
    expr[:, 5] = np.maximum(expr[:, 5], 0.25)
    bg = u(20, 200)
    # Skin is usually lighter than the background, as in most FER2013 crops.
    sign = np.where(rng.random(n) < 0.8, 1.0, -1.0).astype(np.float32)
    skin = np.clip(bg + sign * u(40, 110), 60, 235)
    p = {
        "curv": expr[:, 0], "open": expr[:, 1], "width": expr[:, 2], "tilt": expr[:, 3],
        "raise": expr[:, 4], "eye": expr[:, 5], "wrinkle": expr[:, 6], "asym": expr[:, 7],
        "dx": u(-2, 2), "dy": u(-2, 2), "scale": u(0.9, 1.1),
        "rot": np.deg2rad(u(-8, 8)), "face_w": u(0.72, 0.88), "face_h": u(0.92, 1.08),
        "bg": bg, "skin": skin, "ink": np.maximum(skin - u(60, 150), 0),
        "contrast": u(0.7, 1.2), "bright": u(-25, 25),
        "gx": u(-40, 40), "gy": u(-40, 40), "noise": u(2, 12),
        # Occluders (hands, hair, glasses) hit ~20% of images at a random spot.
        "occ": (rng.random(n) < 0.2).astype(np.float32), "occ_x": u(-0.9, 0.9),
        "occ_y": u(-0.9, 0.9), "occ_r": u(0.15, 0.35), "occ_v": u(0, 255),
    }
    return {k: v[:, None, None] for k, v in p.items()}


def _render(p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Renders one chunk of faces from their parameters into float images."""
    n = p["dx"].shape[0]
    py, px = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) - (SIDE - 1) / 2
    # Inverse pose: map each pixel back into canonical face coordinates (y points down).
    sx, sy = (px - p["dx"]) * _UNIT / p["scale"], (py - p["dy"]) * _UNIT / p["scale"]
    c, s = np.cos(p["rot"]), np.sin(p["rot"])
    x, y = c * sx + s * sy, -s * sx + c * sy
    ax = np.abs(x)  # eyes and brows are mirror-symmetric

    fw, fh = p["face_w"], p["face_h"]
    face = _soft((np.hypot(x / fw, y / fh) - 1.0) * np.minimum(fw, fh))
    img = p["bg"] + (p["skin"] - p["bg"]) * face

    # Eyes: a light sclera ellipse whose height carries openness, with a dark pupil.
    ex, ey, erx, ery = 0.32, -0.18, 0.15, 0.08 * p["eye"]
    d_eye = (np.hypot((ax - ex) / erx, (y - ey) / ery) - 1.0) * np.minimum(erx, ery)
    sclera = _soft(d_eye, 0.04)
    pupil = _soft(np.hypot(ax - ex, y - ey) - 0.06) * sclera
    outline = _soft(np.abs(d_eye) - 0.025, 0.04)

    # Brows: segments from inner (x 0.14) to outer (x 0.50) end; tilt moves the two ends
    # in opposite directions, raise lifts the whole brow.
    base = -0.43 - p["raise"]
    brow = _soft(_segment_dist(ax, y, 0.14, base + p["tilt"], 0.50, base - p["tilt"]) - 0.035)

    # Mouth: a parabola through the lips whose corners go up for smiles and down for
    # frowns; an elliptical opening around it, asymmetry tilts one corner (disgust).
    # The bend scales with width so a narrow "O" stays round under curvature jitter.
    w = p["width"]
    xr = np.clip(x / w, -1.0, 1.0)
    yc = 0.45 - p["curv"] * 0.56 * w * (xr ** 2 - 1 / 3) + p["asym"] * 0.12 * xr
    half = 0.025 + p["open"] * np.sqrt(1.0 - xr ** 2)
    mouth_d = np.maximum(np.abs(y - yc) - half, np.abs(x) - w)
    lips = _soft(np.abs(mouth_d) - 0.025)
    inside = _soft(mouth_d)

    # Nose and (for disgust) wrinkle lines beside the bridge.
    nose = 0.6 * _soft(_segment_dist(x, y, 0.0, 0.0, 0.05, 0.2) - 0.02)
    wrinkle = np.clip(p["wrinkle"], 0, 1) * _soft(
        _segment_dist(ax, y, 0.07, -0.06, 0.16, 0.02) - 0.02)

    ink = np.maximum.reduce([pupil, outline, brow, lips, inside, nose, wrinkle]) * face
    img = img + 0.25 * (255 - img) * sclera * face * (1 - pupil)
    img = img + (p["ink"] - img) * ink

    occ = p["occ"] * _soft(np.hypot(x - p["occ_x"], y - p["occ_y"]) - p["occ_r"], 0.1)
    img = img + (p["occ_v"] - img) * occ

    # Lighting: global contrast/brightness plus a linear gradient across the frame.
    img = (img - 128) * p["contrast"] + 128 + p["bright"]
    img = img + (p["gx"] * px + p["gy"] * py) / SIDE
    img = img + rng.standard_normal((n, SIDE, SIDE), dtype=np.float32) * p["noise"]
    return img


def make_faces(per_class: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generates a balanced synthetic FER2013-like data set.

    Args:
        per_class: images per emotion; ``N = 7 * per_class``.
        seed: seed for ``numpy.random.default_rng``; equal arguments give equal arrays.

    Returns:
        ``(images, labels, usage)``: uint8 ``(N, 48, 48)`` faces, int64 ``(N,)``
        emotion ids 0..6 and int8 ``(N,)`` usage codes (0 Training, 1 PublicTest,
        2 PrivateTest), split 80/10/10 within each class, rows shuffled.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(7, dtype=np.int64), per_class)
    # Stratified split: the same 80/10/10 counts in every class, positions shuffled so
    # usage is independent of the drawn parameters.
    n_test = round(0.1 * per_class)
    codes = np.zeros(per_class, dtype=np.int8)
    codes[per_class - 2 * n_test:per_class - n_test] = 1
    codes[per_class - n_test:] = 2
    usage = np.concatenate([rng.permutation(codes) for _ in range(7)])

    order = rng.permutation(len(labels))
    labels, usage = labels[order], usage[order]
    params = _draw_params(labels, rng)
    images = np.empty((len(labels), SIDE, SIDE), dtype=np.uint8)
    for start in range(0, len(labels), _CHUNK):
        chunk = {k: v[start:start + _CHUNK] for k, v in params.items()}
        images[start:start + _CHUNK] = np.clip(np.rint(_render(chunk, rng)), 0, 255)
    return images, labels, usage
