"""Process-wide tuning of glibc's allocator, which ``hf-spam train`` applies in its ``main()`` (``--reuse_freed_memory``)."""

from __future__ import annotations

import ctypes
import platform

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> bool:
    """Have glibc keep freed memory in the process for later allocations; ``False`` where the C library is not glibc.

    Why: a transformer block allocates and frees activations of megabytes per operation (a 2,048-token
    feed-forward's are tens of megabytes). By default glibc maps allocations above a (dynamic) threshold afresh
    and returns the top of its heap once more than twice that is free, so every batch faults the same memory
    in again, page by page, a measurable part of the prefix cache's time (BENCHMARKS.md). Allocations up to
    32 MiB (glibc's largest dynamic threshold) then come from the heap, and the heap is not trimmed: the
    resident memory stays at its peak, as a GPU's caching allocator keeps its memory.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
