"""The base of every schema: frozen, and an unknown field is an error, not ignored."""

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """A value that crosses a boundary (pydantic, ``extra="forbid"``, ``frozen=True``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
