"""Why a model decided what it decided: heat maps over the face, from Captum.

Two methods, both Captum's (``captum.attr``), not hand-written:

- ``gradcam``: Grad-CAM (Selvaraju et al., 2017) on the CNN's last convolution, upsampled
  to the face: where the network looked for the class.
- ``occlusion``: occlusion sensitivity (Zeiler and Fergus, 2014), for every family through
  the estimator interface (``predict_proba`` on uint8 pixels): how much the class's
  probability drops when a square of the face is greyed out. Model-agnostic, so the
  classical models are explained the same way.

Maps are ``(N, 48, 48)`` in [0, 1], 1 where the evidence for the class is strongest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer_lab.data import EMOTIONS

SIDE = 48
METHODS = ("auto", "gradcam", "occlusion")
OCCLUSION_WINDOW = 8  # px: about an eye, a mouth corner
OCCLUSION_STRIDE = 4
GREY = 128.0  # what an occluded square is filled with


def method_for(estimator, method: str = "auto") -> str:
    """``gradcam`` for a network, ``occlusion`` for the others (``auto``); an explicit
    method is checked against the estimator."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    has_net = hasattr(estimator, "net_")
    if method == "auto":
        return "gradcam" if has_net else "occlusion"
    if method == "gradcam" and not has_net:
        raise ValueError(f"gradcam needs a network (cnn), not {type(estimator).__name__}: "
                         "use occlusion")
    return method


def explain(estimator, X: np.ndarray, targets: np.ndarray | None = None,
            method: str = "auto") -> np.ndarray:
    """Heat maps of flat uint8 faces ``X`` for the classes ``targets`` (default: each
    face's predicted class); ``(N, 48, 48)`` floats in [0, 1]."""
    X = np.asarray(X, dtype=np.uint8).reshape(len(X), SIDE * SIDE)
    if targets is None:
        targets = np.asarray(estimator.predict_proba(X)).argmax(axis=1)
    if not len(X):
        return np.zeros((0, SIDE, SIDE))
    chosen = method_for(estimator, method)
    maps = gradcam(estimator, X, targets) if chosen == "gradcam" else \
        occlusion(estimator, X, targets)
    return _unit(maps)


def cam_layer(net):
    """The layer Grad-CAM looks at: the network's last feature map, what its head pools. A
    ResNet's last block (its sum of body and shortcut: the last convolution made is the
    shortcut's 1x1 projection, which skips the block), else the last convolution."""
    import torch

    from fer_lab.nets import BasicBlock

    features = getattr(net, "features", None)
    if isinstance(features, torch.nn.Sequential) and isinstance(features[-1], BasicBlock):
        return features[-1]
    return [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]


def gradcam(estimator, X: np.ndarray, targets: np.ndarray, batch: int = 256) -> np.ndarray:
    """Grad-CAM on the network's last feature map (``cam_layer``), upsampled to 48x48
    (ReLU'd)."""
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    from fer_lab.training.inputs import to_images, to_input

    net = estimator.net_.eval()
    cam = LayerGradCam(net, cam_layer(net))
    out = []
    for start in range(0, len(X), batch):
        x = to_input(to_images(X[start:start + batch]), estimator.pixel_mean_,
                     estimator.pixel_std_, False).requires_grad_(True)
        target = torch.as_tensor(targets[start:start + batch], dtype=torch.long)
        maps = cam.attribute(x, target=target, relu_attributions=True)
        maps = LayerAttribution.interpolate(maps, (SIDE, SIDE), interpolate_mode="bilinear")
        out.append(maps.detach()[:, 0].numpy())
    return np.concatenate(out)


