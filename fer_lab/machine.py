"""The machine that runs: CPU, instruction set, accelerator, torch and threads.

Speed figures compare only between runs on one kind of machine, so every study, trial and
evaluation run carries these facts as tags (``Machine.tags``), and the hardware decisions
of ``fer_lab.training.hardware`` are cached under ``Machine.key``.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from dataclasses import dataclass
from importlib import metadata

# Instruction-set levels, best first: the first whose flags the CPU has names it.
# bf16 runs natively only on the first two; elsewhere autocast to bf16 is emulated (slow).
ISA_LEVELS = (("amx", ("amx_bf16",)), ("avx512_bf16", ("avx512_bf16",)),
              ("avx512", ("avx512f",)), ("avx2", ("avx2",)), ("avx", ("avx",)))
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags from ``/proc/cpuinfo`` (Linux); elsewhere the
    platform's processor name and no flags."""
    name, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), flags


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where the OS does not list them)."""
    return _cpuinfo()[1]


def isa(flags: frozenset[str] | None = None) -> str:
    """The best instruction-set level among ``ISA_LEVELS``, else the architecture's name
    (``aarch64``, ``arm64``, ...)."""
    flags = cpu_flags() if flags is None else flags
    for level, needs in ISA_LEVELS:
        if any(flag in flags for flag in needs):
            return level
    return platform.machine() or "unknown"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def native_bf16() -> bool:
    """Whether bf16 runs natively here: a CUDA device that supports it, else a CPU with
    AVX512-BF16 or AMX-BF16."""
    if cuda_available():
        import torch

        return bool(torch.cuda.is_bf16_supported())
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


@dataclass(frozen=True)
class Machine:
    """What a run ran on.

    Attributes:
        cpu: the CPU's model name.
        isa: its instruction-set level (``avx2``, ``avx512``, ``avx512_bf16``, ``amx``, ...).
        accelerator: ``cpu``, or the GPU's name.
        torch: the torch version.
        threads: the threads torch computes with.
    """

    cpu: str
    isa: str
    accelerator: str
    torch: str
    threads: int

    def tags(self) -> dict[str, str]:
        """The ``fer.*`` tags every study, trial and evaluation run carries."""
        return {"fer.cpu": self.cpu, "fer.isa": self.isa, "fer.accelerator": self.accelerator,
                "fer.torch": self.torch, "fer.threads": str(self.threads)}

    @property
    def key(self) -> str:
        """Identifies the machine for cached measurements: CPU model and all its flags
        (or the GPU), torch version and threads."""
        flags = ",".join(sorted(cpu_flags()))
        text = f"{self.cpu}|{flags}|{self.accelerator}|{self.torch}|{self.threads}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def current() -> Machine:
    """The machine this process runs on (imports torch; read once per process)."""
    import torch

    accelerator = torch.cuda.get_device_name(0) if cuda_available() else "cpu"
    return Machine(cpu=_cpuinfo()[0], isa=isa(), accelerator=accelerator,
                   torch=metadata.version("torch"), threads=torch.get_num_threads())
