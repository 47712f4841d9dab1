"""The comparison the seed's slides made, generated from the tracking store.

``write_report`` reads each family's latest finished study and, beside it, its latest
distilled network's (or each family's registered champion's study), and writes
``report.md``, a self-contained ``report.html`` (images inlined) and the PNGs, one page in
sections:

- scores: validation and test accuracy with 95% bootstrap intervals, macro-F1, whether
  the best model's lead on test_all over each other holds under McNemar's paired test,
  any ``fer-lab evaluate`` runs of the model on other data, and the seed's published
  figures as reference rows;
- per class: precision, recall and F1 on test_all;
- calibration: the temperature and test_all's ECE before and after it, NLL, Brier;
- cost: trials, search and refit times, prediction speed, model size, the machine, the
  best parameters (and a distilled network's teacher);
- confusion matrices (row-normalised, with the counts), per-class F1, each model's most
  confident mistakes and each study's optimisation history.

Studies of a label set other than FER2013's own (``fer_lab.labels``: FER+) score other
classes on other test images: they get the same sections of their own, after FER2013's,
named for their label set (``Scores (ferplus labels)``), and are never compared with
FER2013's studies.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Run  # noqa: E402

from fer_lab import labels, registry, tracking  # noqa: E402

# The seed team's slides: accuracy on the 7,178 PublicTest + PrivateTest images.
SEED_FIGURES = {"tree": 0.29, "forest": 0.40, "svm": 0.44, "cnn": 0.27}
SCORE_COLUMNS = [  # (heading, metric): shown with their intervals where logged
    ("val acc", "val_accuracy"), ("test_private acc", "test_private_accuracy"),
    ("test_public acc", "test_public_accuracy"), ("test_all acc", "test_all_accuracy"),
    ("test_all macro F1", "test_all_macro_f1"),
]
CALIBRATION_COLUMNS = [
    ("temperature", "calibration_temperature"), ("test_all ECE before", "test_all_ece_uncalibrated"),
    ("test_all ECE after", "test_all_ece"), ("test_all NLL", "test_all_nll"),
    ("test_all Brier", "test_all_brier"),
]
PAIRED_ALPHA = 0.05
SELECTIONS = ("latest", "champion")


@dataclass
class Study:
    """One family's study run, as the report shows it."""

    family: str
    run: Run
    confusion: np.ndarray | None = None  # row-normalised, on test_all
    counts: np.ndarray | None = None  # the same confusion matrix, in faces
    history_png: Path | None = None
    mistakes_png: Path | None = None
    best_params: dict[str, str] = field(default_factory=dict)
    predictions: tuple[np.ndarray, np.ndarray] | None = None  # test_all labels, predictions
    model_bytes: int | None = None
    evaluations: list[Run] = field(default_factory=list)  # `fer-lab evaluate` runs of its model
    classes: tuple[str, ...] = ()  # the confusion matrix's classes, as logged

    @property
    def metrics(self) -> dict[str, float]:
        return self.run.data.metrics

    @property
    def label_set(self) -> str:
        """The study's label set; FER2013's for studies recorded before label sets."""
        return self.run.data.tags.get(tracking.LABELS_TAG) or labels.DEFAULT

    @property
    def teacher(self) -> str:
        """The model a distilled network learnt from; "" for a plain study. Runs recorded
        before the tag have it as `mlflow run`'s ``teacher`` parameter."""
        return (self.run.data.tags.get(tracking.TEACHER_TAG)
                or self.run.data.params.get("teacher") or "")

    @property
    def name(self) -> str:
        """The model as the report names it: its family, marked when distilled."""
        return f"{self.family} (distilled)" if self.teacher else self.family

    @property
    def slug(self) -> str:
        """The name in file names."""
        return re.sub(r"\W+", "_", self.name).strip("_")

    def trials(self) -> str:
        m = self.metrics
        return "/".join(str(int(m.get(f"trials_{s}", 0))) for s in ("complete", "pruned", "failed"))


