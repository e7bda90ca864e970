"""Property-based fuzzing of the NIfTI contract: only ContractViolation ever comes out."""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_contracts import ContractViolation, VolumeHeader
from vae3d.validate import inspect_volume

FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(data: bytes, name: str = "f.nii") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            assert isinstance(inspect_volume(path), VolumeHeader)
        except ContractViolation as exc:
            assert exc.reasons and all(r.code and r.message for r in exc.reasons)


def _valid_nifti() -> bytes:
    img = nib.Nifti1Image(np.random.default_rng(0).random((10, 10, 10), dtype=np.float32), np.eye(4))
    return img.to_bytes()


VALID = _valid_nifti()


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    _check(data)


@FUZZ
@given(st.binary(max_size=1024))
def test_random_bytes_behind_a_gzip_header(data):
    _check(gzip.compress(data), "f.nii.gz")
    _check(b"\x1f\x8b" + data, "g.nii.gz")


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), min_size=1, max_size=24))
def test_mutated_headers(mutations):
    data = bytearray(VALID)
    for offset, value in mutations:
        data[offset] = value
    _check(bytes(data))
    _check(gzip.compress(bytes(data)), "m.nii.gz")


@FUZZ
@given(dims=st.lists(st.integers(-5, 2**31 - 1), min_size=8, max_size=8),
       datatype=st.sampled_from([2, 4, 8, 16, 64, 256, 512, 768, 1024, 1280, 0, 3, 9999]),
       pixdim=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=8, max_size=8))
def test_hostile_header_fields_never_allocate_or_crash(dims, datatype, pixdim):
    """A header may claim any shape, type and spacing; nothing is allocated before the
    declared size passes the limit, and only the contract's own error comes out."""
    data = bytearray(VALID)
    np.frombuffer(data, dtype="<i2", count=8, offset=40)  # dim[] lives at offset 40 (int16)
    data[40:56] = np.asarray([min(max(d, -32768), 32767) for d in dims], dtype="<i2").tobytes()
    data[70:72] = np.asarray([datatype], dtype="<i2").tobytes()
    data[76:108] = np.asarray(pixdim, dtype="<f4").tobytes()
    _check(bytes(data))


def test_truncations_at_every_boundary():
    gz = gzip.compress(VALID)
    for cut in [*list(range(0, 400, 7)), len(VALID) - 1]:
        _check(VALID[:cut])
    for cut in range(0, len(gz), max(1, len(gz) // 40)):
        _check(gz[:cut], "t.nii.gz")


def test_decompression_bomb_is_refused_before_inflating():
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.float64)
    header["vox_offset"] = 352
    payload = header.binaryblock + b"\x00" * 4
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as fh:
        fh.write(payload)
        fh.write(b"\x00" * (64 * 2**20))  # 64 MiB of zeros: compresses to ~64 KiB
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bomb.nii.gz"
        path.write_bytes(buf.getvalue())
        try:
            inspect_volume(path)
        except ContractViolation as exc:
            assert {r.code for r in exc.reasons} >= {"too_large"}
        else:  # pragma: no cover
            raise AssertionError("a 7.5 GiB declared volume was accepted")
