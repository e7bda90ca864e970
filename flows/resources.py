"""Process-wide workers shared by every generation task running in one process.

Prefect runs a flow's tasks in several threads (or Dask worker processes). Left alone,
each task thread would call the model itself and keep its own writer, so CPU contention
and memory would grow with the number of tasks in flight, and so with N: every thread
that calls torch gets its own OpenMP team and its own malloc arena full of activations.
Here model calls run on a fixed set of model *lanes* and every output write on a fixed set
of writer threads (one while the model decodes on the CPU, see ``resolve_writers``), with at
most ``WRITE_SLOTS`` decoded batches per writer waiting. Reading,
preprocessing and writing overlap with the model. The workers live in a module of their
own, reached through functions, so Dask pickles the tasks that use them by reference.

A lane is a thread whose OpenMP team is ``1/lanes`` of torch's threads. On a CPU two lanes
of half the cores each decode faster than one lane using all of them (a 3D convolution's
threads scale sublinearly), and a lane waiting for its next batch leaves a core to the
writer; the limit is set on the lane's own thread (``threadpoolctl``), so the rest of the
process keeps torch's thread count.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from threadpoolctl import threadpool_limits

from flows.allocator import tune_allocator

WRITE_SLOTS = 2  # decoded batches waiting per writer thread
MAX_WRITERS = 8

_WRITE_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_POOLS: dict[str, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_MODEL_SLOTS: dict[int, threading.BoundedSemaphore] = {}


def resolve_lanes(requested: int = 0) -> int:
    """The number of model lanes for a ``generate.model_lanes`` setting; 0 means the
    default: two where torch has two or more CPU threads, else one."""
    return requested or (2 if torch.get_num_threads() >= 2 else 1)


def resolve_writers(requested: int, device: torch.device) -> int:
    """The number of writer threads for a ``generate.writers`` setting; 0 means the default.

    The default is one writer while the model decodes on the CPU: writing then shares the
    decoder's cores, and more writers would only take them from it. On a GPU it is one per
    spare CPU core, up to ``MAX_WRITERS``: a core checksums and writes a 64^3 volume in a few
    milliseconds, a GPU decodes one in well under one (BENCHMARKS.md, "Measurements the code
    relies on"). The writers release the GIL while hashing and writing, so they scale with cores.
    """
    if requested:
        return requested
    if torch.device(device).type == "cpu":
        return 1
    return max(1, min(MAX_WRITERS, cpu_cores() - 1))


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_lane(threads: int) -> None:
    tune_allocator()  # once per process: lanes free and take tens of MB per batch
    torch.get_num_threads()  # torch sizes a thread's OpenMP team on first use: let it, then limit
    threadpool_limits(threads, user_api="openmp")


def _pool(name: str, workers: int = 1, openmp_threads: int | None = None) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        if name not in _POOLS:
            lane = {"initializer": _start_lane, "initargs": (openmp_threads,)} if openmp_threads else {}
            _POOLS[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"vae3d-{name}", **lane)
        return _POOLS[name]


def _slots(table: dict[int, threading.BoundedSemaphore], workers: int, per_worker: int) -> threading.BoundedSemaphore:
    """The process's semaphore for ``workers`` threads of one kind: ``per_worker`` calls each."""
    with _POOLS_LOCK:
        return table.setdefault(workers, threading.BoundedSemaphore(per_worker * workers))


def _model_pool(requested: int) -> tuple[ThreadPoolExecutor, int]:
    n = resolve_lanes(requested)
    return _pool(f"model{n}", n, max(1, torch.get_num_threads() // n)), n


def model_call(fn: Callable, *args, lanes: int = 0, **kwargs):
    """``fn(*args, **kwargs)`` on one of the process's ``lanes`` model threads (0: the
    default, see ``resolve_lanes``); waits and returns its result (or raises its exception).
    Calls beyond the lanes queue here instead of competing for the cores."""
    return _model_pool(lanes)[0].submit(fn, *args, **kwargs).result()


def model_map(fn: Callable, items: Iterable, lanes: int = 0) -> Iterator:
    """``fn(item)`` for each item, in order, on the model lanes.

    One caller alone keeps every lane busy. Across all callers of the process at most
    ``2 * lanes`` calls are queued, running or waiting to be taken: a lane finds its next
    call queued, and memory does not grow with the number of tasks running at once. A
    caller that finds no free slot takes its own oldest result first (freeing a slot), and
    waits for a slot only while holding none, so callers cannot deadlock each other.
    """
    pool, lanes = _model_pool(lanes)
    slots = _slots(_MODEL_SLOTS, lanes, 2)
    pending: deque[Future] = deque()

    def oldest():
        future = pending.popleft()
        try:
            return future.result()
        finally:
            slots.release()

    try:
        for item in items:
            while not slots.acquire(blocking=not pending):
                yield oldest()
            pending.append(pool.submit(fn, item))
        while pending:
            yield oldest()
    finally:  # the consumer stopped early or failed: drop queued calls, free their slots
        for future in pending:
            future.add_done_callback(lambda _: slots.release())
            future.cancel()


def submit_write(fn, *args, writers: int = 1) -> Future:
    """Run ``fn(*args)`` on one of the process's ``writers`` writer threads.

    Blocks first while ``WRITE_SLOTS * writers`` earlier writes are still pending, so a fast
    model cannot pile decoded volumes up in memory ahead of the disk. The slot is released
    when the write ends, whether or not it failed.
    """
    slots = _slots(_WRITE_SLOTS, writers, WRITE_SLOTS)
    slots.acquire()
    try:
        future = _pool(f"writer{writers}", writers).submit(fn, *args)
    except BaseException:
        slots.release()
        raise
    future.add_done_callback(lambda _: slots.release())
    return future