def studies(experiment: str, selection: str = "latest",
            runs: Sequence[str] | None = None) -> list[Study]:
    """Each family's latest finished study in ``experiment`` (only the study runs ``runs``
    when given: a ``compare``'s), and its latest distilled one beside it; or the study that
    produced its registered champion. One per label set, FER2013's first."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, not {selection!r}")
    client = MlflowClient()
    found: dict[tuple[str, str, bool], Study] = {}  # label set, family, distilled
    if selection == "champion":
        from fer_lab.models import families

        for label_set in labels.LABEL_SETS:
            for family in families():
                version = registry.champion_version(client,
                                                    registry.model_name(family, label_set))
                if version is not None and version.run_id:
                    found[label_set, family, False] = Study(family,
                                                            client.get_run(version.run_id))
    else:
        where = "tags.`fer.role` = 'study' and attributes.status = 'FINISHED'"
        scope = {"experiment_names": [experiment]}
        if runs is not None:  # their experiment: `mlflow run` may have put them in another
            if not runs:
                return []
            where += " and attributes.run_id IN ({})".format(
                ", ".join(f"'{run_id}'" for run_id in runs))
            scope = {"experiment_ids": sorted({client.get_run(r).info.experiment_id
                                               for r in runs})}
        for run in mlflow.search_runs(**scope, output_format="list", filter_string=where,
                                      order_by=["attributes.start_time DESC"]):
            study = Study(run.data.tags["fer.family"], run)
            found.setdefault((study.label_set, study.family, bool(study.teacher)), study)
    order = list(labels.LABEL_SETS)
    return [study for _, study in
            sorted(found.items(), key=lambda item: (_rank(item[0][0], order), item[0]))]


def _rank(label_set: str, order: list[str]) -> int:
    return order.index(label_set) if label_set in order else len(order)


def by_label_set(found: list[Study]) -> dict[str, list[Study]]:
    """The studies grouped by label set, in ``found``'s order (FER2013's first)."""
    groups: dict[str, list[Study]] = {}
    for study in found:
        groups.setdefault(study.label_set, []).append(study)
    return groups


def classes_of(group: list[Study]) -> tuple[str, ...]:
    """The classes of one label set's studies: as their confusion matrices name them, else
    the label set's."""
    logged = [s.classes for s in group if s.classes]
    if logged:
        return logged[0]
    name = group[0].label_set
    return labels.classes_of(name) if name in labels.LABEL_SETS else ()


def _fetch(study: Study, tmp: Path) -> None:
    """Downloads what the report shows of a study beyond its metrics."""
    from fer_lab import evaluation

    client = MlflowClient()
    run_id = study.run.info.run_id

    def download(path: str) -> Path | None:
        try:
            folder = tmp / study.label_set / study.slug  # a model per label set
            folder.mkdir(parents=True, exist_ok=True)
            return Path(client.download_artifacts(run_id, path, str(folder)))
        except Exception:  # noqa: BLE001  an older or failed run without the file: shown blank
            return None

    confusion = download("evaluation/confusion_test_all.json")
    if confusion is not None:
        numbers = json.loads(confusion.read_text())
        study.confusion, study.counts = np.array(numbers["normalized"]), np.array(numbers["counts"])
        study.classes = tuple(numbers.get("labels") or labels.classes_of(study.label_set))
    predictions = download("evaluation/predictions_test_all.csv")
    if predictions is not None:
        study.predictions = evaluation.read_predictions(predictions)[:2]
    study.history_png = download("optuna/optimization_history.png")
    study.mistakes_png = download("evaluation/confident_mistakes_test_all.png")
    study.best_params = {k.removeprefix("best_"): v for k, v in study.run.data.params.items()
                         if k.startswith("best_")}
    try:
        study.model_bytes = sum(a.file_size or 0 for a in client.list_artifacts(run_id, "model"))
    except Exception:  # noqa: BLE001
        study.model_bytes = None
    study.evaluations = mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.`fer.role` = 'evaluation' and tags.`fer.model_run_id` = '{run_id}'",
        order_by=["attributes.start_time DESC"])


