"""The ``fer-lab`` command: thin argument parsing over functions that return results."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from fer_lab import __version__
from fer_lab import data as fer_data
from fer_lab import labels as label_sets
from fer_lab.analysis.analyzer import DETECT_INTERVAL
from fer_lab.config import BUDGETS, DEFAULT_BUDGET, DEFAULT_STORAGE, MAIN_JOB_BUDGET


def _families(args: argparse.Namespace) -> int:
    from fer_lab.models import families, get

    for name in families():
        doc = (get(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:10s} {doc}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    dataset = label_sets.load(args.path, args.labels)
    counts = dataset.counts()
    width = max(len(e) for e in (*dataset.classes, "total"))
    print(f"{dataset.source}: {len(dataset.labels)} images, digest {dataset.digest}, "
          f"labels {dataset.label_set}")
    print(f"{'class':{width}s} " + " ".join(f"{u:>11s}" for u in counts))
    for i, emotion in enumerate(dataset.classes):
        print(f"{emotion:{width}s} " + " ".join(f"{c[i]:11d}" for c in counts.values()))
    print(f"{'total':{width}s} " + " ".join(f"{sum(c):11d}" for c in counts.values()))
    return 0


def _count(text: str) -> int | None:
    """An MLproject number ("20" or "20.0"); 0 means "the config's value"."""
    return int(float(text)) or None


def _seconds(text: str) -> float | None:
    return float(text) or None


FAMILY_OPTIONS = {"devices": "families trained with Lightning (cnn)",
                  "strategy": "families trained with Lightning (cnn)",
                  "teacher": "networks (cnn)", "members": "ensembles"}


def _tune(args: argparse.Namespace) -> int:
    from fer_lab.config import TuneConfig, load_family
    from fer_lab.tuning import tune

    model = load_family(args.family, args.config, budget=args.budget, trials=args.trials,
                        timeout=args.timeout, objective=args.objective)
    members = [m.strip() for m in args.members.split(",") if m.strip()] \
        if args.members else None
    given = {k: v for k, v in (("devices", args.devices), ("strategy", args.strategy),
                               ("members", members), ("teacher", args.teacher or None))
             if v is not None}
    if given:  # options of some families only: the CNN's devices and teacher, the members
        from fer_lab.models import get

        known = set(get(args.family)().get_params())
        for name in given:
            if name not in known:
                raise ValueError(f"--{name} applies to {FAMILY_OPTIONS[name]}, "
                                 f"not {args.family!r}")
        model = dataclasses.replace(model, params={**model.params, **given})
    config = TuneConfig(model=model, data=args.data, labels=args.labels, seed=args.seed,
                        val_fraction=args.val_fraction, experiment=args.experiment,
                        storage=args.storage, study_name=args.study_name, budget=args.budget,
                        register=args.register, workers=args.workers,
                        heartbeat=args.heartbeat)
    if args.join:
        from fer_lab.tuning import join

        print(f"trials run by this worker: {join(config)}")
        return 0
    metrics = tune(config)
    if not metrics:
        print("joined the study's live lead, which refits and registers the best")
    _print_metrics(metrics)
    return 0


KEY_METRICS = ["val_accuracy", "val_macro_f1", "test_private_accuracy", "test_public_accuracy",
               "test_all_accuracy", "test_all_macro_f1", "fit_seconds", "search_seconds"]


def _print_metrics(metrics: dict[str, float], prefix: str = "") -> None:
    for key in KEY_METRICS:
        if key in metrics:
            print(f"{prefix}{key:24s} {metrics[key]:.4f}")


def _promote(args: argparse.Namespace) -> int:
    from fer_lab import registry, tracking

    tracking.configure()
    decision = registry.promote(args.labels)
    state = "changed" if decision.changed else "unchanged"
    print(f"{decision.name}@{registry.CHAMPION} = version {decision.version} ({state})")
    print(decision.reason)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fer_lab import predict, registry

    named = {Path(p) for p in args.paths if not Path(p).is_dir()}

    def unreadable(path: Path, err: Exception) -> None:
        if path in named:  # a file asked for by name fails; one found in a folder is skipped
            raise err
        print(f"skipped: {err}", file=sys.stderr)

    found = list(predict.faces(predict.expand(args.paths), detect=args.detect_faces,
                               no_face=lambda path: print(f"{path}: no face found",
                                                          file=sys.stderr),
                               detector=args.detector, unreadable=unreadable))
    if not found:
        print("no face to classify", file=sys.stderr)
        return 1
    if args.explain and not args.out:
        raise ValueError("--explain writes images: give the folder with --out DIR")
    model = registry.load_model(args.model)
    table = predict.classify(model, found)
    if args.explain:
        written = predict.explain_faces(model, found, table, args.out, args.explain_method)
        print(f"explanations: {len(written)} images in {args.out}", file=sys.stderr)
    if args.csv:
        table.to_csv(sys.stdout, index=False, float_format="%.4f")
    else:
        shown = table[["file", "box", "emotion", "confidence"]] if args.detect_faces \
            else table[["file", "emotion", "confidence"]]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from fer_lab.analysis import job
    from fer_lab.analysis.analyzer import Analyzer

    if args.every < 1:
        raise ValueError(f"--every must be at least 1, not {args.every}")
    analyzer = Analyzer(args.model, detector=args.detector, tta=args.tta,
                        detect_interval=args.detect_interval, min_face=args.min_face)
    outcome = job.analyze(args.sources, analyzer, args.out, every=args.every, fps=args.fps,
                          max_seconds=args.max_seconds, annotate=args.annotate,
                          experiment=None if args.no_log else args.experiment)
    for error in outcome.errors:
        print(f"error: {error}", file=sys.stderr)
    for reason in outcome.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    faces = outcome.frames[outcome.frames["face_id"].notna()]
    print(f"{outcome.frames_analysed} frames analysed in {outcome.seconds:.1f} s "
          f"({outcome.fps:.1f} frames/s), {len(faces)} faces classified"
          + (" (interrupted)" if outcome.interrupted else ""))
    for path in outcome.written:
        print(f"  {path}")
    if outcome.run_id:
        print(f"MLflow run {outcome.run_id} (fer.role=analysis)")
    return 1 if outcome.errors or not outcome.frames_analysed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from fer_lab import evaluate, pyfunc, registry
    from fer_lab.models import has_views

    model = registry.load_model(args.model)
    if args.tta != "model" and not has_views(model.unwrap_python_model().estimator):
        raise ValueError(f"--tta {args.tta}: {args.model} has no test-time augmentation "
                         "(networks and ensembles of them have); leave --tta out")
    faces = evaluate.load_faces(args.data, args.split, args.detect_faces,
                                args.labels or pyfunc.label_set_of(model),
                                strict=args.labels is not None)
    for path in faces.skipped:
        print(f"{path}: no face found (skipped)", file=sys.stderr)
    m = evaluate.evaluate(args.model, faces, args.experiment, model=model, tta=args.tta)
    s = faces.split
    left_out = int(m["faces_left_out"])
    views = "" if args.tta == "model" else f", tta {args.tta}"
    print(f"{args.model} on {faces.source} ({s}{views}): {int(m['faces'])} faces"
          + (f" ({left_out} more of classes the model lacks left out)" if left_out else ""))
    for measure in ("accuracy", "macro_f1"):
        print(f"{measure:24s} {m[f'{s}_{measure}']:.4f}  (95% CI "
              f"{m[f'{s}_{measure}_ci95_low']:.4f}-{m[f'{s}_{measure}_ci95_high']:.4f})")
    for key in ("accuracy_present", "macro_f1_present", "ece", "ece_uncalibrated", "nll"):
        print(f"{key:24s} {m[f'{s}_{key}']:.4f}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from fer_lab import report, tracking

    tracking.configure()
    print(report.log_report(args.out, args.experiment, args.select))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from fer_lab.compare import compare

    result = compare(args.data, args.budget, args.families or None, seed=args.seed,
                     experiment=args.experiment, storage=args.storage, out=args.out,
                     labels=args.labels)
    for family, metrics in result.metrics.items():
        print(f"[{family}]")
        _print_metrics(metrics, "  ")
    print(f"promoted: {result.promotion.reason}")
    print(f"report: {result.report}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from fer_lab.bench import bench, format_table

    result = bench(args.arch or None, steps=args.steps, warmup=args.warmup, batch=args.batch,
                   width=args.width, repeats=args.repeats, path=not args.no_path)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


def _says_default(text: str) -> bool:
    return "(default" in text or "; default" in text or text.startswith("default:")


class _Help(argparse.HelpFormatter):
    """Help that shows every option's default (unless its text already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if _says_default(text) or action.default is None or action.default is False \
                or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: {action.default})" if text else f"default: {action.default}"


