"""Eager PyTorch against ``torch.compile`` for one CNN training step, on this machine.

    python experiments/compile_speed.py [--arch vgg] [--width 32] [--sides 48 32]

Would compiling the network buy the hour's refit more epochs? Per input side (the refit
trains at 32, 40 and 48 px), both steps (AdamW, batch 128, the ``auto`` layout of
fp32 + channels_last on the AVX2 kind) are timed in interleaved rounds after a warm-up
(``fer_lab.training.hardware.measure``: each keeps its best round, so a burst of other load
does not decide), and the compiled step's first call (the compilation) is reported apart.
Prints one table; nothing is trained to accuracy and no data is read.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from fer_lab import machine, nets
from fer_lab.training import hardware

BATCH = 128


def training_step(arch: str, width: int, side: int, compiled: bool):
    """A step callable (forward, loss, backward, AdamW) and its first call's seconds."""
    torch.manual_seed(0)
    net = nets.build(arch, width=width).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.015)
    forward = torch.compile(net) if compiled else net
    x = torch.randn(BATCH, 1, side, side).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, nets.N_CLASSES, (BATCH,))

    def step():
        loss = F.cross_entropy(forward(x), y, label_smoothing=0.04)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()
    return step, time.perf_counter() - started


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
        eager, _ = training_step(args.arch, args.width, side, compiled=False)
        compiled, compile_s = training_step(args.arch, args.width, side, compiled=True)
        rates = hardware.measure({"eager": eager, "compiled": compiled}, BATCH,
                                 rounds=args.rounds, steps_per_round=4, warmup=2)
        print(f"| {side} | {rates['eager']:.0f} | {rates['compiled']:.0f} | "
              f"{rates['compiled'] / rates['eager']:.2f} | {compile_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
