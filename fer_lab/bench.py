"""``fer-lab bench``: how fast the CNN family trains and predicts on this machine.

Per architecture: training and inference images/s of a bare PyTorch loop for every
setting ``auto`` could choose here (``fer_lab.training.hardware``), the setting it does
choose, the net's FLOPs per image and the GFLOP/s achieved; then fer-lab's whole training
path (``CNNClassifier.fit``: Lightning, metrics, the per-epoch report logged to MLflow)
against the bare loop with the same augmentation, the two in turns within one fit
(``path_ratio``).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TRAIN_FLOPS_FACTOR = 3  # a training step: forward, plus a backward pass of about twice its cost


def forward_flops(arch: str, width: int) -> int:
    """FLOPs of one image's forward pass (multiply and add counted apart)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fer_lab import nets

    net = nets.build(arch, width=width).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 1, nets.SIDE, nets.SIDE))
    return int(counter.get_total_flops())


def path_rates(params: dict[str, Any], steps: int, rounds: int,
               bare: Callable[[], None]) -> list[tuple[float, float]]:
    """Training images/s of fer-lab's path and of the bare loop ``bare``, measured in
    turns in one fit so that both see the same machine: ``(path, bare)`` per round.

    The path is ``CNNClassifier.fit`` inside an MLflow run that receives the per-epoch
    metrics, as a study's trial does, for ``rounds + 1`` epochs of ``steps`` steps (at
    least ``MIN_STEPS_PER_EPOCH``: below it the data module shrinks the batch). The first
    epoch takes the set-up and one-time costs (lazy imports, oneDNN's first calls at each
    shape). After each epoch's report, ``steps`` bare steps run, timed; each later epoch
    counts in full (its steps, its validation pass over a single image, the logging of
    its metrics), from the end of those bare steps to its own report. Timed apart, minutes
    from each other, the two moved 15-40% on a shared VM (its cores' speed drifts): the
    ratio of separate best runs read 0.73-1.04 for the same code."""
    import mlflow
    import torch

    from fer_lab import nets
    from fer_lab.models import create
    from fer_lab.training.datamodule import MIN_STEPS_PER_EPOCH

    rng = np.random.default_rng(0)
    steps = max(steps, MIN_STEPS_PER_EPOCH)
    n = params["batch_size"] * steps
    X = rng.integers(0, 256, (n, nets.SIDE ** 2), dtype=np.uint8)
    y = np.arange(n) % nets.N_CLASSES
    X_val, y_val = X[:1], y[:1]
    bare_seconds: list[float] = []
    path_seconds: list[float] = []
    resumed: list[float] = []  # when the path went on after the last bare steps

    def report(metrics: dict[str, float]) -> None:
        mlflow.log_metrics(dict(metrics), step=len(resumed))
        ended = time.perf_counter()
        if resumed:
            path_seconds.append(ended - resumed[-1])
        if len(path_seconds) < rounds:  # the bare turn before the next epoch
            with torch.inference_mode(False), torch.enable_grad():  # inside validation
                for _ in range(steps):
                    bare()
            finished = time.perf_counter()
            bare_seconds.append(finished - ended)
            resumed.append(finished)

    model = create("cnn", **{**params, "epochs": rounds + 1, "min_steps": 0, "patience": None,
                             "max_minutes": None, "tta": "none"})
    previous = mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        try:
            # An experiment of the temporary store's own: the process's active one (a
            # study's, a test's) does not exist there. Lightning's progress bar writes to
            # stdout, which is the table's (or the JSON's).
            with mlflow.start_run(experiment_id=mlflow.create_experiment("fer-lab bench")), \
                    contextlib.redirect_stdout(sys.stderr):
                model.fit(X, y, eval_set=(X_val, y_val), report=report)
        finally:
            mlflow.set_tracking_uri(previous)
    images = params["batch_size"] * steps
    return [(images / p, images / b) for p, b in zip(path_seconds, bare_seconds)]