DATA_HELP = ("fer2013.csv[.gz], Kaggle's download (zip or tar.gz), an image folder, or "
             "'synthetic' (generated faces)")
LABELS_HELP = ("the label set: fer2013 (the competition's 7 classes), ferplus (Microsoft's "
               "FER+ majority votes, 8 classes, read from fer2013new.csv beside the data) or "
               "ferplus:FILE (the votes file named)")


def _seed(text: str) -> int:
    return int(float(text))


def _common(cmd: argparse.ArgumentParser) -> None:
    """The options ``tune`` and ``compare`` share, with the same defaults."""
    cmd.add_argument("--data", default="synthetic", help=DATA_HELP)
    cmd.add_argument("--labels", default=label_sets.DEFAULT, help=LABELS_HELP)
    cmd.add_argument("--seed", type=_seed, default=0,
                     help="seeds the validation carve, the sampler and the fits")
    cmd.add_argument("--experiment", default="fer-lab", help="MLflow experiment name")
    cmd.add_argument("--storage", default=DEFAULT_STORAGE,
                     help="Optuna storage URL: sqlite:///FILE, journal:///FILE or "
                          "postgresql://USER:PASSWORD@HOST/DB (default: $FER_LAB_STORAGE, "
                          "else sqlite:///optuna.db)")


