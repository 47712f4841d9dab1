"""Prints how sure a distillation teacher is of the training faces against unseen ones.

    MLFLOW_TRACKING_URI=... python experiments/teacher_confidence.py \
        models:/fer-ensemble@champion --data ../shared/data/fer2013/fer2013.csv.gz --n 1500

A teacher's soft targets carry something beyond the labels only where it is unsure: on the
faces it was trained on it may be much surer than on the validation carve. For N random
faces of each (seeded), the teacher's targets as a distillation takes them
(``teacher_targets``: its calibration, its views), the table gives accuracy, the mean top
probability and the mean probability of the true class, at temperature 1 and softened
(``calibration.scale``).
"""

import argparse

import numpy as np

from fer_lab import calibration, tracking
from fer_lab.data import load, split
from fer_lab.models.cnn import TEACHER_TTA, teacher_targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", help="the teacher's MLflow model URI")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--temperatures", type=float, nargs="*", default=[1.0, 1.5, 2.0, 3.0])
    args = parser.parse_args()
    tracking.configure()
    splits = split(load(args.data))
    rng = np.random.default_rng(0)
    print(f"teacher {args.teacher}, calibrated, views {TEACHER_TTA}\n")
    print("| faces | n | accuracy | T | mean top probability | mean probability of the label |")
    print("|---|---|---|---|---|---|")
    for name, part in (("training", splits.train), ("validation", splits.val)):
        rows = rng.choice(len(part.y), min(args.n, len(part.y)), replace=False)
        proba = teacher_targets(args.teacher, part.X[rows])
        y = part.y[rows]
        accuracy = float((proba.argmax(1) == y).mean())
        for t in args.temperatures:
            soft = calibration.scale(proba, t)
            print(f"| {name} | {len(y)} | {accuracy:.3f} | {t:g} | {soft.max(1).mean():.3f} | "
                  f"{soft[np.arange(len(y)), y].mean():.3f} |")


if __name__ == "__main__":
    main()
