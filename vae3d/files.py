"""Files, whatever they hold: atomic writes, hashing, what a non-regular file is, and the
clean-up of temp files a killed writer left behind."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from data_contracts.atomic import Buffers, atomic_write_bytes, atomic_write_text, buffers

__all__ = ["atomic_write_bytes", "atomic_write_text", "file_kind", "remove_stale_temporaries", "sha256_bytes",
           "sha256_file"]

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: Buffers) -> str:
    """The sha256 of ``data``, or of the concatenation of a list of buffers."""
    digest = hashlib.sha256()
    for part in buffers(data):
        digest.update(part)
    return digest.hexdigest()


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, from its ``st_mode``: "a FIFO", "a folder", ..."""
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temp files a killed writer left in ``folder`` (hidden ``.*.tmp*`` names).

    Call it only while holding the folder's lock: then no live writer owns them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir()
             if p.is_file() and p.name.startswith(".") and (p.name.endswith(".tmp") or ".tmp." in p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
