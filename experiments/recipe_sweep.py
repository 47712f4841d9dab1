"""CNN recipes against each other at a fixed training length, scored on the validation carve.

    python experiments/recipe_sweep.py --data ../shared/data/fer2013/fer2013.csv.gz \
        --seeds 0 1 --workers 5 [VARIANT ...]

The default recipe's refit runs on time (50.5 minutes; 48 when this was measured); how many epochs that buys depends on
the machine: ~21 on the AVX2 kind, ~48 on the AVX512-BF16 kind. Which regularisation,
width or learning rate suits a 21-epoch refit is measured here with a fixed number of
epochs instead of minutes, so the comparison can run anywhere, a GPU included (five fits
at once there). Epochs of the wider and narrower nets are scaled by their measured cost on
the AVX2 kind (vgg, fp32 + channels_last, batch 128, the 32/40/48 px thirds: width 16
~2x, 24 ~1.48x, 40 ~0.67x the images of width 32 in the same minutes).

It prints one JSON line per fit (validation accuracy with each test-time augmentation,
fit seconds, the setting ``auto`` resolved) and a table of the means per variant. Only
the validation carve is scored: nothing here looks at a test split.
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

from fer_lab.config import load_family

LIGHT = dict(dropout=0.1, rotate=10.0, erase=0.0)  # the defaults since 2026-11-26
BEFORE = dict(dropout=0.18, rotate=16.8, erase=0.05)  # the defaults of the 2026-11-25 study
VARIANTS = {
    "before": dict(BEFORE, epochs=21),
    "before_w24_e31": dict(BEFORE, width=24, epochs=31),
    "before_w16_e50": dict(BEFORE, width=16, epochs=50),
    "before_w40_e14": dict(BEFORE, width=40, epochs=14),
    "before_lr5": dict(BEFORE, epochs=21, lr=0.005),
    "light": dict(LIGHT, epochs=21),
    "light_w24_e31": dict(LIGHT, width=24, epochs=31),
    "light_lr5": dict(LIGHT, epochs=21, lr=0.005),
    "light_wd5": dict(LIGHT, epochs=21, weight_decay=0.005),
    "lighter": dict(epochs=21, dropout=0.05, rotate=6.0, erase=0.0, scale=0.05),
    "light_sides4_e23": dict(LIGHT, epochs=23, train_sides=[32, 32, 40, 48]),
}


def fit(job: tuple[str, str, int, int]) -> dict:
    data, name, seed, threads = job
    import torch

    from fer_lab.data import load, split
    from fer_lab.models import create

    torch.set_num_threads(threads)
    s = split(load(data), 0.1, 0)
    params = {**load_family("cnn").params, **VARIANTS[name], "tta": "auto",
              "max_minutes": None, "min_steps": 0, "seed": seed}
    model = create("cnn", **params)
    started = time.perf_counter()
    model.fit(s.train.X, s.train.y, eval_set=(s.val.X, s.val.y))
    return {"variant": name, "seed": seed, "fit_s": round(time.perf_counter() - started, 1),
            **{k: round(v, 4) for k, v in model.fit_metrics_.items()},
            "settings": model.fit_settings_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    threads = max(1, (os.cpu_count() or 2) // args.workers)
    jobs = [(args.data, name, seed, threads) for seed in args.seeds for name in args.variants]
    rows = defaultdict(list)
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        for row in pool.map(fit, jobs):
            print(json.dumps(row), flush=True)
            rows[row["variant"]].append(row)
    print("\n| variant | seeds | val none | val flip | val crops | chosen |\n|---|---|---|---|---|---|")
    for name, fits in rows.items():
        mean = {m: statistics.mean(r[f"val_accuracy_tta_{m}"] for r in fits)
                for m in ("none", "flip", "crops")}
        chosen = statistics.mean(max(r[f"val_accuracy_tta_{m}"] for m in mean) for r in fits)
        print(f"| {name} | {len(fits)} | {mean['none']:.4f} | {mean['flip']:.4f} | "
              f"{mean['crops']:.4f} | {chosen:.4f} |")


if __name__ == "__main__":
    main()
