"""Precision and memory layout, chosen on the machine that runs, by measuring.

The one place where hardware decisions are made. ``mixed_precision: auto`` and
``channels_last: auto`` are resolved here, at run time: bf16 is a candidate only where it
runs natively (``fer_lab.machine.native_bf16``: emulated bf16 on an AVX2 CPU is ~15x
slower than fp32); the remaining candidates are timed for a few steps each, in
interleaved rounds (``measure``), and the fastest wins. Decisions are cached on disk per
machine (``Machine.key``), architecture, width, batch and mode (training or inference),
so a study probes once.

The bare loops that the probe times (``train_step``, ``infer_step``) are also what
``fer-lab bench`` reports, and the baseline it compares fer-lab's whole training path to.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fer_lab import machine, nets
from fer_lab.data import default_cache_dir, write_atomic
from fer_lab.training.augment import Augment
from fer_lab.training.inputs import to_input

log = logging.getLogger(__name__)

AUTO = "auto"
PRECISIONS = ("fp32", "bf16")
MODES = ("train", "infer")
INFER_BATCH = 128  # images per timed inference call of the probe
# Bump when the probe changes, so old decisions are not reused. 2: rounds interleaved
# (``measure``), replacing one back-to-back measurement per candidate.
# 3: decisions carry the probe's CPU share; those of version 2 may have been measured on a
# busy machine, so they are measured again.
CACHE_VERSION = 3
# A CPU probe that got less than this share of the cores it computes on (other processes
# took the rest) ranks settings by how they bear the contention, not by their speed: one
# starved by a niced fit ranked vgg's fp32 + channels_last (49 img/s) over bf16 +
# channels_last (26; 695 idle against 223, RESULTS.md). Its choice serves the process that
# measured it but is not cached.
BUSY_SHARE = 0.6
PROBE_ROUNDS = 3


@dataclass(frozen=True)
class Setting:
    """How a network computes: ``precision`` (``fp32``, or ``bf16`` autocast with fp32
    weights) and ``channels_last`` (NHWC activations and weights)."""

    precision: str
    channels_last: bool

    @property
    def name(self) -> str:
        """``fp32``, ``fp32+cl``, ``bf16`` or ``bf16+cl``."""
        return self.precision + ("+cl" if self.channels_last else "")

    @classmethod
    def parse(cls, name: str) -> Setting:
        precision, _, layout = name.partition("+")
        if precision not in PRECISIONS or layout not in ("", "cl"):
            raise ValueError(f"unknown setting {name!r}")
        return cls(precision, layout == "cl")

    def autocast(self, device: str = "cpu"):
        """The autocast context of this precision on ``device``."""
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def _layout_choices(channels_last: bool | str) -> tuple[bool, ...]:
    if channels_last == AUTO:
        return (False, True)
    if isinstance(channels_last, bool):
        return (channels_last,)
    raise ValueError(f"channels_last must be true, false or 'auto', not {channels_last!r}")


def candidates(precision: str = AUTO, channels_last: bool | str = AUTO) -> list[Setting]:
    """The settings ``auto`` chooses among on this machine; explicit values are obeyed
    (a single candidate), ``bf16`` included where it is emulated.

    Raises:
        ValueError: an unknown precision or layout.
    """
    if precision == AUTO:
        precisions = ("fp32", "bf16") if machine.native_bf16() else ("fp32",)
    elif precision in PRECISIONS:
        precisions = (precision,)
    else:
        raise ValueError(f"mixed_precision must be one of {(AUTO, *PRECISIONS)}, "
                         f"not {precision!r}")
    return [Setting(p, cl) for p in precisions for cl in _layout_choices(channels_last)]


def device() -> str:
    """Where training runs: ``cuda`` when a GPU is there (Lightning's ``auto`` picks it), else
    ``cpu``. Inference always runs on the CPU, where the fitted network lives."""
    return "cuda" if machine.cuda_available() else "cpu"


def _timed(step: Callable[[], None], steps: int, warmup: int, on: str) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    if on == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if on == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def train_step(arch: str, width: int, batch: int, setting: Setting, *,
               augment: Augment | None = None, on: str | None = None, side: int = nets.SIDE,
               compiled: bool = False) -> Callable[[], None]:
    """One training step of a bare PyTorch loop, as a callable: uint8 batch to normalised
    input, ``augment`` (the recipe's, when given), forward, label-smoothed cross-entropy,
    backward and an AdamW step (the family's default optimizer). ``side``: the images'
    (progressive resizing trains on smaller ones); ``compiled``: the network through
    ``torch.compile`` (measured by experiments/compile_speed.py, never chosen by ``auto``:
    slower on the CPUs measured)."""
    on = on or device()
    torch.manual_seed(0)
    net = nets.build(arch, width=width).to(on, memory_format=setting.memory_format)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    forward = torch.compile(net) if compiled else net
    images = torch.randint(0, 256, (batch, 1, side, side), dtype=torch.uint8, device=on)
    y = torch.randint(0, nets.N_CLASSES, (batch,), device=on)

    def step() -> None:
        x = to_input(images, 128.0, 64.0, setting.channels_last)
        if augment is not None:
            x = augment(x)
        with setting.autocast(on):
            loss = F.cross_entropy(forward(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def infer_step(arch: str, width: int, setting: Setting, *,
               batch: int = INFER_BATCH) -> Callable[[], None]:
    """One inference call on the CPU of a network in eval mode, as ``predict_logits`` runs
    it, as a callable."""
    torch.manual_seed(0)
    net = nets.build(arch, width=width).eval().to(memory_format=setting.memory_format)
    images = torch.randint(0, 256, (batch, 1, nets.SIDE, nets.SIDE), dtype=torch.uint8)

    @torch.inference_mode()
    def step() -> None:
        with setting.autocast("cpu"):
            net(to_input(images, 128.0, 64.0, setting.channels_last))

    return step


def measure(steps: dict[str, Callable[[], None]], images: int, *, rounds: int = PROBE_ROUNDS,
            steps_per_round: int = 3, warmup: int = 2, on: str = "cpu") -> dict[str, float]:
    """Images/s of each candidate's step (``images`` per call), the candidates interleaved.

    Each is warmed up, then ``rounds`` rounds time every candidate in turn for
    ``steps_per_round`` calls, and each keeps its best round. Other load on the machine
    only ever slows a round down, so the best round is the least disturbed one, and
    interleaving exposes every candidate to the same bursts: one burst during one
    candidate's only measurement (what a back-to-back probe took) ranked a slower setting
    first and cached it (RESULTS.md: resnet 58 img/s chosen over 97).
    """
    for step in steps.values():
        _timed(step, 0, warmup, on)
    best = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, step in steps.items():
            best[name] = max(best[name], images * steps_per_round / _timed(
                step, steps_per_round, 0, on))
    return best


def probe_rates(mode: str, arch: str, width: int, batch: int, options: Sequence[Setting],
                on: str, **rounds: int) -> dict[str, float]:
    """Images/s of every candidate setting in ``mode`` on this machine (``measure``; its
    ``rounds``, ``steps_per_round`` and ``warmup`` as given, else the probe's: inference
    warms up for one call). Inference always runs on the CPU: ``on`` is training's."""
    if mode == "train":
        return measure({o.name: train_step(arch, width, batch, o, on=on) for o in options},
                       batch, on=on, **rounds)
    return measure({o.name: infer_step(arch, width, o) for o in options}, INFER_BATCH,
                   **{"warmup": 1, **rounds})


def cache_file() -> Path | None:
    """Where decisions are kept; None where no home folder is known (a container's user
    without one) and ``$FER_LAB_CACHE`` is unset."""
    try:
        return default_cache_dir() / "hardware.json"
    except RuntimeError:  # Path.home(): no HOME and no passwd entry
        return None


def _read_cache(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
        return data if data.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_cache(path: Path | None, key: str, entry: dict) -> None:
    """Adds one decision; atomic, so a reader never sees half a file (a racing writer
    may drop the other's entry, which only costs a probe later). Where it cannot be
    written (a read-only or foreign home folder in a serving container) the decision is
    this process's only: a warning, not a failed fit or model load."""
    if path is None:
        log.warning("no cache folder (no home folder; set FER_LAB_CACHE): the %s decision "
                    "is not kept, the next process probes again", entry.get("mode"))
        return
    data = _read_cache(path) or {"version": CACHE_VERSION}
    data.setdefault("decisions", {})[key] = entry
    try:
        write_atomic(path, lambda fh: fh.write(json.dumps(data, indent=1,
                                                          sort_keys=True).encode()))
    except OSError as err:
        log.warning("cannot keep the %s decision in %s (%s; set FER_LAB_CACHE to a writable "
                    "folder): the next process probes again", entry.get("mode"), path, err)


def resolve(arch: str, width: int, batch: int, precision: str = AUTO,
            channels_last: bool | str = AUTO, mode: str = "train") -> Setting:
    """The setting to train (``mode="train"``) or to predict (``"infer"``) with here.

    A single candidate is returned as it is; otherwise the cached decision for this
    machine and net, else the fastest candidate by a probe of a few steps (seconds),
    which is then cached.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    options = candidates(precision, channels_last)
    if len(options) == 1:
        return options[0]
    return Setting.parse(_probed(arch, width, batch, options, mode)[0])


def probed_rate(arch: str, width: int, batch: int, precision: str = AUTO,
                channels_last: bool | str = AUTO) -> float | None:
    """Training images/s of the setting ``resolve`` picks for these arguments, as its
    probe measured it here (cached with the decision); None when there was nothing to
    choose (an explicit precision and layout: no probe runs). A probe's few steps time
    the machine at its fastest: a sustained fit on a shared VM ran at 0.6-0.7 of it."""
    options = candidates(precision, channels_last)
    if len(options) == 1:
        return None
    choice, rates = _probed(arch, width, batch, options, "train")
    return float(rates[choice]) if rates.get(choice) else None


def _probed(arch: str, width: int, batch: int, options: Sequence[Setting],
            mode: str) -> tuple[str, dict[str, float]]:
    on = device() if mode == "train" else "cpu"
    key = "|".join(map(str, (machine.current().key, on, mode, arch, width, batch,
                             ",".join(o.name for o in options))))
    return _decide(key, cache_file(), mode, arch, width, batch, tuple(options), on)


@functools.cache
def _decide(key: str, path: Path | None, mode: str, arch: str, width: int, batch: int,
            options: tuple[Setting, ...], on: str) -> tuple[str, dict[str, float]]:
    """The chosen setting's name and every candidate's images/s: from the cache file, else
    measured (once per process)."""
    cached = _read_cache(path).get("decisions", {}).get(key)
    if cached and cached.get("choice") in {o.name for o in options}:
        return cached["choice"], dict(cached.get("rates", {}))
    started, cpu = time.perf_counter(), time.process_time()
    rates = probe_rates(mode, arch, width, batch, options, on)
    seconds = time.perf_counter() - started
    # Under a tenth of a second (never a real probe's steps) there is nothing to judge.
    cores = min(torch.get_num_threads(), os.cpu_count() or 1)  # more threads cannot use more
    share = (time.process_time() - cpu) / (seconds * cores) if seconds >= 0.1 else 1.0
    choice = max(rates, key=rates.get)
    log.info("%s %s width %d batch %d on %s: %s (images/s: %s; probed in %.1f s, %.0f%% of "
             "%d core(s))", mode, arch, width, batch, on, choice,
             ", ".join(f"{k} {v:.0f}" for k, v in rates.items()), seconds, 100 * share, cores)
    if on == "cpu" and share < BUSY_SHARE:
        log.warning("the machine was busy while probing %s %s (the probe had %.0f%% of its "
                    "cores): %s is used by this process, not cached; the next process "
                    "measures again", mode, arch, 100 * share, choice)
        return choice, rates
    _write_cache(path, key, {"choice": choice, "rates": rates, "mode": mode, "arch": arch,
                             "width": width, "batch": batch, "device": on,
                             "cpu": machine.current().cpu, "isa": machine.isa(),
                             "cpu_share": round(share, 3),
                             "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return choice, rates
