"""The preprocessing chain: one factory builds it from primitive settings.

load (our bounded, ISA-L NIfTI reader) -> channel-first -> RAS -> resample to the target
spacing on an axis-aligned grid (oblique scans are rotated out) -> crop to the head ->
centre pad/crop to the target shape -> percentile scaling to [0, 1]. Every step after
loading is a MONAI dictionary transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)
from monai.transforms.utils_pytorch_numpy_unification import percentile

from vae3d import nifti

KEY = "image"
INTENSITY_RANGE = "intensity_range"  # meta key: the input intensities scaled to 0 and 1


class AboveFraction:
    """Foreground selector for ``CropForegroundd``: voxels above ``fraction`` of the 99th
    percentile. A plain ``> 0`` would keep Rician background noise as 'head'."""

    def __init__(self, fraction: float):
        self.fraction = float(fraction)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1).float()
        if flat.numel() > 1_000_000:  # quantile has a size limit; a strided sample is enough
            flat = flat[:: flat.numel() // 1_000_000 + 1]
        return x > self.fraction * torch.quantile(flat, 0.99)


class LoadVolumed(MapTransform):
    """Load ``data[key]`` (a path) into a MetaTensor with its affine.

    MONAI's ``LoadImaged`` would work too; this goes through ``vae3d.nifti`` so every read
    in the project is bounded against decompression bombs and uses ISA-L gzip.
    """

    def __init__(self, keys=KEY, max_decompressed_bytes: int = 2**31):
        super().__init__(keys)
        self.max_bytes = max_decompressed_bytes

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            vol = nifti.load_volume(Path(d[key]), self.max_bytes)
            d[key] = MetaTensor(
                torch.from_numpy(vol.array),
                affine=torch.as_tensor(vol.affine, dtype=torch.float64),
                meta={"filename_or_obj": str(d[key]), "original_channel_dim": "no_channel"},
            )
        return d


class PercentileScaled(ScaleIntensityRangePercentilesd):
    """MONAI's percentile scaling, which also records the two percentiles in the image's meta
    (``INTENSITY_RANGE``) so a result can be put back on the input's own scale."""

    def __call__(self, data):
        lower, upper = self.scaler.lower, self.scaler.upper
        ranges = {k: (float(percentile(data[k], lower)), float(percentile(data[k], upper)))
                  for k in self.key_iterator(dict(data))}
        d = super().__call__(data)
        for key, r in ranges.items():
            if isinstance(d[key], MetaTensor):
                d[key].meta[INTENSITY_RANGE] = r
        return d


def build_preprocess(
    target_shape: Sequence[int] = (64, 64, 64),
    target_spacing: Sequence[float] = (3.0, 3.0, 3.0),
    lower_percentile: float = 0.5,
    upper_percentile: float = 99.5,
    foreground_threshold: float = 0.08,
    foreground_margin: int = 2,
    load: bool = True,
) -> Compose:
    """The preprocessing chain as a MONAI ``Compose`` over ``{"image": path}`` dicts.

    With ``load=False`` the chain starts from a channel-first MetaTensor instead of a path.
    """
    steps = [LoadVolumed(KEY), EnsureChannelFirstd(KEY)] if load else []
    steps += [
        Orientationd(KEY, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(KEY, pixdim=tuple(target_spacing), diagonal=True, mode="bilinear", padding_mode="zeros"),
        CropForegroundd(
            KEY, source_key=KEY, select_fn=AboveFraction(foreground_threshold),
            margin=foreground_margin, allow_smaller=True,
        ),
        ResizeWithPadOrCropd(KEY, spatial_size=tuple(target_shape), mode="constant"),
        PercentileScaled(
            KEY, lower=lower_percentile, upper=upper_percentile, b_min=0.0, b_max=1.0, clip=True
        ),
        EnsureTyped(KEY, dtype=torch.float32),
    ]
    return Compose(steps)


def preprocess_volume(chain: Compose, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Run ``chain`` on one file. Returns (image (1, D, H, W) float32, world affine (4, 4))."""
    out = chain({KEY: str(path)})[KEY]
    return out.as_tensor().numpy().astype(np.float32, copy=False), out.affine.numpy().astype(np.float64)
