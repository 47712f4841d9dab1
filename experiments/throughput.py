"""Training throughput of the cnn family's networks on this CPU.

For each architecture at one batch size: images/s of a bare forward + backward + AdamW
step loop on random data in fp32, bf16 autocast, and bf16 autocast with channels_last.
Then, at the family's default precision, images/s through fer-lab's whole path
(``CNNClassifier.fit`` for a fixed number of steps, inside an MLflow run that receives
the per-epoch metrics as a study's trial does) against the bare loop on the same network,
batch and batched augmentation, in the same process: the ratio shows what Lightning,
metrics and logging cost.

    python experiments/throughput.py --steps 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import mlflow
import numpy as np
import torch
import torch.nn.functional as F

from fer_lab import nets
from fer_lab.training import Augment
from fer_lab.config import load_family
from fer_lab.models import create

SETTINGS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+cl": ("bf16", True)}


def bare_loop(arch: str, batch: int, steps: int, warmup: int, precision: str,
              channels_last: bool, width: int = 32, augment: Augment | None = None) -> float:
    """Images/s of plain PyTorch AdamW steps (the family's default optimizer) on random
    data, after ``warmup`` steps; with ``augment``, each batch is augmented first, as
    fer-lab's recipe does, so that a comparison measures only the framework's cost."""
    torch.manual_seed(0)
    net = nets.build(arch, width=width)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.randn(batch, 1, 48, 48)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, nets.N_CLASSES, (batch,))

    def step() -> None:
        inputs = augment(x) if augment is not None else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(net(inputs), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch * steps / timed(step, steps, warmup)


def timed(step: Callable[[], None], steps: int, warmup: int) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started


def fer_lab_path(params: dict, steps: int, warmup: int) -> float:
    """Images/s of ``CNNClassifier.fit``: the time of a (warmup + steps)-step fit minus a
    warmup-step fit, so set-up, the first slow oneDNN calls and the one validation pass
    (over a single image) cancel out."""
    rng = np.random.default_rng(0)
    batch = params["batch_size"]
    X_val, y_val = rng.integers(0, 256, (1, 2304), dtype=np.uint8), np.zeros(1, np.int64)

    def fit_seconds(n_steps: int) -> float:
        n = batch * n_steps
        X = rng.integers(0, 256, (n, 2304), dtype=np.uint8)
        y = np.arange(n) % nets.N_CLASSES
        model = create("cnn", **{**params, "epochs": 1, "min_steps": 0, "patience": None,
                                 "max_minutes": None, "tta": "none"})
        started = time.perf_counter()
        with mlflow.start_run():
            model.fit(X, y, eval_set=(X_val, y_val),
                      report=lambda metrics: mlflow.log_metrics(dict(metrics), step=0))
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        return batch * steps / (fit_seconds(warmup + steps) - fit_seconds(warmup))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--archs", nargs="+", default=list(nets.ARCHITECTURES))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="best of this many runs for the full-path comparison (noisy machines)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}, batch {args.batch}, {args.steps} steps")
    print(f"{'arch':10s} {'params':>10s}" + "".join(f" {s + ' img/s':>14s}" for s in SETTINGS))
    for arch in args.archs:
        rates = []
        for precision, channels_last in SETTINGS.values():
            try:
                rate = bare_loop(arch, args.batch, args.steps, args.warmup, precision,
                                 channels_last)
                rates.append(f" {rate:14.0f}")
            except RuntimeError as err:  # report a crashing combination instead of stopping
                rates.append(f" {'error':>14s}")
                print(f"  {arch} {precision} channels_last={channels_last}: {err}")
        params = nets.count_parameters(nets.build(arch))
        print(f"{arch:10s} {params:10,d}" + "".join(rates))

    defaults = {**load_family("cnn").params, "batch_size": args.batch}
    augment = Augment(defaults["flip"], defaults["shift"], defaults["rotate"], defaults["scale"],
                      defaults["erase"])
    print(f"\nfer-lab's path vs a bare loop with the same augmentation "
          f"({defaults['mixed_precision']}, "
          f"channels_last={defaults['channels_last']}, width {defaults['width']}, "
          f"batch {args.batch}; best of {args.repeats}):")
    print(f"{'arch':10s} {'bare img/s':>11s} {'fer-lab img/s':>14s} {'ratio':>6s}")
    for arch in args.archs:
        params = {**defaults, "arch": arch}
        bare = full = 0.0
        for _ in range(args.repeats):  # alternated, so a burst of load elsewhere hits both
            bare = max(bare, bare_loop(arch, args.batch, args.steps, args.warmup,
                                       params["mixed_precision"], params["channels_last"],
                                       params["width"], augment))
            full = max(full, fer_lab_path(params, args.steps, args.warmup))
        print(f"{arch:10s} {bare:11.0f} {full:14.0f} {full / bare:6.2f}")


if __name__ == "__main__":
    main()
