"""What the machine can do now (its matmul peak and copy bandwidth: the denominators of the benchmark's
fractions) and what a process used (its own peak resident memory)."""

from __future__ import annotations

import resource
import time

import torch


def matmul_peak_flops(sizes: tuple[int, ...] = (1024, 2048), seconds: float = 2.0, dtype: torch.dtype = torch.float32) -> float:
    """The best ``a @ b`` FLOP/s of this machine at this thread count and dtype (a denominator, not a claim)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        reps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / len(sizes):
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - started))
    return best


def memory_bandwidth(gib: float = 0.5, reps: int = 10) -> float:
    """Bytes/s of a large tensor copy (read + write), the ceiling of the optimizer's elementwise work."""
    a = torch.ones(int(gib * 2**30) // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    started = time.perf_counter()
    for _ in range(reps):
        b.copy_(a)
    return reps * 2 * a.numel() * 4 / (time.perf_counter() - started)


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB.

    Not ``ru_maxrss``: Linux carries it over from the process that forked this one, so every worker would
    report at least the orchestrator's memory (over a GiB once it has measured the machine). ``VmHWM`` is the
    peak of this program's own address space.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# CPU flags of hardware bf16 matrix products; without them torch emulates bf16 matmuls through fp32 conversions, and
# a bf16 training run is many times slower than fp32 (the *_bf16 variants would dominate --quick's time)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (or the text given); empty where that cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as file:
                cpuinfo = file.read()
        except OSError:
            return set()
    return {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), from its flags (:func:`cpu_flags`);
    ``None`` where they cannot be read."""
    flags = cpu_flags(cpuinfo)
    return any(flag in flags for flag in NATIVE_BF16_FLAGS) if flags else None


def machine_limits(bf16: bool = True) -> dict:
    """Peak matmul FLOP/s (fp32, and bf16 when ``bf16``: only bf16 runs need it, and without hardware bf16 one
    2048-wide product alone takes half a minute) and copy bandwidth of this machine now."""
    return {
        "fp32": matmul_peak_flops(),
        "bf16": matmul_peak_flops(dtype=torch.bfloat16) if bf16 else None,
        "bandwidth": memory_bandwidth(),
    }
