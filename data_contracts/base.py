"""The base of every contract: frozen, no unknown fields, and a ``read()`` whose failure
names the file and what to do, not a bare pydantic traceback."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from data_contracts.errors import PipelineError


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: what rebuilds a damaged file of this kind (shown as the fix)
    rebuilt_by: ClassVar[str] = "the step that wrote it"

    @classmethod
    def read(cls, path: Path | str):
        """The validated contents of ``path``; a damaged or truncated file is a ``PipelineError``
        naming the file, the first bad field and the step that rebuilds it."""
        return cls.parse(Path(path).read_bytes(), path)

    @classmethod
    def parse(cls, raw: bytes, path: Path | str):
        """``raw`` (the bytes of ``path``) validated, with ``read``'s error."""
        path = Path(path)
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "the document"
            raise PipelineError(
                f"{path} is not a valid {cls.__name__} ({where}: {first.get('msg', '')}); it is damaged or was "
                "cut short", where=str(path),
                fix=f"re-run {cls.rebuilt_by} to write it again (move the damaged file aside to keep it)") from None
