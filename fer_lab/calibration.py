"""Are the probabilities right? Temperature scaling, and the measures of calibration.

A model's probabilities are calibrated when, of the faces it calls "happy" with 0.9, nine
in ten are happy. Every family gives probabilities (the CNN a softmax of its logits, an SVM
of its margins, a forest its votes); one temperature ``T`` fitted on the validation carve
rescales their log-probabilities, ``softmax(log p / T)``, which keeps every prediction
(the ranking of the classes is unchanged) and fixes the confidence (Guo et al., 2017, "On
Calibration of Modern Neural Networks"). ``T > 1`` tempers an over-confident model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al.
LOG_FLOOR = np.log(1e-7)  # a probability of exactly 0 (a tree's vote) stays finite
T_BOUNDS = (0.05, 20.0)


def log_probs(proba: np.ndarray) -> np.ndarray:
    """Log-probabilities, with zeros floored so that scaling them stays finite."""
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(np.asarray(proba, dtype=np.float64)), LOG_FLOOR)


def scale(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the probabilities at temperature ``T`` (1 leaves them)."""
    if temperature == 1.0:
        return np.asarray(proba, dtype=np.float64)
    return softmax(log_probs(proba) / temperature, axis=1)


def nll(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-log_probs(proba)[np.arange(len(y)), y].mean())


def brier(proba: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of the squared distance to the one-hot truth."""
    proba = np.asarray(proba, dtype=np.float64)
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((proba - onehot) ** 2).sum(axis=1).mean())


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the NLL of ``y`` (the validation carve's labels)."""
    logp = log_probs(proba)
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        return float(-log_softmax(logp / np.exp(log_t), axis=1)[rows, y].mean())

    found = minimize_scalar(loss, bounds=tuple(np.log(T_BOUNDS)), method="bounded",
                            options={"xatol": 1e-4})
    return float(np.exp(found.x))


def reliability(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Confidence (the top probability) against accuracy in ``bins`` equal-width bins.

    Returns:
        ``{"ece": ..., "bins": [{"lower", "upper", "count", "confidence", "accuracy"}]}``;
        the expected calibration error is the count-weighted mean gap between a bin's
        confidence and its accuracy (empty bins count 0 and show null).
    """
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        hit = which == b
        n = int(hit.sum())
        conf = float(confidence[hit].mean()) if n else None
        acc = float(correct[hit].mean()) if n else None
        if n:
            ece += n * abs(conf - acc)
        out.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n,
                    "confidence": conf, "accuracy": acc})
    return {"ece": ece / max(len(confidence), 1), "bins": out}


def ece(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width confidence bins."""
    return reliability(proba, y, bins)["ece"]


def measures(proba: np.ndarray, y: np.ndarray, raw: np.ndarray | None = None) -> dict[str, float]:
    """``ece``, ``nll`` and ``brier`` of ``proba``; with the uncalibrated ``raw`` also
    ``ece_uncalibrated``."""
    out = {"ece": ece(proba, y), "nll": nll(proba, y), "brier": brier(proba, y)}
    if raw is not None:
        out["ece_uncalibrated"] = ece(raw, y)
    return out


def write_reliability(proba: np.ndarray, y: np.ndarray, stem: Path, title: str,
                      raw: np.ndarray | None = None) -> list[Path]:
    """The reliability diagram (``stem``.png, bin counts under the bars; the uncalibrated
    model's curve beside when ``raw`` is given) and its numbers (``stem``.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calibrated = reliability(proba, y)
    numbers = {"calibrated": calibrated}
    if raw is not None:
        numbers["uncalibrated"] = reliability(raw, y)
    stem.parent.mkdir(parents=True, exist_ok=True)
    js, png = stem.with_suffix(".json"), stem.with_suffix(".png")
    js.write_text(json.dumps(numbers, indent=1))

    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True,
                                     gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / ECE_BINS
    for label, rel, style in (("uncalibrated", numbers.get("uncalibrated"), ":"),
                              ("calibrated", calibrated, "-")):
        if rel is None:
            continue
        filled = [b for b in rel["bins"] if b["count"]]
        ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], style,
                marker="o", label=f"{label} (ECE {rel['ece']:.3f})")
    ax.bar([b["lower"] for b in calibrated["bins"]],
           [b["accuracy"] or 0.0 for b in calibrated["bins"]], width=width, align="edge",
           alpha=0.25, edgecolor="grey")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="perfect")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    counts.bar([b["lower"] for b in calibrated["bins"]], [b["count"] for b in calibrated["bins"]],
               width=width, align="edge", color="grey")
    counts.set_xlabel("confidence (top probability)")
    counts.set_ylabel("faces")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return [png, js]
