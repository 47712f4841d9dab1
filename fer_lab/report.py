"""The comparison the seed's slides made, generated from the tracking store.

``write_report`` reads each family's latest finished study (or its registered champion's),
and writes ``report.md``, a self-contained ``report.html`` (images inlined) and the PNGs:
a table of validation and test scores with the seed's published figures as reference
rows, per-class F1, trial counts, wall times and best parameters; the row-normalised
confusion matrices side by side; a per-class F1 bar chart; each study's optimisation
history.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Run  # noqa: E402

from fer_lab import registry  # noqa: E402
from fer_lab.data import EMOTIONS  # noqa: E402

# The seed team's slides: accuracy on the 7,178 PublicTest + PrivateTest images.
SEED_FIGURES = {"tree": 0.29, "forest": 0.40, "svm": 0.44, "cnn": 0.27}
SCORE_COLUMNS = [  # (heading, metric)
    ("val acc", "val_accuracy"), ("test_private acc", "test_private_accuracy"),
    ("test_public acc", "test_public_accuracy"), ("test_all acc", "test_all_accuracy"),
    ("test_all macro P", "test_all_macro_precision"), ("test_all macro R", "test_all_macro_recall"),
    ("test_all macro F1", "test_all_macro_f1"),
]
SELECTIONS = ("latest", "champion")


@dataclass
class Study:
    """One family's study run, as the report shows it."""

    family: str
    run: Run
    confusion: np.ndarray | None = None  # row-normalised, on test_all
    history_png: Path | None = None
    best_params: dict[str, str] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return self.run.data.metrics

    def trials(self) -> str:
        m = self.metrics
        return "/".join(str(int(m.get(f"trials_{s}", 0))) for s in ("complete", "pruned", "failed"))


