"""Scores and report files for one set of predictions; the same for every family."""

from __future__ import annotations

import json
from collections.abc import Sequence
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

BOOTSTRAP_RESAMPLES = 1000
# Every function takes the class names (label i is classes[i]); FER2013's by default.
Classes = Sequence[str]


def _labels(classes: Classes) -> list[int]:
    return list(range(len(classes)))


def scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[int] | None = None,
           classes: Classes = EMOTIONS) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 (averaged over ``labels``, default every
    class)."""
    labels = labels or _labels(classes)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                 average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "macro_precision": float(p),
            "macro_recall": float(r), "macro_f1": float(f)}


def intervals(y_true: np.ndarray, y_pred: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
              seed: int = 0, level: float = 0.95,
              classes: Classes = EMOTIONS) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals of accuracy and macro-F1 over the split's images.

    Each resample draws the images with replacement (seeded: the same interval for the
    same predictions); macro-F1 comes from each resample's confusion counts.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n, k = len(y_true), len(classes)
    if n == 0:
        return {"accuracy": (0.0, 0.0), "macro_f1": (0.0, 0.0)}
    rng = np.random.default_rng(seed)
    pairs = y_true * k + y_pred  # one confusion cell per image
    accuracy, macro_f1 = np.empty(resamples), np.empty(resamples)
    for i in range(resamples):
        cells = np.bincount(pairs[rng.integers(0, n, n)], minlength=k * k).reshape(k, k)
        hit = np.diag(cells).astype(np.float64)
        accuracy[i] = hit.sum() / n
        # F1 = 2TP / (2TP + FP + FN) = 2TP / (true count + predicted count); 0 where empty.
        denominator = cells.sum(0) + cells.sum(1)
        macro_f1[i] = np.mean(np.divide(2 * hit, denominator, out=np.zeros(k),
                                        where=denominator > 0))
    tail = (1 - level) / 2 * 100
    return {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail)))
            for name, v in (("accuracy", accuracy), ("macro_f1", macro_f1))}


def interval_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                     classes: Classes = EMOTIONS) -> dict[str, float]:
    """``{accuracy,macro_f1}_ci95_{low,high}``, as logged beside a split's scores."""
    return {f"{measure}_ci95_{side}": bound
            for measure, bounds in intervals(y_true, y_pred, classes=classes).items()
            for side, bound in zip(("low", "high"), bounds)}


def mcnemar(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Two-sided p-value of McNemar's exact test that two models, scored on the same images,
    are equally accurate: a binomial test on the images exactly one of them gets right."""
    from scipy.stats import binomtest

    right_a, right_b = np.asarray(pred_a) == y_true, np.asarray(pred_b) == y_true
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def per_class(y_true: np.ndarray, y_pred: np.ndarray,
              classes: Classes = EMOTIONS) -> dict[str, float]:
    """Per-class precision, recall and F1, keyed ``<class>_<measure>``."""
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=_labels(classes),
                                                 zero_division=0)
    out = {}
    for i, name in enumerate(classes):
        out.update({f"{name}_precision": float(p[i]), f"{name}_recall": float(r[i]),
                    f"{name}_f1": float(f[i])})
    return out


def write_confusion(y_true: np.ndarray, y_pred: np.ndarray, stem: Path, title: str,
                    classes: Classes = EMOTIONS) -> list[Path]:
    """Writes the confusion matrix as JSON (class names, counts and row-normalised) and two
    PNGs."""
    counts = confusion_matrix(y_true, y_pred, labels=_labels(classes))
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = [stem.with_suffix(".json")]
    files[0].write_text(json.dumps({"labels": list(classes), "counts": counts.tolist(),
                                    "normalized": normalised.round(4).tolist()}, indent=1))
    for suffix, matrix, fmt in (("", counts, "d"), ("_normalized", normalised, ".2f")):
        fig, ax = plt.subplots(figsize=(6.4, 5.6))
        ConfusionMatrixDisplay(matrix, display_labels=list(classes)).plot(
            ax=ax, values_format=fmt, cmap="Blues", colorbar=False, xticks_rotation=45)
        ax.set_title(title + (" (row-normalised)" if suffix else ""))
        fig.tight_layout()
        png = stem.with_name(stem.name + suffix + ".png")
        fig.savefig(png, dpi=100)
        plt.close(fig)
        files.append(png)
    return files


def write_report(y_true: np.ndarray, y_pred: np.ndarray, stem: Path,
                 classes: Classes = EMOTIONS) -> list[Path]:
    """Writes scikit-learn's classification report as text and JSON."""
    kwargs = dict(labels=_labels(classes), target_names=list(classes), zero_division=0,
                  digits=4)
    stem.parent.mkdir(parents=True, exist_ok=True)
    text, js = stem.with_suffix(".txt"), stem.with_suffix(".json")
    text.write_text(classification_report(y_true, y_pred, **kwargs))
    js.write_text(json.dumps(classification_report(y_true, y_pred, output_dict=True, **kwargs),
                             indent=1))
    return [text, js]


def write_predictions(y_true: np.ndarray, proba: np.ndarray, path: Path,
                      classes: Classes = EMOTIONS) -> Path:
    """Every image's label, prediction and probabilities (a column per class), in the
    split's order, as CSV."""
    import pandas as pd

    frame = pd.DataFrame({"label": np.asarray(y_true), "prediction": proba.argmax(axis=1)})
    for i, name in enumerate(classes):
        frame[name] = np.round(proba[:, i], 5)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, predictions and probabilities (its class columns, in order) from
    ``write_predictions``' file."""
    import pandas as pd

    frame = pd.read_csv(path)
    return (frame["label"].to_numpy(), frame["prediction"].to_numpy(),
            frame.drop(columns=["label", "prediction"]).to_numpy())


def write_mistakes(X: np.ndarray, y_true: np.ndarray, proba: np.ndarray, path: Path,
                   title: str, per_class: int = 6, classes: Classes = EMOTIONS) -> Path:
    """A gallery of the most confident mistakes: a row per true class, its ``per_class``
    wrongly classified faces of highest confidence, each captioned with the prediction."""
    y_pred = proba.argmax(axis=1)
    confidence = proba.max(axis=1)
    fig, axes = plt.subplots(len(classes), per_class, squeeze=False,
                             figsize=(1.25 * per_class + 0.9, 1.45 * len(classes)))
    for label, row in enumerate(axes):
        wrong = np.flatnonzero((y_true == label) & (y_pred != label))
        chosen = wrong[np.argsort(-confidence[wrong], kind="stable")[:per_class]]
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("off")
        row[0].axis("on")
        row[0].set_ylabel(classes[label], fontsize=8)
        for ax, i in zip(row, chosen):
            ax.axis("on")
            ax.imshow(np.asarray(X[i]).reshape(48, 48), cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{classes[y_pred[i]]} {confidence[i]:.2f}", fontsize=7)
    fig.suptitle(f"{title}: most confident mistakes (row: true class; caption: predicted, "
                 "confidence)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
