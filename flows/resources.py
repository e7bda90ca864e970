"""Process-wide workers shared by every generation task running in one process.

Prefect runs a flow's tasks in several threads (or Dask worker processes). Left alone,
each task thread would call the model itself and keep its own writer, so CPU contention
and memory would grow with the number of tasks in flight, and so with N: every thread
that calls torch gets its own OpenMP team and its own malloc arena full of activations.
Here every model call runs on one model thread and every output write on one writer
thread, with at most ``WRITE_SLOTS`` decoded batches waiting for the writer. Reading,
preprocessing and writing still overlap with the model. The workers live in a module of
their own, reached through functions, so Dask pickles the tasks that use them by reference.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

WRITE_SLOTS = 2

_WRITE_SLOTS = threading.BoundedSemaphore(WRITE_SLOTS)
_POOLS: dict[str, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(name: str) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        if name not in _POOLS:
            _POOLS[name] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vae3d-{name}")
        return _POOLS[name]


def model_call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the process's model thread; waits and returns its result
    (or raises its exception). torch spreads one call over every core already, so calls
    queue here instead of competing."""
    return _pool("model").submit(fn, *args, **kwargs).result()


def submit_write(fn, *args) -> Future:
    """Run ``fn(*args)`` on the process's writer thread.

    Blocks first while ``WRITE_SLOTS`` earlier writes are still pending, so a fast model
    cannot pile decoded volumes up in memory ahead of the disk. The slot is released when
    the write ends, whether or not it failed.
    """
    _WRITE_SLOTS.acquire()
    try:
        future = _pool("writer").submit(fn, *args)
    except BaseException:
        _WRITE_SLOTS.release()
        raise
    future.add_done_callback(lambda _: _WRITE_SLOTS.release())
    return future
