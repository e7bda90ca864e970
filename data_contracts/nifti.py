"""The header facts of one NIfTI volume, and the bounds a volume must meet to be ingested
(``vae3d.validate.inspect_volume`` checks a file against them)."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from data_contracts.schema import Schema

Vec3 = tuple[float, float, float]
Shape3 = tuple[int, int, int]
Affine = Annotated[list[list[float]], Field(min_length=4, max_length=4)]


class VolumeLimits(Schema):
    """Bounds a volume must meet; every one is a setting (``VAE3D_INGEST__...``)."""

    min_dim: int = Field(8, ge=1)
    max_dim: int = Field(1024, ge=1)
    min_spacing_mm: float = Field(0.1, gt=0, description="exclusive lower bound")
    max_spacing_mm: float = Field(10.0, gt=0, description="inclusive upper bound")
    max_file_mb: float = Field(1024.0, gt=0, description="size of the file on disk")
    max_decompressed_mb: float = Field(2048.0, gt=0, description="header-declared data size")


class IntensityStats(Schema):
    min: float
    max: float
    mean: float
    std: float
    p01: float
    p99: float


class VolumeHeader(Schema):
    """Facts about one accepted volume, read from its header and data."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=1)
    mtime_ns: int
    format: Literal["nifti1", "nifti2"]
    shape: Shape3
    dtype: str
    spacing: Vec3
    affine: Affine
    orientation: tuple[str, str, str]
    qform_code: int
    sform_code: int
    intensity: IntensityStats

    @field_validator("affine")
    @classmethod
    def _affine_is_4x4_finite(cls, value: list[list[float]]) -> list[list[float]]:
        arr = np.asarray(value, dtype=float)
        if arr.shape != (4, 4) or not np.isfinite(arr).all():
            raise ValueError(f"affine must be a finite 4x4 matrix, got shape {arr.shape}")
        return value
