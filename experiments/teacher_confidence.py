"""Prints how sure a distillation teacher is of the training faces against unseen ones.

    MLFLOW_TRACKING_URI=... python experiments/teacher_confidence.py \
        models:/fer-ensemble@champion --data ../shared/data/fer2013/fer2013.csv.gz --n 1500

A teacher's soft targets carry something beyond the labels only where it is unsure: on the
faces it was trained on it may be much surer than on the validation carve. For N random
faces of each (seeded), with the teacher's calibration and the views a distillation uses
(``teacher_targets``), the table gives accuracy, the mean top probability and the mean
probability of the true class, at temperature 1 and softened (``p ** (1/T)``, renormalised).
"""

import argparse

import numpy as np

from fer_lab import calibration, tracking
from fer_lab.data import load, split
from fer_lab.models.cnn import TEACHER_TTA, with_tta
from fer_lab.models.stored import load_member


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", help="the teacher's MLflow model URI")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--temperatures", type=float, nargs="*", default=[1.0, 1.5, 2.0, 3.0])
    args = parser.parse_args()
    tracking.configure()
    splits = split(load(args.data))
    teacher, temperature = load_member(args.teacher)
    rng = np.random.default_rng(0)
    print(f"teacher {args.teacher}: calibration temperature {temperature:.3f}, views "
          f"{TEACHER_TTA}\n")
    print("| faces | n | accuracy | T | mean top probability | mean probability of the label |")
    print("|---|---|---|---|---|---|")
    for name, part in (("training", splits.train), ("validation", splits.val)):
        rows = rng.choice(len(part.y), min(args.n, len(part.y)), replace=False)
        proba = calibration.scale(with_tta(teacher, TEACHER_TTA).predict_proba(part.X[rows]),
                                  temperature)
        y = part.y[rows]
        accuracy = float((proba.argmax(1) == y).mean())
        log_p = np.log(np.clip(proba, 1e-12, 1.0))
        for t in args.temperatures:
            soft = np.exp(log_p / t)
            soft /= soft.sum(1, keepdims=True)
            print(f"| {name} | {len(y)} | {accuracy:.3f} | {t:g} | {soft.max(1).mean():.3f} | "
                  f"{soft[np.arange(len(y)), y].mean():.3f} |")


if __name__ == "__main__":
    main()
