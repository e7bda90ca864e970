"""A user's scan prepared for the model, and the model's result put back on that scan's terms.

``prepare_input`` runs the preprocessing chain on one file and keeps what the way back
needs: the preprocessed grid's affine, the original affine and shape, the input's sha256
and the two intensities that the percentile scaling mapped to 0 and 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose
from nibabel.affines import voxel_sizes

from vae3d import files, nifti
from vae3d.preprocessing.transforms import INTENSITY_RANGE, KEY


@dataclass(frozen=True)
class PreparedInput:
    """One input on the model's grid, with the way back to its own grid and scale."""

    x: torch.Tensor  # (1, 1, S, S, S) in [0, 1]
    affine: np.ndarray  # world affine of the preprocessed grid
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    sha256: str
    intensity_range: tuple[float, float]  # input intensities mapped to 0 and 1
    raw: bytes = field(default=b"", repr=False)  # the file's bytes, for ``measured``
    path: str = ""
    codes: tuple[int, int] = (1, 1)  # the header's (qform_code, sform_code): outputs on its grid keep them

    def measured(self) -> torch.Tensor:
        """The input's own voxels on the model's intensity scale, (1, 1, X, Y, Z): what a
        super-resolved output must agree with (``inference.back_project``). Decoded on demand."""
        voxels = nifti.volume_from_image(nifti.image_from_bytes(self.raw, 2**40), self.path).array
        lo, hi = self.intensity_range
        original = np.clip((voxels - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)
        return torch.from_numpy(original)[None, None]


def prepare_input(path: Path, chain: Compose) -> PreparedInput:
    """Read ``path`` once (for its sha256, header and voxels) and preprocess it with ``chain``."""
    raw = nifti.read_raw(Path(path))
    header = nifti.parse_header(raw)
    out = chain({KEY: str(path)})[KEY]
    image = out.as_tensor().numpy().astype(np.float32, copy=False)
    lo, hi = out.meta.get(INTENSITY_RANGE, (0.0, 1.0))
    return PreparedInput(
        x=torch.from_numpy(image)[None], affine=out.affine.numpy().astype(np.float64),
        original_affine=header.get_best_affine(), original_shape=tuple(int(s) for s in header.get_data_shape()[:3]),
        sha256=files.sha256_bytes(raw), intensity_range=(float(lo), float(hi)), raw=raw, path=str(path),
        codes=(int(header["qform_code"]), int(header["sform_code"])),
    )


def to_input_scale(volume: np.ndarray, intensity_range: Sequence[float]) -> np.ndarray:
    """Undo the percentile scaling: 0 becomes the input's lower and 1 its upper percentile.

    Intensities the scaling clipped (above the upper percentile) are not recovered.
    """
    lo, hi = (float(v) for v in intensity_range)
    return (lo + np.asarray(volume, dtype=np.float32) * (hi - lo)).astype(np.float32)


def super_resolution_grid(
    original_affine: np.ndarray, original_shape: Sequence[int], model_spacing: Sequence[float],
    factor: float | None = None,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The output grid of super-resolution: the input's field of view and orientation, at
    finer voxels.

    Each axis's voxel size becomes ``input / factor``, but never finer than the model's own
    spacing (it has no detail below that); with ``factor=None`` every axis takes the model's
    spacing. Returns (affine, shape); the field of view's centre stays where it was.
    """
    zooms = voxel_sizes(np.asarray(original_affine, dtype=np.float64))
    target = np.asarray(model_spacing, dtype=np.float64)
    new = target if factor is None else np.maximum(zooms / float(factor), target)
    new = np.minimum(new, zooms)  # never coarser than the input
    shape = tuple(max(1, round(n * z / s)) for n, z, s in zip(original_shape, zooms, new, strict=True))
    old = np.asarray(original_affine, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = old[:3, :3] / zooms * new  # same direction cosines, new voxel sizes
    centre = old[:3, :3] @ ((np.asarray(original_shape, float) - 1) / 2) + old[:3, 3]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape, float) - 1) / 2)
    return affine, shape
