"""The NIfTI contract: each rejection reason, and nibabel's real odd-header files."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti_factory import crafted_bad_files, good

from data_contracts import ContractViolation, VolumeLimits
from vae3d.validate import inspect_volume

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return crafted_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    "name", ["truncated", "text", "2d", "4d", "nan", "zero_axis", "singular", "spacing", "constant", "empty", "bomb"]
)
def test_each_bad_file_is_rejected_with_its_reason(bad, name):
    path, code = bad[name]
    with pytest.raises(ContractViolation) as info:
        inspect_volume(path)
    codes = [r.code for r in info.value.reasons]
    assert code in codes
    assert info.value.path == str(path)
    assert all(r.fix for r in info.value.reasons), "every reason says how to fix it"


def test_bomb_is_refused_from_the_header_alone(bad):
    path, _ = bad["bomb"]
    with pytest.raises(ContractViolation) as info:
        inspect_volume(path)
    codes = {r.code for r in info.value.reasons}
    # all header problems are reported together, before any data is read
    assert codes == {"dimension_out_of_range", "too_large"}
    assert sum(r.code == "dimension_out_of_range" for r in info.value.reasons) == 3


def test_good_volume_facts(tmp_path):
    path = good(tmp_path / "a.nii.gz", shape=(24, 20, 16), spacing=4.0)
    h = inspect_volume(path)
    assert h.shape == (24, 20, 16)
    assert h.spacing == pytest.approx((4.0, 4.0, 4.0))
    assert h.orientation == ("R", "A", "S")
    assert h.format == "nifti1" and h.dtype == "float32"
    assert h.intensity.max > h.intensity.mean > h.intensity.min >= 0
    assert h.size_bytes == path.stat().st_size


def test_singleton_fourth_axis_is_accepted_as_3d(tmp_path):
    data = np.random.default_rng(1).random((12, 12, 12, 1), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "t.nii.gz")
    assert inspect_volume(tmp_path / "t.nii.gz").shape == (12, 12, 12)


def test_file_size_limit_is_configurable(tmp_path):
    path = good(tmp_path / "a.nii.gz")
    with pytest.raises(ContractViolation) as info:
        inspect_volume(path, VolumeLimits(max_file_mb=0.001))
    assert [r.code for r in info.value.reasons] == ["file_too_large"]


def _frame0(src: str, dst: Path, klass) -> Path:
    """A 3D volume cut from one of nibabel's shipped files, keeping its header type,
    byte order, scaling and affine."""
    img = nib.load(NIB_DATA / src)
    out = klass(np.asanyarray(img.dataobj)[..., 0], img.affine, img.header)
    out.header.set_data_dtype(img.get_data_dtype())
    nib.save(out, str(dst))
    return dst


def test_nibabel_odd_headers_as_shipped(tmp_path):
    """The shipped files themselves: the 3D big-endian one passes, the 4D ones say so."""
    big = shutil.copy(NIB_DATA / "anatomical.nii", tmp_path / "anatomical.nii")
    ref = nib.load(big)
    h = inspect_volume(Path(big))
    assert ref.header.endianness == ">"
    assert h.dtype == ">i2" and h.shape == ref.shape
    assert h.orientation == nib.aff2axcodes(ref.affine)
    np.testing.assert_allclose(h.affine, ref.affine)
    for name in ("example4d.nii.gz", "example_nifti2.nii.gz"):
        with pytest.raises(ContractViolation) as info:
            inspect_volume(NIB_DATA / name)
        assert [r.code for r in info.value.reasons] == ["not_3d"]


@pytest.mark.parametrize(
    "src,klass,fmt",
    [
        ("example4d.nii.gz", nib.Nifti1Image, "nifti1"),  # oblique, LAS-ish, int16
        ("example_nifti2.nii.gz", nib.Nifti2Image, "nifti2"),
    ],
)
def test_nibabel_odd_headers_3d_frames(tmp_path, src, klass, fmt):
    path = _frame0(src, tmp_path / f"frame0-{src}", klass)
    ref = nib.load(path)
    h = inspect_volume(path)
    assert h.format == fmt
    assert h.shape == ref.shape[:3]
    np.testing.assert_allclose(h.affine, ref.affine, atol=1e-5)
    assert h.orientation == nib.aff2axcodes(ref.affine)
    assert h.spacing == pytest.approx(tuple(float(z) for z in ref.header.get_zooms()[:3]), rel=1e-5)
    np.testing.assert_allclose(h.intensity.mean, ref.get_fdata().mean(), rtol=1e-5)


def test_scaled_int16_intensities_are_scaled(tmp_path):
    """functional.nii stores int16 with scl_slope; statistics must be in scaled units."""
    img = nib.load(NIB_DATA / "functional.nii")
    data = np.asanyarray(img.dataobj)[..., 0]
    out = nib.Nifti1Image(np.tile(data, (1, 1, 4)).astype(np.float32), img.affine)
    out.header.set_data_dtype(np.int16)
    out.header.set_slope_inter(0.5, 10.0)
    nib.save(out, tmp_path / "scaled.nii")
    ref = nib.load(tmp_path / "scaled.nii")
    assert ref.dataobj.slope == 0.5
    h = inspect_volume(tmp_path / "scaled.nii")
    assert h.dtype == "int16"
    np.testing.assert_allclose(h.intensity.max, ref.get_fdata().max(), rtol=1e-6)
