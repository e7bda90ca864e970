"""The base of every document the pipeline stores: a ``Schema`` with a ``read()`` whose failure
names the file and what to do (not a bare pydantic traceback) and an atomic ``write()``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import ValidationError

from data_contracts.atomic import atomic_write_text
from data_contracts.errors import PipelineError
from data_contracts.schema import Schema


class Contract(Schema):
    """A document a stage writes and the next one reads."""

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

    def write(self, path: Path | str, durable: bool = True) -> Path:
        """Write this document as indented JSON, atomically (readers see the old file or the new one)."""
        atomic_write_text(Path(path), self.model_dump_json(indent=1), durable)
        return Path(path)
