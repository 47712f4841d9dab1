"""Prints how a network's calibration holds for each test-time augmentation.

    MLFLOW_TRACKING_URI=... python experiments/tta_calibration.py \
        models:/fer-cnn@champion --data ../shared/data/fer2013/fer2013.csv.gz

A network's probabilities are calibrated by a temperature fitted on the validation carve
with the augmentation it chose (often the 10 crops), but it is also asked for one view
(`fer-lab analyze`'s default, the fastest) or the mirror, whose averages of fewer views are
more confident. For each mode the table gives validation accuracy, the temperature the
model was logged with for it (``FerModel.temperature_for``: before per-mode temperatures,
the chosen mode's for every mode) and the one fitted on validation for that mode, each test
split's accuracy, and test_all's ECE and NLL with each temperature (the test splits only
score; nothing is chosen on them).
"""

import argparse

import numpy as np

from fer_lab import calibration, registry, tracking
from fer_lab.data import load, split
from fer_lab.models import TTA_MODES, view_probas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an MLflow model URI of a network or an ensemble of them")
    parser.add_argument("--data", required=True, help="the FER2013 data the model was trained on")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="the study's validation carve (fer-lab tune's default)")
    parser.add_argument("--seed", type=int, default=0, help="the study's seed (default 0)")
    args = parser.parse_args()
    tracking.configure()
    model = registry.load_model(args.model).unwrap_python_model()
    if getattr(model, "label_set", "fer2013") != "fer2013":
        parser.error(f"{args.model} has the {model.label_set} labels: FER2013's only")
    splits = split(load(args.data), args.val_fraction, args.seed)
    print(f"{args.model}: its own augmentation {model.estimator.fit_settings_.get('tta', '?')}"
          if hasattr(model.estimator, "fit_settings_") else args.model)
    print("\n| tta | val accuracy | test_private accuracy | test_public accuracy "
          "| test_all accuracy | T logged | T fitted for the mode | test_all ECE, logged T "
          "| test_all ECE, fitted T | test_all NLL, logged T | test_all NLL, fitted T |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    # Every mode from one pass of the views (a network's 10 crops contain the others');
    # test_all is the two test splits' predictions together.
    val, private, public = (view_probas(model.estimator, part.X) for part in
                            (splits.val, splits.test_private, splits.test_public))
    y_all = np.concatenate([splits.test_private.y, splits.test_public.y])
    for mode in TTA_MODES:
        p_val, p_test = val[mode], np.concatenate([private[mode], public[mode]])
        logged = model.temperature_for(mode)
        fitted = calibration.fit_temperature(p_val, splits.val.y)
        row = [f"{np.mean(p.argmax(1) == y):.4f}" for p, y in
               [(p_val, splits.val.y), (private[mode], splits.test_private.y),
                (public[mode], splits.test_public.y), (p_test, y_all)]]
        row += [f"{logged:.3f}", f"{fitted:.3f}"]
        for measure in (lambda p: calibration.reliability(p, y_all)["ece"],
                        lambda p: calibration.nll(p, y_all)):
            row += [f"{measure(calibration.scale(p_test, t)):.4f}" for t in (logged, fitted)]
        print(f"| {mode} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
