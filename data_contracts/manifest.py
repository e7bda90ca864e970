"""The dataset manifest (accepted volumes) and the quarantine report (rejected files)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from datetime import datetime, timezone
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from data_contracts.base import Contract
from data_contracts.errors import Reason
from data_contracts.nifti import VolumeHeader, VolumeLimits
from data_contracts.schema import Schema

Split = Literal["train", "val", "test"]
SCHEMA_VERSION = 1


class SplitFractions(Schema):
    train: float = Field(0.7, ge=0, le=1)
    val: float = Field(0.15, ge=0, le=1)
    test: float = Field(0.15, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g} "
                             f"(train={self.train}, val={self.val}, test={self.test})")
        return self


_SUBJECT = re.compile(r"(?:^|[_/\\])sub-([A-Za-z0-9]+)(?=[_/\\.]|$)")


def subject_of(path: str) -> str | None:
    """The BIDS subject label of a file (``sub-07`` in its name or in a folder above it), or None."""
    found = _SUBJECT.findall(str(path))
    return found[-1] if found else None


def split_for(sha256: str, fractions: SplitFractions, subject: str | None = None) -> Split:
    """Deterministic split: by the BIDS subject where the path names one, so every session and
    re-export of a subject lands in the same split; else by content, so the same scan always
    lands in the same split whatever its name and whatever else is in the folder."""
    key = f"split:sub-{subject}" if subject else "split:" + sha256
    u = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / float(16**12)
    if u < fractions.train:
        return "train"
    if u < fractions.train + fractions.val:
        return "val"
    return "test"


class DuplicateFile(Schema):
    """Another path holding byte-identical content to a manifest row (ingested once)."""

    path: str
    size_bytes: int
    mtime_ns: int


class ManifestRow(Schema):
    """One accepted volume: its header facts, split, and other names with the same content."""

    id: str = Field(description="stable id: the first 16 hex digits of the content sha256")
    split: Split
    split_by: Literal["subject", "content"] = Field(
        "content", description="what decided the split: the BIDS subject (sub-<label>) or the content sha256")
    subject: str | None = Field(None, description="the BIDS subject label, where the path names one")
    header: VolumeHeader
    duplicates: tuple[DuplicateFile, ...] = ()


class Manifest(Contract):
    rebuilt_by: ClassVar[str] = "'vae3d ingest SOURCES'"

    schema_version: int = SCHEMA_VERSION
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    sources: tuple[str, ...]
    limits: VolumeLimits
    fractions: SplitFractions
    rows: tuple[ManifestRow, ...]

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        for what, values in (("content (sha256)", [r.header.sha256 for r in self.rows]),
                             ("id", [r.id for r in self.rows]), ("path", [r.header.path for r in self.rows])):
            twice = sorted(v for v, n in Counter(values).items() if n > 1)
            if twice:
                raise ValueError(f"manifest lists the same {what} twice: {twice[:3]}")
        bad = [r.id for r in self.rows if r.id != r.header.sha256[:16]]
        if bad:
            raise ValueError(f"row ids {bad[:3]} are not the first 16 hex digits of their sha256")
        return self

    def split(self, name: Split) -> list[ManifestRow]:
        return [r for r in self.rows if r.split == name]

    def counts(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in ("train", "val", "test")}


class QuarantineRecord(Schema):
    """One rejected file with every reason it was rejected."""

    path: str
    sha256: str | None
    size_bytes: int
    mtime_ns: int
    stage: Literal["ingest", "preprocess"] = "ingest"
    reasons: tuple[Reason, ...] = Field(min_length=1)


class QuarantineReport(Contract):
    rebuilt_by: ClassVar[str] = "'vae3d ingest SOURCES'"

    schema_version: int = SCHEMA_VERSION
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    records: tuple[QuarantineRecord, ...]

    def reason_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records:
            for reason in record.reasons:
                counts[reason.code] = counts.get(reason.code, 0) + 1
        return dict(sorted(counts.items()))

