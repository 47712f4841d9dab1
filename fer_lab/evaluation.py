"""Scores and report files for one set of predictions; the same for every family."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs happen on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)

from fer_lab.data import EMOTIONS  # noqa: E402

LABELS = list(range(len(EMOTIONS)))


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1."""
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=LABELS, average="macro",
                                                 zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "macro_precision": float(p),
            "macro_recall": float(r), "macro_f1": float(f)}


def per_class(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Per-class precision, recall and F1, keyed ``<emotion>_<measure>``."""
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=LABELS, zero_division=0)
    out = {}
    for i, name in enumerate(EMOTIONS):
        out.update({f"{name}_precision": float(p[i]), f"{name}_recall": float(r[i]),
                    f"{name}_f1": float(f[i])})
    return out


def write_confusion(y_true: np.ndarray, y_pred: np.ndarray, stem: Path, title: str) -> list[Path]:
    """Writes the confusion matrix as JSON (counts and row-normalised) and two PNGs."""
    counts = confusion_matrix(y_true, y_pred, labels=LABELS)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = [stem.with_suffix(".json")]
    files[0].write_text(json.dumps({"labels": list(EMOTIONS), "counts": counts.tolist(),
                                    "normalized": normalised.round(4).tolist()}, indent=1))
    for suffix, matrix, fmt in (("", counts, "d"), ("_normalized", normalised, ".2f")):
        fig, ax = plt.subplots(figsize=(6.4, 5.6))
        ConfusionMatrixDisplay(matrix, display_labels=EMOTIONS).plot(
            ax=ax, values_format=fmt, cmap="Blues", colorbar=False, xticks_rotation=45)
        ax.set_title(title + (" (row-normalised)" if suffix else ""))
        fig.tight_layout()
        png = stem.with_name(stem.name + suffix + ".png")
        fig.savefig(png, dpi=100)
        plt.close(fig)
        files.append(png)
    return files


def write_report(y_true: np.ndarray, y_pred: np.ndarray, stem: Path) -> list[Path]:
    """Writes scikit-learn's classification report as text and JSON."""
    kwargs = dict(labels=LABELS, target_names=list(EMOTIONS), zero_division=0, digits=4)
    stem.parent.mkdir(parents=True, exist_ok=True)
    text, js = stem.with_suffix(".txt"), stem.with_suffix(".json")
    text.write_text(classification_report(y_true, y_pred, **kwargs))
    js.write_text(json.dumps(classification_report(y_true, y_pred, output_dict=True, **kwargs),
                             indent=1))
    return [text, js]
