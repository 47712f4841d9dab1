"""Prints images/s of logged or registered models through MLflow's pyfunc, as a user loads them.

    python experiments/inference_speed.py models:/fer-emotion@champion models:/fer-svm@champion \
        --data ../shared/data/fer2013/fer2013.csv.gz --n 1000 --tta flip none

Each model predicts the first N test_all faces (PublicTest + PrivateTest) once as a numpy
array and once as Kaggle-style pixel strings, after a warm-up batch; then, for models with
test-time augmentation (the CNN), the array again with each ``--tta`` mode passed as the
pyfunc's ``tta`` param. The best of ``--repeats`` timings is kept. The figures in
RESULTS.md are pasted from this output.
"""

import argparse
import time

import mlflow
import numpy as np
import pandas as pd

from fer_lab import machine, pyfunc, tracking
from fer_lab.data import load, split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="MLflow model URIs")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tta", nargs="*", default=[], choices=["none", "flip", "crops"],
                        help="also time these test-time augmentations (CNN models)")
    args = parser.parse_args()
    tracking.configure()
    faces = split(load(args.data)).test_all.X[:args.n]
    forms = {"array (N, 48, 48)": faces.reshape(-1, 48, 48),
             "pixels DataFrame": pd.DataFrame({"pixels": pyfunc.pixel_strings(faces)})}
    here = machine.current()
    print(f"machine: {here.cpu} (fer.isa {here.isa}), {here.accelerator}, torch {here.torch}, "
          f"{here.threads} threads\n")
    print("| model | input | images | seconds | images/s |\n|---|---|---|---|---|")
    for uri in args.models:
        model = mlflow.pyfunc.load_model(uri)
        model.predict(faces[:8])  # warm-up: lazy imports, thread pools
        runs = [(name, data, None) for name, data in forms.items()]
        if hasattr(model.unwrap_python_model().estimator, "tta"):
            runs += [(f"array, tta={t}", forms["array (N, 48, 48)"], {"tta": t}) for t in args.tta]
        for name, data, params in runs:
            seconds = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                out = model.predict(data, params=params)
                seconds.append(time.perf_counter() - started)
            assert len(out) == len(faces) and np.isfinite(out["happy"]).all()
            best = min(seconds)
            print(f"| {uri} | {name} | {len(faces)} | {best:.3f} | {len(faces) / best:,.0f} |")


if __name__ == "__main__":
    main()
