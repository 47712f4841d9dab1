"""Prints Markdown tables of the latest study per family from an MLflow tracking store:
scores and times, then the 95% intervals and the calibration.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python experiments/results_table.py [--experiment fer-lab]

The figures in RESULTS.md are pasted from this output, never typed in.
"""

import argparse

import mlflow

from fer_lab import tracking

COLUMNS = [("val", "val_accuracy"), ("test_private", "test_private_accuracy"),
           ("test_public", "test_public_accuracy"), ("test_all", "test_all_accuracy"),
           ("test_all macro-F1", "test_all_macro_f1")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="fer-lab")
    args = parser.parse_args()
    tracking.configure()
    runs = mlflow.search_runs(experiment_names=[args.experiment], output_format="list",
                              filter_string="tags.`fer.role` = 'study' and status = 'FINISHED'",
                              order_by=["start_time DESC"])
    latest = {}
    for run in runs:
        latest.setdefault(run.data.tags["fer.family"], run)
    head = ["family"] + [c for c, _ in COLUMNS] + ["trials (done/pruned/failed)", "search s",
                                                   "refit s", "wall min", "fer.isa", "run"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for family, run in sorted(latest.items()):
        m = run.data.metrics
        wall = (run.info.end_time - run.info.start_time) / 60000
        trials = "/".join(str(int(m.get(f"trials_{s}", 0))) for s in ("complete", "pruned", "failed"))
        cells = [family] + [f"{m[k]:.4f}" if k in m else "" for _, k in COLUMNS] + [
            trials, f"{m.get('search_seconds', 0):.0f}", f"{m.get('fit_seconds', 0):.0f}",
            f"{wall:.1f}", run.data.tags.get("fer.isa", "?"), run.info.run_id[:8]]
        print("| " + " | ".join(cells) + " |")
    print()
    split_heads = [f"{split} acc [95% CI]" for split in SPLITS]
    head = ["family", *split_heads, "temperature", *[f"{h} ECE before / after" for h in SPLITS],
            "test_all NLL", "test_all Brier"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for family, run in sorted(latest.items()):
        m = run.data.metrics
        cells = [family] + [interval(m, split) for split in SPLITS] + [
            f"{m['calibration_temperature']:.3f}" if "calibration_temperature" in m else ""] + [
            f"{m[f'{s}_ece_uncalibrated']:.4f} / {m[f'{s}_ece']:.4f}"
            if f"{s}_ece" in m else "" for s in SPLITS] + [
            f"{m[k]:.4f}" if k in m else "" for k in ("test_all_nll", "test_all_brier")]
        print("| " + " | ".join(cells) + " |")


SPLITS = ("val", "test_private", "test_all")


def interval(m: dict[str, float], split: str) -> str:
    key = f"{split}_accuracy"
    if f"{key}_ci95_low" not in m:
        return f"{m[key]:.4f}" if key in m else ""
    return f"{m[key]:.4f} [{m[f'{key}_ci95_low']:.4f}, {m[f'{key}_ci95_high']:.4f}]"


if __name__ == "__main__":
    main()
