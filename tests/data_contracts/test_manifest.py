"""The manifest contract refuses rows that would make ids or paths ambiguous."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from data_contracts import Manifest, ManifestRow, SplitFractions, VolumeHeader, VolumeLimits
from data_contracts.nifti import IntensityStats


def _row(content: bytes, path: str, id_: str | None = None) -> ManifestRow:
    sha = hashlib.sha256(content).hexdigest()
    eye = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    header = VolumeHeader(path=path, sha256=sha, size_bytes=len(content), mtime_ns=0, format="nifti1",
                          shape=(8, 8, 8), dtype="float32", spacing=(1.0, 1.0, 1.0), affine=eye,
                          orientation=("R", "A", "S"), qform_code=1, sform_code=1,
                          intensity=IntensityStats(min=0, max=1, mean=0.5, std=0.1, p01=0, p99=1))
    return ManifestRow(id=id_ or sha[:16], split="train", header=header)


def _manifest(*rows: ManifestRow) -> Manifest:
    return Manifest(sources=("/data",), limits=VolumeLimits(), fractions=SplitFractions(), rows=rows)


def test_unique_rows_are_accepted():
    assert len(_manifest(_row(b"a", "/data/a.nii"), _row(b"b", "/data/b.nii")).rows) == 2


@pytest.mark.parametrize(("rows", "message"), [
    (lambda: (_row(b"a", "/data/a.nii"), _row(b"a", "/data/b.nii")), "same content"),
    (lambda: (_row(b"a", "/data/a.nii", "0" * 16), _row(b"b", "/data/b.nii", "0" * 16)), "same id"),
    (lambda: (_row(b"a", "/data/a.nii"), _row(b"b", "/data/a.nii")), "same path"),
    (lambda: (_row(b"a", "/data/a.nii", "f" * 16),), "not the first 16 hex digits"),
])
def test_ambiguous_rows_are_refused(rows, message):
    with pytest.raises(ValidationError, match=message):
        _manifest(*rows())
