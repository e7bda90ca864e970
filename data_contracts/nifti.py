"""The header facts of one NIfTI volume, and the rules a volume must meet to be ingested.

``inspect_volume`` reads a file once, checks every rule it can and raises one
``ContractViolation`` listing *all* failures (header rules are checked before any voxel
data is decompressed, so a header claiming 4096^3 voxels costs nothing).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import nibabel as nib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from data_contracts.errors import ContractViolation, Reason
from vae3d import io

Vec3 = tuple[float, float, float]
Shape3 = tuple[int, int, int]
Affine = Annotated[list[list[float]], Field(min_length=4, max_length=4)]


class VolumeLimits(BaseModel):
    """Bounds a volume must meet; every one is a setting (``VAE3D_INGEST__...``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_dim: int = Field(8, ge=1)
    max_dim: int = Field(1024, ge=1)
    min_spacing_mm: float = Field(0.1, gt=0, description="exclusive lower bound")
    max_spacing_mm: float = Field(10.0, gt=0, description="inclusive upper bound")
    max_file_mb: float = Field(1024.0, gt=0, description="size of the file on disk")
    max_decompressed_mb: float = Field(2048.0, gt=0, description="header-declared data size")


class IntensityStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float
    max: float
    mean: float
    std: float
    p01: float
    p99: float


class VolumeHeader(BaseModel):
    """Facts about one accepted volume, read from its header and data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


def _header_reasons(header, limits: VolumeLimits) -> list[Reason]:
    """Every rule that can be checked from the header alone."""
    reasons: list[Reason] = []
    shape = tuple(int(d) for d in header.get_data_shape())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        reasons.append(Reason.of("not_3d", f"image has {len(shape)} axes, shape {shape}; need 3", "dim"))
    for axis, n in enumerate(shape[:3]):
        if not limits.min_dim <= n <= limits.max_dim:
            reasons.append(
                Reason.of(
                    "dimension_out_of_range",
                    f"axis {axis} has {n} voxels; allowed {limits.min_dim}..{limits.max_dim}",
                    f"dim[{axis + 1}]",
                )
            )
    zooms = [float(z) for z in header.get_zooms()[:3]]
    for axis, z in enumerate(zooms):
        if not (limits.min_spacing_mm < z <= limits.max_spacing_mm) or not np.isfinite(z):
            reasons.append(
                Reason.of(
                    "spacing_out_of_range",
                    f"axis {axis} spacing is {z:g} mm; allowed ({limits.min_spacing_mm:g}, "
                    f"{limits.max_spacing_mm:g}] mm",
                    f"pixdim[{axis + 1}]",
                )
            )
    try:
        affine = np.asarray(header.get_best_affine(), dtype=float)
        finite = bool(np.isfinite(affine).all())
        cond = np.linalg.cond(affine[:3, :3]) if finite else np.inf
    except (ValueError, np.linalg.LinAlgError, nib.spatialimages.HeaderDataError) as exc:
        finite, cond, affine = False, np.inf, None
        reasons.append(Reason.of("bad_affine", f"affine cannot be computed: {exc}", "sform/qform"))
    else:
        if not finite or not np.isfinite(cond) or cond > 1e8:
            reasons.append(
                Reason.of(
                    "bad_affine",
                    f"voxel-to-world affine is {'non-finite' if not finite else 'singular'}: "
                    f"{np.array2string(affine[:3, :3], precision=3)}",
                    "sform/qform",
                )
            )
    need = io.declared_nbytes(header)
    if need > limits.max_decompressed_mb * 2**20:
        reasons.append(
            Reason.of(
                "too_large",
                f"header declares {need / 2**20:.1f} MiB of voxel data, above the "
                f"{limits.max_decompressed_mb:g} MiB limit",
                "dim",
            )
        )
    return reasons


def _data_reasons(array: np.ndarray) -> list[Reason]:
    reasons = []
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    if bad:
        reasons.append(Reason.of("non_finite_voxels", f"{bad} of {array.size} voxels are NaN or Inf"))
    finite = array[np.isfinite(array)]
    if finite.size and float(finite.min()) == float(finite.max()):
        reasons.append(Reason.of("constant_image", f"every voxel equals {float(finite.min()):g}"))
    return reasons


def _stats(array: np.ndarray) -> IntensityStats:
    p01, p99 = np.percentile(array, [1, 99])
    return IntensityStats(
        min=float(array.min()),
        max=float(array.max()),
        mean=float(array.mean(dtype=np.float64)),
        std=float(array.std(dtype=np.float64)),
        p01=float(p01),
        p99=float(p99),
    )


def inspect_volume(path: Path, limits: VolumeLimits = VolumeLimits()) -> VolumeHeader:
    """Read ``path`` once, check every contract rule and return its header facts.

    Raises:
        ContractViolation: listing every rule the file breaks.
    """
    path = Path(path)
    try:
        stat = os.stat(path)
        if stat.st_size > limits.max_file_mb * 2**20:
            raise ContractViolation(
                path,
                [Reason.of("file_too_large", f"file is {stat.st_size / 2**20:.1f} MiB on disk, limit "
                           f"{limits.max_file_mb:g} MiB", "size")],
            )
        raw = io.read_raw(path)
    except io.NiftiReadError as exc:
        raise ContractViolation(path, [Reason.of(exc.code, str(exc))]) from None
    except OSError as exc:  # every per-file OS error is a reason; the other files go on
        raise ContractViolation(path, [Reason.of("unreadable", f"cannot read the file: {exc.strerror or exc}")]) from None
    sha = io.sha256_bytes(raw)
    try:
        header = io.parse_header(raw)
    except io.NiftiReadError as exc:
        raise ContractViolation(path, [Reason.of(exc.code, str(exc))], sha) from None
    try:
        reasons = _header_reasons(header, limits)
    except Exception as exc:  # noqa: BLE001 - hostile header values
        reasons = [Reason.of("not_nifti", f"header fields cannot be interpreted: {exc}")]
    if reasons:
        raise ContractViolation(path, reasons, sha)
    try:
        img = io.image_from_bytes(raw, int(limits.max_decompressed_mb * 2**20))
        volume = io.volume_from_image(img, path)
    except io.NiftiReadError as exc:
        raise ContractViolation(path, [Reason.of(exc.code, str(exc))], sha) from None
    except Exception as exc:  # noqa: BLE001 - nibabel's decode errors on untrusted bytes
        raise ContractViolation(
            path, [Reason.of("unreadable", f"nibabel cannot decode it: {exc}")], sha
        ) from None
    reasons = _data_reasons(volume.array)
    if reasons:
        raise ContractViolation(path, reasons, sha)
    return VolumeHeader(
        path=str(path),
        sha256=sha,
        size_bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        format="nifti2" if isinstance(header, nib.Nifti2Header) else "nifti1",
        shape=volume.array.shape,
        dtype=str(header.get_data_dtype()),
        spacing=volume.spacing,
        affine=volume.affine.tolist(),
        orientation=nib.aff2axcodes(volume.affine),
        qform_code=int(header["qform_code"]),
        sform_code=int(header["sform_code"]),
        intensity=_stats(volume.array),
    )
