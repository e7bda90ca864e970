"""A verified on-disk cache of preprocessed volumes.

One ``.npz`` per (settings key, source sha256): the image, its world affine, the original
affine and shape (for the inverse mapping) and a digest of the arrays. A file that does not
parse or whose digest does not match is treated as missing and rebuilt, never used.
Loading uses ``allow_pickle=False``: a cache file cannot execute code.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae3d.files import atomic_write_bytes

_FIELDS = ("image", "affine", "original_affine", "original_shape")


@dataclass(frozen=True)
class CachedVolume:
    image: np.ndarray  # (1, D, H, W) float32 in [0, 1]
    affine: np.ndarray  # (4, 4) world affine of the preprocessed grid
    original_affine: np.ndarray  # (4, 4)
    original_shape: np.ndarray  # (3,)

    def digest(self) -> str:
        h = hashlib.sha256()
        for name in _FIELDS:
            arr = np.ascontiguousarray(getattr(self, name))
            h.update(name.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(arr.tobytes())
        return h.hexdigest()


class PreprocessCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        return self.root / f"{sha256}.npz"

    def store(self, sha256: str, item: CachedVolume) -> Path:
        buf = io.BytesIO()
        np.savez(buf, digest=np.array(item.digest()), **{k: getattr(item, k) for k in _FIELDS})
        path = self.path_for(sha256)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def load(self, sha256: str) -> CachedVolume | None:
        """The cached item, or None when it is missing or fails verification."""
        path = self.path_for(sha256)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                item = CachedVolume(**{k: z[k] for k in _FIELDS})
                expected = str(z["digest"])
        except Exception:
            return None  # NotImplementedError); each one means "rebuild", none may escape
        return item if item.digest() == expected else None
