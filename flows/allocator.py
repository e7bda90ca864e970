"""The process's memory allocator, set for a model's large, short-lived tensors.

A 3D decoder allocates and frees tens of MB of activations per batch. glibc's malloc
gives free memory over its trim threshold back to the kernel as soon as it is freed
(the threshold starts at 128 kB, then follows twice the largest mapped block freed), so
every batch takes the same pages again, one page fault each. PyTorch's CPU tuning guide
answers with jemalloc or tcmalloc through ``LD_PRELOAD``, which a pip-installed command
cannot rely on; glibc's own ``mallopt`` does the same job for this pattern, at the price of
memory kept for reuse. What it saves and costs: BENCHMARKS.md, "Measurements the code relies on".

Set once per process by the entry points (the ``vae3d`` command, each torchrun rank, and
the first model lane of a process, so Dask workers too). Left alone where the user tunes
malloc already (``MALLOC_*_`` variables or ``GLIBC_TUNABLES``) or where the C library is
not glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit: bigger blocks still get their own mapping
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")

_lock = threading.Lock()
_state: dict[str, bool] = {}


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once; True if they are set."""
    with _lock:
        if "tuned" not in _state:
            _state["tuned"] = _apply()
        return _state["tuned"]


def _apply() -> bool:
    if any(name in os.environ for name in USER_SETTINGS) or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1

