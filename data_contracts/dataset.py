"""The dataset index: what preprocessing produced and where the tensors are."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import ClassVar

from pydantic import Field

from data_contracts.base import Contract
from data_contracts.manifest import SCHEMA_VERSION, Split
from data_contracts.schema import Schema


class IndexItem(Schema):
    id: str
    split: Split
    source_path: str
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    cache_path: str
    cache_digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class DatasetIndex(Contract):
    rebuilt_by: ClassVar[str] = "'vae3d preprocess'"

    schema_version: int = SCHEMA_VERSION
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    manifest_sha256: str
    settings_key: str
    settings: dict
    target_shape: tuple[int, int, int]
    target_spacing: tuple[float, float, float]
    template_affine: list[list[float]]
    items: tuple[IndexItem, ...]

    def split(self, name: Split) -> list[IndexItem]:
        return [i for i in self.items if i.split == name]

    def counts(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in ("train", "val", "test")}

    def split_digest(self, name: Split) -> str:
        """A short digest of a split's cached volumes: the split's MLflow dataset digest."""
        return hashlib.sha256("".join(i.cache_digest for i in self.split(name)).encode()).hexdigest()[:16]

