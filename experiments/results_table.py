"""Prints a Markdown table of the latest study per family from an MLflow tracking store.

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


if __name__ == "__main__":
    main()