def bench(archs: Sequence[str] | None = None, steps: int = 10, warmup: int = 2,
          batch: int | None = None, width: int | None = None, repeats: int = 2,
          path: bool = True) -> dict[str, Any]:
    """Measures every architecture on this machine.

    Args:
        archs: architectures (default: all of ``fer_lab.nets.ARCHITECTURES``).
        steps: timed steps per measurement.
        warmup: untimed steps before timing a bare loop (fer-lab's path warms up for
            an epoch: ``path_rates``).
        batch, width: default the family's configured values.
        repeats: rounds of every measurement; each setting keeps its best of this many
            interleaved runs (a burst of other load hits all of them:
            ``hardware.measure``); the path and the bare loop take this many turns each
            (``path_rates``): each keeps its best, and ``path_ratio`` is the median of
            the turns' ratios, each path epoch against the bare steps just before it.
        path: also measure fer-lab's training path against the bare loop.

    Returns:
        ``{"machine": {...}, "batch": B, "width": W, "archs": {arch: {"params",
        "forward_flops", "settings": {name: {"train_img_s", "infer_img_s",
        "train_gflop_s", "infer_gflop_s"}}, "auto": name, "auto_infer": name,
        "bare_img_s", "path_img_s", "path_ratio", "path_turns"}}}``; ``path_turns`` holds
        each turn's ``[path, bare]`` images/s.
    """
    import dataclasses

    from fer_lab import machine, nets
    from fer_lab.config import load_family
    from fer_lab.training import hardware
    from fer_lab.training.augment import Augment

    defaults = dict(load_family("cnn").params)
    batch = batch or defaults["batch_size"]
    width = width or defaults["width"]
    augment = Augment(defaults["flip"], defaults["shift"], defaults["rotate"],
                      defaults["scale"], defaults["erase"])
    out: dict[str, Any] = {"machine": dataclasses.asdict(machine.current()), "batch": batch,
                           "width": width, "steps": steps, "rounds": repeats, "archs": {}}
    options, on = hardware.candidates(), hardware.device()
    for arch in archs or list(nets.ARCHITECTURES):
        flops = forward_flops(arch, width)
        train, infer = (hardware.probe_rates(mode, arch, width, batch, options, on,
                                             rounds=repeats, steps_per_round=steps,
                                             warmup=warmup)
                        for mode in hardware.MODES)
        settings = {name: {"train_img_s": train[name], "infer_img_s": infer[name],
                           "train_gflop_s": train[name] * flops * TRAIN_FLOPS_FACTOR / 1e9,
                           "infer_gflop_s": infer[name] * flops / 1e9} for name in train}
        auto = hardware.resolve(arch, width, batch)
        result = {"params": nets.count_parameters(nets.build(arch, width=width)),
                  "forward_flops": flops, "settings": settings, "auto": auto.name,
                  "auto_infer": hardware.resolve(arch, width, hardware.INFER_BATCH,
                                                 mode="infer").name}
        if path:
            params = {**defaults, "arch": arch, "width": width, "batch_size": batch,
                      "mixed_precision": auto.precision, "channels_last": auto.channels_last,
                      "train_sides": [nets.SIDE]}
            bare = hardware.train_step(arch, width, batch, auto, augment=augment)
            for _ in range(warmup):
                bare()
            turns = path_rates(params, steps, repeats, bare)
            result.update(bare_img_s=max(b for _, b in turns),
                          path_img_s=max(p for p, _ in turns),
                          path_ratio=statistics.median(p / b for p, b in turns),
                          path_turns=[[p, b] for p, b in turns])
        out["archs"][arch] = result
    return out


def format_table(result: dict[str, Any]) -> str:
    """The bench result as Markdown tables, ready for RESULTS.md."""
    m = result["machine"]
    lines = [(f"machine: {m['cpu']} ({m['isa']}), {m['accelerator']}, torch {m['torch']}, "
              f"{m['threads']} threads; batch {result['batch']}, width {result['width']}, "
              f"{result['steps']} timed steps, best of {result.get('rounds', 1)} rounds"), "",
             ("| arch | params | MFLOPs/img | setting | train img/s | train GFLOP/s "
              "| infer img/s | infer GFLOP/s | auto picks |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for arch, r in result["archs"].items():
        for name, s in r["settings"].items():
            picks = [mode for mode, key in (("train", "auto"), ("infer", "auto_infer"))
                     if r[key] == name]
            lines.append(f"| {arch} | {r['params']:,} | {r['forward_flops'] / 1e6:.0f} | {name} "
                         f"| {s['train_img_s']:.0f} | {s['train_gflop_s']:.1f} "
                         f"| {s['infer_img_s']:.0f} | {s['infer_gflop_s']:.1f} "
                         f"| {' + '.join(picks)} |")
    if any("path_ratio" in r for r in result["archs"].values()):
        lines += ["", "| arch | setting | bare loop img/s | fer-lab path img/s | path_ratio |",
                  "|---|---|---|---|---|"]
        lines += [f"| {arch} | {r['auto']} | {r['bare_img_s']:.0f} | {r['path_img_s']:.0f} "
                  f"| {r['path_ratio']:.2f} |"
                  for arch, r in result["archs"].items() if "path_ratio" in r]
    return "\n".join(lines)
