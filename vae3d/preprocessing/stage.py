"""Preprocess one manifest row through the cache: hit, or compute and store."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from monai.transforms import Compose

from data_contracts import IndexItem, ManifestRow, QuarantineRecord, Reason
from vae3d.files import atomic_write_bytes
from vae3d.preprocessing.cache import CachedVolume, PreprocessCache
from vae3d.preprocessing.transforms import preprocess_volume


def preprocess_row(
    row: ManifestRow, chain: Compose, cache: PreprocessCache
) -> tuple[IndexItem | QuarantineRecord, bool]:
    """Returns (index item or quarantine record, whether the cache was hit)."""
    sha = row.header.sha256
    hit = cache.load(sha)
    if hit is None:
        try:
            image, affine = preprocess_volume(chain, Path(row.header.path))
            if not np.isfinite(image).all():
                raise ValueError("the preprocessed image holds NaN/Inf values")
        except Exception as exc:  # any transform failure quarantines this file, the rest go on
            return QuarantineRecord(
                path=row.header.path, sha256=sha, size_bytes=row.header.size_bytes,
                mtime_ns=row.header.mtime_ns, stage="preprocess",
                reasons=(Reason.of("preprocessing_failed", f"{type(exc).__name__}: {exc}"),),
            ), False
        item = CachedVolume(
            image=image, affine=affine,
            original_affine=np.asarray(row.header.affine, dtype=np.float64),
            original_shape=np.asarray(row.header.shape, dtype=np.int64),
        )
        cache.store(sha, item)
    else:
        item = hit
    return IndexItem(
        id=row.id, split=row.split, source_path=row.header.path, source_sha256=sha,
        cache_path=str(cache.path_for(sha)), cache_digest=item.digest(),
    ), hit is not None


def montage(items: list[CachedVolume], path: Path, max_items: int = 4) -> Path:
    """Three orthogonal mid-slices of a few preprocessed volumes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = items[:max_items]
    fig, axes = plt.subplots(len(items), 3, figsize=(6, 2 * len(items)), squeeze=False)
    for r, item in enumerate(items):
        vol = item.image[0]
        for c in range(3):
            sl = np.take(vol, vol.shape[c] // 2, axis=c)
            axes[r, c].imshow(np.rot90(sl), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


