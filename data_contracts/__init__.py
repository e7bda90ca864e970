"""Pydantic schemas for everything that crosses a stage boundary."""

from data_contracts.dataset import DatasetIndex, IndexItem
from data_contracts.errors import ContractViolation, PipelineError, Reason
from data_contracts.manifest import (
    Manifest,
    ManifestRow,
    QuarantineRecord,
    QuarantineReport,
    SplitFractions,
    split_for,
    subject_of,
)
from data_contracts.nifti import VolumeHeader, VolumeLimits

__all__ = [
    "ContractViolation", "DatasetIndex", "IndexItem", "Manifest", "ManifestRow", "PipelineError", "QuarantineRecord",
    "QuarantineReport", "Reason", "SplitFractions", "VolumeHeader", "VolumeLimits", "split_for", "subject_of",
]