def studies(experiment: str, selection: str = "latest", parent: str | None = None) -> list[Study]:
    """Each family's latest finished study in ``experiment`` (only those nested in run
    ``parent`` when given), or the study that produced its registered champion."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, not {selection!r}")
    client = MlflowClient()
    found: dict[str, Run] = {}
    if selection == "champion":
        from fer_lab.models import families

        for family in families():
            version = registry.champion_version(client, registry.model_name(family))
            if version is not None and version.run_id:
                found[family] = client.get_run(version.run_id)
    else:
        where = "tags.`fer.role` = 'study' and attributes.status = 'FINISHED'"
        scope = {"experiment_names": [experiment]}
        if parent:  # the parent's experiment: `mlflow run` may have put it in another
            where += f" and tags.`mlflow.parentRunId` = '{parent}'"
            scope = {"experiment_ids": [client.get_run(parent).info.experiment_id]}
        runs = mlflow.search_runs(**scope, output_format="list", filter_string=where,
                                  order_by=["attributes.start_time DESC"])
        for run in runs:
            found.setdefault(run.data.tags["fer.family"], run)
    return [Study(f, r) for f, r in sorted(found.items())]


def _fetch(study: Study, tmp: Path) -> None:
    client = MlflowClient()
    run_id = study.run.info.run_id
    try:
        path = client.download_artifacts(run_id, "evaluation/confusion_test_all.json", str(tmp))
        study.confusion = np.array(json.loads(Path(path).read_text())["normalized"])
    except Exception:  # noqa: BLE001  an older or failed run without the file: shown blank
        study.confusion = None
    try:
        study.history_png = Path(client.download_artifacts(
            run_id, "optuna/optimization_history.png", str(tmp / study.family)))
    except Exception:  # noqa: BLE001
        study.history_png = None
    study.best_params = {k.removeprefix("best_"): v for k, v in study.run.data.params.items()
                         if k.startswith("best_")}


def _plot_confusions(found: list[Study], path: Path) -> None:
    shown = [s for s in found if s.confusion is not None]
    cols = max(min(len(shown), 3), 1)
    rows = max((len(shown) + cols - 1) // cols, 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, study in zip(axes.flat, shown):
        ax.axis("on")
        ax.imshow(study.confusion, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(study.confusion):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v > 0.5 else "black")
        ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, fontsize=8)
        ax.set_yticks(range(len(EMOTIONS)), EMOTIONS, fontsize=8)
        acc = study.metrics.get("test_all_accuracy", float("nan"))
        ax.set_title(f"{study.family} (test_all acc {acc:.3f})", fontsize=10)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.suptitle("Row-normalised confusion matrices on test_all (PublicTest + PrivateTest)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_f1(found: list[Study], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / max(len(found), 1)
    x = np.arange(len(EMOTIONS))
    for k, study in enumerate(found):
        f1 = [study.metrics.get(f"test_all_{e}_f1", 0.0) for e in EMOTIONS]
        ax.bar(x + (k - (len(found) - 1) / 2) * width, f1, width, label=study.family)
    ax.set_xticks(x, EMOTIONS)
    ax.set_ylabel("F1 on test_all")
    ax.set_ylim(0, 1)
    ax.set_title("Per-class F1 across models")
    ax.legend(ncol=min(len(found), 6), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _short(text: str) -> str:
    """A parameter as the table shows it: floats to 4 significant digits."""
    try:
        value = float(text)
    except ValueError:
        return text
    return text if value.is_integer() and "." not in text else f"{value:.4g}"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def machine_label(tags: dict[str, str]) -> str:
    """Where a study ran, beside its times (times compare only on one machine): e.g.
    ``AMD EPYC, avx2, cpu, 2 threads``; empty for runs recorded before machines were."""
    if "fer.isa" not in tags:
        return ""
    return (f"{tags.get('fer.cpu', '?')}, {tags['fer.isa']}, {tags.get('fer.accelerator', '?')}, "
            f"{tags.get('fer.threads', '?')} threads")


def table(found: list[Study]) -> tuple[list[str], list[list[str]]]:
    """The comparison table: heading and rows (reference rows in italics)."""
    head = (["model"] + [h for h, _ in SCORE_COLUMNS] + [f"F1 {e}" for e in EMOTIONS]
            + ["trials (complete/pruned/failed)", "search s", "refit s", "machine",
               "best parameters", "run"])
    rows = []
    for s in found:
        m = s.metrics
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(s.best_params.items()))
        rows.append([s.family] + [_fmt(m.get(k)) for _, k in SCORE_COLUMNS]
                    + [_fmt(m.get(f"test_all_{e}_f1"), 3) for e in EMOTIONS]
                    + [s.trials(), _fmt(m.get("search_seconds"), 0),
                       _fmt(m.get("fit_seconds"), 0), machine_label(s.run.data.tags),
                       params, s.run.info.run_id[:8]])
    for family, accuracy in SEED_FIGURES.items():
        cells = ["" for _ in head]
        cells[0] = f"*seed slides: {family} (reference)*"
        cells[head.index("test_all acc")] = f"*{accuracy:.2f}*"
        rows.append(cells)
    return head, rows


def _markdown(head: list[str], rows: list[list[str]], images: list[tuple[str, str]],
              title: str) -> str:
    lines = [f"# {title}", "", _PROTOCOL, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    for caption, name in images:
        lines += ["", f"## {caption}", "", f"![{caption}]({name})"]
    return "\n".join(lines) + "\n"


def _html(head: list[str], rows: list[list[str]], images: list[tuple[str, str]], out: Path,
          title: str) -> str:
    def cell(text: str, tag: str) -> str:
        italic = re.fullmatch(r"\*(.*)\*", text)
        inner = f"<em>{html.escape(italic[1])}</em>" if italic else html.escape(text)
        return f"<{tag}>{inner}</{tag}>"

    body = ["<table>", "<tr>" + "".join(cell(h, "th") for h in head) + "</tr>"]
    body += ["<tr>" + "".join(cell(c, "td") for c in row) + "</tr>" for row in rows]
    body.append("</table>")
    for caption, name in images:
        data = base64.b64encode((out / name).read_bytes()).decode()
        body += [f"<h2>{html.escape(caption)}</h2>",
                 f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">']
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(_PROTOCOL)}</p>" + "\n".join(body) + "</body></html>\n")


_PROTOCOL = ("Trained on Training minus a stratified, seeded validation carve; the carve alone "
             "chose hyper-parameters, pruning and models. test_private = PrivateTest, "
             "test_public = PublicTest, test_all = both (the 7,178 images of the seed's "
             "slides). Macro precision / recall / F1 and per-class F1 on test_all. "
             "Reference rows are the seed team's published accuracies, not runs.")


def write_report(out: str | Path, experiment: str = "fer-lab", selection: str = "latest",
                 parent: str | None = None) -> Path:
    """Writes the report into ``out``; returns the HTML file.

    Args:
        out: the folder to write into.
        experiment: the MLflow experiment to read.
        selection: ``latest`` study per family, or the study of each ``champion``.
        parent: only studies nested in this run (a ``compare`` run).

    Raises:
        LookupError: the experiment has no finished study.
    """
    out = Path(out)
    found = studies(experiment, selection, parent)
    if not found:
        raise LookupError(f"no finished study in experiment {experiment!r}: "
                          "run `fer-lab tune FAMILY` first")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for study in found:
            _fetch(study, Path(tmp))
        _plot_confusions(found, out / "confusion_matrices.png")
        _plot_f1(found, out / "per_class_f1.png")
        images = [("Row-normalised confusion matrices (test_all)", "confusion_matrices.png"),
                  ("Per-class F1 (test_all)", "per_class_f1.png")]
        for study in found:
            if study.history_png is not None:
                name = f"optimization_history_{study.family}.png"
                shutil.copyfile(study.history_png, out / name)
                images.append((f"Optimisation history: {study.family}", name))
    title = f"fer-lab: model comparison ({selection} study per family, experiment {experiment})"
    head, rows = table(found)
    (out / "report.md").write_text(_markdown(head, rows, images, title))
    page = out / "report.html"
    page.write_text(_html(head, rows, images, out, title))
    return page


def log_report(out: str | Path, experiment: str = "fer-lab", selection: str = "latest",
               parent: str | None = None) -> Path:
    """Writes the report and logs it as the artifacts of a run of its own, ``report``
    (nested in the active run, if any)."""
    from fer_lab import tracking

    page = write_report(out, experiment, selection, parent)
    with tracking.report_run(experiment):
        mlflow.log_artifacts(str(Path(out)), artifact_path="report")
    return page
