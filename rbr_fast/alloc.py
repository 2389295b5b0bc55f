"""Host allocator tuning for loops that allocate the same large CPU tensors every step.

glibc returns freed blocks above 128 KiB-32 MiB (adaptive) to the kernel with ``munmap``/trim, so
every fresh ``[B, T]`` output is page-faulted in again: ~0.35 ms per 2 MiB on this class of CPU,
as much as the GAE kernel itself. Raising the mmap and trim thresholds keeps freed blocks in the
process for reuse. This is what PyTorch's own CPU caching would give; it costs address space, not
correctness.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library (None off Linux or when it cannot be opened)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_malloc(threshold_bytes: int = 1 << 30) -> bool:
    """Keep freed host blocks up to ``threshold_bytes`` in the process (glibc only).

    Call once at start-up of a training or benchmark process. Returns True when the settings were
    applied, False on a platform without glibc ``mallopt`` (nothing changes there).
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    n = int(min(threshold_bytes, 2**31 - 1))
    return bool(mallopt(_M_MMAP_THRESHOLD, n)) and bool(mallopt(_M_TRIM_THRESHOLD, n))


def malloc_trim() -> None:
    """Return free heap memory to the system (glibc only; a no-op elsewhere). Benchmarks call it
    before measuring peak memory."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)
