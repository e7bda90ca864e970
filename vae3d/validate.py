"""Whether one NIfTI file meets the ingest contract, and its header facts if it does.

``inspect_volume`` reads a file once, checks every rule it can and raises one
``ContractViolation`` listing *all* failures (header rules are checked before any voxel
data is decompressed, so a header claiming 4096^3 voxels costs nothing). The rules'
bounds and the facts' schema are contracts (``data_contracts.nifti``); reading them from
bytes is the library's work.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from data_contracts.errors import ContractViolation, Reason
from data_contracts.nifti import IntensityStats, VolumeHeader, VolumeLimits
from vae3d import nifti
from vae3d.files import sha256_bytes


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
    need = nifti.declared_nbytes(header)
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


def inspect_volume(path: Path, limits: VolumeLimits | None = None) -> VolumeHeader:
    """Read ``path`` once, check every contract rule and return its header facts.

    Raises:
        ContractViolation: listing every rule the file breaks.
    """
    path, limits = Path(path), limits or VolumeLimits()
    try:
        stat = os.stat(path)
        if stat.st_size > limits.max_file_mb * 2**20:
            raise ContractViolation(
                path,
                [Reason.of("file_too_large", f"file is {stat.st_size / 2**20:.1f} MiB on disk, limit "
                           f"{limits.max_file_mb:g} MiB", "size")],
            )
        raw = nifti.read_raw(path)
    except nifti.NiftiReadError as exc:
        raise ContractViolation(path, [Reason.of(exc.code, str(exc))]) from None
    except OSError as exc:  # every per-file OS error is a reason; the other files go on
        reason = Reason.of("unreadable", f"cannot read the file: {exc.strerror or exc}")
        raise ContractViolation(path, [reason]) from None
    sha = sha256_bytes(raw)
    try:
        header = nifti.parse_header(raw)
    except nifti.NiftiReadError as exc:
        raise ContractViolation(path, [Reason.of(exc.code, str(exc))], sha) from None
    try:
        reasons = _header_reasons(header, limits)
    except Exception as exc:
        reasons = [Reason.of("not_nifti", f"header fields cannot be interpreted: {exc}")]
    if reasons:
        raise ContractViolation(path, reasons, sha)
    try:
        img = nifti.image_from_bytes(raw, int(limits.max_decompressed_mb * 2**20))
        volume = nifti.volume_from_image(img, path)
    except nifti.NiftiReadError as exc:
        raise ContractViolation(path, [Reason.of(exc.code, str(exc))], sha) from None
    except Exception as exc:
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
