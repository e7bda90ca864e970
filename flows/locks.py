"""Cross-process locks on workspace folders (two runs into one place end consistent)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


class LockTimeout(RuntimeError):
    pass


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, timeout_s: float = 3600.0, poll_s: float = 0.5):
    """Hold an exclusive ``flock`` on ``lock_file``; wait (saying so) while another holds it.

    Raises:
        LockTimeout: still held by another process after ``timeout_s``.
    """
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_file, "a+")  # noqa: SIM115 - opened apart to word its error; the with below closes it
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the lock file {lock_file} for {what}: {exc.strerror}; "
                      "the folder must exist and be writable", str(lock_file)) from exc
    with fh:
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    log.warning("another run is using %s (%s); waiting for it to finish", what, lock_file)
                    told = True
                if time.monotonic() - start > timeout_s:
                    raise LockTimeout(
                        f"{what} is still locked by another run after {timeout_s:.0f} s ({lock_file}); "
                        "wait for it to finish, or remove the lock file if that run is dead"
                    ) from None
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
