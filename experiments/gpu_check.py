"""Checks the CNN's training path on the accelerator it finds: real-data epochs, an exact resume.

    python experiments/gpu_check.py --data ../shared/data/fer2013/fer2013.csv.gz --faces 16000

It needs fer-lab's training path only (torch, Lightning, scikit-learn: no MLflow or Optuna),
so it runs in a bare PyTorch image. Where the whole data file cannot travel, make a subset
first (``--save subset.npz`` with ``--faces N``: N Training faces, their seeded validation
carve, and PrivateTest) and run on that (``--data subset.npz``). It prints:

1. the hour's refit recipe (``fer_lab/configs/cnn.yaml``'s params) for ``--epochs`` epochs:
   seconds and training images/s of every epoch, validation accuracy, PrivateTest accuracy
   (of a subset: a check that it learns, not a figure to compare);
2. a tiny fit interrupted after 2 of 4 epochs and resumed from its checkpoint, beside the
   uninterrupted fit: per-epoch losses and accuracies, and the largest weight difference
   (0.0 when the resume is exact; cuDNN is put in its deterministic mode for this part).
"""

import argparse
import tempfile
import time

import numpy as np
import torch

from fer_lab.config import load_family
from fer_lab.data import load, split
from fer_lab.models import create


def arrays(source: str, faces: int) -> dict[str, np.ndarray]:
    if source.endswith(".npz"):
        return dict(np.load(source))
    splits = split(load(source), seed=0)
    keep = np.random.default_rng(0).permutation(len(splits.train.y))[:faces]
    return {"X": splits.train.X[keep], "y": splits.train.y[keep],
            "X_val": splits.val.X[:faces // 10], "y_val": splits.val.y[:faces // 10],
            "X_test": splits.test_private.X, "y_test": splits.test_private.y}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a fer-lab data source, or a --save file")
    parser.add_argument("--faces", type=int, default=16000, help="Training faces used")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--save", help="write the subset to this .npz and stop")
    args = parser.parse_args()
    d = arrays(args.data, args.faces)
    if args.save:
        np.savez_compressed(args.save, **d)
        return
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, device {device}")

    params = {**load_family("cnn").params, "epochs": args.epochs, "min_steps": 0,
              "max_minutes": None}
    stamps = []
    start = time.perf_counter()
    model = create("cnn", **params).fit(d["X"], d["y"], eval_set=(d["X_val"], d["y_val"]),
                                        report=lambda m: stamps.append(
                                            (time.perf_counter(), m["val_accuracy"])))
    seconds = np.diff([start] + [t for t, _ in stamps])
    print("epoch seconds", np.round(seconds, 2).tolist())
    print("train img/s", np.round(len(d["y"]) / seconds).tolist())
    print("val accuracy", [round(a, 4) for _, a in stamps])
    private = float((model.predict(d["X_test"]) == d["y_test"]).mean())
    print(f"PrivateTest accuracy after {args.epochs} epochs on {len(d['y'])} faces: {private:.4f}")

    tiny = {"width": 8, "epochs": 4, "batch_size": 64, "min_steps": 0,
            "mixed_precision": "fp32", "channels_last": False}
    data = {"X": d["X"][:2000], "y": d["y"][:2000], "eval_set": (d["X_val"][:300], d["y_val"][:300])}
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    whole = create("cnn", **tiny).fit(**data)

    class Interrupted(Exception):
        pass

    seen = []

    def stop_after_two(metrics):
        if len(seen) == 2:
            raise Interrupted
        seen.append(metrics)

    with tempfile.TemporaryDirectory() as folder:
        try:
            create("cnn", **tiny, checkpoint_dir=folder).fit(**data, report=stop_after_two)
        except Interrupted:
            pass
        resumed = create("cnn", **tiny, checkpoint_dir=folder).fit(**data)
    for name, fit in (("uninterrupted", whole), ("resumed", resumed)):
        print(name, [(round(h["train_loss"], 6), round(h["val_accuracy"], 4)) for h in fit.history_])
    print("resumed epochs", resumed.fit_metrics_["resumed_epochs"])
    difference = max(float((a.float() - b.float()).abs().max()) for a, b in
                     zip(whole.net_.state_dict().values(), resumed.net_.state_dict().values()))
    print("largest weight difference", difference)


if __name__ == "__main__":
    main()