def _plot_confusions(found: list[Study], path: Path, note: str = "") -> None:
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
            count = "" if study.counts is None else f"\n{study.counts[i, j]}"
            ax.text(j, i, f"{v:.2f}{count}", ha="center", va="center", fontsize=6,
                    color="white" if v > 0.5 else "black")
        names = study.classes or labels.classes_of(study.label_set)
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        acc = study.metrics.get("test_all_accuracy", float("nan"))
        ax.set_title(f"{study.name} (test_all acc {acc:.3f})", fontsize=10)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.suptitle("Confusion matrices on test_all (PublicTest + PrivateTest): row-normalised, "
                 f"with the faces counted under{note}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_f1(found: list[Study], classes: tuple[str, ...], path: Path, note: str = "") -> None:
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / max(len(found), 1)
    x = np.arange(len(classes))
    for k, study in enumerate(found):
        f1 = [study.metrics.get(f"test_all_{e}_f1", 0.0) for e in classes]
        ax.bar(x + (k - (len(found) - 1) / 2) * width, f1, width, label=study.name)
    ax.set_xticks(x, classes)
    ax.set_ylabel("F1 on test_all")
    ax.set_ylim(0, 1)
    ax.set_title(f"Per-class F1 across models{note}")
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


def _with_interval(m: dict[str, float], key: str) -> str:
    """A score and its 95% interval where logged, e.g. ``0.6801 [0.6648, 0.6950]``."""
    if m.get(key) is None:
        return ""
    low, high = m.get(f"{key}_ci95_low"), m.get(f"{key}_ci95_high")
    if low is None or high is None:
        return _fmt(m[key])
    return f"{m[key]:.4f} [{low:.4f}, {high:.4f}]"


def paired(found: list[Study]) -> dict[str, str]:
    """For each model, how the best model on test_all compares with it: McNemar's exact
    test on the images, when both predicted the same test_all (same data)."""
    from fer_lab import evaluation

    scored = [s for s in found if s.metrics.get("test_all_accuracy") is not None]
    if not scored:
        return {}
    best = max(scored, key=lambda s: s.metrics["test_all_accuracy"])
    out = {best.name: "best"}
    for other in scored:
        if other is best:
            continue
        same_data = (best.predictions is not None and other.predictions is not None
                     and best.run.data.tags.get("fer.data_digest")
                     == other.run.data.tags.get("fer.data_digest")
                     and np.array_equal(best.predictions[0], other.predictions[0]))
        if not same_data:
            out[other.name] = "not comparable"
            continue
        p = evaluation.mcnemar(best.predictions[0], best.predictions[1], other.predictions[1])
        verdict = "holds" if p < PAIRED_ALPHA else "not significant"
        out[other.name] = f"{best.name} {verdict} (p={p:.2g})"
    return out


def _evaluation_columns(found: list[Study]) -> list[str]:
    """One column per data set a selected model was evaluated on with `fer-lab evaluate`."""
    return sorted({_evaluation_heading(r) for s in found for r in s.evaluations})


def _evaluation_heading(run: Run) -> str:
    """The data set and split, and the test-time augmentation when not the model's own
    (`fer-lab evaluate --tta`): scores with other views are another column."""
    tags, tta = run.data.tags, run.data.params.get("tta", "model")
    return (f"acc on {Path(tags.get('fer.data_source', '?')).name} "
            f"({tags.get('fer.split', '?')}{'' if tta == 'model' else f', tta {tta}'})")


def scores_table(found: list[Study], reference: bool = True
                 ) -> tuple[list[str], list[list[str]]]:
    """Scores with intervals, the paired comparison with the best, other data sets; the
    seed's figures (on FER2013's labels) as reference rows (in italics) when
    ``reference``."""
    extra = _evaluation_columns(found)
    head = (["model"] + [h for h, _ in SCORE_COLUMNS]
            + ["best vs this (McNemar, test_all)"] + extra)
    verdicts = paired(found)
    rows = []
    for s in found:
        m = s.metrics
        latest = {}
        for run in s.evaluations:  # newest first: keep the newest per data set
            latest.setdefault(_evaluation_heading(run), run)
        cells = []
        for heading in extra:
            run = latest.get(heading)
            split = run.data.tags.get("fer.split", "") if run else ""
            cells.append(_with_interval(run.data.metrics, f"{split}_accuracy") if run else "")
        rows.append([s.name] + [_with_interval(m, k) for _, k in SCORE_COLUMNS]
                    + [verdicts.get(s.name, "")] + cells)
    for family, accuracy in SEED_FIGURES.items() if reference else ():
        cells = ["" for _ in head]
        cells[0] = f"*seed slides: {family} (reference)*"
        cells[head.index("test_all acc")] = f"*{accuracy:.2f}*"
        rows.append(cells)
    return head, rows


def per_class_table(found: list[Study], classes: tuple[str, ...] = labels.FER2013.classes
                    ) -> tuple[list[str], list[list[str]]]:
    """Precision / recall / F1 per class of ``classes`` on test_all."""
    head = ["model"] + [f"{e} P/R/F1" for e in classes]
    rows = [[s.name] + ["/".join(_fmt(s.metrics.get(f"test_all_{e}_{k}"), 2)
                                   for k in ("precision", "recall", "f1")) for e in classes]
            for s in found]
    return head, rows


def calibration_table(found: list[Study]) -> tuple[list[str], list[list[str]]]:
    head = ["model"] + [h for h, _ in CALIBRATION_COLUMNS]
    rows = [[s.name] + [_fmt(s.metrics.get(k)) for _, k in CALIBRATION_COLUMNS] for s in found]
    return head, rows


def cost_table(found: list[Study]) -> tuple[list[str], list[list[str]]]:
    """Trials, times, prediction speed and size: times compare only on one machine."""
    head = ["model", "trials (complete/pruned/failed)", "search s", "refit s",
            "predict img/s", "model MB", "machine", "best parameters", "run"]
    rows = []
    for s in found:
        m = s.metrics
        seconds = m.get("test_all_predict_seconds")
        images = None if s.counts is None else int(s.counts.sum())
        speed = _fmt(images / seconds, 0) if images and seconds else ""
        size = "" if not s.model_bytes else f"{s.model_bytes / 1e6:.1f}"
        params = ", ".join([f"teacher={s.teacher}"] * bool(s.teacher) + [
            f"{k}={_short(v)}" for k, v in sorted(s.best_params.items())])
        rows.append([s.name, s.trials(), _fmt(m.get("search_seconds"), 0),
                     _fmt(m.get("fit_seconds"), 0), speed, size, machine_label(s.run.data.tags),
                     params, s.run.info.run_id[:8]])
    return head, rows


def tables(found: list[Study], classes: tuple[str, ...] = labels.FER2013.classes,
           reference: bool = True) -> list[tuple[str, list[str], list[list[str]]]]:
    """The tables of one label set's studies: (section title, heading, rows)."""
    return [("Scores", *scores_table(found, reference)),
            ("Per class on test_all", *per_class_table(found, classes)),
            ("Calibration", *calibration_table(found)), ("Cost", *cost_table(found))]


Table = tuple[str, list[str], list[list[str]]]


def _markdown(sections: list[Table], images: list[tuple[str, str]], title: str,
              protocol: str) -> str:
    lines = [f"# {title}", "", protocol]
    for caption, head, rows in sections:
        lines += ["", f"## {caption}", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    for caption, name in images:
        lines += ["", f"## {caption}", "", f"![{caption}]({name})"]
    return "\n".join(lines) + "\n"


def _html(sections: list[Table], images: list[tuple[str, str]], out: Path, title: str,
          protocol: str) -> str:
    def cell(text: str, tag: str) -> str:
        italic = re.fullmatch(r"\*(.*)\*", text)
        inner = f"<em>{html.escape(italic[1])}</em>" if italic else html.escape(text)
        return f"<{tag}>{inner}</{tag}>"

    body = []
    for caption, head, rows in sections:
        body += [f"<h2>{html.escape(caption)}</h2>", "<table>",
                 "<tr>" + "".join(cell(h, "th") for h in head) + "</tr>"]
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
            f"<p>{html.escape(protocol)}</p>" + "\n".join(body) + "</body></html>\n")


_PROTOCOL = ("Trained on Training minus a stratified, seeded validation carve; the carve alone "
             "chose hyper-parameters, pruning and models. test_private = PrivateTest, "
             "test_public = PublicTest, test_all = both (the 7,178 images of the seed's "
             "slides). Brackets: 95% bootstrap intervals over the images (1,000 resamples). "
             "Probabilities are calibrated by a temperature fitted on the validation carve (a "
             "network's, one per test-time augmentation). "
             "Reference rows are the seed team's published accuracies, not runs.")
_OTHER_LABELS = ("Sections named for another label set hold the studies of that label set, "
                 "apart: FER+ (ferplus) is Microsoft's relabelling of the same images by ten "
                 "annotators, taken by majority vote (8 classes: contempt added; images "
                 "without a majority, or judged unknown or not a face, left out), so its test "
                 "splits are fewer images with other labels and its scores never compare with "
                 "FER2013's.")


def write_report(out: str | Path, experiment: str = "fer-lab", selection: str = "latest",
                 runs: Sequence[str] | None = None) -> Path:
    """Writes the report into ``out``; returns the HTML file.

    Args:
        out: the folder to write into.
        experiment: the MLflow experiment to read.
        selection: ``latest`` study per family, or the study of each ``champion``.
        runs: only these study runs (a ``compare``'s).

    Raises:
        LookupError: the experiment has no finished study.
    """
    out = Path(out)
    found = studies(experiment, selection, runs)
    if not found:
        raise LookupError(f"no finished study in experiment {experiment!r}: "
                          "run `fer-lab tune FAMILY` first")
    out.mkdir(parents=True, exist_ok=True)
    sections: list[Table] = []
    images: list[tuple[str, str]] = []
    groups = by_label_set(found)
    with tempfile.TemporaryDirectory() as tmp:
        for study in found:
            _fetch(study, Path(tmp))
        for label_set, group in groups.items():
            # FER2013's sections and files keep their plain names; another label set's
            # are named for it, e.g. "Scores (ferplus labels)", per_class_f1_ferplus.png.
            own = label_set == labels.DEFAULT
            note, stem = ("", "") if own else (f" ({label_set} labels)", f"_{label_set}")
            classes = classes_of(group)
            sections += [(caption + note, head, rows)
                         for caption, head, rows in tables(group, classes, reference=own)]
            _plot_confusions(group, out / f"confusion_matrices{stem}.png", note)
            _plot_f1(group, classes, out / f"per_class_f1{stem}.png", note)
            images += [(f"Confusion matrices (test_all){note}", f"confusion_matrices{stem}.png"),
                       (f"Per-class F1 (test_all){note}", f"per_class_f1{stem}.png")]
            for kind, caption, attribute in (
                    ("confident_mistakes", "Most confident mistakes", "mistakes_png"),
                    ("optimization_history", "Optimisation history", "history_png")):
                for study in group:
                    if getattr(study, attribute) is not None:
                        name = f"{kind}{stem}_{study.slug}.png"
                        shutil.copyfile(getattr(study, attribute), out / name)
                        images.append((f"{caption}: {study.name}{note}", name))
    title = f"fer-lab: model comparison ({selection} study per family, experiment {experiment})"
    protocol = _PROTOCOL + (" " + _OTHER_LABELS if set(groups) - {labels.DEFAULT} else "")
    (out / "report.md").write_text(_markdown(sections, images, title, protocol))
    page = out / "report.html"
    page.write_text(_html(sections, images, out, title, protocol))
    return page


def log_report(out: str | Path, experiment: str = "fer-lab", selection: str = "latest",
               runs: Sequence[str] | None = None) -> Path:
    """Writes the report and logs it as the artifacts of a run of its own, ``report``
    (nested in the active run, if any)."""
    page = write_report(out, experiment, selection, runs)
    with tracking.report_run(experiment):
        mlflow.log_artifacts(str(Path(out)), artifact_path="report")
    return page