def occlusion(estimator, X: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The drop in the target's probability when an 8x8 square is filled with grey,
    averaged over the windows covering each pixel (negative drops count 0). Networks
    inside the estimator (an ensemble's) see each probe once, without test-time views:
    121 probes a face, times 10 views, would make an ensemble's maps take an hour."""
    import torch
    from captum.attr import Occlusion

    from fer_lab.models import with_tta

    estimator = with_tta(estimator, "none")

    def forward(x: torch.Tensor) -> torch.Tensor:
        pixels = x.detach().round().clamp(0, 255).to(torch.uint8).reshape(len(x), -1).numpy()
        return torch.as_tensor(np.asarray(estimator.predict_proba(pixels), dtype=np.float32))

    x = torch.as_tensor(X.reshape(-1, 1, SIDE, SIDE), dtype=torch.float32)
    maps = Occlusion(forward).attribute(
        x, target=torch.as_tensor(targets, dtype=torch.long),
        sliding_window_shapes=(1, OCCLUSION_WINDOW, OCCLUSION_WINDOW),
        strides=(1, OCCLUSION_STRIDE, OCCLUSION_STRIDE), baselines=GREY,
        perturbations_per_eval=64)
    return maps[:, 0].clamp(min=0).numpy()


def _unit(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1] (a map with no evidence stays 0)."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float64))
    top = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(maps, top, out=np.zeros_like(maps), where=top > 0)


def overlay(face: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The grey face with the heat map over it in colour: ``(48, 48, 3)`` uint8 RGB."""
    from matplotlib import colormaps

    grey = np.repeat(np.asarray(face, dtype=np.float64).reshape(SIDE, SIDE, 1) / 255, 3, axis=2)
    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    return np.round(255 * ((1 - alpha) * grey + alpha * colour)).astype(np.uint8)


def write_overlays(faces: np.ndarray, maps: np.ndarray, names: list[str], folder: Path,
                   scale: int = 4) -> list[Path]:
    """One PNG per face (``folder/<name>.png``), the overlay enlarged ``scale`` times."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for face, heat, name in zip(faces, maps, names):
        path = folder / f"{name}.png"
        Image.fromarray(overlay(face, heat)).resize((SIDE * scale, SIDE * scale),
                                                    Image.Resampling.NEAREST).save(path)
        paths.append(path)
    return paths


def write_class_means(X: np.ndarray, y: np.ndarray, proba: np.ndarray, maps: np.ndarray,
                      path: Path, title: str, classes: Sequence[str] = EMOTIONS) -> Path:
    """Per class (label ``i`` is ``classes[i]``), the mean map over its correctly
    classified faces, over the mean face."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    right = proba.argmax(axis=1) == y
    fig, axes = plt.subplots(1, len(classes), figsize=(1.6 * len(classes), 2.1))
    for label, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        hit = right & (y == label)
        ax.set_title(f"{classes[label]} ({int(hit.sum())})", fontsize=8)
        if hit.any():
            ax.imshow(overlay(X[hit].mean(axis=0), _unit(maps[hit].mean(axis=0)[None])[0]))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


OCCLUSION_PER_CLASS = 30  # faces per class for a study's mean maps by occlusion (121 probes each)


def write_study_explanations(estimator, X: np.ndarray, y: np.ndarray, proba: np.ndarray,
                             folder: Path, per_class: int | None = None, mistakes: int = 12,
                             seed: int = 0, classes: Sequence[str] = EMOTIONS) -> list[Path]:
    """A study's ``explanations/``: per class the mean map over its correctly classified
    faces (all of them with Grad-CAM, one backward pass per batch; a seeded
    ``OCCLUSION_PER_CLASS`` with occlusion, unless ``per_class`` says), and the
    ``mistakes`` most confident mistakes with the maps of the class they were taken for.
    ``proba`` are the model's probabilities of ``X`` (test_all), a column per class of
    ``classes``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if per_class is None:
        per_class = len(X) if method_for(estimator) == "gradcam" else OCCLUSION_PER_CLASS
    rng = np.random.default_rng(seed)
    pred = proba.argmax(axis=1)
    right = [rng.permutation(np.flatnonzero((y == c) & (pred == c)))[:per_class]
             for c in range(len(classes))]
    chosen = np.concatenate(right).astype(np.int64)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-proba[wrong].max(axis=1), kind="stable")[:mistakes]]
    maps = explain(estimator, X[np.concatenate([chosen, worst])],
                   pred[np.concatenate([chosen, worst])])
    name = method_for(estimator)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_class_means(X[chosen], y[chosen], proba[chosen], maps[:len(chosen)],
                               folder / "class_means.png",
                               f"{name}: mean map per class over correctly classified "
                               f"test_all faces (count)", classes)]
    if len(worst):
        cols = min(len(worst), 6)
        rows = (len(worst) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 2.0 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i, heat in zip(axes.flat, worst, maps[len(chosen):]):
            ax.imshow(overlay(X[i], heat))
            ax.set_title(f"{classes[y[i]]} → {classes[pred[i]]}\n{proba[i].max():.2f}",
                         fontsize=7)
        fig.suptitle(f"{name}: most confident mistakes (true → predicted, confidence), "
                     "map of the predicted class", fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "confident_mistakes.png", dpi=90)
        plt.close(fig)
        paths.append(folder / "confident_mistakes.png")
    return paths
