"""Reasons a volume is rejected, and the one exception that carries them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from data_contracts.schema import Schema

ReasonCode = Literal[
    "empty_file",
    "unreadable",
    "not_regular_file",
    "not_nifti",
    "truncated",
    "too_large",
    "file_too_large",
    "not_3d",
    "dimension_out_of_range",
    "spacing_out_of_range",
    "bad_affine",
    "non_finite_voxels",
    "constant_image",
    "preprocessing_failed",
    "path_escape",
]

#: What a person can do about each reason; shown beside the reason in reports.
FIXES: dict[str, str] = {
    "empty_file": "re-export or re-copy the scan; the file has no bytes",
    "unreadable": "the file cannot be read (permissions, a damaged gzip stream): fix its permissions or re-copy it",
    "not_regular_file": "ingest regular files only: a FIFO, socket or device cannot hold a scan",
    "not_nifti": "convert the file to single-file NIfTI (.nii/.nii.gz), e.g. with dcm2niix",
    "truncated": "the file ends before its data does: re-copy it, the transfer was cut short",
    "too_large": "raise VAE3D_INGEST__MAX_DECOMPRESSED_MB if the scan is genuine, or downsample it",
    "file_too_large": "raise VAE3D_INGEST__MAX_FILE_MB if the scan is genuine",
    "not_3d": "split 4D series into 3D volumes (e.g. nibabel.four_to_three) and ingest one",
    "dimension_out_of_range": "each axis must have 8..1024 voxels; resample or crop the scan",
    "spacing_out_of_range": "voxel spacing must be in (0.1, 10] mm; fix the header's pixdim",
    "bad_affine": "the voxel-to-world matrix is singular or non-finite; fix qform/sform",
    "non_finite_voxels": "the image holds NaN/Inf values; re-run the reconstruction or mask them",
    "constant_image": "every voxel has the same value; the scan is blank",
    "preprocessing_failed": "see the message; the volume could not be transformed",
    "path_escape": "the path leaves the allowed folders (.. or a symlink); move the file or add its folder to "
                   "VAE3D_ALLOWED_ROOTS",
}


class Reason(Schema):
    """One specific, human-readable reason a file was rejected."""

    code: ReasonCode
    message: str
    field: str | None = None
    fix: str = ""

    @classmethod
    def of(cls, code: str, message: str, field: str | None = None) -> Reason:
        return cls(code=code, message=message, field=field, fix=FIXES.get(code, ""))

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.code}{where}: {self.message} (fix: {self.fix})"


class ContractViolation(Exception):
    """Bad data: a file broke the data contract, for one or more reasons."""

    def __init__(self, path: Path | str, reasons: list[Reason], sha256: str | None = None):
        self.path = str(path)
        self.sha256 = sha256
        self.reasons = list(reasons)
        lines = "\n  ".join(str(r) for r in self.reasons)
        super().__init__(f"{self.path}: rejected for {len(self.reasons)} reason(s):\n  {lines}")


class PipelineError(Exception):
    """A mistake a person can fix: what went wrong, the file or setting it concerns, and
    the fix. The CLI prints it as one short paragraph and exits with ``exit_code``; a
    Prefect task never retries it (the same call would fail the same way)."""

    def __init__(self, what: str, fix: str, where: str | None = None, exit_code: int = 1):
        self.what, self.fix, self.where, self.exit_code = what, fix, where, exit_code
        super().__init__(f"{what}{f' ({where})' if where else ''}. Fix: {fix}")
