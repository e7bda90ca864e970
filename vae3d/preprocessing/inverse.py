"""Map results on the preprocessed grid back onto a scan's own grid, and the template space.

Every spatial step of preprocessing (reorientation, resampling, crop, pad) is an affine map
between voxel grids, so the preprocessed volume's world affine says where each voxel lies.
Resampling from that affine onto the original affine and shape (MONAI ``SpatialResample``)
inverts the whole chain at once; regions the crop removed come back as ``fill``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample


def to_original_space(
    image: np.ndarray,
    affine: np.ndarray,
    original_affine: np.ndarray,
    original_shape: Sequence[int],
    mode: str = "bilinear",
) -> np.ndarray:
    """Resample ``image`` (1, D, H, W) on ``affine`` onto the original grid.

    Returns:
        (X, Y, Z) float32 array aligned with ``original_affine`` / ``original_shape``.
    """
    src = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if src.ndim == 3:
        src = src[None]
    src = MetaTensor(src, affine=torch.as_tensor(affine, dtype=torch.float64))
    out = SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float64)(
        src,
        dst_affine=torch.as_tensor(original_affine, dtype=torch.float64),
        spatial_size=tuple(int(s) for s in original_shape),
    )
    return np.asarray(out[0].as_tensor(), dtype=np.float32)


def template_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS affine of the training grid, centred on the world origin: where synthetic
    volumes are written (their true position is unknown, their scale is not)."""
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = -np.asarray(spacing, float) * (np.asarray(shape, float) - 1) / 2
    return aff
