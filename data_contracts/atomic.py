"""Atomic file writes: a reader sees the old file or the whole new one, never a torn one.

It lives at the leaf because the contracts write themselves (``Contract.write``); the
library and the flows write every other file through the same two functions
(``vae3d.files`` re-exports them).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

Buffers = bytes | Sequence[bytes | memoryview]


def buffers(data: Buffers) -> Sequence[bytes | memoryview]:
    """One buffer, or a list of buffers to be taken one after the other, as a list."""
    return [data] if isinstance(data, (bytes, bytearray, memoryview)) else data


def atomic_write_bytes(path: Path, data: Buffers, durable: bool = True) -> None:
    """Write ``data`` (or a list of buffers, one after the other) to ``path`` so readers see
    either the old file or the whole new one.

    ``durable`` fsyncs the data before the rename, so the file also survives a power loss.
    Batch outputs whose checksum is verified on every re-run skip it (a torn file after a
    power loss is found by its checksum and written again): one fsync per file costs more
    than the rest of writing a 64^3 volume.
    """
    path = Path(path)
    tmp = None
    try:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except FileNotFoundError:  # the folder is made on first use, not checked on every write
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(buffers(data))
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide outputs from the team's other users
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        size = sum(memoryview(p).nbytes for p in buffers(data))
        raise OSError(
            exc.errno,
            f"cannot write {path} ({size} bytes): {exc.strerror or exc}; nothing was left behind. "
            "Free space or fix the folder's permissions, then re-run: completed outputs are kept",
            str(path),
        ) from exc
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)
