"""Tiny NIfTI files for tests: good phantoms and one crafted file per rejection reason."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from vae3d import nifti
from vae3d.sample_data import phantom


def good(path: Path, seed: int = 0, shape=(24, 24, 24), spacing: float = 4.0) -> Path:
    image, affine, _ = phantom(shape, spacing=spacing, seed=seed)
    return nifti.save_volume(path, image, affine)


def _nib_save(img, path: Path) -> Path:
    nib.save(img, str(path))
    return path


def crafted_bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """One file per rejection reason: name -> (path, expected reason code)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    vol = rng.random((16, 16, 16), dtype=np.float32)
    eye = np.eye(4)
    files: dict[str, tuple[Path, str]] = {}

    full = nifti.encode_nifti(vol, eye)
    (folder / "truncated.nii.gz").write_bytes(full[: len(full) // 2])
    files["truncated"] = (folder / "truncated.nii.gz", "truncated")

    (folder / "notes.nii").write_text("this is a text file with a NIfTI name\n" * 20)
    files["text"] = (folder / "notes.nii", "not_nifti")

    files["2d"] = (_nib_save(nib.Nifti1Image(vol[:, :, 0], eye), folder / "slice2d.nii.gz"), "not_3d")
    files["4d"] = (_nib_save(nib.Nifti1Image(np.stack([vol] * 3, -1), eye), folder / "series4d.nii.gz"), "not_3d")

    nan = vol.copy()
    nan[4:6, 4:6, 4:6] = np.nan
    files["nan"] = (_nib_save(nib.Nifti1Image(nan, eye), folder / "nan.nii.gz"), "non_finite_voxels")

    zero = nib.Nifti1Image(np.zeros((16, 0, 16), np.float32), eye)
    files["zero_axis"] = (_nib_save(zero, folder / "zero_axis.nii"), "dimension_out_of_range")

    singular = np.diag([1.0, 1.0, 0.0, 1.0])
    img = nib.Nifti1Image(vol, None)
    img.header.set_sform(singular, code=2)
    img.header.set_qform(None, code=0)
    files["singular"] = (_nib_save(img, folder / "singular_affine.nii.gz"), "bad_affine")

    files["spacing"] = (
        _nib_save(nib.Nifti1Image(vol, np.diag([50.0, 50.0, 50.0, 1.0])), folder / "spacing50.nii.gz"),
        "spacing_out_of_range",
    )
    files["constant"] = (
        _nib_save(nib.Nifti1Image(np.full((16, 16, 16), 7, np.float32), eye), folder / "constant.nii.gz"),
        "constant_image",
    )
    (folder / "empty.nii.gz").write_bytes(b"")
    files["empty"] = (folder / "empty.nii.gz", "empty_file")

    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 4096))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    (folder / "bomb.nii").write_bytes(header.binaryblock + b"\x00" * 4 + b"\x00" * 1024)
    files["bomb"] = (folder / "bomb.nii", "too_large")
    return files
