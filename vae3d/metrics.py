"""MONAI image metrics configured for small volumes (one place for the window rule)."""

from __future__ import annotations

from collections.abc import Sequence

from monai.metrics import PSNRMetric, SSIMMetric


def ssim_window(spatial_shape: Sequence[int]) -> int:
    """MONAI's default 11-voxel SSIM window, shrunk (odd) for volumes smaller than 11^3."""
    smallest = min(int(s) for s in spatial_shape)
    return min(11, smallest - (1 - smallest % 2))


def psnr_ssim(spatial_shape: Sequence[int]) -> tuple[PSNRMetric, SSIMMetric]:
    """PSNR and SSIM metrics for images scaled to [0, 1]."""
    return PSNRMetric(max_val=1.0), SSIMMetric(spatial_dims=3, data_range=1.0, win_size=ssim_window(spatial_shape))
