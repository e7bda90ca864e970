"""Cross-process locks on workspace folders (two runs into one place end consistent), with
``filelock``: the same code on Linux, macOS and Windows."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


class LockTimeout(RuntimeError):
    pass


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, timeout_s: float = 3600.0, poll_s: float = 0.5, say_waiting: bool = True):
    """Hold an exclusive lock on ``lock_file``; wait (saying so, unless ``say_waiting`` is False: a
    lock held for moments, such as the MLflow store's set-up) while another run or thread holds it.

    Raises:
        LockTimeout: still held by another process after ``timeout_s``.
    """
    lock = FileLock(lock_file, thread_local=False)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if say_waiting:
                log.warning("another run is using %s (%s); waiting for it to finish", what, lock_file)
            lock.acquire(timeout=timeout_s, poll_interval=poll_s)
    except Timeout:
        raise LockTimeout(
            f"{what} is still locked by another run after {timeout_s:.0f} s ({lock_file}); "
            "wait for it to finish, or remove the lock file if that run is dead"
        ) from None
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the lock file {lock_file} for {what}: {exc.strerror}; "
                      "the folder must exist and be writable", str(lock_file)) from exc
    try:
        yield
    finally:
        lock.release()
