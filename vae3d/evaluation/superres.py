"""Super-resolution: clean volumes averaged down by a factor, then brought back to the model's
grid by cubic B-spline interpolation (the classical baseline), or by the model from the
trilinearly resampled low-resolution volume (what preprocessing makes of a low-resolution scan)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vae3d.inference import cubic_resize


def downsample(volumes: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 1, D, H, W) averaged over ``factor``^3 blocks: a low-resolution acquisition."""
    return F.avg_pool3d(volumes.float(), kernel_size=factor, stride=factor)


def cubic_upsample(low: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Cubic B-spline interpolation (scipy ``zoom``, order 3) of (B, 1, d, h, w) onto ``size``."""
    return cubic_resize(low, size).clamp_(0, 1)


def trilinear_upsample(low: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear interpolation of (B, 1, d, h, w) onto ``size``: the model's input."""
    return F.interpolate(low.float(), size=tuple(size), mode="trilinear", align_corners=False)