def _model_and_detector(command: argparse.ArgumentParser, detector_use: str = "") -> None:
    command.add_argument("--model", default="models:/fer-emotion@champion",
                         help="an MLflow model URI (default: %(default)s)")
    command.add_argument("--detector", default="auto",
                         help=f"face detector{detector_use}: auto (hog where dlib is "
                              "installed, else haar), hog or haar (default: %(default)s)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-lab", formatter_class=_Help,
                                description="Train and compare facial-emotion classifiers on "
                                "FER2013, tracked in MLflow.")
    p.add_argument("--version", action="version", version=f"fer-lab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=_Help)

    command("families", "list the model families").set_defaults(run=_families)

    data = command("data", "data set tools").add_subparsers(dest="action", required=True)
    check = data.add_parser("check", formatter_class=_Help,
                            help="validate a data set and print per-split class counts")
    check.add_argument("path", help=DATA_HELP)
    check.add_argument("--labels", default=label_sets.DEFAULT, help=LABELS_HELP)
    check.set_defaults(run=_data_check)

    t = command("tune", "run (or resume) a family's Optuna study, tracked in MLflow")
    t.add_argument("family", help="a family name (`fer-lab families` lists them)")
    _common(t)
    t.add_argument("--budget", choices=BUDGETS, default=DEFAULT_BUDGET,
                   help="quick (a smoke run), default (the family's tuned budget), or full "
                        "(for more time or a GPU)")
    t.add_argument("--trials", type=_count,
                   help="trials to reach (default or 0: the budget's)")
    t.add_argument("--timeout", type=_seconds,
                   help="seconds after which no new trial starts (default or 0: the budget's)")
    t.add_argument("--objective", choices=["accuracy", "macro_f1"],
                   help="validation metric to maximise (default: the config's, accuracy)")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of Training carved out (stratified, seeded) for validation")
    t.add_argument("--study-name",
                   help="default: <family>-<budget>[-<label set>]-<data digest>"
                        "[-<members or teacher digest>]")
    t.add_argument("--config", help="an experiment yaml that overrides the family's config "
                                    "(default: none)")
    t.add_argument("--no-register", dest="register", action="store_false",
                   help="do not register the model in the MLflow model registry "
                        "(default: register it)")
    t.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine (needs PostgreSQL or a journal "
                        "storage for more than 1)")
    t.add_argument("--join", action="store_true",
                   help="only run trials of a study whose lead (a `tune` without --join) "
                        "runs elsewhere; no refit (default: lead)")
    t.add_argument("--devices", type=int,
                   help="cnn: train each fit on this many devices (GPUs, or CPU processes; "
                        "default: 1)")
    t.add_argument("--strategy", choices=["auto", "ddp"],
                   help="cnn: ddp trains data-parallel over --devices (gloo on CPU; "
                        "default: auto)")
    t.add_argument("--members",
                   help="ensemble: its members, comma-separated model URIs (e.g. "
                        "models:/fer-cnn@champion,models:/fer-svm@champion) or `champions` "
                        "(every family's champion on this data; default: the config's)")
    t.add_argument("--teacher",
                   help="cnn: distil from this model's probabilities on the training faces "
                        "(e.g. models:/fer-ensemble@champion; default: none)")
    t.add_argument("--heartbeat", type=float, default=30.0,
                   help="seconds between trial heartbeats; a trial silent for three is "
                        "failed as its worker's loss (database storages)")
    t.set_defaults(run=_tune)

    pm = command("promote", "point fer-emotion@champion at the best family champion")
    pm.add_argument("--labels", default=label_sets.DEFAULT, choices=list(label_sets.LABEL_SETS),
                    help="the label set whose champions compete; ferplus promotes into "
                         "fer-emotion-ferplus")
    pm.set_defaults(run=_promote)

    pr = command("predict", "classify face images, folders or Kaggle-style CSVs")
    pr.add_argument("paths", nargs="+", metavar="PATH",
                    help="images, folders of images, or Kaggle-style CSVs")
    _model_and_detector(pr, " for --detect-faces")
    pr.add_argument("--detect-faces", action="store_true",
                    help="find the faces in full photos and classify each "
                         "(default: each file is one face)")
    pr.add_argument("--csv", action="store_true",
                    help="CSV with every class probability (default: a table)")
    pr.add_argument("--explain", action="store_true",
                    help="also write a heat map over each face of where the evidence for "
                         "its emotion is (needs --out; default: no explanations)")
    pr.add_argument("--explain-method", choices=["auto", "gradcam", "occlusion"],
                    default="auto", help="auto: Grad-CAM for a CNN, occlusion otherwise")
    pr.add_argument("--out", help="folder for --explain's images (default: none)")
    pr.set_defaults(run=_predict)

    an = command("analyze", "who felt what, and when: faces found, tracked and classified "
                 "in videos, webcams and photos")
    an.add_argument("sources", nargs="+", metavar="SOURCE",
                    help="video files (mp4, avi, mov, webm, ...), webcam indices (0), "
                         "images or folders of images")
    _model_and_detector(an)
    an.add_argument("--every", type=int, default=1,
                    help="analyse every Nth frame (default: every frame)")
    an.add_argument("--fps", type=float,
                    help="analyse at most this many frames per second of video "
                         "(default: as --every says)")
    an.add_argument("--out", default="analysis",
                    help="folder for frames.csv, summary.json, timeline.png, "
                         "annotated.mp4 (default: %(default)s)")
    an.add_argument("--annotate", action="store_true",
                    help="also write the video with boxes, ids and emotions drawn "
                         "(default: no)")
    an.add_argument("--detect-interval", type=float, default=DETECT_INTERVAL,
                    help="seconds of video between face detections; boxes are held in "
                         "between, so a face is found up to this late; 0: every analysed "
                         "frame (default: %(default)s)")
    an.add_argument("--min-face", type=int,
                    help="the smallest face to find, in pixels (default: 40 in photos, "
                         "80 in video frames: smaller is slower)")
    an.add_argument("--tta", choices=["none", "flip", "crops", "model"], default="none",
                    help="a CNN's test-time augmentation: none is the fastest, model is "
                         "what it was registered with (default: %(default)s)")
    an.add_argument("--max-seconds", type=float,
                    help="stop after this many seconds of video (a webcam's: of wall "
                         "time; default: the whole source, or Ctrl-C)")
    an.add_argument("--experiment", default="fer-lab",
                    help="MLflow experiment of the analysis run (default: %(default)s)")
    an.add_argument("--no-log", action="store_true",
                    help="record no MLflow run (default: record one)")
    an.set_defaults(run=_analyze)

    ev = command("evaluate", "score a model on any labelled faces (FER2013's splits, an "
                 "<emotion>/ folder such as CK+, photos), recorded as an MLflow run")
    ev.add_argument("model", metavar="MODEL_URI",
                    help="an MLflow model URI, e.g. models:/fer-emotion@champion")
    ev.add_argument("data", help=DATA_HELP + ", or a folder of <emotion>/ folders of faces")
    ev.add_argument("--split", help="all, train, val, test_private, test_public or test_all "
                                    "(default: test_all where the data has test rows, else all)")
    ev.add_argument("--detect-faces", action="store_true",
                    help="the images are photos: classify the largest face found in each "
                         "(default: each image is one face)")
    ev.add_argument("--labels", help=LABELS_HELP + " (default: the model's label set, for "
                                   "FER2013's rows; an image folder's are its folders' names. "
                                   "Faces count as the model's class of the same name; faces "
                                   "of a class it lacks are left out and counted)")
    ev.add_argument("--tta", choices=["model", "none", "flip", "crops"], default="model",
                    help="a network's test-time augmentation, calibrated by that mode's "
                         "temperature (default: the model's own choice; `analyze` uses none)")
    ev.add_argument("--experiment", default="fer-lab", help="MLflow experiment name")
    ev.set_defaults(run=_evaluate)

    r = command("report", "write the comparison report from the tracking store")
    r.add_argument("--out", default="report", help="output folder")
    r.add_argument("--experiment", default="fer-lab", help="MLflow experiment name")
    r.add_argument("--select", choices=["latest", "champion"], default="latest",
                   help="each family's latest study (and its latest distilled network's), "
                        "or its champion's")
    r.set_defaults(run=_report)

    b = command("bench", "CNN training and inference speed on this machine, per "
                "architecture and setting, and what 'auto' picks")
    b.add_argument("--arch", nargs="+", metavar="A",
                   help="architectures to measure (default: all)")
    b.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    b.add_argument("--batch", type=int, help="batch size (default: the cnn config's)")
    b.add_argument("--width", type=int, help="network width (default: the cnn config's)")
    b.add_argument("--repeats", type=int, default=2,
                   help="each measurement keeps its best of this many interleaved rounds")
    b.add_argument("--no-path", action="store_true",
                   help="skip fer-lab's training path against the bare loop (default: "
                        "measure it)")
    b.add_argument("--json", action="store_true",
                   help="print one JSON object (default: tables)")
    b.set_defaults(run=_bench)

    c = command("compare", "the main job: tune every family, promote the best, write the "
                "report")
    _common(c)
    c.add_argument("--budget", choices=BUDGETS, default=MAIN_JOB_BUDGET,
                   help="quick (minutes), default (each family's tuned budget: hours), full")
    c.add_argument("--families", nargs="*", help="default: every family")
    c.add_argument("--out", default="report", help="report folder")
    c.set_defaults(run=_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as err:  # noqa: BLE001
        if not _for_the_user(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


def _for_the_user(err: Exception) -> bool:
    """Errors a user can act on (a bad file, a model not registered yet, an unknown budget):
    shown as one line; anything else keeps its traceback."""
    mlflow_errors = sys.modules.get("mlflow.exceptions")
    known = (fer_data.DataError, FileNotFoundError, LookupError, ValueError)
    if mlflow_errors is not None:
        known += (mlflow_errors.MlflowException,)
    return isinstance(err, known)


if __name__ == "__main__":
    sys.exit(main())
