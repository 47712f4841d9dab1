"""Eager PyTorch against ``torch.compile`` for one CNN training step, on this machine.

    python experiments/compile_speed.py [--arch vgg] [--width 32] [--sides 48 32]

Would compiling the network buy the hour's refit more epochs? Per input side (the refit
trains at 32, 40 and 48 px), both steps (the probe's bare step, ``hardware.train_step``:
AdamW, batch 128, the ``auto`` setting of fp32 + channels_last on the AVX2 kind) are timed in interleaved rounds after a warm-up
(``fer_lab.training.hardware.measure``: each keeps its best round, so a burst of other load
does not decide), and the compiled step's first call (the compilation) is reported apart.
Prints one table; nothing is trained to accuracy and no data is read.
"""

import argparse
import time

from fer_lab import machine, nets
from fer_lab.training import hardware

BATCH = 128
SETTING = hardware.Setting.parse("fp32+cl")  # what `auto` picks for vgg on the AVX2 kind


def first_call(step) -> float:
    """Seconds of a step's first call: for the compiled one, the compilation."""
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg", choices=list(nets.ARCHITECTURES))
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--sides", type=int, nargs="+", default=[48, 32])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    here = machine.current()
    print(f"machine: {here.cpu} ({here.isa}), torch {here.torch}, {here.threads} threads; "
          f"{args.arch} width {args.width}, batch {BATCH}, fp32 + channels_last")
    print("| side | eager img/s | compiled img/s | compiled / eager | compilation s |")
    print("|---|---|---|---|---|")
    for side in args.sides:
        eager, compiled = (hardware.train_step(args.arch, args.width, BATCH, SETTING,
                                               side=side, compiled=c) for c in (False, True))
        first_call(eager)
        compile_s = first_call(compiled)
        rates = hardware.measure({"eager": eager, "compiled": compiled}, BATCH,
                                 rounds=args.rounds, steps_per_round=4, warmup=2)
        print(f"| {side} | {rates['eager']:.0f} | {rates['compiled']:.0f} | "
              f"{rates['compiled'] / rates['eager']:.2f} | {compile_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
