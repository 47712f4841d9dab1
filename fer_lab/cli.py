"""The ``fer-lab`` command: thin argument parsing over functions that return results."""

from __future__ import annotations

import argparse
import sys

from fer_lab import data as fer_data


def _families(args: argparse.Namespace) -> int:
    from fer_lab.models import families, get

    for name in families():
        doc = (get(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:10s} {doc}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    try:
        dataset = fer_data.load(args.path)
    except fer_data.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    counts = dataset.counts()
    width = max(len(e) for e in fer_data.EMOTIONS)
    print(f"{dataset.source}: {len(dataset.labels)} images, digest {dataset.digest}")
    print(f"{'class':{width}s} " + " ".join(f"{u:>11s}" for u in counts))
    for i, emotion in enumerate(fer_data.EMOTIONS):
        print(f"{emotion:{width}s} " + " ".join(f"{c[i]:11d}" for c in counts.values()))
    print(f"{'total':{width}s} " + " ".join(f"{sum(c):11d}" for c in counts.values()))
    return 0


def _count(text: str) -> int | None:
    """An MLproject number ("20" or "20.0"); 0 means "the config's value"."""
    return int(float(text)) or None


def _seconds(text: str) -> float | None:
    return float(text) or None


def _tune(args: argparse.Namespace) -> int:
    from fer_lab.config import TuneConfig, load_family
    from fer_lab.tuning import tune

    model = load_family(args.family, args.config, trials=args.trials, timeout=args.timeout,
                        objective=args.objective)
    config = TuneConfig(model=model, data=args.data, seed=args.seed,
                        val_fraction=args.val_fraction, experiment=args.experiment,
                        storage=args.storage, study_name=args.study_name)
    try:
        metrics = tune(config)
    except fer_data.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    keys = ["val_accuracy", "val_macro_f1", "test_private_accuracy", "test_public_accuracy",
            "test_all_accuracy", "test_all_macro_f1", "fit_seconds", "search_seconds"]
    for key in keys:
        if key in metrics:
            print(f"{key:24s} {metrics[key]:.4f}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-lab", description="Train and compare facial-emotion "
                                "classifiers on FER2013, tracked in MLflow.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("families", help="list the model families").set_defaults(run=_families)

    data = sub.add_parser("data", help="data set tools").add_subparsers(dest="action", required=True)
    check = data.add_parser("check", help="validate a data set and print per-split class counts")
    check.add_argument("path", help="fer2013.csv[.gz], an image folder, or 'synthetic'")
    check.set_defaults(run=_data_check)

    t = sub.add_parser("tune", help="run (or resume) a family's Optuna study, tracked in MLflow")
    t.add_argument("family")
    t.add_argument("--data", default="synthetic",
                   help="fer2013.csv[.gz], an image folder, or 'synthetic' (default)")
    t.add_argument("--trials", type=_count,
                   help="trials to reach (default or 0: the family's config)")
    t.add_argument("--timeout", type=_seconds,
                   help="seconds after which no new trial starts (default or 0: the config's)")
    t.add_argument("--seed", type=lambda s: int(float(s)), default=0)
    t.add_argument("--objective", choices=["accuracy", "macro_f1"])
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument("--experiment", default="fer-lab", help="MLflow experiment name")
    t.add_argument("--storage", default="sqlite:///optuna.db", help="Optuna storage URL")
    t.add_argument("--study-name", help="default: the family name")
    t.add_argument("--config", help="an experiment yaml that overrides the family's config")
    t.set_defaults(run=_tune)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
