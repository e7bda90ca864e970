"""NIfTI encoding: byte-identical to nibabel, scaled int16, stored gzip, atomic writes."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from vae3d import files, nifti
from vae3d.outputs import complete, write_volume

OBLIQUE = np.array([[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.1, -3.0], [0.0, 0.0, 3.0, 5.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_encode_nifti_is_byte_identical_to_nibabel(dtype):
    rng = np.random.default_rng(0)
    array = (rng.random((5, 6, 7)) * 100).astype(dtype)
    img = nib.Nifti1Image(array, OBLIQUE)
    img.set_qform(OBLIQUE, code=1)
    img.set_sform(OBLIQUE, code=1)
    img.header.set_xyzt_units("mm", "sec")
    for level in (0, 1):
        assert gzip.decompress(nifti.encode_nifti(array, OBLIQUE, dtype=dtype, compresslevel=level)) == img.to_bytes()


def test_scaled_int16_round_trips_within_half_a_step(tmp_path):
    array = np.random.default_rng(1).random((8, 9, 10)).astype(np.float32)
    path = tmp_path / "q.nii.gz"
    path.write_bytes(nifti.encode_nifti(nifti.quantize(array), OBLIQUE, np.int16, compresslevel=0,
                                        slope=nifti.INT16_STEP))
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16
    # half a step, plus the float32 rounding of the slope in the header
    assert np.abs(img.get_fdata() - array).max() <= 0.51 * nifti.INT16_STEP
    np.testing.assert_allclose(img.affine, OBLIQUE)
    # out-of-range values clip instead of wrapping around
    assert nifti.quantize(np.array([-2.0, 0.5, 2.0])).tolist() == [-32768, 16384, 32767]


def test_stored_gzip_is_larger_but_the_same_image():
    array = np.zeros((16, 16, 16), np.float32)
    stored, deflated = nifti.encode_nifti(array, np.eye(4), compresslevel=0), nifti.encode_nifti(array, np.eye(4))
    assert len(stored) > 16**3 * 4 > len(deflated)
    assert gzip.decompress(stored) == gzip.decompress(deflated)
    with pytest.raises(ValueError, match="compresslevel"):
        nifti.encode_nifti(array, np.eye(4), compresslevel=10)


def test_stored_blocks_span_many_blocks_and_any_memory_layout_gives_the_same_file(tmp_path):
    from isal import igzip

    c_order = (np.random.default_rng(3).random((64, 48, 40)) * 1000).astype(np.int16)  # 4 stored blocks
    f_order = np.asfortranarray(c_order)  # the layout the model's outputs have
    data = nifti.encode_nifti(c_order, OBLIQUE, np.int16, compresslevel=0)
    assert nifti.encode_nifti(f_order, OBLIQUE, np.int16, compresslevel=0) == data
    assert gzip.decompress(data) == igzip.decompress(data)
    assert b"".join(nifti.nifti_gzip_parts(f_order, OBLIQUE, np.int16, 0)) == data
    path = tmp_path / "big.nii.gz"
    files.atomic_write_bytes(path, nifti.nifti_gzip_parts(f_order, OBLIQUE, np.int16, 0))
    assert path.read_bytes() == data and files.sha256_bytes(nifti.nifti_gzip_parts(f_order, OBLIQUE, np.int16, 0)) == \
        files.sha256_bytes(data)
    np.testing.assert_array_equal(np.asanyarray(nib.load(path).dataobj), c_order)


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_write_volume_and_complete(tmp_path, dtype):
    array = np.random.default_rng(2).random((6, 6, 6)).astype(np.float32)
    prov = {"mode": "synthetic", "seed": 0, "index": 0, "parameters": {}, "package_version": "test",
            "model": {"name": "m", "version": "1", "uri": "models:/m/1", "run_id": "r", "weights_sha256": "0" * 64}}
    out = tmp_path / "v.nii.gz"
    rec = write_volume(out, array, np.eye(4), prov, dtype=dtype, compresslevel=0)
    img = nib.load(out)
    assert img.get_data_dtype() == np.dtype(dtype)
    np.testing.assert_allclose(img.get_fdata(), array, atol=nifti.INT16_STEP)
    assert complete(out) == rec
    out.write_bytes(out.read_bytes()[:-10])  # torn: the checksum no longer matches
    assert complete(out) is None
    with pytest.raises(ValueError, match="dtype"):
        write_volume(tmp_path / "w.nii.gz", array, np.eye(4), prov, dtype="float64")


def test_atomic_write_makes_missing_folders_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "new" / "folder" / "out.bin"
    files.atomic_write_bytes(target, [b"ab", memoryview(b"cd")], durable=False)
    files.atomic_write_bytes(target.with_name("second.bin"), b"ef")
    assert target.read_bytes() == b"abcd" and target.with_name("second.bin").read_bytes() == b"ef"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin", "second.bin"]
